"""Doctor's gateway checks: probe each server, read what it reports about itself, and
name the settings that contradict it (a cap above llama.cpp's slots, a model spilling
onto the CPU, a queue building up inside the server)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
from lanewarden.bot.tools.doctor_report import FAIL, OK, WARN, Report, first_line
from lanewarden.core.config import GatewayConfig, LanewardenConfig
from lanewarden.core.gateways import GatewayHealth, probe, sniff_kind
from lanewarden.core.signals import Signals, read_signals

if TYPE_CHECKING:
    from lanewarden.bot.tools.doctor import BoardState

SERVER_QUEUE_KINDS = ("vllm", "llamacpp")


def check_gateways(report: Report, config: LanewardenConfig, state: BoardState | None) -> None:
    if not config.gateways:
        report.add(OK, "gateways", "none configured (command and noop profiles only)")
        return
    results = asyncio.run(_probe_all(config.gateways))
    for name, gw in sorted(config.gateways.items()):
        health, signals = results[name]
        cap = state.limits.gateways[name].cap if state is not None else gw.max_concurrency
        row = state.gateway_rows.get(name) if state is not None else None
        for level, message, fix in judge_gateway(name, gw, cap, health, signals, row):
            report.add(level, f"gateway {name}", message, fix)


async def _probe_all(gateways: dict[str, GatewayConfig]) -> dict[str, tuple[GatewayHealth, Signals]]:
    async with httpx.AsyncClient() as client:

        async def one(name: str, gw: GatewayConfig) -> tuple[str, tuple[GatewayHealth, Signals]]:
            health = await probe(name, gw, client)
            signals = await read_signals(name, gw, client, deep=True) if health.healthy else {}
            if health.fallback:  # its own health path is missing: what is it really?
                signals = {**signals, "looks_like": await sniff_kind(gw, client)}
            return name, (health, signals)

        pairs = await asyncio.gather(*(one(n, g) for n, g in gateways.items()))
    return dict(pairs)


def judge_gateway(
    name: str, gw: GatewayConfig, cap: int, health: GatewayHealth, signals: Signals, row: Any
) -> list[tuple[str, str, str]]:
    """(level, message, fix) lines for one gateway: reachability first, then what it reports."""
    where = f"{gw.kind} {gw.base_url}"
    if not health.healthy:
        return [
            (
                FAIL,
                f"{where}: unreachable: {health.detail}",
                f"start the server or fix gateways.{name}.base_url; its tasks wait (nothing fails meanwhile)",
            )
        ]
    found: list[tuple[str, str, str]] = []
    took = f" in {health.latency_ms:.0f} ms" if health.latency_ms is not None else ""
    summary = describe_signals(signals)
    found.append((OK, f"{where}: up{took}" + (f"; {summary}" if summary else ""), ""))
    if health.fallback:
        looks = signals.get("looks_like")
        found.append(
            (
                WARN,
                f"{health.detail.split(';')[0]}: probed {gw.base_url}/models instead; "
                + (f"the server looks like kind {looks}" if looks else "its kind is unclear"),
                f'set gateways.{name}.kind = "{looks}"'
                if looks and looks != gw.kind
                else f"check gateways.{name}.kind",
            )
        )
    if row is not None and row.healthy is False:
        found.append(
            (
                WARN,
                f"the serve processes last saw it down ({first_line(row.last_error or '')}) "
                "while doctor reaches it",
                "if this persists, check the network path from the serve hosts",
            )
        )
    errors = signals.get("errors") or {}
    if gw.kind in SERVER_QUEUE_KINDS and "/metrics" in errors and "waiting" not in signals:
        hint = "start llama-server with --metrics" if gw.kind == "llamacpp" else "expose /metrics at the root"
        found.append(
            (
                WARN,
                f"no server metrics ({errors['/metrics']}): its queue is invisible to alerts and doctor",
                hint,
            )
        )
    waiting = signals.get("waiting")
    if isinstance(waiting, int | float) and waiting > 0:
        found.append(
            (
                WARN,
                f"the server is queueing {waiting:g} request(s) "
                f"on top of {signals.get('running', 0):g} running",
                f"max_concurrency ({cap}) may exceed what it runs in parallel: lower it "
                f"(`lanewarden caps set gateway {name} N`) or give the server more slots",
            )
        )
    slots = signals.get("slots_total")
    if isinstance(slots, int) and slots and cap > slots:
        found.append(
            (
                WARN,
                f"cap {cap} is above the server's {slots} slot(s): "
                "the extra requests wait inside llama-server",
                f"set gateways.{name}.max_concurrency = {slots}, or start llama-server with -np {cap}",
            )
        )
    for model in signals.get("models") or []:
        if isinstance(model, dict) and model.get("size") and "size_vram" in model:
            on_cpu = 1 - model["size_vram"] / model["size"]
            if on_cpu > 0.01:
                found.append(
                    (
                        WARN,
                        f"model {model['name']} is {on_cpu:.0%} on the CPU (does not fit in VRAM): slow",
                        "use a smaller model or quantisation, or unload other models",
                    )
                )
    if signals.get("unhealthy_endpoints"):
        failing = signals.get("failing") or []
        first = failing[0] if failing else {}
        detail = f": {first.get('model')} at {first.get('api_base')}: {first.get('error')}" if first else ""
        found.append(
            (
                WARN,
                f"LiteLLM reports {signals['unhealthy_endpoints']} unhealthy deployment(s){detail}",
                "fix or remove those deployments in the LiteLLM config",
            )
        )
    return found


def describe_signals(signals: Signals) -> str:
    parts = []
    if "running" in signals:
        parts.append(f"running {signals['running']:g}")
    if "waiting" in signals:
        parts.append(f"waiting {signals['waiting']:g}")
    if "slots_total" in signals:
        parts.append(f"slots {signals.get('slots_busy', 0)}/{signals['slots_total']} busy")
    if "kv_cache_usage" in signals:
        parts.append(f"KV cache {signals['kv_cache_usage']:.0%}")
    if "ttft_p50_ms" in signals:
        parts.append(f"TTFT p50 {signals['ttft_p50_ms']:.0f} ms")
    models = signals.get("models") or []
    names = [m["name"] if isinstance(m, dict) else str(m) for m in models]
    if names:
        parts.append("models " + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    elif "loaded_models" in signals:
        parts.append("no model loaded")
    if "ready" in signals:
        parts.append(f"readiness {signals['ready']}" + (f" (db {signals['db']})" if "db" in signals else ""))
    if "healthy_endpoints" in signals:
        parts.append(f"{signals['healthy_endpoints']} healthy deployment(s)")
    return ", ".join(parts)
