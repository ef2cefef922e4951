"""The protocol core: deterministic state machines, no I/O."""
