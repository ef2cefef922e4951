"""The `derecho` command."""
