"""The simulator's HTTP server (stdlib ``ThreadingHTTPServer``) and its running handle."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import urlsplit

from imagejobs_tools.sim import media
from imagejobs_tools.sim.admin import SimulatorAdmin
from imagejobs_tools.sim.catalog import (
    BodyError,
    Kind,
    ValidationErrors,
    form_error,
    invalid_request_body,
    parse_json_body,
    validate_submission,
)
from imagejobs_tools.sim.config import (
    SHAPES,
    ConfigError,
    SimulatorConfig,
    validate_latency,
)
from imagejobs_tools.sim.state import (
    InsufficientCredits,
    SimulatorState,
    Task,
    fetch_inputs,
    is_task_id,
)

# Bodies over the cap are read and discarded up to this size so the client gets the 400
# instead of a reset while it is still sending; beyond it the connection is closed.
DRAIN_LIMIT = 64 * 1024 * 1024
_READ_BLOCK = 64 * 1024
SUBMIT_ROUTES: dict[str, Kind] = {"/api/ai/image/generate": "image", "/api/ai/video/generate": "video"}
TASK_ROUTE_PREFIX = "/api/ai/tasks/"
FILE_ROUTE_PREFIX = "/files/"
ADMIN_PREFIX = "/_sim/"
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "mp4": "video/mp4"}


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging request must not block stop()
    request_queue_size = 512  # hundreds of concurrent clients connect at once

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, ProviderRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections too, so a stopped simulator answers nobody."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ProviderRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imagejobs-provider-simulator/0.1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in separate writes; no 40 ms delayed-ACK stalls
    server: SimulatorHTTPServer

    # --- plumbing --------------------------------------------------------------------

    @property
    def sim(self) -> Simulator:
        return self.server.simulator

    @property
    def state(self) -> SimulatorState:
        return self.server.simulator.state

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own logging is off; see _log_request."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) as JSON too."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # unparsable request line: still answer with a status line
            self.request_version = "HTTP/1.0"
        reason = message or HTTPStatus(code).phrase
        payload = form_error(reason) if code == 400 else {"error": reason}
        with contextlib.suppress(OSError):
            self._send_json(code, payload)

    def _dispatch(self) -> None:
        started = time.monotonic()
        self._status: int | str = "-"
        path = urlsplit(self.path).path
        try:
            self._route(self.command, path)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            self._status = "client-gone"
        except Exception:
            self.state.count_internal_error()
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            if self._status == "-":
                with contextlib.suppress(OSError):
                    self._send_json(500, {"error": "Internal server error"})
        finally:
            self._log_request(path, started)

    def _log_request(self, path: str, started: float) -> None:
        stream: TextIO | None = self.sim.log_stream
        if stream is None:
            return
        elapsed_ms = (time.monotonic() - started) * 1000
        # Only method, path and status: headers (and so API keys) are never logged.
        print(f"{self.command} {path} {self._status} {elapsed_ms:.0f}ms", file=stream, flush=True)

    def _send_json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = json.dumps(payload, ensure_ascii=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status = status
        if self.command != "HEAD":
            self.wfile.write(body)

    def _count(self, route: str) -> None:
        self.state.count_request(route)

    # --- routing ---------------------------------------------------------------------

    def _route(self, method: str, path: str) -> None:
        if path.startswith(ADMIN_PREFIX):
            self._admin(method, path)
        elif path in SUBMIT_ROUTES:
            if method != "POST":
                self._method_not_allowed("POST")
            else:
                self._submit(SUBMIT_ROUTES[path])
        elif path.startswith(TASK_ROUTE_PREFIX):
            if method != "GET":
                self._method_not_allowed("GET")
            else:
                self._poll(path[len(TASK_ROUTE_PREFIX) :])
        elif path.startswith(FILE_ROUTE_PREFIX):
            if method not in ("GET", "HEAD"):
                self._method_not_allowed("GET, HEAD")
            else:
                self._file(path[len(FILE_ROUTE_PREFIX) :])
        else:
            self._discard_body()
            self._send_json(404, {"error": "Not found"})

    def _method_not_allowed(self, allowed: str) -> None:
        self._discard_body()
        self._send_json(405, {"error": "Method not allowed"}, [("Allow", allowed)])

    # --- request bodies --------------------------------------------------------------

    def _discard_body(self) -> None:
        """Drop whatever body came with a request we answer without it, so keep-alive stays in sync;
        a body we will not read (chunked, huge, or badly framed) closes the connection instead."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return
        length = _parse_content_length(length_header)
        if length is None or length > DRAIN_LIMIT:
            self.close_connection = True
        else:
            self._skip(length)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400 (bad framing, or over the size cap)."""
        cap = self.sim.config.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(cap)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        length = _parse_content_length(length_header)
        if length is None:
            self.close_connection = True
            self._send_json(400, form_error("Invalid Content-Length header"))
            return None
        if length > cap:
            if length <= DRAIN_LIMIT:
                self._skip(length)
            else:
                self.close_connection = True
            self._send_json(400, form_error(f"Request body is larger than {cap} bytes"))
            return None
        return self.rfile.read(length)

    def _skip(self, length: int) -> None:
        while length > 0:
            block = self.rfile.read(min(length, _READ_BLOCK))
            if not block:
                break
            length -= len(block)

    def _read_chunked(self, cap: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size < 0:
                    raise ValueError(line)
            except ValueError:
                self.close_connection = True
                self._send_json(400, form_error("Malformed chunked request body"))
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > DRAIN_LIMIT:
                self.close_connection = True
                break
            if total <= cap:
                parts.append(self.rfile.read(size))
            else:
                self._skip(size)
            self.rfile.readline(3)
        if total > cap:
            self._send_json(400, form_error(f"Request body is larger than {cap} bytes"))
            return None
        return b"".join(parts)

    def _read_json(self) -> tuple[bool, Any]:
        """(True, value) or (False, None) after answering 400 with the reason."""
        raw = self._read_body()
        if raw is None:
            return False, None
        try:
            return True, parse_json_body(raw)
        except BodyError as error:
            self._send_json(400, form_error(str(error)))
            return False, None

    # --- provider API ----------------------------------------------------------------

    def _api_key(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not self.state.is_known_key(token):
            return None
        return token

    def _common_faults(self, route: str, key: str | None) -> bool:
        """Auth, then injected 429/500; True when a response was already sent."""
        if key is None:
            self._send_json(401, {"error": "Unauthorized"})
            return True
        if self.state.roll("rate_429"):
            retry_after = self.state.faults.retry_after
            self._send_json(429, {"error": "Too many requests"}, [("Retry-After", str(retry_after))])
            return True
        fault = "submit_500_rate" if route == "submit" else "poll_500_rate"
        if self.state.roll(fault):
            self._send_json(500, {"error": "Internal server error"})
            return True
        return False

    def _submit(self, kind: Kind) -> None:
        self._count(f"submit_{kind}")
        accepted = self._authenticated_json()
        if accepted is None:
            return
        key, body = accepted
        request, errors = validate_submission(kind, body)
        if request is None:
            self._send_json(400, invalid_request_body(errors))
            return
        try:
            task = self.state.create_task(key, request)
        except InsufficientCredits as short:
            self._send_json(402, {"error": "Insufficient credits", "required": short.required})
            return
        if request.input_image_urls:
            threading.Thread(
                target=fetch_inputs, args=(self.state, task), name=f"sim-fetch-{task.task_id}", daemon=True
            ).start()
        if self.state.roll("lost_response_rate"):
            self.state.note_fault(task, "lost_response")
            self._drop_connection()
            return
        self._maybe_hang(task)
        self._send_json(200, {"taskId": task.task_id, "status": 0, "creditsUsed": request.credits})

    def _authenticated_json(self) -> tuple[str, Any] | None:
        """(key, parsed body), or None after answering 400/401/429/500."""
        # The body is read first either way, so a keep-alive connection stays in sync.
        raw = self._read_body()
        if raw is None:
            return None
        key = self._api_key()
        if self._common_faults("submit", key) or key is None:
            return None
        try:
            return key, parse_json_body(raw)
        except BodyError as error:
            self._send_json(400, form_error(str(error)))
            return None

    def _drop_connection(self) -> None:
        """'Accepted but the response is lost': close the socket without a byte of response."""
        self.close_connection = True
        self._status = "lost"
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _maybe_hang(self, task: Task | None) -> None:
        if not self.state.roll("hang_rate"):
            return
        if task is not None:
            self.state.note_fault(task, "hang")
        self.server.stopping.wait(self.state.faults.hang_seconds)

    def _poll(self, task_id: str) -> None:
        self._count("poll")
        self._discard_body()
        key = self._api_key()
        if self._common_faults("poll", key):
            return
        task = self.state.find_task(task_id, key) if is_task_id(task_id) else None
        if task is None:
            self._send_json(404, {"error": "Task not found"})
            return
        self._maybe_hang(None)
        self._send_json(200, self.state.snapshot(task, self.sim.public_url))

    # --- output files ----------------------------------------------------------------

    def _file(self, rest: str) -> None:
        self._count("file")
        task_id, _, name = rest.partition("/")
        task = self.state.find_task(task_id, None) if is_task_id(task_id) else None
        if task is None or name not in task.output_names():
            self._send_json(404, {"error": "File not found"})
            return
        extension = name.rsplit(".", 1)[1]
        index = int(name.split(".", 1)[0])
        size, chunks = output_file(task, index)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES[extension])
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "public, max-age=86400")
        self.end_headers()
        self._status = 200
        if self.command == "HEAD":
            return
        self._write_throttled(chunks, self.state.faults.slow_output_bytes_per_second)

    def _write_throttled(self, chunks: Iterable[bytes], bytes_per_second: int) -> None:
        for chunk in chunks:
            if not bytes_per_second:
                self.wfile.write(chunk)
                continue
            step = max(1, bytes_per_second // 20)
            for offset in range(0, len(chunk), step):
                piece = chunk[offset : offset + step]
                self.wfile.write(piece)
                if self.server.stopping.wait(len(piece) / bytes_per_second):
                    self.close_connection = True
                    return

    # --- admin -----------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        if not _is_loopback(self.client_address[0]):
            self._discard_body()
            self._send_json(403, {"error": "The simulator's admin endpoints answer loopback clients only"})
            return
        name = path[len(ADMIN_PREFIX) :]
        if method == "POST" and name.startswith("tasks/") and name.endswith("/release"):
            self._admin_release(name[len("tasks/") : -len("/release")])
            return
        routes = {
            ("GET", "stats"): self._admin_stats,
            ("GET", "tasks"): self._admin_tasks,
            ("GET", "faults"): self._admin_get_faults,
            ("POST", "faults"): self._admin_set_faults,
            ("POST", "keys"): self._admin_keys,
            ("POST", "reset"): self._admin_reset,
            ("GET", "config"): self._admin_get_config,
            ("POST", "config"): self._admin_config,
            ("GET", "health"): self._admin_health,
        }
        handler = routes.get((method, name))
        if handler is None:
            self._discard_body()
            known = any(route_name == name for _, route_name in routes)
            self._send_json(405 if known else 404, {"error": "Method not allowed" if known else "Not found"})
            return
        handler()

    def _admin_object(self) -> dict[str, Any] | None:
        ok, body = self._read_json()
        if not ok:
            return None
        if not isinstance(body, dict):
            self._send_json(400, form_error("Expected a JSON object"))
            return None
        return body

    def _admin_stats(self) -> None:
        self._send_json(200, self.state.stats())

    def _admin_tasks(self) -> None:
        self._send_json(200, {"tasks": self.state.listing()})

    def _admin_get_faults(self) -> None:
        self._send_json(200, {"faults": self.state.faults.as_dict()})

    def _admin_health(self) -> None:
        self._send_json(200, {"ok": True, "url": self.sim.url})

    def _admin_set_faults(self) -> None:
        body = self._admin_object()
        if body is None:
            return
        try:
            faults = self.state.set_faults(body)
        except (ConfigError, TypeError) as error:
            self._send_json(400, _field_error("faults", str(error)))
            return
        self._send_json(200, {"faults": faults.as_dict()})

    def _admin_keys(self) -> None:
        body = self._admin_object()
        if body is None:
            return
        errors = ValidationErrors()
        key, credits = body.get("key"), body.get("credits")
        if not isinstance(credits, int) or isinstance(credits, bool) or credits < 0:
            errors.add("credits", "credits must be a non-negative integer")
        try:
            stats = self.state.set_credits(key, credits) if not errors else None  # type: ignore[arg-type]
        except ConfigError as error:
            errors.add("key", str(error))
            stats = None
        if stats is None:
            self._send_json(400, invalid_request_body(errors))
            return
        self._send_json(200, stats)

    def _admin_release(self, task_id: str) -> None:
        self._discard_body()
        task = self.state.release(task_id)
        if task is None:
            self._send_json(404, {"error": "Task not found"})
            return
        self._send_json(200, {"taskId": task.task_id, "status": task.status})

    def _admin_reset(self) -> None:
        self._discard_body()
        self.state.reset()
        self._send_json(200, {"ok": True})

    def _admin_get_config(self) -> None:
        self._send_json(200, self.state.current_config())

    def _admin_config(self) -> None:
        body = self._admin_object()
        if body is None:
            return
        errors = ValidationErrors()
        shape = body.get("shape")
        if shape is not None and shape not in SHAPES:
            errors.add("shape", f"shape must be one of {', '.join(SHAPES)}")
        ranges: dict[str, tuple[float, float] | None] = {}
        for name in ("latency", "videoLatency"):
            value = body.get(name)
            ranges[name] = None
            if value is None:
                continue
            if not isinstance(value, list):
                errors.add(name, f"{name} must be [MIN, MAX] seconds")
                continue
            try:
                ranges[name] = validate_latency(name, value)
            except ConfigError as error:
                errors.add(name, str(error))
        if errors:
            self._send_json(400, invalid_request_body(errors))
            return
        self._send_json(200, self.state.configure(shape, ranges["latency"], ranges["videoLatency"]))


def _parse_content_length(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _field_error(name: str, message: str) -> dict[str, Any]:
    errors = ValidationErrors()
    errors.add(name, message)
    return invalid_request_body(errors)


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def output_file(task: Task, index: int) -> tuple[int, Iterator[bytes]]:
    """(size, byte chunks) of one output file of a completed task."""
    request = task.request
    if task.kind == "video":
        data = media.render_mp4(request.prompt, request.duration or 5)
        return len(data), iter((data,))
    width, height = task.image_size()
    if task.output_format == "jpeg":
        data = media.render_jpeg(request.prompt, width, height, index)
        return len(data), iter((data,))
    png = media.render_png(request.prompt, width, height, index)
    target = request.sim.output_bytes if index == 0 else None
    return media.padded_png_size(png, target), media.iter_padded_png(png, target)


class Simulator:
    """A running simulator: ``.url``, ``.admin``, ``.state``, ``.stop()``; a context manager."""

    def __init__(self, config: SimulatorConfig, log_stream: TextIO | None = None) -> None:
        self.config = config.validated()
        self.state = SimulatorState(self.config)
        self.log_stream = (
            log_stream if log_stream is not None else (sys.stderr if config.log_requests else None)
        )
        self._server = SimulatorHTTPServer((config.host, config.port), self)
        host, port = self._server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        url_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.url = f"http://{url_host}:{self.port}"
        self.public_url = (config.public_base_url or self.url).rstrip("/")
        self.admin = SimulatorAdmin(self.url)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="provider-simulator",
            daemon=True,
        )

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release hanging/slow responses; idempotent."""
        if self._server.stopping.is_set():
            return
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig | None = None, log_stream: TextIO | None = None) -> Simulator:
    """Bind, start serving on a background thread and return the running handle."""
    return Simulator(config or SimulatorConfig(), log_stream=log_stream).start()
