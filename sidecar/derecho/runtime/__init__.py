"""The asyncio runtime: the only layer that touches sockets, clocks and files."""
