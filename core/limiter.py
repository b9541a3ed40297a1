"""Adaptive concurrency for one gateway: find the most requests it serves well, by itself.

Operators are told: start at one request, raise the cap while throughput grows, and roll
back when latency rises at constant throughput. This controller does exactly that, in
the family of TCP Vegas / Netflix concurrency-limits (queueing shows as latency that
buys no throughput) and Envoy's adaptive-concurrency filter (a periodically re-measured
no-load baseline), and it reads what the server says about itself where it says it:

* **What it measures.** At each level it counts only requests that started after the
  limit moved (older ones carry the previous level's conditions) and that ran while
  the gateway was the bottleneck: work waiting for it and at least half the limit in
  use (Gradient2's rule; with idle slots a level proves nothing). From them it
  estimates the gateway's throughput at that level by Little's law, ``level * output
  tokens / seconds the requests took``, so longer answers are not mistaken for
  queueing, with a standard error (a ratio estimator's) so that two levels are
  compared with a confidence bound rather than a fixed gain threshold: on a real
  llama-server one round's figure swings by a third.
* **How it moves.** One level at a time (a burst past the knee costs the whole run's
  p99), faster only while each step pays nearly in full, and straight to the server's
  own free slots where it reports them (llama.cpp ``/slots``: a free slot is capacity
  it says it has). A level is kept when it beats the one below by more than the noise
  (``gain +31% at 6``); it is left for the one below when it is confidently no better
  than ``min_gain`` (``no gain +2% at 5``); in between it gathers more samples, up to
  ``MAX_ROUNDS`` rounds, then goes by the estimate. The level above one found not to
  pay (the ceiling) is retried after ``retry_after`` completions, in case the server
  got faster or quieter.
* **What the server says.** The caller passes the server's own saturation word, read
  from a scrape and corrected for its lag (``deferred>0``, ``waiting 3``, ``kv 93%``,
  ``preempted``) with the time the scrape describes; the controller steps down on it
  only when that time is after the limit last moved (never on a stale scrape as if it
  were now), and never climbs above the server's own slots.
* **Safety.** Timeouts, 429 and 503 halve the limit at once. Time per output token
  beyond ``tolerance`` times its no-load value steps it down at once, and so does a
  time to first token beyond ``tolerance`` times its no-load value when the server has
  no queue metric or says it is queueing (a first token that waits is queueing, a long
  answer is not).
* **Re-probing.** The no-load latencies (time to first token, time per token) are
  measured at start, after an outage and every ``probe_interval`` seconds by pinning
  the limit to 1 for a few requests.
* The limit stays within ``[1, cap]``; every move says why in ``reason``.

The controller is a pure function of its state and one completion. The state lives in
``gateway_state.limiter`` and is updated inside the finishing transaction (with the
gateway's row locked on PostgreSQL), so every dispatcher process shares one limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PROBE_SAMPLES = 2  # no-load requests one at a time: each costs the server's parallelism
Z = 1.64  # one-sided 95%: how sure a comparison of two levels must be before it decides
MAX_ROUNDS = 4  # an undecided level gathers at most this many rounds before going by the estimate
MIN_SAMPLES = 4
QUICK_RETRY_ROUNDS = 10  # after following a slower server down, retry the level above this soon
NEAR_LINEAR = 0.8  # a step that paid this share of its ideal gain may be followed by a longer one
REASON_CHARS = 32  # gateway_limit_history.reason


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished request, and what the server said about itself around then."""

    outcome: str  # a run outcome: succeeded, timed_out, backpressure, ...
    in_flight: int  # requests on the gateway when it finished (including it)
    at: float  # epoch seconds
    ttft_ms: float | None = None
    latency_ms: float | None = None
    completion_tokens: int | None = None
    # more work is waiting for this gateway: the limit, not demand, decides how busy it is
    saturated: bool = True
    # the server's own word that it is past its knee ("deferred>0", "kv 93%"), or None
    pressure: str | None = None
    pressure_at: float | None = None  # the moment the scrape behind ``pressure`` describes
    slots: int | None = None  # requests the server can run at once for us (its free slots), if it says
    reads_queue: bool = False  # the server reports its queue: a slow first token alone is not queueing

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
        """What this request delivered: its output tokens, or one request where the runner
        cannot count them. An answer of no tokens delivered nothing (llama-cpp-python cuts
        a running answer off when another request arrives, and that must not look fast)."""
        return 1.0 if self.completion_tokens is None else float(self.completion_tokens)

    @property
    def started_at(self) -> float:
        return self.at - (self.latency_ms or 0.0) / 1000


