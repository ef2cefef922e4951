"""What the sidecar serves besides the client socket: HTTP health, status and metrics."""
