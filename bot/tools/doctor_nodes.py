"""Doctor's node checks: read each gateway's exporters now, and judge what they say.

An exporter that does not answer is a warning, not a failure: the gateway still works,
only its node figures are unknown. A GPU with more than 95% of its VRAM in use has no
room for a longer context or a second model. A host whose CPUs are busy while its GPU
idles with requests in flight (from the leader's last reading) is the mark of a model
running partly on the CPU; Ollama says so itself (see doctor_gateways.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
from lanewarden.bot.tools.doctor_report import OK, WARN, Report
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.node_monitor import fetch_exporter
from lanewarden.core.nodes import ExporterReading, NodeView, format_bytes

if TYPE_CHECKING:
    from lanewarden.bot.tools.doctor import BoardState

VRAM_FULL = 0.95
CPU_BUSY = 0.7  # with the GPU under GPU_IDLE percent and requests in flight
GPU_IDLE = 20.0


def check_nodes(report: Report, config: LanewardenConfig, state: BoardState | None) -> None:
    targets = {name: list(gw.node_metrics) for name, gw in config.gateways.items() if gw.node_metrics}
    if not targets:
        return
    results = asyncio.run(_read_all(targets))
    views = {v.gateway: v for v in state.nodes} if state is not None else {}
    for name in sorted(targets):
        for url, (reading, error) in zip(targets[name], results[name], strict=True):
            for level, message, fix in judge_exporter(name, url, reading, error):
                report.add(level, f"node {name}", message, fix)
        view = views.get(name)
        if view is not None:
            for level, message, fix in judge_history(view):
                report.add(level, f"node {name}", message, fix)


async def _read_all(
    targets: dict[str, list[str]],
) -> dict[str, list[tuple[ExporterReading | None, str | None]]]:
    async with httpx.AsyncClient() as client:

        async def one(urls: list[str]) -> list[tuple[ExporterReading | None, str | None]]:
            return list(await asyncio.gather(*(fetch_exporter(url, client) for url in urls)))

        found = await asyncio.gather(*(one(urls) for urls in targets.values()))
    return dict(zip(targets, found, strict=True))


def judge_exporter(
    name: str, url: str, reading: ExporterReading | None, error: str | None
) -> list[tuple[str, str, str]]:
    if reading is None:
        return [
            (
                WARN,
                f"exporter unreachable: {error}",
                f"start the exporter or fix gateways.{name}.node_metrics; until then status shows "
                "the node as unknown (the gateway itself is unaffected)",
            )
        ]
    found = [(OK, f"{url}: {'+'.join(reading.kinds)}, {_summary(reading)}", "")]
    for gpu in reading.gpus:
        if gpu.vram_used_bytes is None or not gpu.vram_total_bytes:
            continue
        share = gpu.vram_used_bytes / gpu.vram_total_bytes
        if share > VRAM_FULL:
            found.append(
                (
                    WARN,
                    f"GPU {gpu.gpu} ({gpu.model or 'unknown model'}): VRAM {share:.0%} used "
                    f"({format_bytes(gpu.vram_used_bytes)} of {format_bytes(gpu.vram_total_bytes)})",
                    "a longer context or a second model will not fit: lower the cap, the context "
                    "length or the server's memory share (vLLM --gpu-memory-utilization)",
                )
            )
    return found


def judge_history(view: NodeView) -> list[tuple[str, str, str]]:
    """From the leader's last reading: a busy CPU beside an idle GPU under load."""
    reading = view.last_known
    if reading is None:
        return []
    f = reading.figures
    if (
        reading.in_flight > 0
        and f.cpu_busy is not None
        and f.cpu_busy >= CPU_BUSY
        and f.gpu_util is not None
        and f.gpu_util < GPU_IDLE
    ):
        return [
            (
                WARN,
                f"CPU {f.cpu_busy:.0%} busy while the GPU is {f.gpu_util:.0f}% busy with "
                f"{reading.in_flight} request(s) in flight: the model looks partly on the CPU",
                "use a smaller model or quantisation, or free VRAM (other models, other processes)",
            )
        ]
    return []


def _summary(reading: ExporterReading) -> str:
    parts = [f"{len(reading.gpus)} GPU(s)"] if reading.gpus else []
    if reading.load1 is not None:
        parts.append(f"load {reading.load1:g}")
    if reading.ram_available_bytes is not None and reading.ram_total_bytes:
        parts.append(
            f"RAM {format_bytes(reading.ram_available_bytes)} of {format_bytes(reading.ram_total_bytes)} free"
        )
    return ", ".join(parts) or "nothing we read"
