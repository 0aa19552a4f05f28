"""The provider simulator: a local stand-in for the GPT Image 2 HTTP API (see docs/simulator.md).

    from imagejobs_tools.sim import SimulatorConfig, start_simulator
    with start_simulator(SimulatorConfig(api_keys={"sk_test_a": 1000}, latency=(0.05, 0.1))) as sim:
        sim.url, sim.admin.stats()

Standard library only, so `imagejobs sim` starts fast.
"""

from imagejobs_tools.sim.admin import SimulatorAdmin, SimulatorAdminError, mask_key
from imagejobs_tools.sim.config import ConfigError, FaultConfig, SimulatorConfig
from imagejobs_tools.sim.server import Simulator, start_simulator

__all__ = [
    "ConfigError",
    "FaultConfig",
    "Simulator",
    "SimulatorAdmin",
    "SimulatorAdminError",
    "SimulatorConfig",
    "mask_key",
    "start_simulator",
]
