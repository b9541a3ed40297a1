"""``lanewarden simulate-gateway``: a GPU inference server you can overload on a laptop.

An OpenAI-compatible server (aiohttp, loopback) that behaves like vLLM closely enough
to rehearse caps against it and to benchmark "uncapped" against "a fixed cap" against
"adaptive": ``POST /v1/chat/completions`` (streamed like vLLM, or not), ``GET
/v1/models``, ``GET /health`` and ``GET /metrics`` in vLLM's Prometheus format
(``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``, a TTFT histogram), so a gateway of kind ``vllm`` probes
and reads it as it would a real one.

The whole timing model is ``ServerModel`` (see docs/simulator.md):

* **batching** (continuous batching, as vLLM): the engine runs decode steps; each
  step gives one token to every running sequence and lasts
  ``step_ms(n) = token_ms`` while ``n <= knee`` and
  ``token_ms * (n / knee) ** overload_exponent`` beyond it (memory bandwidth and
  KV-cache thrashing). Aggregate tokens/s, ``n / step_ms(n)``, rises up to the knee
  and falls after it (for an exponent above 1) while every request gets slower. At
  most ``max_batch`` sequences run (default ``2 * knee``); the rest wait in the
  server's queue (``num_requests_waiting``; the wait shows up in TTFT), and a request
  that would make that queue longer than ``max_queue`` gets 503 with ``Retry-After``.
  New sequences join at step boundaries; a sequence's first token comes out of the
  first step it is part of.
* **before the first token** (``prefill_steps``, long prompts): an admitted sequence
  spends that many steps on its prompt before its first token, weighing on each step
  like a decoding one, so with short answers nearly all of a request's time is TTFT.
* **lagging metrics** (``metrics_lag_seconds``): the gauges on ``/metrics`` show the
  engine as it was that long ago, as vLLM's do (3-6 s in steady state).
* **serial** (one request at a time, as llama-cpp-python's server): the same engine
  with a batch of one; every token takes ``token_ms``.
* Optionally, ``request_timeout``: a request still unfinished that long after it
  arrived is aborted (a server that gives up under overload): 408 before anything
  was sent, an error event in the stream after.

Output lengths are drawn from ``output_tokens`` (a range) by a generator seeded with
``seed`` and the request's messages, so the same prompts give the same lengths
whatever order they arrive in; a request's ``max_tokens`` caps its length
(``finish_reason: "length"``), and vLLM's ``ignore_eos`` makes it exactly
``max_tokens``. Timing is real (``asyncio.sleep``): one task drives every decode step,
so an idle server costs nothing and a busy one a few wake-ups per step.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Profile = Literal["batching", "serial"]
# vLLM's own TTFT buckets (vllm/v1/metrics/loggers.py), so quantiles read the same
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
KV_TOKENS_PER_SEQUENCE = 1024  # default KV-cache size: this many tokens per batch slot
WORDS = (
    "the", "queue", "holds", "while", "the", "batch", "decodes", "one", "token", "per", "step", "for",
    "every", "running", "request", "and", "latency", "grows", "past", "the", "knee", "so", "a", "cap",
    "that", "fits", "the", "server", "keeps", "throughput", "high",
)  # fmt: skip


# ---------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class ServerModel:
    """How the simulated server's speed depends on its load: the one place to read it."""

    profile: Profile = "batching"
    knee: int = 4  # running sequences a decode step can hold at full speed
    token_ms: float = 20.0  # one decode step at or below the knee
    overload_exponent: float = 1.5  # how much faster than linearly a step grows past the knee
    max_batch: int | None = None  # running sequences at most; default 2 * knee (1 when serial)
    max_queue: int = 64  # waiting requests at most; past it, 503
    request_timeout: float | None = None  # seconds from arrival after which the server gives up
    output_tokens: tuple[int, int] = (32, 256)  # natural answer length, drawn per request
    retry_after_seconds: int = 1  # sent with 503
    kv_cache_tokens: int | None = None  # KV-cache size; default max_batch * 1024 tokens
    prefill_steps: int = 0  # steps of prompt processing before the first token (long prompts)
    metrics_lag_seconds: float = 0.0  # /metrics gauges show the engine this long ago

    def __post_init__(self) -> None:
        if self.knee < 1 or self.token_ms <= 0 or self.overload_exponent < 0:
            raise ValueError("knee must be >= 1, token_ms > 0 and overload_exponent >= 0")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.prefill_steps < 0 or self.metrics_lag_seconds < 0:
            raise ValueError("prefill_steps and metrics_lag_seconds must be >= 0")
        low, high = self.output_tokens
        if not 1 <= low <= high:
            raise ValueError("output_tokens must be a range 1 <= low <= high")

    @property
    def batch_limit(self) -> int:
        if self.profile == "serial":
            return 1
        return self.max_batch if self.max_batch is not None else 2 * self.knee

    @property
    def kv_capacity(self) -> int:
        return self.kv_cache_tokens or self.batch_limit * KV_TOKENS_PER_SEQUENCE

    def step_ms(self, running: int) -> float:
        """Duration of one decode step with ``running`` sequences in the batch."""
        if self.profile == "serial" or running <= self.knee:
            return self.token_ms
        return self.token_ms * (running / self.knee) ** self.overload_exponent

    def tokens_per_second(self, running: int) -> float:
        """Aggregate decode throughput with ``running`` sequences (what the GPU delivers)."""
        running = min(running, self.batch_limit)
        return running * 1000.0 / self.step_ms(running) if running else 0.0

    def describe(self) -> str:
        """A table of the model, one row per concurrency, for the CLI and the docs."""
        if self.profile == "serial":
            head = f"serial: one request at a time, {self.token_ms:g} ms per token"
        else:
            head = (
                f"batching: a decode step takes {self.token_ms:g} ms with up to {self.knee} running, "
                f"x (n/{self.knee})^{self.overload_exponent:g} beyond; at most {self.batch_limit} run"
            )
        if self.prefill_steps:
            head += f"; {self.prefill_steps} steps on each prompt before its first token"
        lines = [
            head + f", {self.max_queue} may wait (then 503)",
            f"{'in flight':>9}  {'step ms':>8}  {'tokens/s':>9}  {'per request':>11}",
        ]
        top = self.batch_limit + (2 if self.profile == "serial" else self.knee)
        for n in range(1, top + 1):
            running = min(n, self.batch_limit)
            total = self.tokens_per_second(running)
            queued = f"  ({n - running} queued)" if n > running else ""
            lines.append(f"{n:>9}  {self.step_ms(running):>8.1f}  {total:>9.1f}  {total / n:>9.1f}/s{queued}")
        return "\n".join(lines)


