"""A scripted raw-socket HTTP server on 127.0.0.1 for transport faults the simulator does not model.

Each accepted connection takes the next behaviour from the script. It exists to check, with real
sockets and the real requests/urllib3 stack, how each failure surfaces to ProviderClient.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable

Behaviour = Callable[[socket.socket, bytes], None]


def respond(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> Behaviour:
    def act(conn: socket.socket, _request: bytes) -> None:
        payload = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: close\r\n{extra}\r\n"
        )
        conn.sendall(head.encode() + payload)

    return act


def close_without_answer(conn: socket.socket, _request: bytes) -> None:
    conn.close()


def reset(conn: socket.socket, _request: bytes) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def truncated_body(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"taskId": "t'
    )
    conn.close()


class RawServer:
    def __init__(self, *script: Behaviour, hang_seconds: float = 5.0):
        self.script = list(script)
        self.requests: list[bytes] = []
        self.hang_seconds = hang_seconds
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def hang(self, conn: socket.socket, _request: bytes) -> None:
        """Read the request, never answer (until stopped)."""
        self._stop.wait(self.hang_seconds)

    def headers_then_hang(self, conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        self._stop.wait(self.hang_seconds)

    def keepalive_then_drop(self, conn: socket.socket, _request: bytes) -> None:
        """Answer 200 keeping the connection open; close it when the next request arrives.

        This is the keep-alive race: the server gives up an idle connection just as the client
        reuses it, so the client's request is written and the connection dies without an answer.
        """
        payload = b'{"taskId": "tsk_0", "status": 0, "creditsUsed": 3}'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        request = _read_request(conn)
        if request is not None:
            self.requests.append(request)
        conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            self.requests.append(request)
            behaviour = self.script.pop(0) if self.script else respond(500, {"error": "script exhausted"})
            with contextlib.suppress(OSError):
                behaviour(conn, request)

    def methods(self) -> list[str]:
        return [r.split(b" ", 1)[0].decode() for r in self.requests]

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2)


def _read_request(conn: socket.socket) -> bytes | None:
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    except OSError:
        return None


def refused_url() -> str:
    """A loopback URL where nothing listens (the port was just released)."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"
