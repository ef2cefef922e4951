"""The Python client library for applications next to a derecho sidecar."""

from .client import (
    Client,
    ConnectionLostError,
    Delivery,
    DeliveryBatch,
    DeliveryStream,
    DerechoError,
    Receipt,
    SlowConsumerError,
    View,
    ViewChange,
    ViewStream,
)

__all__ = [
    "Client",
    "ConnectionLostError",
    "Delivery",
    "DeliveryBatch",
    "DeliveryStream",
    "DerechoError",
    "Receipt",
    "SlowConsumerError",
    "View",
    "ViewChange",
    "ViewStream",
]
