"""The simulated server's host, as dcgm-exporter and node_exporter would show it.

``GET /exporters/dcgm`` and ``GET /exporters/node`` on the simulator serve the real
exporters' metric names and label sets (one GPU, four CPUs), with figures that follow
the decode engine's load, so ``[gateways.sim] node_metrics`` in the demo reads a GPU
that gets busier and fuller as the dispatcher sends more:

* GPU busy: the tokens per second delivered since the previous scrape, as a share of
  what the model delivers at its knee (the batch a step holds at full speed);
* VRAM: the weights (a fixed share of the card) plus the KV cache in use;
* temperature and power rise with the busy share; the CPUs are busy a little when the
  GPU is (tokenising, the HTTP server), and ``node_load1`` follows the running batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from lanewarden.bot.simulator.model import DecodeEngine, SimulatorMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MIB = 1024 * 1024
VRAM_MIB = 24_576  # a 24 GiB card
WEIGHTS_SHARE = 0.55  # of the card, loaded at start
KV_SHARE = 0.40  # of the card, at a full KV cache
CPUS = 4
RAM_BYTES = 64 * 1024**3
GPU_LABELS = {
    "gpu": "0",
    "UUID": "GPU-5a1d0000-0000-4000-8000-000000000000",
    "pci_bus_id": "00000000:01:00.0",
    "device": "nvidia0",
    "modelName": "Simulated L4-24GB",
    "hostname": "lanewarden-sim",
}


class SimulatedHost:
    """Figures of the host behind one simulated server, read at scrape time."""

    def __init__(self, engine: DecodeEngine, metrics: SimulatorMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.started = time.monotonic()
        self._last_at = self.started
        self._last_tokens = 0.0
        self._busy = 0.0  # the GPU busy share over the last scrape interval
        self._cpu_busy_seconds = 0.0
        self._cpu_total_seconds = 0.0
        self.dcgm = CollectorRegistry(auto_describe=False)
        self.dcgm.register(_Collect(self._dcgm_families))
        self.node = CollectorRegistry(auto_describe=False)
        self.node.register(_Collect(self._node_families))

    def _advance(self) -> None:
        """Integrate the load since the previous scrape (either exporter's)."""
        now = time.monotonic()
        elapsed = now - self._last_at
        # both exporters are scraped together: the second one keeps the first one's figure
        if elapsed < 1.0:
            return
        # tokens of finished answers plus those of the answers still being written
        tokens = self.metrics.generation_tokens._value.get() + sum(g.generated for g in self.engine.running)
        peak = self.engine.model.tokens_per_second(self.engine.model.knee)
        delivered = max(0.0, tokens - self._last_tokens)  # a cancelled answer takes its tokens away
        self._busy = min(1.0, delivered / elapsed / peak) if peak else 0.0
        self._last_at, self._last_tokens = now, tokens
        self._cpu_total_seconds += elapsed * CPUS
        self._cpu_busy_seconds += elapsed * CPUS * (0.04 + 0.2 * self._busy)

    def gpu_util(self) -> float:
        return round(100 * self._busy)

    def vram_used_mib(self) -> float:
        return round(VRAM_MIB * (WEIGHTS_SHARE + KV_SHARE * self.engine.kv_cache_usage()))

    def dcgm_text(self) -> bytes:
        self._advance()
        return generate_latest(self.dcgm)

    def node_text(self) -> bytes:
        self._advance()
        return generate_latest(self.node)

    def _dcgm_families(self) -> Iterator[Metric]:
        used = self.vram_used_mib()
        figures = (
            ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", 34 + 40 * self._busy),
            ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", 16 + 56 * self._busy),
            ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", self.gpu_util()),
            ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", VRAM_MIB - used),
            ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", used),
        )
        for name, help_text, value in figures:
            family = GaugeMetricFamily(name, help_text, labels=list(GPU_LABELS))
            family.add_metric(list(GPU_LABELS.values()), round(value, 3))
            yield family

    def _node_families(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        per_cpu_busy = self._cpu_busy_seconds / CPUS
        per_cpu_total = self._cpu_total_seconds / CPUS
        for cpu in range(CPUS):
            seconds.add_metric([str(cpu), "idle"], per_cpu_total - per_cpu_busy)
            seconds.add_metric([str(cpu), "system"], per_cpu_busy * 0.3)
            seconds.add_metric([str(cpu), "user"], per_cpu_busy * 0.7)
        yield seconds
        load = GaugeMetricFamily("node_load1", "1m load average.")
        load.add_metric([], round(0.2 + len(self.engine.running) / 4, 2))
        yield load
        total = GaugeMetricFamily("node_memory_MemTotal_bytes", "Memory information field MemTotal_bytes.")
        total.add_metric([], RAM_BYTES)
        yield total
        available = GaugeMetricFamily(
            "node_memory_MemAvailable_bytes", "Memory information field MemAvailable_bytes."
        )
        available.add_metric([], RAM_BYTES * (0.62 - 0.05 * self._busy))
        yield available


class _Collect(Collector):
    def __init__(self, families: object) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()  # type: ignore[operator]
