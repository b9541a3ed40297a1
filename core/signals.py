"""What each gateway server says about itself: its own queue, KV cache, loaded models.

A health probe only says "up"; the server knows more. Per kind:

* vLLM ``/metrics`` (Prometheus): ``vllm:num_requests_running`` and
  ``vllm:num_requests_waiting``, KV-cache usage (``vllm:kv_cache_usage_perc`` in V1,
  ``vllm:gpu_cache_usage_perc`` in V0 and early V1) and the time-to-first-token
  histogram. Several engines (data parallel) or models are summed; the KV cache is
  the fullest engine's.
* llama.cpp ``llama-server`` ``/metrics`` (only with ``--metrics``):
  ``llamacpp:requests_processing`` and ``llamacpp:requests_deferred``; and ``/slots``:
  busy and total slots. Without ``--metrics`` the busy slots stand in for "running".
* Ollama ``/api/ps``: the loaded models, their size and how much of it is in VRAM
  (the rest runs on the CPU, slowly).
* LiteLLM ``/health/liveliness`` and ``/health/readiness`` (cheap). ``/health`` calls
  every deployment for real, so only ``lanewarden doctor`` asks for it (``deep=True``).

Every reader tolerates absence (404, 501 "metrics disabled", connection refused,
unknown or missing metric names, old formats) and returns what it has; problems are
listed under ``errors`` and never raised into the monitor loop.

The stored dict (``gateway_state.signals``, JSON) always uses these keys when known:
``running`` (requests being processed) and ``waiting`` (the server-side queue), plus
``kv_cache_usage`` (0..1), ``ttft_p50_ms``/``ttft_mean_ms``/``ttft_samples``/
``ttft_window``, ``slots_busy``/``slots_total``, ``models``, ``loaded_models``,
``vram_bytes``, ``cpu_offload_bytes``, ``alive``, ``ready``, ``healthy_endpoints``,
``unhealthy_endpoints``, ``sources``, ``errors`` and ``read_at``; for the adaptive limiter
(core/saturation.py) also ``own_in_flight`` (our own requests on the gateway around the
scrape), ``waiting_streak`` (scrapes in a row with a queue) and ``preemptions`` (new
since the last scrape).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from lanewarden.core.caps import Usage
from lanewarden.core.clock import utcnow
from lanewarden.core.config import GatewayConfig, server_root
from lanewarden.core.db import Database
from lanewarden.core.gateway_state import set_gateway_state
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.signals")

Signals = dict[str, Any]
# metrics endpoints can be slow under load; a probe interval must never stall on them
SIGNAL_TIMEOUT = httpx.Timeout(3.0)
# a vLLM V1 scrape is ~50 kB; only these families are parsed (keeps a read sub-millisecond)
VLLM_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:num_preemptions",  # a counter: vllm:num_preemptions_total
)
LLAMACPP_FAMILIES = (
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:kv_cache_usage_ratio",  # builds before ggml-org/llama.cpp#13660
    "llamacpp:predicted_tokens_seconds",
)
MAX_ERROR_CHARS = 200


# ------------------------------------------------------------------ Prometheus


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative Prometheus histogram: (upper bound, count <= bound), ending at +Inf."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float


def prometheus_samples(text: str, families: Iterable[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of the wanted families, by sample name (``x_bucket``, ``x_sum`` ...).

    Lines of other families are dropped before parsing, with their HELP/TYPE lines,
    so a 50 kB scrape costs what its five interesting families cost.
    """
    wanted = tuple(families)
    kept = "\n".join(_lines_of(text, wanted)) + "\n"
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(kept):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found


