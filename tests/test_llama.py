"""A real llama.cpp server (llama-cpp-python) behind an `llm` profile."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.dispatch_helpers import add_tasks, all_in, dispatch_config, new_board, run_rows, running, wait_for
from tests.llama_server import llama_server

pytestmark = pytest.mark.llama


async def test_twenty_tasks_with_cap_one_never_overlap(tmp_path: Path) -> None:
    with llama_server(tmp_path) as base_url:
        config = dispatch_config(
            f"sqlite:///{tmp_path / 'board.db'}",
            gateways={
                "llama": {"base_url": base_url, "kind": "openai", "max_concurrency": 1, "timeout_seconds": 60}
            },
            profiles={
                "writer": {
                    "gateway": "llama",
                    "model": "tiny",
                    "system_prompt": "Be brief.",
                    "max_tokens": 12,
                    "max_parallel": 4,
                    # a random model may pick end-of-sequence first; keep answers non-empty
                    "request_params": {"logit_bias": {"2": -100}},
                }
            },
            dispatcher={"max_active_tasks": 4},
        )
        board = new_board(config)
        ids = add_tasks(board, 20)
        async with running(board):
            await wait_for(lambda: all_in(board, "done", "failed"), timeout=300, what="20 tasks settled")
        all_runs = []
        for tid in ids:
            task = board.get(tid)
            assert task.status == "done", (tid, task.error)
            assert task.result, f"#{tid} has an empty result"
            (run,) = run_rows(board, tid)
            assert run.completion_tokens and run.completion_tokens > 0
            assert run.ttft_ms is not None and run.ttft_ms <= run.latency_ms
            all_runs.append(run)
        all_runs.sort(key=lambda r: r.started_at)
        for before, after in itertools.pairwise(all_runs):
            assert after.started_at >= before.finished_at, "two runs overlapped on a cap-1 gateway"
        board.db.dispose()