@dataclass(frozen=True, slots=True)
class Level:
    """Sums for a ratio estimate of throughput at one level: work / busy seconds per request."""

    n: float = 0.0
    work: float = 0.0
    busy: float = 0.0
    work2: float = 0.0
    busy2: float = 0.0
    cross: float = 0.0
    flight: float = 0.0  # requests in flight as each finished, summed (the level allowed, or fewer)

    def add(self, work: float, busy: float, flight: float) -> Level:
        return Level(
            self.n + 1,
            self.work + work,
            self.busy + busy,
            self.work2 + work * work,
            self.busy2 + busy * busy,
            self.cross + work * busy,
            self.flight + flight,
        )

    def faded(self) -> Level:
        """Older evidence counts half: the ratio stays, the uncertainty grows."""
        return Level(*(v / 2 for v in asdict(self).values()))

    def rate(self) -> float:
        return self.work / self.busy if self.busy > 0 else 0.0

    def rate_error(self, cluster: int = 1) -> float:
        """Standard error of ``rate`` (delta method for a ratio of means).

        Requests in flight together share the server's luck (a noisy neighbour slows
        them all), so a round of ``cluster`` of them counts as one observation, not
        ``cluster``: the error is scaled up by ``sqrt(cluster)``."""
        if self.n < 2 or self.busy <= 0:
            return math.inf
        r = self.rate()
        residual = (self.work2 - 2 * r * self.cross + r * r * self.busy2) / (self.n - 1)
        return math.sqrt(max(0.0, residual) * cluster / self.n) / (self.busy / self.n)


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
    level_since: float = 0.0  # when the limit last moved: requests started before carry the old one
    # what each level delivered, as Level sums (JSON: lists)
    levels: dict[str, list[float]] = field(default_factory=dict)
    came_from: int | None = None  # the level before this one: what this one must beat
    climbing: bool = True  # the first climb (and after a re-probe found a different server)
    ceiling: int | None = None  # a level found not to pay off; retried now and then
    since_retry: int = 0  # completions measured since the limit last moved
    last_probe_at: float = 0.0
    reason: str = "start"  # why the limit is what it is: shown in status, the chart and /metrics
    strikes: int = 0  # latency brakes in a row at this level (one slow request is not a trend)
    # the limit followed a slower server down: the level above is retried soon, not after
    # ``retry_after`` completions, so it comes back up when the server does
    quick_retry: bool = False
    retrying: bool = False  # this level is a retry of one found too much before

    @property
    def current_limit(self) -> int:
        """What the claim kernel may use now."""
        return 1 if self.probing else max(1, self.limit)

    def level(self, limit: int) -> Level:
        values = self.levels.get(str(limit))
        return Level(*values) if values else Level()

    def throughput(self, limit: int) -> tuple[float, float]:
        """Work per second at level ``limit``, and its standard error. Little's law with the
        concurrency the requests really had: a dispatcher slow to refill a slot, or a
        level only half used, must not pass for throughput."""
        level = self.level(limit)
        used = level.flight / level.n if level.n else limit
        return used * level.rate(), used * level.rate_error(limit)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LimiterState | None:
        if not data:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        levels = known.get("levels") or {}
        if any(not isinstance(v, list) for v in levels.values()):
            known["levels"] = {}  # an older controller's figures: measure again
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
        return LimiterState(
            limit=limit, probing=True, restore_limit=limit, last_probe_at=now, level_since=now, reason="probe"
        )

    def update(self, state: LimiterState, sample: Sample) -> LimiterState:
        if sample.outcome in ("timed_out", "backpressure"):
            shrunk = max(1, int(state.limit * self.backoff))
            why = "timeout" if sample.outcome == "timed_out" else "backpressure"
            return self._move(
                replace(state, restore_limit=min(state.restore_limit, shrunk), climbing=False),
                shrunk,
                ceiling=state.limit if shrunk < state.limit else state.ceiling,
                reason=why,
                at=sample.at,
            )
        if sample.outcome != "succeeded":
            return state  # a task's own failure says nothing about the gateway's load
        if state.probing:
            return self._probe(state, sample)
        if sample.at - state.last_probe_at >= self.probe_interval:
            return replace(
                state,
                probing=True,
                restore_limit=state.limit,
                probe_first=[],
                probe_tpot=[],
                probe_rate=[],
                reason="probe",
            )
        if sample.started_at < state.level_since:
            return state  # it ran (partly) under the previous limit: it says nothing about this one
        brake = self._brake(state, sample)
        if brake is not None and brake.startswith(("ttft", "tpot")):
            if state.strikes < 1:
                return replace(state, strikes=state.strikes + 1)
        elif state.strikes:
            state = replace(state, strikes=0)
        if brake is not None and state.limit > 1:
            target = state.limit - 1
            if sample.slots is not None and brake.startswith("slots"):
                target = max(1, sample.slots)
            # the server's slots bound the limit by themselves; other brakes mark a level too far
            ceiling = state.ceiling if brake.startswith("slots") else state.limit
            return self._move(
                replace(state, climbing=False), target, ceiling=ceiling, reason=brake, at=sample.at
            )
        if not sample.saturated or sample.in_flight * 2 < state.limit:
            return state  # demand, not the gateway, is the limit right now: this proves nothing
        return self._measure(state, sample)

    # --------------------------------------------------------------- steps

    def _brake(self, state: LimiterState, sample: Sample) -> str | None:
        """The server is past its knee now (by its own word or by latency): why, or None."""
        if sample.slots is not None and state.limit > max(1, sample.slots):
            return f"slots {sample.slots}"
        if sample.pressure and sample.pressure_at is not None and sample.pressure_at >= state.level_since:
            return sample.pressure
        latency = sample.latency_ms or 0.0
        tpot, base_tpot = sample.tpot_ms, state.baseline_tpot
        if (
            tpot is not None
            and base_tpot
            and tpot > self.tolerance * base_tpot
            # decoding slowed enough to explain a good share of the request (not a blip in a short answer)
            and (tpot - base_tpot) * ((sample.completion_tokens or 1) - 1) > 0.25 * latency
        ):
            return f"tpot x{tpot / base_tpot:.1f}"
        first, base_first = sample.ttft_ms, state.baseline_first
        if (
            first is not None
            and base_first
            and not sample.reads_queue
            and first > self.tolerance * base_first
            # queueing: the first token waited a good share of the request (not a slow prefill)
            and first - base_first > 0.25 * latency
        ):
            return f"ttft x{first / base_first:.1f}"
        return None

    def _measure(self, state: LimiterState, sample: Sample) -> LimiterState:
        if not sample.latency_ms:
            return state
        key = str(state.limit)
        level = state.level(state.limit)
        if level.n > 8 * max(MIN_SAMPLES, state.limit):
            level = level.faded()  # a level held for long is judged on its recent rounds
        level = level.add(sample.work, sample.latency_ms / 1000, min(sample.in_flight, state.limit))
        state = replace(
            state,
            levels={**state.levels, key: list(asdict(level).values())},
            since_retry=state.since_retry + 1,
        )
        if level.n < max(MIN_SAMPLES, state.limit):
            return state
        return self._decide(state, sample, level)

    def _decide(self, state: LimiterState, sample: Sample, level: Level) -> LimiterState:
        limit = state.limit
        here, here_err = state.throughput(limit)
        measured_below = [int(k) for k in state.levels if int(k) < limit and state.level(int(k)).n >= 2]
        base = state.came_from if state.came_from in measured_below else max(measured_below, default=None)
        if base is None:
            return self._climb(state, sample, limit + 1, "climb")
        below, below_err = state.throughput(base)
        if below <= 0:
            return self._climb(state, sample, limit + 1, "climb")
        gain = here / below - 1
        error = math.hypot(here_err / below, here * below_err / below**2)
        # a free slot on the server is capacity it says it has: keep it unless it costs
        bar = 0.0 if sample.slots is not None and limit <= sample.slots else self.min_gain
        rounds = level.n / max(1, limit)
        if gain - Z * error > bar or (rounds >= MAX_ROUNDS and gain >= bar and gain > 0):
            ideal = (limit - base) / base
            step = max(1, limit // 4) if gain >= NEAR_LINEAR * ideal else 1
            state = replace(state, retrying=False)
            return self._climb(state, sample, limit + step, f"gain {gain:+.0%} at {limit}")
        if gain + Z * error < bar or rounds >= MAX_ROUNDS:
            # no gain, or a loss: more requests here only queue. Step back and remember why.
            target = base if limit - base <= 1 else (base + limit) // 2
            why = f"no gain {gain:+.0%} at {limit}"
            # a level held for a while (or retried) stopped paying: the server got slower, not
            # a knee found; the level above is worth another try soon
            held = state.ceiling == limit + 1 and state.since_retry >= 2 * MAX_ROUNDS * limit
            quick = state.retrying or held
            state = replace(state, climbing=False, quick_retry=quick, retrying=False)
            return self._move(state, target, ceiling=limit, reason=why, at=sample.at)
        return state  # not sure yet: more samples at this level

    def _climb(self, state: LimiterState, sample: Sample, target: int, why: str) -> LimiterState:
        limit, ceiling = state.limit, state.ceiling
        slots = sample.slots
        if state.climbing and slots is not None and limit < slots:
            target = max(target, min(2 * limit, slots))  # the server says it has the room
        if slots is not None:
            target = min(target, max(1, slots))
        target = min(self.cap, target)
        if ceiling is not None and target >= ceiling:
            if limit + 1 < ceiling:
                target = limit + 1  # approach a level known to be too much one step at a time
            elif state.since_retry < (QUICK_RETRY_ROUNDS * limit if state.quick_retry else self.retry_after):
                return state  # hold just below it until it is time to try it again
            else:
                target, ceiling, why = limit + 1, None, f"retry {limit + 1}"
                state = replace(state, retrying=True)
        if target <= limit:
            return state  # at the cap, or at the server's slots
        return self._move(state, target, ceiling=ceiling, reason=why, at=sample.at)

    def _move(
        self, state: LimiterState, level: int, *, ceiling: int | None, reason: str, at: float
    ) -> LimiterState:
        level = max(1, min(self.cap, level))
        levels = dict(state.levels)
        if str(level) in levels:  # a level visited again: its old figures count half
            levels[str(level)] = list(asdict(state.level(level).faded()).values())
        return replace(
            state,
            limit=level,
            came_from=state.limit if state.limit != level else state.came_from,
            ceiling=ceiling,
            since_retry=0,
            levels=levels,
            level_since=at,
            reason=reason[:REASON_CHARS],
            strikes=0,
        )

    def _probe(self, state: LimiterState, sample: Sample) -> LimiterState:
        if sample.in_flight > 1:
            return state  # started before the probe pinned the limit: not a no-load sample
        first = [*state.probe_first, sample.ttft_ms if sample.ttft_ms is not None else -1.0]
        tpot = [*state.probe_tpot, *([sample.tpot_ms] if sample.tpot_ms is not None else [])]
        rate = [*state.probe_rate, *([sample.work * 1000 / sample.latency_ms] if sample.latency_ms else [])]
        level_one = state.level(1)
        if sample.latency_ms:
            level_one = level_one.add(sample.work, sample.latency_ms / 1000, 1)
        levels = {**state.levels, "1": list(asdict(level_one).values())}
        if len(first) < PROBE_SAMPLES:
            return replace(state, probe_first=first, probe_tpot=tpot, probe_rate=rate, levels=levels)
        known_first = [v for v in first if v >= 0]
        baseline_tpot = min(tpot) if tpot else None
        ceiling, climbing = state.ceiling, state.climbing
        if _changed(state.baseline_tpot, baseline_tpot):
            # a different server (new model, new hardware, a noisy neighbour gone): relearn it
            levels, ceiling, climbing = {"1": list(asdict(level_one).values())}, None, True
        resumed = replace(
            state,
            probing=False,
            probe_first=[],
            probe_tpot=[],
            probe_rate=[],
            levels=levels,
            climbing=climbing,
            baseline_first=min(known_first) if known_first else None,
            baseline_tpot=baseline_tpot,
            last_probe_at=sample.at,
        )
        # a fresh start climbs straight on: level 1 has just been measured
        fresh = state.restore_limit == 1 and self.cap > 1
        resume_at = 2 if fresh else state.restore_limit
        return self._move(
            resumed, resume_at, ceiling=ceiling, reason="climb" if fresh else "probed", at=sample.at
        )


def reason_kind(reason: str) -> str:
    """The family of a recorded reason (``gain +31% at 6`` -> ``gain``), for charts and legends."""
    word = reason.split(" ", 1)[0] if reason else ""
    if word in ("gain", "climb", "retry"):
        return "gain"
    if word == "no":
        return "no gain"
    if word in ("deferred>0", "waiting", "kv", "preempted", "slots"):
        return "server"
    if word in ("ttft", "tpot"):
        return "latency"
    if word == "timeout":
        return "backpressure"
    return reason


def _changed(before: float | None, now: float | None, by: float = 0.25) -> bool:
    """Did the no-load time per token move by more than ``by`` since the last probe?"""
    if before is None or now is None or before <= 0:
        return False
    return abs(now - before) / before > by
