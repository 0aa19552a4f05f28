"""Process-wide tweaks that make moto's server cheaper per request; `install()` returns the undo.

None of them changes what any API returns:

- moto's server lists and stats its own package directory on every request, under one global
  lock, to tell service names from hosts; the listing never changes while the process runs.
- moto's Step Functions interpreter logs every false `IsPresent` choice (and every caught Task
  error) at ERROR with the component's repr: noise, and CPU, on every pending poll.

- werkzeug 3 answers HTTP/1.1 but sends `Connection: close` on every response (its request loop
  cannot drain a body it did not read, and drains the socket after each response), so every AWS
  call paid a new TCP connection, server thread, getaddrinfo and teardown: the largest CPU share
  of a loaded stack. `KeepAliveRequestHandler` reads each request body exactly (Content-Length
  or chunked) before the app runs, hands werkzeug's after-response drain an empty stream, and
  keeps the connection unless the client asked to close it.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from imagejobs_tools.local.patching import Undo, apply_all

# Loggers silenced while a stack runs, and the level they get.
QUIET_LOGGERS = {"moto.stepfunctions.parser": logging.CRITICAL}
# An idle kept-alive connection is closed after this long (clients' pools notice and reconnect).
IDLE_CONNECTION_SECONDS = 30.0


def install() -> Undo:
    """Apply every tweak; the returned callable restores what was there before (call it once)."""
    return apply_all((_cache_module_listing, _quiet_loggers, _keep_alive))


def _cache_module_listing() -> Callable[[], None]:
    from moto import backends

    original = backends.list_of_moto_modules
    modules = tuple(original())
    backends.list_of_moto_modules = lambda: modules

    def restore() -> None:
        backends.list_of_moto_modules = original

    return restore


def _quiet_loggers() -> Callable[[], None]:
    previous = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)

    def restore() -> None:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)

    return restore


def _keep_alive() -> Callable[[], None]:
    from moto.moto_server import threaded_moto_server

    original = threaded_moto_server.MotoRequestHandler
    threaded_moto_server.MotoRequestHandler = keep_alive_handler_class()  # type: ignore[misc]

    def restore() -> None:
        threaded_moto_server.MotoRequestHandler = original  # type: ignore[misc]

    return restore


_HANDLER_CLASS: Any = None
_HANDLER_LOCK = threading.Lock()


def keep_alive_handler_class() -> Any:
    """moto's request handler with HTTP/1.1 keep-alive (built once, on first use)."""
    global _HANDLER_CLASS
    with _HANDLER_LOCK:
        if _HANDLER_CLASS is None:
            _HANDLER_CLASS = _build_handler_class()
        return _HANDLER_CLASS


class _AlwaysAtEof:
    """A socket stand-in that is always readable and at end of file: werkzeug's after-response
    drain (select, then read) returns at once instead of eating the client's next request."""

    _read_end: int | None = None

    def fileno(self) -> int:
        if _AlwaysAtEof._read_end is None:
            read_end, write_end = os.pipe()
            os.close(write_end)
            _AlwaysAtEof._read_end = read_end
        return _AlwaysAtEof._read_end


def _build_handler_class() -> Any:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import DechunkedInput

    at_eof = _AlwaysAtEof()
    at_eof.fileno()  # create the pipe now, not concurrently from request threads

    class KeepAliveRequestHandler(MotoRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_CONNECTION_SECONDS  # socket timeout between requests (StreamRequestHandler)

        def make_environ(self) -> dict[str, Any]:
            environ: dict[str, Any] = super().make_environ()
            # Consume exactly this request's body, so the next request starts where it ends.
            if environ.get("wsgi.input_terminated") and isinstance(environ["wsgi.input"], DechunkedInput):
                body = environ["wsgi.input"].read()
            else:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = self.rfile.read(length) if length > 0 else b""
            environ["wsgi.input"] = io.BytesIO(body)
            # From here on werkzeug only reads `rfile`/`connection` to drain: give it nothing.
            self._kept_rfile, self._kept_connection = self.rfile, self.connection
            self.rfile, self.connection = io.BytesIO(), at_eof
            return environ

        def run_wsgi(self) -> None:
            try:
                super().run_wsgi()
            finally:
                if hasattr(self, "_kept_rfile"):
                    self.rfile, self.connection = self._kept_rfile, self._kept_connection
                    del self._kept_rfile, self._kept_connection

        def send_header(self, keyword: str, value: str) -> None:
            # werkzeug always adds "Connection: close"; keep the connection unless the client
            # asked to close it (http.server's parse_request already set close_connection then).
            if keyword.lower() == "connection" and value.lower() == "close" and not self.close_connection:
                return
            super().send_header(keyword, value)

        def log_error(self, format: str, *args: Any) -> None:
            if format.startswith("Request timed out"):
                return  # an idle kept-alive connection closing: routine, not an error
            super().log_error(format, *args)

    return KeepAliveRequestHandler
