"""Deterministic simulation of many members running the real protocol core."""
