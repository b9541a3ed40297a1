"""Adaptive concurrency for one gateway: find the most requests it serves well, by itself.

Operators are told: start at one request, raise the cap while throughput grows, and roll
back when latency rises at constant throughput. This controller does exactly that, the
way TCP Vegas and Netflix's concurrency-limits reason about queues, and the way Envoy's
adaptive-concurrency filter re-measures its baseline:

* **What it measures.** Each finished request gives, by Little's law, the gateway's
  token throughput at the concurrency it ran under:
  ``in_flight * output_tokens / latency``. End-to-end latency alone would mislead (it
  grows with the length of the answer); divided by the tokens it does not. Runners that
  cannot count tokens (agent command lines) count one unit per request. Samples are
  kept per concurrency level as moving averages.
* **How it moves.** It climbs one level at a time while the level just reached
  delivers at least ``min_gain`` (5%) more throughput than the one below. A level that
  delivers no more (the knee: more requests only queue or thrash) or less is left for
  the one below, and the controller holds there. Every ``retry_after`` samples it tries
  the level above again, in case the server got faster or quieter.
* **Safety.** Timeouts, 429 and 503 halve the limit at once. Time to first token or
  time per token beyond ``tolerance`` times their no-load baseline steps down at once.
  When fewer requests are in flight than the limit allows, the gateway is not the
  bottleneck and nothing is learned (the limit holds).
* **Re-probing.** The no-load baseline is measured at start, after an outage and every
  ``probe_interval`` seconds by pinning the limit to 1 for a few requests.
* The limit stays within ``[1, cap]``.

The controller is a pure function of its state and one sample. The state lives in
``gateway_state.limiter`` and is updated inside the finishing transaction (with the
gateway's row locked on PostgreSQL), so every dispatcher process shares one limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

PROBE_SAMPLES = 3
LEVEL_WEIGHT = 0.3  # moving-average weight of a new throughput sample at its level


@dataclass(frozen=True, slots=True)
class Sample:
    outcome: str  # a run outcome: succeeded, timed_out, backpressure, ...
    in_flight: int  # requests on the gateway while this one ran (including it)
    at: float  # epoch seconds
    ttft_ms: float | None = None
    latency_ms: float | None = None
    completion_tokens: int | None = None

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first."""
        if self.ttft_ms is None or self.latency_ms is None or not self.completion_tokens:
            return None
        if self.completion_tokens < 2:
            return None
        return max(0.0, self.latency_ms - self.ttft_ms) / (self.completion_tokens - 1)

    @property
    def throughput(self) -> float | None:
        """Work per second the gateway delivered at this concurrency (Little's law)."""
        if not self.latency_ms or self.latency_ms <= 0:
            return None
        units = self.completion_tokens or 1
        return self.in_flight * units * 1000.0 / self.latency_ms


