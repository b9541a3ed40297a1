"""The gateway simulator: a vLLM-like server on loopback to rehearse caps against.

``model`` holds the timing model (continuous batching or serial decoding) and its
Prometheus metrics; ``server`` serves it over vLLM's OpenAI-compatible routes. The
demo, the benchmarks and the tests all run this one simulator.
"""

from lanewarden.bot.simulator.model import ServerModel
from lanewarden.bot.simulator.server import GatewaySimulator, add_simulator_options, run_simulator

__all__ = ["GatewaySimulator", "ServerModel", "add_simulator_options", "run_simulator"]
