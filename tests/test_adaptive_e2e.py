"""Adaptive concurrency end to end: the dispatcher finds each simulator shape's knee by itself.

Shapes (bot/simulator/model.py): decode-heavy continuous batching; a server whose time is
all before the first token (long prompts, answers of a few tokens) with vLLM-style
metrics that trail the engine; and a serial server. Real HTTP on loopback, the real
dispatcher, the limit read back from the board.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from lanewarden.bot.simulator import GatewaySimulator, ServerModel
from lanewarden.core.gateways import GatewayMonitor
from lanewarden.core.schema import gateway_limit_history, gateway_state, runs
from sqlalchemy import func, select

from tests.dispatch_helpers import add_tasks, all_in, dispatch_config, new_board, running, wait_for

# steps of 20 ms: a loaded machine's timer jitter must not hide the knee
SHAPES = {
    "batching": (
        ServerModel(
            profile="batching",
            knee=3,
            token_ms=20.0,
            output_tokens=(8, 12),
            overload_exponent=2.0,
            max_queue=200,
        ),
        3,
        90,
    ),
    "before-first-token": (
        ServerModel(
            profile="batching",
            knee=3,
            token_ms=20.0,
            prefill_steps=8,
            output_tokens=(2, 4),
            overload_exponent=2.0,
            max_queue=200,
            metrics_lag_seconds=2.0,
        ),
        3,
        90,
    ),
    "serial": (ServerModel(profile="serial", token_ms=20.0, output_tokens=(8, 12), max_queue=200), 1, 60),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_limit_settles_within_one_of_the_knee(tmp_path, shape: str) -> None:
    model, knee, count = SHAPES[shape]
    sim = GatewaySimulator(model, seed=1)
    await sim.start()
    try:
        config = dispatch_config(
            f"sqlite:///{tmp_path / 'board.db'}",
            gateways={
                "sim": {
                    "base_url": sim.base_url,
                    "kind": "vllm",
                    "max_concurrency": 12,
                    "adaptive": True,
                    "timeout_seconds": 30,
                    "probe_interval_seconds": 1,
                }
            },
            profiles={"p": {"gateway": "sim", "model": "sim-7b", "max_parallel": 50}},
            dispatcher={"max_active_tasks": 50},
        )
        board = new_board(config)
        add_tasks(board, count)
        # as `serve` runs them: health probes and the server's own signals beside the dispatcher
        monitor = asyncio.create_task(GatewayMonitor(board.db, dict(config.gateways)).run())
        try:
            async with running(board):
                await wait_for(lambda: all_in(board, "done", "failed"), timeout=240, what="all tasks done")
        finally:
            monitor.cancel()
        assert all_in(board, "done")
        with board.db.read() as conn:
            final = conn.execute(
                select(gateway_state.c.current_limit).where(gateway_state.c.name == "sim")
            ).scalar()
            changes = conn.execute(
                select(
                    gateway_limit_history.c.at,
                    gateway_limit_history.c.current_limit,
                    gateway_limit_history.c.reason,
                )
                .where(gateway_limit_history.c.gateway == "sim")
                .order_by(gateway_limit_history.c.id)
            ).all()
            first, last = conn.execute(
                select(func.min(runs.c.claimed_at), func.max(runs.c.finished_at))
            ).one()
        limits = [(limit, reason) for _, limit, reason in changes]
        assert max(limit for limit, _ in limits) <= knee + 2, limits  # no burst past the knee
        # every move says why, in the limiter's own words
        assert all(reason and reason != "adaptive" for _, reason in limits), limits
        # over the second half of the run, the limit spent most of its time at the knee, give or take one
        middle = first + (last - first) / 2
        near = far = 0.0
        timeline = [(at, limit) for at, limit, _ in changes] + [(last, None)]
        for (at, limit), (until, _) in itertools.pairwise(timeline):
            seconds = max(0.0, (min(until, last) - max(at, middle)).total_seconds())
            if abs(limit - knee) <= 1:
                near += seconds
            else:
                far += seconds
        assert near >= 0.8 * (near + far), (limits, near, far)
        assert abs(final - knee) <= 1, limits
        board.db.dispose()
    finally:
        await sim.stop()
