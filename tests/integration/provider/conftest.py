from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagejobs_tools.sim import Simulator, SimulatorConfig, start_simulator

KEY_A = "sk_test_a"
KEY_B = "sk_test_b"


@pytest.fixture(scope="module")
def simulator_server() -> Iterator[Simulator]:
    sim = start_simulator(
        SimulatorConfig(port=0, api_keys={KEY_A: 1000, KEY_B: 1000}, latency=(0.0, 0.05), seed=7)
    )
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim(simulator_server: Simulator) -> Simulator:
    """The module's simulator, reset to its starting keys, credits and (no) faults."""
    simulator_server.admin.reset()
    return simulator_server
