"""Suite 5b, hostile outputs: what the copier refuses, without exhausting memory or time.

A local HTTP server (127.0.0.1, allow-listed like the simulator on the local stack) serves
text instead of images, oversize bodies (declared and undeclared), a body that dribbles,
and redirects to metadata/loopback addresses. Each must be refused with its code and leave
nothing in S3 (no object, no unfinished multipart upload); peak Python memory is measured.
"""

from __future__ import annotations

import contextlib
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import requests

from imagejobs_tools.reliability.report import SuiteReport

MIB = 1024 * 1024
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
CAP_BYTES = 12 * MIB
SLOW_SECONDS = 1.0  # the copier's overall deadline in this suite


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _stream(self, total: int, delay: float = 0.0, chunk: int = 256 * 1024) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()  # no Content-Length: the size is only known by reading
        sent = 0
        block = PNG_HEAD + b"\x00" * (chunk - len(PNG_HEAD))
        try:
            while sent < total:
                self.wfile.write(block if sent == 0 else b"\x00" * chunk)
                sent += chunk
                if delay:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the copier hung up: exactly what we want

    def do_GET(self) -> None:
        port = int(self.server.server_address[1])  # type: ignore[index]
        path = self.path
        if path == "/html":
            self._send(
                200, {"Content-Type": "image/png", "Content-Length": "31"}, b"<html><body>hello</body></html>"
            )
        elif path == "/json":
            self._send(200, {"Content-Type": "image/png", "Content-Length": "15"}, b'{"error": "no"}')
        elif path == "/video-for-image":
            body = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20
            self._send(200, {"Content-Length": str(len(body))}, body)
        elif path == "/declared-huge":
            self._send(200, {"Content-Type": "image/png", "Content-Length": str(10 * 1024 * MIB)})
        elif path == "/undeclared-huge":
            self._stream(200 * MIB)
        elif path == "/slow":
            self._stream(64 * MIB, delay=0.05, chunk=4096)
        elif path == "/redirect-metadata":
            self._send(302, {"Location": "http://169.254.169.254/latest/meta-data/", "Content-Length": "0"})
        elif path == "/redirect-loopback":
            self._send(302, {"Location": "http://127.0.0.1:1/x.png", "Content-Length": "0"})
        elif path == "/redirect-file":
            self._send(302, {"Location": "file:///etc/passwd", "Content-Length": "0"})
        elif path == "/redirect-loop":
            self._send(302, {"Location": f"http://127.0.0.1:{port}/redirect-loop", "Content-Length": "0"})
        elif path == "/missing":
            self._send(404, {"Content-Length": "0"})
        else:
            self._send(404, {"Content-Length": "0"})


@contextlib.contextmanager
def hostile_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class OutputCase:
    path: str
    expect: str  # OutputCopyError code, or "TRANSIENT" for TransientCopyError
    kind: str = "image"


CASES = (
    OutputCase("/html", "UNEXPECTED_CONTENT"),
    OutputCase("/json", "UNEXPECTED_CONTENT"),
    OutputCase("/video-for-image", "UNEXPECTED_CONTENT"),
    OutputCase("/declared-huge", "OUTPUT_TOO_LARGE"),
    OutputCase("/undeclared-huge", "OUTPUT_TOO_LARGE"),
    OutputCase("/slow", "TRANSIENT"),
    OutputCase("/redirect-metadata", "UNSAFE_OUTPUT_URL"),
    OutputCase("/redirect-loopback", "UNSAFE_OUTPUT_URL"),
    OutputCase("/redirect-file", "UNSAFE_OUTPUT_URL"),
    OutputCase("/redirect-loop", "UNSAFE_OUTPUT_URL"),
    OutputCase("/missing", "OUTPUT_FETCH_FAILED"),
)


class _DiscardingS3:
    """Takes uploads without keeping them, so the memory pass measures the copier alone."""

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "u"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        return {"ETag": '"e"'}

    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def _copy_all(copier: Any, host: str, *, measure: bool) -> tuple[dict[str, str], dict[str, float]]:
    from imagejobs.copier import OutputCopyError, TransientCopyError

    outcomes: dict[str, str] = {}
    peaks: dict[str, float] = {}
    for case in CASES:
        if measure:
            tracemalloc.start()
        try:
            copier.copy_one(f"http://{host}{case.path}", f"outputs/job{case.path}/0", kind=case.kind)
            outcomes[case.path] = "COPIED"
        except OutputCopyError as refused:
            outcomes[case.path] = refused.code
        except TransientCopyError:
            outcomes[case.path] = "TRANSIENT"
        except Exception as exc:  # anything else is a crash the suite reports
            outcomes[case.path] = f"CRASH {type(exc).__name__}: {exc}"
        finally:
            if measure:
                peaks[case.path] = round(tracemalloc.get_traced_memory()[1] / MIB, 1)
                tracemalloc.stop()
    return outcomes, peaks


def run_outputs() -> SuiteReport:
    from imagejobs.copier import OutputCopier
    from moto import mock_aws

    report = SuiteReport("outputs")
    started = time.perf_counter()
    bucket = "imagejobs-reliability-outputs"

    def copier_for(s3: Any, host: str) -> Any:
        return OutputCopier(
            requests.Session(),
            s3,
            bucket,
            max_bytes=CAP_BYTES,
            allow_hosts=(host,),
            part_size=5 * MIB,
            read_timeout=5.0,
            deadline_seconds=SLOW_SECONDS,
        )

    with hostile_server() as host:
        # Pass 1, real (moto) S3: refusals and leftovers.
        with mock_aws():
            s3 = boto3.Session(region_name="us-east-1").client("s3")
            s3.create_bucket(Bucket=bucket)
            outcomes, _ = _copy_all(copier_for(s3, host), host, measure=False)
            objects = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
            uploads = len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
        # Pass 2, S3 that keeps nothing: the copier's own peak memory per case.
        _, peaks = _copy_all(copier_for(_DiscardingS3(), host), host, measure=True)
    report.wall_seconds = time.perf_counter() - started
    report.jobs_sent = len(CASES)
    for case in CASES:
        report.terminal[outcomes[case.path]] = report.terminal.get(outcomes[case.path], 0) + 1
    wrong = {c.path: outcomes[c.path] for c in CASES if outcomes[c.path] != c.expect}
    peak = max(peaks.values())
    report.extra["outcomes"] = outcomes
    report.extra["peak memory MiB"] = peaks
    report.extra["cap MiB"] = CAP_BYTES // MIB
    report.check("every hostile output refused with its code", not wrong)
    report.check("no S3 object and no unfinished multipart upload left", objects == 0 and uploads == 0)
    # Streaming: the copier holds about one 5 MiB part (plus joins), never the 10 GiB / 200 MiB body.
    report.check("copier peak memory below 4 parts (20 MiB) for 10 GiB/200 MiB bodies", peak < 20)
    for path, got in wrong.items():
        report.notes.append(f"{path}: got {got}")
    return report
