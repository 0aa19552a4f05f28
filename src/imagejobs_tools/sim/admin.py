"""A small client for the simulator's admin endpoints (``/_sim/...``), stdlib only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from imagejobs_tools.sim.state import mask_key

__all__ = ["SimulatorAdmin", "SimulatorAdminError", "mask_key"]


class SimulatorAdminError(RuntimeError):
    """An admin call answered with an error status; the message carries the simulator's reason."""


class SimulatorAdmin:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise SimulatorAdminError(f"{method} {path}: HTTP {error.code}: {detail}") from None

    def stats(self) -> dict[str, Any]:
        """Per-key ledger (keyed by ``mask_key(key)``), request counters, injected faults, current faults."""
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def key_stats(self, key: str) -> dict[str, Any]:
        """One key's entry of ``stats()``: balance, spent, refunded, net, tasksCreated, byStatus."""
        entry: dict[str, Any] = self.stats()["keys"][mask_key(key)]
        return entry

    def tasks(self) -> list[dict[str, Any]]:
        """Every task: masked key, model, prompt, status, inputs fetched, injected faults."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/tasks")["tasks"]
        return result

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings (FaultConfig field names); returns all current settings."""
        result: dict[str, Any] = self._call("POST", "/_sim/faults", settings)["faults"]
        return result

    def set_credits(self, key: str, credits: int) -> dict[str, Any]:
        """Set a key's balance (the key is created if unknown); returns the key's stats."""
        result: dict[str, Any] = self._call("POST", "/_sim/keys", {"key": key, "credits": credits})
        return result

    def add_key(self, key: str, credits: int) -> dict[str, Any]:
        return self.set_credits(key, credits)

    def configure(
        self,
        shape: str | None = None,
        latency: tuple[float, float] | None = None,
        video_latency: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        if shape is not None:
            payload["shape"] = shape
        if latency is not None:
            payload["latency"] = list(latency)
        if video_latency is not None:
            payload["videoLatency"] = list(video_latency)
        result: dict[str, Any] = self._call("POST", "/_sim/config", payload)
        return result

    def release(self, task_id: str) -> int:
        """End a pending task's latency now; returns its status (0 while input fetches are still running)."""
        status: int = self._call("POST", f"/_sim/tasks/{task_id}/release", {})["status"]
        return status

    def reset(self) -> None:
        """Forget every task; restore the starting keys, credits, faults, shape and RNG seed."""
        self._call("POST", "/_sim/reset", {})
