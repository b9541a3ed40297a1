"""Node health: what the exporters beside a gateway say about its GPUs, CPU and RAM.

``[gateways.<g>] node_metrics`` lists Prometheus endpoints on the gateway's host. Each
scrape is parsed with prometheus-client's text parser and reduced to a few figures:

* NVIDIA dcgm-exporter: ``DCGM_FI_DEV_GPU_UTIL`` (%), ``DCGM_FI_DEV_FB_USED`` and
  ``DCGM_FI_DEV_FB_FREE`` (+ ``FB_RESERVED``, or ``FB_TOTAL`` when enabled; MiB),
  ``DCGM_FI_DEV_GPU_TEMP`` (C) and ``DCGM_FI_DEV_POWER_USAGE`` (W). A MIG GPU has no
  ``GPU_UTIL``; ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (0..1) stands in when it is enabled.
* node_exporter: ``node_cpu_seconds_total`` (counters: busy share comes from two
  scrapes), ``node_load1``, ``node_memory_MemTotal_bytes`` and
  ``node_memory_MemAvailable_bytes`` (MemFree + Buffers + Cached on kernels before 3.14).
* AMD device-metrics-exporter: ``gpu_gfx_activity`` (%), ``gpu_used_vram``,
  ``gpu_total_vram``/``gpu_free_vram`` (MB), ``gpu_junction_temperature`` or
  ``gpu_edge_temperature``, ``gpu_package_power`` or ``gpu_power_usage``; the names may
  carry the ``amd_`` prefix its example configs set.

One physical GPU can appear several times: once per MIG instance (each with its own
slice of memory: summed) and once more per extra ``container``/``namespace``/``pod``
label set (the same figure again: not summed). Label spellings differ between versions
(``UUID``/``uuid``, ``Hostname``/``hostname``); only ``gpu``/``gpu_id`` and the UUID
identify a GPU here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from lanewarden.core.signals import prometheus_samples

MIB = 1024 * 1024
AMD_PREFIX = "amd_"
DCGM_FAMILIES = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_FB_TOTAL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
)
NODE_FAMILIES = (
    "node_cpu_seconds_total",
    "node_load1",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
)
AMD_FAMILIES = (
    "gpu_gfx_activity",
    "gpu_used_vram",
    "gpu_total_vram",
    "gpu_free_vram",
    "gpu_junction_temperature",
    "gpu_edge_temperature",
    "gpu_package_power",
    "gpu_power_usage",
)
FAMILIES = DCGM_FAMILIES + NODE_FAMILIES + AMD_FAMILIES + tuple(AMD_PREFIX + f for f in AMD_FAMILIES)

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One physical GPU (all its MIG instances together)."""

    gpu: str  # the exporter's index ("0") or, failing that, its UUID
    model: str | None
    util: float | None  # percent busy, 0..100
    vram_used_bytes: float | None
    vram_total_bytes: float | None
    temperature_c: float | None
    power_w: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "model": self.model,
            "util": self.util,
            "vram_used_bytes": self.vram_used_bytes,
            "vram_total_bytes": self.vram_total_bytes,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuReading:
        return cls(**{k: data.get(k) for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class CpuCounters:
    """node_cpu_seconds_total summed over every CPU: busy (every mode but idle) and total."""

    busy_seconds: float
    total_seconds: float
    cpus: int


@dataclass(frozen=True, slots=True)
class ExporterReading:
    """What one scrape of one endpoint said (any exporter; absent figures are None)."""

    gpus: tuple[GpuReading, ...] = ()
    cpu: CpuCounters | None = None
    load1: float | None = None
    ram_total_bytes: float | None = None
    ram_available_bytes: float | None = None
    kinds: tuple[str, ...] = ()  # "dcgm", "node", "amd": what was recognised

    @property
    def empty(self) -> bool:
        return not self.kinds


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """A gateway's host at one moment: every exporter of it merged, GPUs aggregated."""

    gpu_util: float | None = None  # mean percent over the GPUs that report it
    vram_used_bytes: float | None = None  # summed over GPUs
    vram_total_bytes: float | None = None
    gpu_temperature_c: float | None = None  # the hottest
    gpu_power_w: float | None = None  # summed
    cpu_busy: float | None = None  # 0..1 over every CPU, between two scrapes
    load1: float | None = None
    ram_available_bytes: float | None = None
    ram_total_bytes: float | None = None
    gpus: tuple[GpuReading, ...] = ()
    errors: tuple[str, ...] = field(default=())

    @property
    def known(self) -> bool:
        """Did any exporter answer with something we read? (else: unknown, never "down")"""
        return any(
            v is not None
            for v in (self.gpu_util, self.vram_used_bytes, self.cpu_busy, self.load1, self.ram_total_bytes)
        ) or bool(self.gpus)

    @property
    def vram_ratio(self) -> float | None:
        if self.vram_used_bytes is None or not self.vram_total_bytes:
            return None
        return self.vram_used_bytes / self.vram_total_bytes

    @property
    def ram_available_ratio(self) -> float | None:
        if self.ram_available_bytes is None or not self.ram_total_bytes:
            return None
        return self.ram_available_bytes / self.ram_total_bytes


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One stored round for one gateway: its host's figures and the board's view of it."""

    gateway: str
    at: datetime
    known: bool
    figures: NodeFigures
    in_flight: int
    limit: int
    cap: int
    waiting: int

    def to_json(self) -> dict[str, Any]:
        f = self.figures
        return {
            "gateway": self.gateway,
            "at": self.at.isoformat(),
            "known": self.known,
            "gpu_util": f.gpu_util,
            "vram_used_bytes": f.vram_used_bytes,
            "vram_total_bytes": f.vram_total_bytes,
            "gpu_temperature_c": f.gpu_temperature_c,
            "gpu_power_w": f.gpu_power_w,
            "cpu_busy": f.cpu_busy,
            "load1": f.load1,
            "ram_available_bytes": f.ram_available_bytes,
            "ram_total_bytes": f.ram_total_bytes,
            "gpus": [g.to_json() for g in f.gpus],
            "errors": list(f.errors),
            "in_flight": self.in_flight,
            "limit": self.limit,
            "cap": self.cap,
            "waiting": self.waiting,
        }


def reading_from_row(row: Any) -> NodeReading:
    detail = row.detail or {}
    figures = NodeFigures(
        gpu_util=row.gpu_util,
        vram_used_bytes=row.vram_used_bytes,
        vram_total_bytes=row.vram_total_bytes,
        gpu_temperature_c=row.gpu_temperature_c,
        gpu_power_w=row.gpu_power_w,
        cpu_busy=row.cpu_busy,
        load1=row.load1,
        ram_available_bytes=row.ram_available_bytes,
        ram_total_bytes=row.ram_total_bytes,
        gpus=tuple(GpuReading.from_json(g) for g in detail.get("gpus", [])),
        errors=tuple(detail.get("errors", [])),
    )
    return NodeReading(
        gateway=row.gateway,
        at=row.at,
        known=row.known,
        figures=figures,
        in_flight=row.in_flight,
        limit=row.current_limit,
        cap=row.cap,
        waiting=row.waiting,
    )


@dataclass(frozen=True, slots=True)
class NodeView:
    """What status shows for one host: the newest round, and the newest that was read."""

    gateway: str
    urls: tuple[str, ...]
    latest: NodeReading | None
    last_known: NodeReading | None

    @property
    def known(self) -> bool:
        return self.latest is not None and self.latest.known

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.last_known is None else (now - self.last_known.at).total_seconds()

    def to_json(self, now: datetime) -> dict[str, Any]:
        shown = self.last_known
        return {
            "gateway": self.gateway,
            "urls": list(self.urls),
            "state": "known" if self.known else "unknown",
            "age_seconds": self.age_seconds(now),
            "errors": list(self.latest.figures.errors) if self.latest is not None else [],
            "reading": shown.to_json() if shown is not None else None,
        }


# ---------------------------------------------------------------------- parsing


def parse_exporter(text: str) -> ExporterReading:
    """Any of the three exporters' text (or several concatenated) to the figures we use.

    Raises ValueError for text the Prometheus parser rejects."""
    raw = prometheus_samples(text, FAMILIES)
    samples: Samples = {}
    for name, rows in raw.items():  # the amd_ prefix is a deployment choice, not a meaning
        samples.setdefault(name.removeprefix(AMD_PREFIX), []).extend(rows)
    kinds = []
    gpus: list[GpuReading] = []
    if any(name.startswith("DCGM_FI_") for name in samples):
        kinds.append("dcgm")
        gpus += _dcgm_gpus(samples)
    if any(name in samples for name in AMD_FAMILIES):
        kinds.append("amd")
        gpus += _amd_gpus(samples)
    cpu, load1, ram_total, ram_available = None, None, None, None
    if any(name.startswith("node_") for name in samples):
        kinds.append("node")
        cpu = _cpu_counters(samples.get("node_cpu_seconds_total", []))
        load1 = _single(samples, "node_load1")
        ram_total = _single(samples, "node_memory_MemTotal_bytes")
        ram_available = _single(samples, "node_memory_MemAvailable_bytes")
        if ram_available is None:  # kernels before 3.14: the usual estimate
            parts = [_single(samples, f"node_memory_{k}_bytes") for k in ("MemFree", "Buffers", "Cached")]
            if all(p is not None for p in parts):
                ram_available = sum(p for p in parts if p is not None)
    return ExporterReading(tuple(gpus), cpu, load1, ram_total, ram_available, tuple(kinds))


def _single(samples: Samples, name: str) -> float | None:
    values = [v for _, v in samples.get(name, []) if math.isfinite(v)]
    return values[0] if values else None


def _gpu_key(labels: dict[str, str]) -> tuple[str, str]:
    index = labels.get("gpu", labels.get("gpu_id", ""))
    uuid = labels.get("UUID", labels.get("uuid", labels.get("gpu_uuid", "")))
    return index, uuid


def _per_instance(samples: Samples, name: str) -> dict[tuple[str, str], dict[str, float]]:
    """GPU -> {MIG instance -> value}; repeated label sets of one instance count once."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for labels, value in samples.get(name, []):
        if not math.isfinite(value):
            continue
        instance = labels.get("GPU_I_ID", labels.get("gpu_partition_id", ""))
        found.setdefault(_gpu_key(labels), {})[instance] = value
    return found


def _summed(per_gpu: dict[tuple[str, str], dict[str, float]], key: tuple[str, str]) -> float | None:
    values = per_gpu.get(key)
    return sum(values.values()) if values else None


def _highest(per_gpu: dict[tuple[str, str], dict[str, float]], key: tuple[str, str]) -> float | None:
    values = per_gpu.get(key)
    return max(values.values()) if values else None


def _mean(per_gpu: dict[tuple[str, str], dict[str, float]], key: tuple[str, str]) -> float | None:
    values = per_gpu.get(key)
    return sum(values.values()) / len(values) if values else None


def _models(samples: Samples, names: tuple[str, ...]) -> dict[tuple[str, str], str]:
    models: dict[tuple[str, str], str] = {}
    for name in names:
        for labels, _ in samples.get(name, []):
            model = labels.get("modelName") or labels.get("card_model") or labels.get("card_series")
            if model:
                models.setdefault(_gpu_key(labels), model)
    return models


def _dcgm_gpus(samples: Samples) -> list[GpuReading]:
    util = _per_instance(samples, "DCGM_FI_DEV_GPU_UTIL")
    engine = _per_instance(samples, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    used = _per_instance(samples, "DCGM_FI_DEV_FB_USED")
    free = _per_instance(samples, "DCGM_FI_DEV_FB_FREE")
    reserved = _per_instance(samples, "DCGM_FI_DEV_FB_RESERVED")
    total = _per_instance(samples, "DCGM_FI_DEV_FB_TOTAL")
    temp = _per_instance(samples, "DCGM_FI_DEV_GPU_TEMP")
    power = _per_instance(samples, "DCGM_FI_DEV_POWER_USAGE")
    models = _models(samples, DCGM_FAMILIES)
    keys = sorted(set(util) | set(used) | set(free) | set(temp) | set(power), key=_natural)
    gpus = []
    for key in keys:
        busy = _mean(util, key)
        if busy is None and key in engine:  # MIG: the engine-active ratio is all there is
            busy = 100 * (_mean(engine, key) or 0.0)
        used_mib = _summed(used, key)
        total_mib = _highest(total, key)
        if total_mib is None and used_mib is not None and key in free:
            # FB_TOTAL is not in dcgm-exporter's default counters; the parts add up to it
            total_mib = used_mib + (_summed(free, key) or 0.0) + (_summed(reserved, key) or 0.0)
        gpus.append(
            GpuReading(
                gpu=key[0] or key[1],
                model=models.get(key),
                util=busy,
                vram_used_bytes=None if used_mib is None else used_mib * MIB,
                vram_total_bytes=None if total_mib is None else total_mib * MIB,
                temperature_c=_highest(temp, key),
                power_w=_highest(power, key),
            )
        )
    return gpus


def _amd_gpus(samples: Samples) -> list[GpuReading]:
    util = _per_instance(samples, "gpu_gfx_activity")
    used = _per_instance(samples, "gpu_used_vram")
    total = _per_instance(samples, "gpu_total_vram")
    free = _per_instance(samples, "gpu_free_vram")
    junction = _per_instance(samples, "gpu_junction_temperature")
    edge = _per_instance(samples, "gpu_edge_temperature")
    package = _per_instance(samples, "gpu_package_power")
    power = _per_instance(samples, "gpu_power_usage")
    models = _models(samples, AMD_FAMILIES)
    keys = sorted(
        set(util) | set(used) | set(total) | set(free) | set(junction) | set(edge) | set(package),
        key=_natural,
    )
    gpus = []
    for key in keys:
        used_mb = _summed(used, key)
        total_mb = _summed(total, key)
        if total_mb is None and used_mb is not None and key in free:
            total_mb = used_mb + (_summed(free, key) or 0.0)
        # the exporter says "MB"; amd-smi's figures behind it are MiB
        gpus.append(
            GpuReading(
                gpu=key[0] or key[1],
                model=models.get(key),
                util=_mean(util, key),
                vram_used_bytes=None if used_mb is None else used_mb * MIB,
                vram_total_bytes=None if total_mb is None else total_mb * MIB,
                temperature_c=_highest(junction, key) if key in junction else _highest(edge, key),
                power_w=_highest(package, key) if key in package else _highest(power, key),
            )
        )
    return gpus


def _natural(key: tuple[str, str]) -> tuple[int, str, str]:
    index, uuid = key
    return (int(index) if index.isdigit() else 1 << 30, index, uuid)


def _cpu_counters(rows: list[tuple[dict[str, str], float]]) -> CpuCounters | None:
    if not rows:
        return None
    total = sum(v for _, v in rows if math.isfinite(v))
    idle = sum(v for labels, v in rows if labels.get("mode") == "idle" and math.isfinite(v))
    cpus = len({labels.get("cpu") for labels, _ in rows})
    return CpuCounters(total - idle, total, cpus)


def cpu_busy(previous: CpuCounters | None, current: CpuCounters | None) -> float | None:
    """Share of CPU time not idle between two scrapes; None without a usable pair."""
    if previous is None or current is None or current.cpus != previous.cpus:
        return None
    elapsed = current.total_seconds - previous.total_seconds
    if elapsed <= 0:  # a reboot resets the counters
        return None
    return min(1.0, max(0.0, (current.busy_seconds - previous.busy_seconds) / elapsed))


def merge(readings: list[ExporterReading], busy: float | None, errors: list[str]) -> NodeFigures:
    """Every endpoint of one host into one set of figures."""
    gpus = tuple(g for r in readings for g in r.gpus)
    utils = [g.util for g in gpus if g.util is not None]
    used = [g.vram_used_bytes for g in gpus if g.vram_used_bytes is not None]
    totals = [g.vram_total_bytes for g in gpus if g.vram_total_bytes is not None]
    temps = [g.temperature_c for g in gpus if g.temperature_c is not None]
    powers = [g.power_w for g in gpus if g.power_w is not None]

    def first(attr: str) -> float | None:
        return next((getattr(r, attr) for r in readings if getattr(r, attr) is not None), None)

    return NodeFigures(
        gpu_util=sum(utils) / len(utils) if utils else None,
        vram_used_bytes=sum(used) if used else None,
        vram_total_bytes=sum(totals) if totals and len(totals) == len(used) else None,
        gpu_temperature_c=max(temps) if temps else None,
        gpu_power_w=sum(powers) if powers else None,
        cpu_busy=busy,
        load1=first("load1"),
        ram_available_bytes=first("ram_available_bytes"),
        ram_total_bytes=first("ram_total_bytes"),
        gpus=gpus,
        errors=tuple(errors),
    )


def with_errors(figures: NodeFigures, errors: list[str]) -> NodeFigures:
    return replace(figures, errors=tuple(errors))


def format_bytes(value: float | None) -> str:
    """``80.0G``: binary units, as nvidia-smi and free(1) show them."""
    if value is None:
        return "-"
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value / 1024:.0f}K"
