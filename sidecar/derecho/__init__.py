"""derecho: Derecho-style atomic multicast and state machine replication for Python."""

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> object:
    # Import the client lazily so `import derecho` in the sidecar does not pull it in.
    if name == "Client":
        from .client.client import Client

        return Client
    raise AttributeError(name)