# ----------------------------------------------------------------- the engine


class ServerOverloaded(Exception):
    """The server's queue is full: the request is refused with 503."""


@dataclass(eq=False)
class Generation:
    """One request inside the engine, from arrival to its last token."""

    prompt_tokens: int
    target_tokens: int
    arrived_at: float
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: int = 0
    prefill_left: int = 0  # steps still to spend on the prompt
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        return self.finished_at is not None or self.error is not None


class DecodeEngine:
    """Runs decode steps for the running batch; admits waiting requests at step boundaries."""

    def __init__(self, model: ServerModel, metrics: SimulatorMetrics) -> None:
        self.model = model
        self.metrics = metrics
        self.waiting: deque[Generation] = deque()
        self.running: list[Generation] = []
        self._work = asyncio.Event()
        # figures for tests and benchmarks
        self.steps = 0
        self.peak_running = 0
        self.peak_waiting = 0
        self.rejected = 0
        self.timed_out = 0
        # (when, running, waiting, kv usage), for metrics that lag
        self.history: deque[tuple[float, int, int, float]] = deque()

    def submit(self, generation: Generation) -> None:
        would_wait = len(self.running) + len(self.waiting) + 1 - self.model.batch_limit
        if would_wait > self.model.max_queue:
            self.rejected += 1
            raise ServerOverloaded(
                f"the server is overloaded: {len(self.waiting)} requests waiting "
                f"(max_queue {self.model.max_queue})"
            )
        self.waiting.append(generation)
        self.peak_waiting = max(self.peak_waiting, len(self.waiting))
        self._record()
        self._work.set()

    def cancel(self, generation: Generation) -> None:
        """The client went away: free its slot or its place in the queue."""
        if generation in self.running:
            self.running.remove(generation)
        elif generation in self.waiting:
            self.waiting.remove(generation)

    def fail_all(self, reason: str) -> None:
        for generation in [*self.running, *self.waiting]:
            generation.error = reason
            generation.changed.set()
        self.running.clear()
        self.waiting.clear()

    def kv_cache_usage(self) -> float:
        held = sum(g.prompt_tokens + g.generated for g in self.running)
        return min(1.0, held / self.model.kv_capacity)

    def published(self) -> tuple[int, int, float]:
        """Running, waiting and KV usage as /metrics shows them: ``metrics_lag_seconds`` ago."""
        lag = self.model.metrics_lag_seconds
        if not lag:
            return len(self.running), len(self.waiting), self.kv_cache_usage()
        self._record()
        seen = (0, 0, 0.0)
        horizon = time.monotonic() - lag
        for at, running, waiting, kv in self.history:
            if at > horizon:
                break
            seen = (running, waiting, kv)
        return seen

    def _record(self) -> None:
        if not self.model.metrics_lag_seconds:
            return
        now = time.monotonic()
        self.history.append((now, len(self.running), len(self.waiting), self.kv_cache_usage()))
        horizon = now - self.model.metrics_lag_seconds
        while len(self.history) > 1 and self.history[1][0] <= horizon:
            self.history.popleft()

    async def run(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._work.clear()
                await self._work.wait()
            now = time.monotonic()
            self._expire(now)
            self._admit(now)
            if not self.running:
                continue
            await asyncio.sleep(self.model.step_ms(len(self.running)) / 1000.0)
            self._decode(time.monotonic())

    def _admit(self, now: float) -> None:
        while self.waiting and len(self.running) < self.model.batch_limit:
            generation = self.waiting.popleft()
            generation.admitted_at = now
            generation.prefill_left = self.model.prefill_steps
            self.running.append(generation)
        self.peak_running = max(self.peak_running, len(self.running))
        self._record()

    def _decode(self, now: float) -> None:
        """The step just ended: every running sequence has one more token."""
        self.steps += 1
        finished = False
        for generation in self.running:
            if generation.prefill_left > 0:
                generation.prefill_left -= 1  # still reading its prompt: no token yet
                continue
            generation.generated += 1
            if generation.first_token_at is None:
                generation.first_token_at = now
                self.metrics.first_token(now - generation.arrived_at)
            if generation.generated >= generation.target_tokens:
                generation.finished_at = now
                finished = True
                self.metrics.finished(generation)
            generation.changed.set()
        if finished:
            self.running = [g for g in self.running if g.finished_at is None]
        self._record()

    def _expire(self, now: float) -> None:
        timeout = self.model.request_timeout
        if timeout is None:
            return
        for queue in (self.running, self.waiting):
            for generation in [g for g in queue if now - g.arrived_at >= timeout]:
                queue.remove(generation)
                self.timed_out += 1
                where = "in the queue" if generation.admitted_at is None else "while generating"
                generation.error = f"request timed out after {timeout:g}s {where}"
                generation.changed.set()


# ---------------------------------------------------------------- metrics


class SimulatorMetrics:
    """vLLM's metric names, in a registry of this simulator's own (several may run in one process)."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_name", "engine")
        values = (model_name, "0")
        reg = self.registry
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels,
            registry=reg,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=reg
        )
        self.kv = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=reg
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=reg,
        ).labels(*values)
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=reg,
        ).labels(*values)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=reg,
        ).labels(*values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=reg
        ).labels(*values)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=reg
        ).labels(*values)
        self.success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=reg,
        )
        self._values = values

    def bind(self, engine: DecodeEngine) -> None:
        self.running.labels(*self._values).set_function(lambda: engine.published()[0])
        self.waiting.labels(*self._values).set_function(lambda: engine.published()[1])
        self.kv.labels(*self._values).set_function(lambda: engine.published()[2])

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def finished(self, generation: Generation) -> None:
        assert generation.finished_at is not None and generation.first_token_at is not None
        self.e2e.observe(generation.finished_at - generation.arrived_at)
        if generation.generated > 1:
            decode = generation.finished_at - generation.first_token_at
            self.tpot.observe(decode / (generation.generated - 1))
        self.prompt_tokens.inc(generation.prompt_tokens)
        self.generation_tokens.inc(generation.generated)

    def outcome(self, reason: str) -> None:
        self.success.labels(*self._values, reason).inc()

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
