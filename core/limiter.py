"""Adaptive concurrency for one gateway: find the most requests it serves well, by itself.

Operators are told: start at one request, raise the cap while throughput grows, and roll
back when latency rises at constant throughput. This controller does exactly that, in
the family of TCP Vegas / Netflix concurrency-limits (queueing shows as latency that
buys no throughput) and Envoy's adaptive-concurrency filter (a periodically re-measured
no-load baseline):

* **What it measures.** At each limit it lets part of a round of requests go by (those
  still carry the previous limit's conditions), then estimates the gateway's throughput
  at that limit over the next round or two, by Little's law: ``limit * output tokens /
  time the requests took`` (one unit per request for runners that cannot count
  tokens). End-to-end latency alone would mislead, since it grows with the length of
  the answers.
* **How it moves.** The first climb doubles the limit while doubling pays at least
  ``BIG_GAIN`` (25%); the first time it does not, the knee lies in between, so it goes
  back and measures the levels it jumped over, then climbs one level at a time while
  the level just reached delivers at least ``min_gain`` (8%) more than the one below.
  A level that delivers no more (the knee: extra requests only queue or thrash) or less
  is left for the one below, and the controller holds there; after ``retry_after`` more
  completions it tries the level above again, in case the server got faster or quieter.
  A gain between a quarter of ``min_gain`` and ``min_gain`` is no reason to move either
  way (hysteresis), and a level visited again is judged on the average of its visits.
* **When it does not learn.** If fewer requests are in flight than the limit allows,
  the gateway is not the bottleneck: the measurement restarts and the limit holds.
* **Safety.** Timeouts, 429 and 503 halve the limit at once. Time per output token
  beyond ``tolerance`` times its no-load value steps it down at once.
* **Re-probing.** The no-load latencies (time to first token, time per token) are
  measured at start, after an outage and every ``probe_interval`` seconds by pinning
  the limit to 1 for a few requests.
* The limit stays within ``[1, cap]``.

The controller is a pure function of its state and one completion. The state lives in
``gateway_state.limiter`` and is updated inside the finishing transaction (with the
gateway's row locked on PostgreSQL), so every dispatcher process shares one limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

PROBE_SAMPLES = 3
BIG_GAIN = 0.25  # while doubling concurrency pays this much, the first climb keeps doubling


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished request."""

    outcome: str  # a run outcome: succeeded, timed_out, backpressure, ...
    in_flight: int  # requests on the gateway when it finished (including it)
    at: float  # epoch seconds
    ttft_ms: float | None = None
    latency_ms: float | None = None
    completion_tokens: int | None = None
    # more work is waiting for this gateway: the limit, not demand, decides how busy it is
    saturated: bool = True

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first."""
        if self.ttft_ms is None or self.latency_ms is None or not self.completion_tokens:
            return None
        if self.completion_tokens < 2:
            return None
        return max(0.0, self.latency_ms - self.ttft_ms) / (self.completion_tokens - 1)

    @property
    def work(self) -> float:
        """What this request delivered: its output tokens, or one request."""
        return float(self.completion_tokens or 1)


@dataclass(frozen=True, slots=True)
class LimiterState:
    limit: int = 1
    probing: bool = True
    restore_limit: int = 1
    probe_first: list[float] = field(default_factory=list)
    probe_tpot: list[float] = field(default_factory=list)
    probe_rate: list[float] = field(default_factory=list)
    baseline_first: float | None = None
    baseline_tpot: float | None = None
    # the measurement at the current limit: completions to skip, then a window
    settle_left: int = 0
    window_busy: float = 0.0  # seconds the window's requests took, summed
    window_work: float = 0.0
    window_count: int = 0
    # delivered throughput measured at each level (work per second)
    levels: dict[str, float] = field(default_factory=dict)
    came_from: int | None = None  # the level before this one: what this one must beat
    descending: bool = False  # measuring levels below, skipped by the first climb's doubling
    rough: list[str] = field(default_factory=list)  # levels measured on one round only
    ceiling: int | None = None  # a level found not to pay off; retried now and then
    since_retry: int = 0  # completions measured since the limit last moved
    # judging on one round instead of two, while each step still pays off handsomely
    quick: bool = True
    last_probe_at: float = 0.0

    @property
    def current_limit(self) -> int:
        """What the claim kernel may use now."""
        return 1 if self.probing else max(1, self.limit)

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
    tolerance: float = 4.0
    min_gain: float = 0.08
    probe_interval: float = 120.0
    retry_after: int = 200  # completions; every visit above the knee costs latency, so not often
    backoff: float = 0.5

    def start(self, now: float, limit: int = 1) -> LimiterState:
        """A fresh controller (first start, or back from an outage): probe, then climb from ``limit``."""
        return LimiterState(limit=limit, probing=True, restore_limit=limit, last_probe_at=now)

    def update(self, state: LimiterState, sample: Sample) -> LimiterState:
        if sample.outcome in ("timed_out", "backpressure"):
            shrunk = max(1, int(state.limit * self.backoff))
            return self._move(
                replace(state, restore_limit=min(state.restore_limit, shrunk)),
                shrunk,
                ceiling=state.limit if shrunk < state.limit else state.ceiling,
            )
        if sample.outcome != "succeeded":
            return state  # a task's own failure says nothing about the gateway's load
        if state.probing:
            return self._probe(state, sample)
        if sample.at - state.last_probe_at >= self.probe_interval:
            return replace(
                state, probing=True, restore_limit=state.limit, probe_first=[], probe_tpot=[], probe_rate=[]
            )
        if state.settle_left == 0 and self._too_slow(state, sample) and state.limit > 1:
            # (only on requests that ran at this limit: the settling ones still carry the last)
            return self._move(replace(state, quick=False), state.limit - 1, ceiling=state.limit)
        if not sample.saturated:
            # demand, not the gateway, is the limit right now: this round proves nothing
            return replace(
                state,
                settle_left=max(state.settle_left, 1),
                window_busy=0.0,
                window_work=0.0,
                window_count=0,
            )
        return self._measure(state, sample)

    # --------------------------------------------------------------- steps

    def _measure(self, state: LimiterState, sample: Sample) -> LimiterState:
        if state.settle_left > 0:
            return replace(state, settle_left=state.settle_left - 1)
        if not sample.latency_ms:
            return state
        work, count = state.window_work + sample.work, state.window_count + 1
        busy = state.window_busy + sample.latency_ms / 1000
        # two rounds near the knee, where one is too noisy to judge on; one while climbing fast
        needed = max(3, state.limit) if state.quick else max(5, 2 * state.limit)
        if count < needed:
            return replace(state, window_work=work, window_busy=busy, window_count=count)
        # Little's law: ``limit`` requests in flight, each delivering work at work / busy.
        # (Timing the window itself would be biased: completions come in clusters.)
        measured = state.limit * work / busy
        key = str(state.limit)
        previous = None if key in state.rough else state.levels.get(key)
        # a level visited again is judged on both careful visits (one window is a noisy
        # witness); a one-round figure from the first climb is simply replaced
        levels = {**state.levels, key: measured if previous is None else (previous + measured) / 2}
        rough = [*state.rough, key] if state.quick else [k for k in state.rough if k != key]
        return self._decide(
            replace(
                state,
                levels=levels,
                rough=rough,
                window_work=0.0,
                window_busy=0.0,
                window_count=0,
                since_retry=state.since_retry + count,
            )
        )

    def _decide(self, state: LimiterState) -> LimiterState:
        limit = state.limit
        here = state.levels[str(limit)]
        # compare with where we came from, or else with the nearest level measured below
        measured_below = [int(k) for k in state.levels if int(k) < limit]
        base = state.came_from if state.came_from in measured_below else max(measured_below, default=None)
        gain = None if base is None else here / state.levels[str(base)] - 1
        if state.quick:
            # the first climb doubles while doubling pays handsomely; the first time it does
            # not, the knee lies between: go back and walk up from there one step at a time
            if gain is None or gain >= BIG_GAIN:
                return self._climb(state, 2 * limit, quick=True)
            return self._move(replace(state, quick=False), base or limit - 1, ceiling=limit)
        if state.descending:
            # walking down through levels the doubling jumped over, looking for the knee
            above = state.levels.get(str(limit + 1))
            if above is not None and above >= here * (1 + self.min_gain / 4):
                return self._move(replace(state, descending=False), limit + 1, ceiling=state.ceiling)
            state = replace(state, descending=False, ceiling=limit + 1)  # the level above is no better
        if limit > 1 and str(limit - 1) not in state.levels:
            # the first climb jumped over the level below: measure it, the knee may be there
            return self._move(replace(state, descending=True), limit - 1, ceiling=state.ceiling)
        gain = None if limit == 1 else here / state.levels[str(limit - 1)] - 1
        if gain is not None and gain < self.min_gain / 4:
            # no gain, or a loss: more requests here only queue. Step back and remember why.
            return self._move(state, limit - 1, ceiling=limit)
        if gain is not None and gain < self.min_gain:
            return state  # in between: no reason to move either way (hysteresis)
        return self._climb(state, limit + 1, quick=False)

    def _climb(self, state: LimiterState, target: int, *, quick: bool) -> LimiterState:
        limit, ceiling = state.limit, state.ceiling
        target = min(self.cap, target)
        if ceiling is not None and target >= ceiling:
            if limit + 1 < ceiling:
                target = limit + 1  # approach a level known to be too much one step at a time
            elif state.since_retry < self.retry_after:
                return state  # hold just below it until it is time to try it again
            else:
                target, ceiling = limit + 1, None
        if target <= limit:
            return state  # at the cap
        return self._move(replace(state, quick=quick), target, ceiling=ceiling)

    def _move(self, state: LimiterState, level: int, *, ceiling: int | None) -> LimiterState:
        level = max(1, min(self.cap, level))
        # let the requests started under the old limit finish before judging the new one;
        # careful steps also wait out a round of their own
        settle = state.limit if state.quick else max(state.limit, level)
        return replace(
            state,
            limit=level,
            came_from=state.limit,
            ceiling=ceiling,
            since_retry=0,
            settle_left=settle,
            window_busy=0.0,
            window_work=0.0,
            window_count=0,
        )

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
        first = [*state.probe_first, sample.ttft_ms if sample.ttft_ms is not None else -1.0]
        tpot = [*state.probe_tpot, *([sample.tpot_ms] if sample.tpot_ms is not None else [])]
        rate = [*state.probe_rate, *([sample.work * 1000 / sample.latency_ms] if sample.latency_ms else [])]
        if len(first) < PROBE_SAMPLES:
            return replace(state, probe_first=first, probe_tpot=tpot, probe_rate=rate)
        known_first = [v for v in first if v >= 0]
        baseline_tpot = min(tpot) if tpot else None
        levels, ceiling, quick = dict(state.levels), state.ceiling, state.quick
        if _changed(state.baseline_tpot, baseline_tpot):
            # a different server (new model, new hardware, a noisy neighbour gone): relearn it
            levels, ceiling, quick = {}, None, True
        if rate:  # alone on the gateway, a request's own rate is the gateway's throughput at 1
            levels["1"] = sorted(rate)[len(rate) // 2]
        resumed = replace(
            state,
            probing=False,
            probe_first=[],
            probe_tpot=[],
            probe_rate=[],
            levels=levels,
            quick=quick,
            baseline_first=min(known_first) if known_first else None,
            baseline_tpot=baseline_tpot,
            last_probe_at=sample.at,
        )
        # a fresh start climbs straight on: level 1 has just been measured
        resume_at = 2 if state.restore_limit == 1 and "1" in levels and self.cap > 1 else state.restore_limit
        return self._move(resumed, resume_at, ceiling=ceiling)


def _changed(before: float | None, now: float | None, by: float = 0.25) -> bool:
    """Did the no-load time per token move by more than ``by`` since the last probe?"""
    if before is None or now is None or before <= 0:
        return False
    return abs(now - before) / before > by
