"""Adaptive concurrency end to end: the dispatcher finds the simulator's knee by itself."""

from __future__ import annotations

from sqlalchemy import select

from bot.simulate import GatewaySimulator, ServerModel
from core.schema import gateway_limit_history, gateway_state
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
        add_tasks(board, 160)
        async with running(board):
            await wait_for(lambda: all_in(board, "done", "failed"), timeout=240, what="all tasks done")
        assert all_in(board, "done")
        with board.db.read() as conn:
            final = conn.execute(
                select(gateway_state.c.current_limit).where(gateway_state.c.name == "sim")
            ).scalar()
            history = [
                r.current_limit
                for r in conn.execute(
                    select(gateway_limit_history.c.current_limit)
                    .where(gateway_limit_history.c.gateway == "sim")
                    .order_by(gateway_limit_history.c.id)
                )
            ]
        assert history[0] <= 2, history  # it started low (probe), never at the cap of 12
        assert max(history) < 12, history
        settled = history[len(history) // 2 :]
        assert all(abs(limit - knee) <= 1 for limit in settled), history
        assert abs(final - knee) <= 1
        board.db.dispose()
    finally:
        await sim.stop()
