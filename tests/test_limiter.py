"""The adaptive limiter on synthetic latency traces (core/limiter.py is a pure function)."""

from __future__ import annotations

import pytest
from lanewarden.core.limiter import PROBE_SAMPLES, AdaptiveLimiter, LimiterState, Sample


def batching_server(knee: int, token_ms: float = 20.0, ttft_ms: float = 80.0):
    """Per-token time flat up to the knee, then growing faster than linearly (thrashing)."""

    def respond(in_flight: int) -> tuple[float, float]:
        slowdown = 1.0 if in_flight <= knee else (in_flight / knee) ** 2
        return ttft_ms * (1 + 0.05 * in_flight), token_ms * slowdown

    return respond


def serial_server(first_ms: float = 100.0, token_ms: float = 10.0):
    """One at a time: every extra request waits a whole service time before its first token."""
    service = first_ms + token_ms * 99  # for the 100-token answers drive() asks for

    def respond(in_flight: int) -> tuple[float, float]:
        return first_ms + (in_flight - 1) * service, token_ms

    return respond


def drive(
    limiter: AdaptiveLimiter,
    state: LimiterState,
    server,
    samples: int,
    *,
    demand: int = 10_000,
    start: float = 0.0,
) -> tuple[LimiterState, list[int]]:
    """A closed loop: the dispatcher keeps min(limit, demand) requests of 100 tokens in
    flight; with n in flight each taking R seconds, one finishes every R / n seconds."""
    limits, now = [], start
    for _ in range(samples):
        in_flight = min(state.current_limit, demand)
        ttft, tpot = server(in_flight)
        tokens = 100
        latency = ttft + tpot * (tokens - 1)
        now += latency / 1000 / in_flight
        waiting = demand > in_flight
        state = limiter.update(state, Sample("succeeded", in_flight, now, ttft, latency, tokens, waiting))
        limits.append(state.current_limit)
    return state, limits


@pytest.mark.parametrize("knee", [2, 4, 8, 12])
def test_settles_near_the_knee_of_a_batching_server(knee: int) -> None:
    limiter = AdaptiveLimiter(cap=32, probe_interval=1e9)  # periodic probes have their own test
    _, limits = drive(limiter, limiter.start(0.0), batching_server(knee), 600)
    tail = limits[-200:]
    assert all(abs(limit - knee) <= 1 for limit in tail), (knee, sorted(set(tail)))
    assert limits[0] == 1  # it starts by probing, not at the cap


def test_finds_one_for_a_serial_server() -> None:
    limiter = AdaptiveLimiter(cap=16)
    _, limits = drive(limiter, limiter.start(0.0), serial_server(), 400)
    assert max(limits[-100:]) <= 2, sorted(set(limits[-100:]))


def test_never_leaves_its_bounds() -> None:
    limiter = AdaptiveLimiter(cap=3)
    _, limits = drive(limiter, limiter.start(0.0), batching_server(50), 300)  # never congested
    assert max(limits) == 3 and min(limits) >= 1


def test_timeouts_and_backpressure_halve_the_limit() -> None:
    limiter = AdaptiveLimiter(cap=32)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(16), 400)
    before = state.limit
    assert before >= 8
    after = limiter.update(state, Sample("timed_out", before, 100.0))
    assert after.limit == before // 2
    again = limiter.update(after, Sample("backpressure", before, 100.1))
    assert again.limit == before // 4
    assert limiter.update(LimiterState(limit=1, probing=False), Sample("timed_out", 1, 0.0)).limit == 1
    # a task's own failure says nothing about the gateway
    assert limiter.update(state, Sample("failed", int(before), 100.0)) == state


def test_holds_when_the_gateway_is_not_the_bottleneck() -> None:
    limiter = AdaptiveLimiter(cap=32)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(6), 400)
    settled = state.limit
    # demand drops to 1 request at a time: latency is excellent, but that proves nothing about 20
    state, _ = drive(limiter, state, batching_server(6), 200, demand=1, start=state.last_probe_at + 1)
    assert state.limit == pytest.approx(settled)


def test_recovers_after_an_outage() -> None:
    limiter = AdaptiveLimiter(cap=32)
    server = batching_server(5)
    state, _ = drive(limiter, limiter.start(0.0), server, 400)
    # the gateway went down and came back: the monitor restarts the controller
    state = limiter.start(100.0)
    assert state.probing and state.current_limit == 1
    state, limits = drive(limiter, state, server, 400, start=100.0)
    assert state.baseline_tpot is not None
    # probes first (the limit reported after each of its samples), then one step at a time: no burst
    assert limits[: PROBE_SAMPLES - 1] == [1] * (PROBE_SAMPLES - 1) and limits[PROBE_SAMPLES - 1] == 2
    assert abs(limits[-1] - 5) <= 1


def test_periodic_probe_relearns_a_slower_server() -> None:
    limiter = AdaptiveLimiter(cap=32, probe_interval=600.0)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(6, token_ms=20), 300)
    old_baseline = state.baseline_tpot
    # the operator swapped in a bigger model: everything is 3x slower, the knee is the same
    # (its clock starts well after the last probe, so the next probe is due at once)
    state, limits = drive(
        limiter, state, batching_server(6, token_ms=60), 900, start=state.last_probe_at + 700
    )
    assert state.baseline_tpot == pytest.approx(old_baseline * 3, rel=0.05)
    assert abs(limits[-1] - 6) <= 1  # without re-probing it would have collapsed to 1
    assert limits.count(1) < len(limits) // 4  # probes are short


def test_state_round_trips_through_json() -> None:
    limiter = AdaptiveLimiter(cap=8)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(3), 50)
    assert LimiterState.from_json(state.to_json()) == state
