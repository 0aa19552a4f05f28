"""A webhook receiver for the local stack's tests and suites: plain http on loopback.

The local stack allow-lists its `host:port` in URL_ALLOW_HOSTS (`running_stack(allow_hosts=...)`), as
it does the simulator's, so intake and WebhookFunction accept the http URL. ``answer(path, webhook_id,
attempt)`` decides each response: an HTTP status, or None to read the request and then drop the
connection unanswered (the sender sees a connection error: a delivery whose 200 was lost).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Answer = Callable[[str, str, int], int | None]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str
    status: int | None  # None: the connection was dropped unanswered
    at: float  # Unix time of arrival (a receiver checks the timestamp against its own clock)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    def __init__(self, answer: Answer) -> None:
        self._requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {name.lower(): value for name, value in self.headers.items()}
                webhook_id = headers.get("webhook-id", "")
                with receiver._lock:
                    attempt = 1 + sum(
                        1 for r in receiver._requests if r.path == self.path and r.webhook_id == webhook_id
                    )
                    status = answer(self.path, webhook_id, attempt)
                    receiver._requests.append(Received(self.path, headers, body, status, arrived))
                if status is None:
                    self.close_connection = True  # no status line: the sender's request fails
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def attempts(self, path: str) -> Counter[str]:
        """webhook-id -> requests received for it on ``path``."""
        return Counter(r.webhook_id for r in self.received(path))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