def _lines_of(text: str, wanted: tuple[str, ...]) -> Iterator[str]:
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2].startswith(wanted):
                yield line
        elif line.startswith(wanted):
            yield line


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _sum_of(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    values = _finite(v for _, v in samples.get(name, []))
    return sum(values) if values else None


def _max_of(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    values = _finite(v for _, v in samples.get(name, []))
    return max(values) if values else None


def histogram_from(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> Histogram | None:
    """One histogram, summed over every label set (engines, models)."""
    by_bound: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        try:
            bound = float(labels["le"])
        except (KeyError, ValueError):
            continue
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    if not by_bound or math.inf not in by_bound:
        return None
    count = _sum_of(samples, f"{name}_count")
    total = _sum_of(samples, f"{name}_sum")
    buckets = tuple(sorted(by_bound.items()))
    return Histogram(buckets, by_bound[math.inf] if count is None else count, total or 0.0)


def histogram_delta(previous: Histogram | None, current: Histogram) -> Histogram | None:
    """What happened between two scrapes; None when there is no usable previous one.

    A server restart resets its counters (a count goes down), and a different bucket
    layout cannot be subtracted: both give None, and the caller falls back to lifetime.
    """
    if previous is None or current.count < previous.count:
        return None
    if [b for b, _ in previous.buckets] != [b for b, _ in current.buckets]:
        return None
    buckets = tuple(
        (bound, now - before)
        for (bound, now), (_, before) in zip(current.buckets, previous.buckets, strict=True)
    )
    return Histogram(buckets, current.count - previous.count, current.sum - previous.sum)


def histogram_quantile(histogram: Histogram, q: float) -> float | None:
    """Prometheus-style estimate: linear interpolation inside the bucket holding rank q.

    A rank that lands in the +Inf bucket gives the largest finite bound (the estimate
    cannot say more); the first bucket interpolates from 0.
    """
    total = histogram.buckets[-1][1] if histogram.buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in histogram.buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            if cumulative == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def ttft_signals(histogram: Histogram | None, previous: Histogram | None) -> Signals:
    """TTFT over the last interval when the server served requests in it, else lifetime."""
    if histogram is None:
        return {}
    window, figures = "lifetime", histogram
    delta = histogram_delta(previous, histogram)
    if delta is not None:
        window, figures = "interval", delta
    found: Signals = {"ttft_samples": int(figures.count), "ttft_window": window}
    if figures.count > 0:
        p50 = histogram_quantile(figures, 0.5)
        if p50 is not None:
            found["ttft_p50_ms"] = round(p50 * 1000, 3)
        found["ttft_mean_ms"] = round(figures.sum / figures.count * 1000, 3)
    return found


# --------------------------------------------------------------------- parsers


def parse_vllm_metrics(text: str, previous_ttft: Histogram | None = None) -> tuple[Signals, Histogram | None]:
    """vLLM ``/metrics`` (V0, early V1 and 0.32 V1) -> signals, and the TTFT histogram to keep."""
    samples = prometheus_samples(text, VLLM_FAMILIES)
    found: Signals = {}
    running = _sum_of(samples, "vllm:num_requests_running")
    waiting = _sum_of(samples, "vllm:num_requests_waiting")
    if running is not None:
        found["running"] = running
    if waiting is not None:
        found["waiting"] = waiting
    kv = _max_of(samples, "vllm:kv_cache_usage_perc")
    if kv is None:
        kv = _max_of(samples, "vllm:gpu_cache_usage_perc")
    if kv is not None:
        found["kv_cache_usage"] = kv
    preemptions = _sum_of(samples, "vllm:num_preemptions_total")
    if preemptions is not None:
        found["preemptions_total"] = preemptions
    models = sorted(
        {labels["model_name"] for rows in samples.values() for labels, _ in rows if labels.get("model_name")}
    )
    if models:
        found["models"] = models
    ttft = histogram_from(samples, "vllm:time_to_first_token_seconds")
    found.update(ttft_signals(ttft, previous_ttft))
    return found, ttft


def parse_llamacpp_metrics(text: str) -> Signals:
    """llama-server ``/metrics``: processing -> running, deferred -> waiting."""
    samples = prometheus_samples(text, LLAMACPP_FAMILIES)
    found: Signals = {}
    processing = _sum_of(samples, "llamacpp:requests_processing")
    deferred = _sum_of(samples, "llamacpp:requests_deferred")
    if processing is not None:
        found["running"] = processing
    if deferred is not None:
        found["waiting"] = deferred
    kv = _max_of(samples, "llamacpp:kv_cache_usage_ratio")
    if kv is not None:
        found["kv_cache_usage"] = kv
    throughput = _max_of(samples, "llamacpp:predicted_tokens_seconds")
    if throughput is not None:
        found["generation_tokens_per_second"] = throughput
    return found


def parse_llamacpp_slots(payload: Any) -> Signals:
    """llama-server ``/slots``: a list of slots, busy ones with ``is_processing`` true.

    ``next_token`` is an object in the upstream README and a list in live builds; only
    ``is_processing`` and ``n_ctx`` are read, so both shapes work.
    """
    if not isinstance(payload, list):
        return {}
    slots = [s for s in payload if isinstance(s, dict)]
    found: Signals = {
        "slots_total": len(slots),
        "slots_busy": sum(1 for s in slots if s.get("is_processing") is True),
    }
    contexts = [s["n_ctx"] for s in slots if isinstance(s.get("n_ctx"), int)]
    if contexts:
        found["slot_context"] = min(contexts)
    return found


def parse_ollama_ps(payload: Any) -> Signals:
    """Ollama ``/api/ps``: loaded models; ``size - size_vram`` of a model runs on the CPU."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        return {}
    models: list[dict[str, Any]] = []
    vram = offloaded = 0
    for entry in payload["models"]:
        if not isinstance(entry, dict):
            continue
        size = entry.get("size") if isinstance(entry.get("size"), int) else None
        in_vram = entry.get("size_vram") if isinstance(entry.get("size_vram"), int) else None
        model: dict[str, Any] = {"name": str(entry.get("name") or entry.get("model") or "?")}
        if size is not None:
            model["size"] = size
        if in_vram is not None:
            model["size_vram"] = in_vram
            vram += in_vram
            if size is not None:
                offloaded += max(0, size - in_vram)
        for key in ("expires_at", "context_length"):
            if entry.get(key) is not None:
                model[key] = entry[key]
        models.append(model)
    return {
        "models": models,
        "loaded_models": len(models),
        "vram_bytes": vram,
        "cpu_offload_bytes": offloaded,
    }


def parse_litellm_readiness(payload: Any) -> Signals:
    """LiteLLM ``/health/readiness``: ``{"status": "healthy", "db": "Not connected", ...}``."""
    if not isinstance(payload, dict):
        return {}
    found: Signals = {}
    if isinstance(payload.get("status"), str):
        found["ready"] = payload["status"]
    if isinstance(payload.get("db"), str):
        found["db"] = payload["db"]
    if isinstance(payload.get("litellm_version"), str):
        found["version"] = payload["litellm_version"]
    return found


def parse_litellm_health(payload: Any) -> Signals:
    """LiteLLM ``/health`` (deep: it calls every deployment): healthy and unhealthy endpoints.

    Errors carry whole stack traces; only their first line is kept.
    """
    if not isinstance(payload, dict):
        return {}
    healthy = payload.get("healthy_endpoints")
    unhealthy = payload.get("unhealthy_endpoints")
    if not isinstance(healthy, list) or not isinstance(unhealthy, list):
        return {}
    failing = []
    for entry in unhealthy:
        if not isinstance(entry, dict):
            continue
        error = str(entry.get("error") or "").strip().splitlines()
        failing.append(
            {
                "model": str(entry.get("model") or "?"),
                "api_base": str(entry.get("api_base") or ""),
                "error": error[0][:MAX_ERROR_CHARS] if error else "",
            }
        )
    count_ok = payload.get("healthy_count")
    count_bad = payload.get("unhealthy_count")
    return {
        "healthy_endpoints": count_ok if isinstance(count_ok, int) else len(healthy),
        "unhealthy_endpoints": count_bad if isinstance(count_bad, int) else len(unhealthy),
        "failing": failing,
    }


# ---------------------------------------------------------------------- reading


class SignalReader:
    """Reads one gateway's own signals on every probe interval.

    Keeps the previous TTFT histogram so the figure stored is the last interval's, not
    the server's lifetime average, and remembers which endpoints are missing so a
    server without ``--metrics`` is logged once, not every ten seconds.
    """

    def __init__(self, name: str, gateway: GatewayConfig) -> None:
        self.name = name
        self.gateway = gateway
        self.root = server_root(gateway.base_url)
        self._previous_ttft: Histogram | None = None
        self._missing: set[str] = set()
        self._stored_empty = False
        self._waiting_streak = 0
        self._preemptions_total: float | None = None

    async def read(self, client: httpx.AsyncClient, *, deep: bool = False) -> Signals:
        """Never raises (except cancellation): absent endpoints land under ``errors``."""
        found: Signals = {}
        errors: dict[str, str] = {}
        sources: list[str] = []
        kind = self.gateway.kind
        if kind == "vllm":
            text = await self._get_text(client, "/metrics", errors, sources)
            if text is not None:
                parsed, self._previous_ttft = self._guard(
                    lambda: parse_vllm_metrics(text, self._previous_ttft), ({}, None), errors, "/metrics"
                )
                found.update(parsed)
        elif kind == "llamacpp":
            metrics, slots = await asyncio.gather(
                self._get_text(client, "/metrics", errors, sources),
                self._get_json(client, "/slots", errors, sources),
            )
            if metrics is not None:
                found.update(self._guard(lambda: parse_llamacpp_metrics(metrics), {}, errors, "/metrics"))
            if slots is not None:
                found.update(self._guard(lambda: parse_llamacpp_slots(slots), {}, errors, "/slots"))
                if "running" not in found and "slots_busy" in found:
                    found["running"] = found["slots_busy"]  # busy slots = requests being processed
        elif kind == "ollama":
            ps = await self._get_json(client, "/api/ps", errors, sources)
            if ps is not None:
                found.update(self._guard(lambda: parse_ollama_ps(ps), {}, errors, "/api/ps"))
        elif kind == "litellm":
            alive, ready = await asyncio.gather(
                self._get_json(client, "/health/liveliness", errors, sources),
                self._get_json(client, "/health/readiness", errors, sources),
            )
            if alive is not None:  # the body is the JSON string "I'm alive!"
                found["alive"] = True
            if ready is not None:
                found.update(
                    self._guard(lambda: parse_litellm_readiness(ready), {}, errors, "/health/readiness")
                )
            if deep:
                health = await self._get_json(client, "/health", errors, sources, timeout=httpx.Timeout(30.0))
                if health is not None:
                    found.update(self._guard(lambda: parse_litellm_health(health), {}, errors, "/health"))
        self._waiting_streak = self._waiting_streak + 1 if (found.get("waiting") or 0) > 0 else 0
        found["waiting_streak"] = self._waiting_streak
        total = found.get("preemptions_total")
        if total is not None:
            before, self._preemptions_total = self._preemptions_total, total
            found["preemptions"] = 0 if before is None or total < before else total - before
        found["sources"] = sources
        if errors:
            found["errors"] = errors
        found["read_at"] = utcnow().isoformat()
        return found

    async def refresh(self, db: Database, client: httpx.AsyncClient, *, healthy: bool) -> Signals | None:
        """One monitor step: read and store when the gateway is up; clear once when it is down.

        A down gateway's last figures would be stale (an alert on "queue 4" for a server
        that is gone), so they are cleared rather than kept.
        """
        try:
            # a generic OpenAI-compatible URL has nothing standard to read
            if not healthy or self.gateway.kind == "openai":
                if not self._stored_empty:
                    await asyncio.to_thread(store_signals, db, self.name, None)
                    self._stored_empty = True
                self._previous_ttft = None
                return None
            own_before = await asyncio.to_thread(own_in_flight, db, self.name)
            signals = await self.read(client)
            await asyncio.to_thread(store_signals, db, self.name, signals, own_before)
            self._stored_empty = False
            return signals
        except DBAPIError as exc:
            log.warning("could not store the signals of %s: %s", self.name, exc.orig)
        except Exception:  # a parser bug must not stop the probes that gate every claim
            log.exception("reading the signals of %s failed", self.name)
        return None

    # ------------------------------------------------------------------ HTTP

    async def _get(
        self,
        client: httpx.AsyncClient,
        path: str,
        errors: dict[str, str],
        sources: list[str],
        timeout: httpx.Timeout = SIGNAL_TIMEOUT,
    ) -> httpx.Response | None:
        headers = {}
        key = self.gateway.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            response = await client.get(f"{self.root}{path}", headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            self._absent(path, errors, f"{type(exc).__name__} {exc}".strip())
            return None
        if response.status_code != 200:
            self._absent(path, errors, f"HTTP {response.status_code}")
            return None
        if path in self._missing:
            self._missing.discard(path)
            log.info("gateway %s: %s answers again", self.name, path)
        sources.append(path)
        return response

    async def _get_text(
        self, client: httpx.AsyncClient, path: str, errors: dict[str, str], sources: list[str]
    ) -> str | None:
        response = await self._get(client, path, errors, sources)
        return None if response is None else response.text

    async def _get_json(
        self,
        client: httpx.AsyncClient,
        path: str,
        errors: dict[str, str],
        sources: list[str],
        timeout: httpx.Timeout = SIGNAL_TIMEOUT,
    ) -> Any:
        response = await self._get(client, path, errors, sources, timeout)
        if response is None:
            return None
        try:
            return json.loads(response.content)
        except ValueError:
            sources.remove(path)
            self._absent(path, errors, "not JSON")
            return None

    def _absent(self, path: str, errors: dict[str, str], problem: str) -> None:
        errors[path] = problem[:MAX_ERROR_CHARS]
        if path not in self._missing:
            self._missing.add(path)
            log.info("gateway %s: %s not available (%s); its signals are skipped", self.name, path, problem)

    def _guard(self, parse: Any, empty: Any, errors: dict[str, str], path: str) -> Any:
        """Run a parser; a format it cannot read is an absence, not an exception."""
        try:
            return parse()
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            self._absent(path, errors, f"unreadable: {type(exc).__name__}: {exc}")
            return empty


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON (PostgreSQL refuses them): drop them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {
            k: json_safe(v) for k, v in value.items() if not (isinstance(v, float) and not math.isfinite(v))
        }
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def own_in_flight(db: Database, name: str) -> int:
    with db.read() as conn:
        return Usage.load(conn).by_gateway.get(name, 0)


def store_signals(db: Database, name: str, signals: Signals | None, own_before: int | None = None) -> None:
    """Store a scrape with our own requests on the gateway around it: the most seen before
    or after (a request we count but the server has finished is not another tenant's)."""
    now = utcnow()
    with db.write() as conn:
        if signals is not None:
            own = Usage.load(conn).by_gateway.get(name, 0)
            signals = {**signals, "own_in_flight": max(own, own_before or 0)}
        set_gateway_state(conn, name, now, signals=None if signals is None else json_safe(signals))


async def read_signals(
    name: str, gateway: GatewayConfig, client: httpx.AsyncClient, *, deep: bool = False
) -> Signals:
    """One-shot read (``lanewarden doctor``); TTFT is the server's lifetime figure."""
    if gateway.kind == "openai":
        return {}
    return await SignalReader(name, gateway).read(client, deep=deep)