@dataclass(frozen=True, slots=True)
class LimiterState:
    limit: int = 1
    probing: bool = True
    restore_limit: int = 1
    probe_first: list[float] = field(default_factory=list)
    probe_tpot: list[float] = field(default_factory=list)
    baseline_first: float | None = None
    baseline_tpot: float | None = None
    # level -> [moving-average throughput, samples seen since the level was last entered]
    levels: dict[str, list[float]] = field(default_factory=dict)
    at_level: int = 0  # samples learned at the current limit since it was set
    ceiling: int | None = None  # a level found not to pay off; retried now and then
    since_retry: int = 0
    last_probe_at: float = 0.0

    @property
    def current_limit(self) -> int:
        """What the claim kernel may use now."""
        return 1 if self.probing else max(1, self.limit)

    def throughput_at(self, level: int) -> float | None:
        found = self.levels.get(str(level))
        return found[0] if found else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LimiterState | None:
        if not data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class AdaptiveLimiter:
    cap: int
    tolerance: float = 2.0
    min_gain: float = 0.05
    probe_interval: float = 120.0
    retry_after: int = 30
    backoff: float = 0.5

    def start(self, now: float, limit: int = 1) -> LimiterState:
        """A fresh controller (first start, or back from an outage): probe, then climb from ``limit``."""
        return LimiterState(limit=limit, probing=True, restore_limit=limit, last_probe_at=now)

    def update(self, state: LimiterState, sample: Sample) -> LimiterState:
        if sample.outcome in ("timed_out", "backpressure"):
            shrunk = max(1, int(state.limit * self.backoff))
            return replace(
                state,
                limit=shrunk,
                restore_limit=min(state.restore_limit, shrunk),
                at_level=0,
                since_retry=0,
                ceiling=state.limit if shrunk < state.limit else state.ceiling,
            )
        if sample.outcome != "succeeded":
            return state  # a task's own failure says nothing about the gateway's load
        if state.probing:
            return self._probe(state, sample)
        if sample.at - state.last_probe_at >= self.probe_interval:
            return replace(state, probing=True, restore_limit=state.limit, probe_first=[], probe_tpot=[])
        if self._too_slow(state, sample) and state.limit > 1:
            return self._move(state, state.limit - 1, ceiling=state.limit)
        state = self._learn(state, sample)
        if sample.in_flight < state.limit:
            return state  # not the bottleneck right now: nothing to decide
        return self._decide(replace(state, at_level=state.at_level + 1))

    # --------------------------------------------------------------- steps

    def _learn(self, state: LimiterState, sample: Sample) -> LimiterState:
        value = sample.throughput
        if value is None:
            return state
        key = str(sample.in_flight)
        previous = state.levels.get(key)
        if previous is None:
            average, count = value, 1.0
        else:
            average, count = previous[0] * (1 - LEVEL_WEIGHT) + value * LEVEL_WEIGHT, previous[1] + 1
        return replace(state, levels={**state.levels, key: [average, count]})

    def _decide(self, state: LimiterState) -> LimiterState:
        limit = state.limit
        needed = max(3, limit)  # a level is judged on at least one round of its requests
        if state.at_level < needed:
            return state
        here, below = state.throughput_at(limit), state.throughput_at(limit - 1)
        if limit > 1 and (here is None or below is None):
            return state
        paid_off = limit == 1 or (
            here is not None and below is not None and here >= below * (1 + self.min_gain)
        )
        # (at level 1 there is nothing below to compare with: always try two)
        if paid_off:
            if limit >= self.cap or (
                state.ceiling is not None
                and limit + 1 >= state.ceiling
                and state.since_retry < self.retry_after
            ):
                return replace(state, since_retry=state.since_retry + 1)
            return self._move(state, limit + 1, ceiling=None if state.ceiling == limit + 1 else state.ceiling)
        # no gain, or a loss: more requests here only queue. Step back and remember why.
        return self._move(state, limit - 1, ceiling=limit)

    def _move(self, state: LimiterState, level: int, *, ceiling: int | None) -> LimiterState:
        level = max(1, min(self.cap, level))
        levels = dict(state.levels)
        if str(level) in levels:
            # judge the level afresh: the server may have changed since we were there
            levels[str(level)] = [levels[str(level)][0], 0.0]
        return replace(state, limit=level, at_level=0, ceiling=ceiling, since_retry=0, levels=levels)

    def _too_slow(self, state: LimiterState, sample: Sample) -> bool:
        """Decoding far slower than at no load: the server is thrashing, step down now."""
        tpot = sample.tpot_ms
        return (
            tpot is not None
            and state.baseline_tpot is not None
            and tpot > self.tolerance * state.baseline_tpot
        )

    def _probe(self, state: LimiterState, sample: Sample) -> LimiterState:
        if sample.in_flight > 1:
            return state  # started before the probe pinned the limit: not a no-load sample
        state = self._learn(state, sample)
        first = [*state.probe_first, sample.ttft_ms if sample.ttft_ms is not None else -1.0]
        tpot = [*state.probe_tpot, *([sample.tpot_ms] if sample.tpot_ms is not None else [])]
        if len(first) < PROBE_SAMPLES:
            return replace(state, probe_first=first, probe_tpot=tpot)
        known_first = [v for v in first if v >= 0]
        return replace(
            state,
            probing=False,
            limit=max(1, min(self.cap, state.restore_limit)),
            probe_first=[],
            probe_tpot=[],
            baseline_first=min(known_first) if known_first else None,
            baseline_tpot=min(tpot) if tpot else None,
            at_level=0,
            last_probe_at=sample.at,
        )
