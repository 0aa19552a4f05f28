"""Whether an http(s) endpoint accepts connections: one TCP connect, for the tools' fast checks."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def connect_problem(endpoint_url: str, timeout: float = 1.0) -> str | None:
    """None if something accepts a TCP connection at the URL's host and port, else why not."""
    parts = urlsplit(endpoint_url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ValueError as exc:  # a port that is not a number
        return str(exc)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
