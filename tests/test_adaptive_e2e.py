"""Adaptive concurrency end to end: the dispatcher finds the simulator's knee by itself."""

from __future__ import annotations

import itertools

from lanewarden.bot.simulator import GatewaySimulator, ServerModel
from lanewarden.core.schema import gateway_limit_history, gateway_state, runs
from sqlalchemy import func, select

from tests.dispatch_helpers import add_tasks, all_in, dispatch_config, new_board, running, wait_for


async def test_limit_settles_within_one_of_the_knee(tmp_path) -> None:
    knee = 3
    sim = GatewaySimulator(
        ServerModel(
            profile="batching",
            knee=knee,
            token_ms=4.0,
            output_tokens=(24, 40),
            overload_exponent=1.5,
            max_queue=200,
        ),
        seed=1,
    )
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
                }
            },
            profiles={"p": {"gateway": "sim", "model": "sim-7b", "max_parallel": 50}},
            dispatcher={"max_active_tasks": 50},
        )
        board = new_board(config)
        add_tasks(board, 200)
        async with running(board):
            await wait_for(lambda: all_in(board, "done", "failed"), timeout=240, what="all tasks done")
        assert all_in(board, "done")
        with board.db.read() as conn:
            final = conn.execute(
                select(gateway_state.c.current_limit).where(gateway_state.c.name == "sim")
            ).scalar()
            changes = conn.execute(
                select(gateway_limit_history.c.at, gateway_limit_history.c.current_limit)
                .where(gateway_limit_history.c.gateway == "sim")
                .order_by(gateway_limit_history.c.id)
            ).all()
            first, last = conn.execute(
                select(func.min(runs.c.claimed_at), func.max(runs.c.finished_at))
            ).one()
        limits = [limit for _, limit in changes]
        assert max(limits) < 12, limits  # it never ran at its bound of 12
        # over the second half of the run, the limit spent most of its time at the knee, give or take one
        middle = first + (last - first) / 2
        near = far = 0.0
        timeline = [*changes, (last, None)]
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
