"""Gateway health: one probe per server kind, and the shared view every process claims by.

Probes: Ollama ``/api/tags``, OpenAI-style and LiteLLM ``{base_url}/models``,
llama.cpp ``/health`` (503 while the model loads), vLLM ``/health`` (empty 200).
A 404 on a kind's own health path (llama-cpp-python's server has no ``/health``; a
proxy may not pass it) falls back to ``{base_url}/models``: only a connection failure,
a timeout or a 5xx marks a gateway down, and ``sniff_kind`` tells ``doctor`` what kind
the server really looks like.
A gateway that goes down stops new claims on it (its tasks wait, nothing fails);
when it comes back its window restarts at 1 and grows by one per success (slow
start) instead of bursting to the cap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from lanewarden.core.config import GatewayConfig, server_root
from lanewarden.core.db import Database
from lanewarden.core.gateway_state import record_health
from lanewarden.core.runners.llm import error_message
from lanewarden.core.signals import SignalReader
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.gateways")
PROBE_TIMEOUT = httpx.Timeout(5.0)


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    name: str
    healthy: bool
    detail: str
    latency_ms: float | None = None
    fallback: bool = False  # the kind's own health path answered 404; {base_url}/models answered


def probe_url(gateway: GatewayConfig) -> str:
    root = server_root(gateway.base_url)
    if gateway.kind == "ollama":
        return f"{root}/api/tags"
    if gateway.kind in ("llamacpp", "vllm"):
        return f"{root}/health"
    return f"{gateway.base_url}/models"


async def probe(name: str, gateway: GatewayConfig, client: httpx.AsyncClient) -> GatewayHealth:
    url = probe_url(gateway)
    health = await _probe_one(name, gateway, client, url)
    fallback = f"{gateway.base_url}/models"
    if health.detail.startswith(f"{url}: HTTP 404") and url != fallback:
        second = await _probe_one(name, gateway, client, fallback)
        if second.healthy:
            return GatewayHealth(name, True, f"{url}: 404; {second.detail}", second.latency_ms, fallback=True)
    return health


async def _probe_one(name: str, gateway: GatewayConfig, client: httpx.AsyncClient, url: str) -> GatewayHealth:
    headers = {}
    key = gateway.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started = time.monotonic()
    try:
        response = await client.get(url, headers=headers, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as exc:
        return GatewayHealth(name, False, f"{url}: {type(exc).__name__} {exc}".strip())
    latency = (time.monotonic() - started) * 1000
    status = response.status_code
    if status == 200:
        return GatewayHealth(name, True, f"{url}: 200", latency)
    detail = f"{url}: HTTP {status} {error_message(response.content)}".strip()
    # a 4xx is an answer: the server is there (a 404 gets the fallback above, a 401 is for doctor)
    return GatewayHealth(name, 400 <= status < 500 and status != 404, detail, latency)


async def sniff_kind(gateway: GatewayConfig, client: httpx.AsyncClient) -> str | None:
    """What kind of server answers at ``base_url``, by the paths only that kind serves."""
    root = server_root(gateway.base_url)

    async def answers(path: str) -> httpx.Response | None:
        try:
            response = await client.get(f"{root}{path}", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None
        return response if response.status_code == 200 else None

    if await answers("/api/tags") is not None:
        return "ollama"
    if await answers("/health/liveliness") is not None:
        return "litellm"
    if await answers("/slots") is not None or await answers("/props") is not None:
        return "llamacpp"
    metrics = await answers("/metrics")
    if metrics is not None and "vllm:" in metrics.text:
        return "vllm"
    if await answers(gateway.base_url.removeprefix(root) + "/models") is not None:
        return "openai"
    return None


class GatewayMonitor:
    """Probes every configured gateway on its interval and records transitions.

    Every process may run one: only state changes write the window, so they agree.
    ``on_change(name, healthy)`` lets the dispatcher claim at once when one returns.
    """

    def __init__(
        self,
        db: Database,
        gateways: dict[str, GatewayConfig],
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.db = db
        self.gateways = gateways
        self.on_change = on_change
        self.last: dict[str, GatewayHealth] = {}

    async def run(self) -> None:
        if not self.gateways:
            return
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(self._watch(name, gw, client) for name, gw in self.gateways.items()))

    async def check_all(self) -> dict[str, GatewayHealth]:
        async with httpx.AsyncClient() as client:
            results = await asyncio.gather(*(probe(n, g, client) for n, g in self.gateways.items()))
        return {h.name: h for h in results}

    async def _watch(self, name: str, gateway: GatewayConfig, client: httpx.AsyncClient) -> None:
        signals = SignalReader(name, gateway)
        while True:
            health = await probe(name, gateway, client)
            self.last[name] = health
            try:
                changed = await asyncio.to_thread(record_health, self.db, health, adaptive=gateway.adaptive)
            except DBAPIError as exc:
                log.warning("could not record health of %s: %s", name, exc.orig)
                changed = False
            if changed:
                level = logging.INFO if health.healthy else logging.WARNING
                log.log(
                    level, "gateway %s is %s (%s)", name, "up" if health.healthy else "DOWN", health.detail
                )
                if self.on_change is not None:
                    self.on_change(name, health.healthy)
            # what the server itself reports (its queue, KV cache, models); never raises
            await signals.refresh(self.db, client, healthy=health.healthy)
            await asyncio.sleep(gateway.probe_interval_seconds)
