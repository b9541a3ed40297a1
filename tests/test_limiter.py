"""The adaptive limiter on synthetic latency traces (core/limiter.py is a pure function)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lanewarden.core.limiter import PROBE_SAMPLES, AdaptiveLimiter, LimiterState, Sample, reason_kind
from lanewarden.core.saturation import LAG_SECONDS, server_view


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


# ------------------------------------------------ the server's own word (core/saturation.py)


def scrape(read_at: float, **figures: object) -> dict[str, object]:
    return {"read_at": datetime.fromtimestamp(read_at, UTC).isoformat(), **figures}


def test_a_scrape_is_read_as_of_now_with_our_own_requests_on_top() -> None:
    now = 1_000.0
    # llama.cpp: 8 slots, 6 busy when we had 4 in flight: another tenant holds 2, so 6 are ours
    view = server_view(
        scrape(now - 1, running=6, waiting=0, slots_total=8, own_in_flight=4), "llamacpp", 5, now, 2
    )
    assert view.slots == 6 and view.pressure is None and view.reads_queue
    # deferred while we held our share: the queue is there now only if we still hold as many
    busy = scrape(now - 1, running=8, waiting=2, slots_total=8, own_in_flight=8)
    assert server_view(busy, "llamacpp", 8, now, 2).pressure == "deferred>0"
    assert server_view(busy, "llamacpp", 6, now, 2).pressure is None  # we already backed off
    # a scrape older than three probe intervals says nothing about now
    assert (
        server_view(scrape(now - 10, running=8, waiting=2, slots_total=8), "llamacpp", 8, now, 2).slots
        is None
    )
    # vLLM: waiting on two scrapes in a row, and its gauges trail by LAG_SECONDS
    queued = scrape(now - 1, running=4, waiting=2, own_in_flight=6, waiting_streak=2)
    view = server_view(queued, "vllm", 6, now, 2)
    assert view.pressure == "waiting 2" and view.pressure_at == pytest.approx(now - 1 - LAG_SECONDS["vllm"])
    assert server_view({**queued, "waiting_streak": 1}, "vllm", 6, now, 2).pressure is None  # one blip
    assert (
        server_view(scrape(now, running=3, waiting=0, kv_cache_usage=0.95), "vllm", 3, now, 2).pressure
        == "kv 95%"
    )
    assert server_view(scrape(now, running=3, preemptions=2), "vllm", 3, now, 2).pressure == "preempted"
    # Ollama and plain OpenAI servers report no queue
    assert not server_view(scrape(now, models=[]), "ollama", 3, now, 2).reads_queue


def test_the_limiter_acts_on_the_server_word_only_when_it_describes_the_current_level() -> None:
    limiter = AdaptiveLimiter(cap=32, probe_interval=1e9)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(8), 300)
    level, since = state.limit, state.level_since
    late = Sample("succeeded", level, since + 5, 80, 2000, 100, True, "waiting 3", since + 1, None, True)
    stale = replace(late, pressure_at=since - 1)  # a scrape of the level before: not now
    assert limiter.update(state, stale).limit == level
    moved = limiter.update(state, late)
    assert moved.limit == level - 1 and moved.reason == "waiting 3" and moved.ceiling == level
    # the server's slots bound the limit without marking a level as too much
    capped = limiter.update(state, replace(late, pressure=None, slots=level - 3))
    assert capped.limit == level - 3 and capped.reason == f"slots {level - 3}" and capped.ceiling != level


def test_every_move_says_why() -> None:
    limiter = AdaptiveLimiter(cap=32, probe_interval=1e9)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(4), 400)
    assert state.reason.startswith(("gain", "no gain", "climb", "tpot", "retry")), state.reason
    assert len(state.reason) <= 32
    assert reason_kind("gain +31% at 6") == "gain" and reason_kind("deferred>0") == "server"
    assert reason_kind("ttft x2.1") == "latency" and reason_kind("no gain +2% at 5") == "no gain"


# ------------------------------------- recorded traces from a real llama-server (bench/traces.py)

TRACES = json.loads((Path(__file__).parent / "fixtures" / "limiter_traces.json").read_text())
SLOTS = {"llama-server-np4": 4, "llama-server-np8": 8}


def replay(
    limiter: AdaptiveLimiter, trace: dict[str, list[list[float]]], slots: int | None, samples: int
) -> list[int]:
    """A closed loop over what the real server answered: at ``n`` in flight, the next request
    recorded at the nearest fixed cap (each cap's requests in the order they finished)."""
    caps = sorted(int(c) for c in trace)
    cursor = dict.fromkeys(caps, 0)
    state, now, limits = limiter.start(0.0), 0.0, []
    for _ in range(samples):
        n = state.current_limit
        cap = min(caps, key=lambda c: (abs(c - n), c))
        rows = trace[str(cap)]
        latency, ttft, tokens = rows[cursor[cap] % len(rows)]
        cursor[cap] += 1
        now += latency / 1000 / n
        sample = Sample("succeeded", n, now, ttft, latency, int(tokens), True, slots=slots, reads_queue=True)
        state = limiter.update(state, sample)
        limits.append(state.current_limit)
    return limits


def best_caps(trace: dict[str, list[list[float]]]) -> set[int]:
    """Caps within 3% of the most output tokens per second (Little's law on the recording)."""
    rate = {int(c): int(c) * sum(r[2] for r in rows) / sum(r[0] for r in rows) for c, rows in trace.items()}
    top = max(rate.values())
    return {c for c, r in rate.items() if r >= 0.97 * top}


@pytest.mark.parametrize("slots_known", [True, False], ids=["with-slots", "throughput-only"])
@pytest.mark.parametrize("server", sorted(SLOTS))
def test_settles_at_the_best_cap_of_a_recorded_llama_server(server: str, slots_known: bool) -> None:
    trace = TRACES[server]
    best = best_caps(trace)
    slots = SLOTS[server] if slots_known else None  # without /slots: judged by throughput alone
    limits = replay(AdaptiveLimiter(cap=50, probe_interval=1e9), trace, slots, 600)
    tail = limits[-200:]
    near = sum(1 for limit in tail if any(abs(limit - c) <= 1 for c in best))
    assert near >= 0.9 * len(tail), (best, sorted(set(tail)))
    # never past the server's own slots when it reports them (they only queue), no burst otherwise
    assert max(limits) <= (SLOTS[server] if slots_known else max(best) + 2), limits


def test_an_answer_cut_to_no_tokens_delivered_nothing() -> None:
    # llama-cpp-python interrupts a running answer when another request arrives: a level where
    # every answer comes back fast and empty must not pass for a faster one
    assert Sample("succeeded", 2, 1.0, 5.0, 50.0, 0).work == 0.0
    assert Sample("succeeded", 2, 1.0, 5.0, 50.0, None).work == 1.0  # a runner that cannot count
    limiter = AdaptiveLimiter(cap=8, probe_interval=1e9)
    state, now = limiter.start(0.0), 0.0
    for _ in range(40):
        n = state.current_limit
        tokens, latency = (48, 2000.0) if n == 1 else (0, 150.0)
        now += latency / 1000 / n
        state = limiter.update(state, Sample("succeeded", n, now, 50.0, latency, tokens))
    assert state.limit == 1 and state.reason.startswith("no gain"), state


def test_follows_a_server_that_gets_slower_and_comes_back() -> None:
    # another tenant arrives (the knee left to us drops from 6 to 3), then leaves
    limiter = AdaptiveLimiter(cap=32, probe_interval=1e9)
    state, _ = drive(limiter, limiter.start(0.0), batching_server(6), 400)
    state, crowded = drive(limiter, state, batching_server(3), 400, start=state.level_since + 100)
    state, alone = drive(limiter, state, batching_server(6), 800, start=state.level_since + 200)
    assert all(abs(limit - 3) <= 1 for limit in crowded[-100:]), sorted(set(crowded[-100:]))
    assert all(abs(limit - 6) <= 1 for limit in alone[-100:]), sorted(set(alone[-100:]))
