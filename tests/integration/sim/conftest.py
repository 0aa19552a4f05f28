"""Fixtures for the simulator's HTTP tests: a running simulator, a requests session, and an
input-image server for image-to-image (every server binds 127.0.0.1:0 and is stopped here)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from PIL import Image

from imagejobs_tools.sim import Simulator, SimulatorConfig, start_simulator

KEY_A = "sk_test_alpha_0001"
KEY_B = "sk_test_bravo_0002"
START_CREDITS = 100
FAST = (0.0, 0.02)


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with any config; defaults: two keys with START_CREDITS each, near-zero latency."""
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        settings: dict[str, Any] = {
            "api_keys": {KEY_A: START_CREDITS, KEY_B: START_CREDITS},
            "latency": FAST,
            "video_latency": FAST,
            "seed": 7,
        }
        settings.update(overrides)
        simulator = start_simulator(SimulatorConfig(**settings))
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def submit(
    http: requests.Session, sim: Simulator, body: Any, key: str = KEY_A, kind: str = "image"
) -> requests.Response:
    return http.post(f"{sim.url}/api/ai/{kind}/generate", json=body, headers=auth(key), timeout=10)


def wait_terminal(
    http: requests.Session, sim: Simulator, task_id: str, key: str = KEY_A, timeout: float = 10
) -> dict[str, Any]:
    """Poll until status 1 or 2; returns the terminal snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"{sim.url}/api/ai/tasks/{task_id}", headers=auth(key), timeout=10)
        assert response.status_code == 200, response.text
        snapshot: dict[str, Any] = response.json()
        if snapshot["status"] in (1, 2):
            return snapshot
        assert time.monotonic() < deadline, f"task {task_id} still pending"
        time.sleep(0.01)


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


class InputServer:
    """Serves image-to-image inputs and records every path (with query) it was asked for."""

    def __init__(self) -> None:
        self.requested: list[str] = []
        self.lock = threading.Lock()
        owner = self
        jpeg = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 200, 10)).save(jpeg, format="JPEG")
        self.files = {
            "/in/ok.png": png_bytes(),
            "/in/photo.jpg": jpeg.getvalue(),
            "/in/notes.txt": b"just text",
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.requested.append(self.path)
                body = owner.files.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"missing"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def input_server() -> Iterator[InputServer]:
    server = InputServer()
    yield server
    server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.png"
