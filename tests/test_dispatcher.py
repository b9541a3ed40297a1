"""The dispatcher in one process: caps, fencing, retries, stop, outages, backpressure, modes."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
from lanewarden.core.claims import ClaimKernel, Completion
from lanewarden.core.clock import utcnow
from lanewarden.core.schema import runs, tasks
from lanewarden.core.workspaces import board_key
from sqlalchemy import update

from tests.dispatch_helpers import (
    add_tasks,
    all_in,
    dispatch_config,
    new_board,
    run_rows,
    running,
    statuses,
    wait_for,
)
from tests.fakes.gateway import FakeGateway, Tracker


@pytest.fixture
def gateways():
    tracker = Tracker()
    made: list[FakeGateway] = []

    def make(**kw) -> FakeGateway:
        gw = FakeGateway(tracker=tracker, **kw)
        made.append(gw)
        return gw

    make.tracker = tracker  # type: ignore[attr-defined]
    yield make
    for gw in made:
        gw.close()


def llm_profiles(*pairs: tuple[str, str, int]) -> dict:
    return {name: {"gateway": gw, "model": f"model-{name}", "max_parallel": cap} for name, gw, cap in pairs}


async def test_caps_hold_and_every_task_runs_once(board_url: str, gateways) -> None:
    gw1, gw2 = gateways(delay=0.05), gateways(delay=0.05)
    config = dispatch_config(
        board_url,
        gateways={
            "g1": {"base_url": gw1.base_url, "max_concurrency": 2},
            "g2": {"base_url": gw2.base_url, "max_concurrency": 1},
        },
        profiles=llm_profiles(("p1", "g1", 2), ("p2", "g2", 2)),
        dispatcher={"max_active_tasks": 2},
    )
    board = new_board(config)
    ids = add_tasks(board, 12, "p1") + add_tasks(board, 12, "p2")
    async with running(board):
        await wait_for(lambda: all_in(board, "done"), what="all tasks done")
    assert gw1.peak <= 2 and gw2.peak <= 1
    assert gateways.tracker.peak <= 2  # the board cap binds across both gateways
    assert gateways.tracker.peak == 2  # and the caps were actually used
    assert sum(gw1.task_counts().values()) + sum(gw2.task_counts().values()) == len(ids)
    for tid in ids:
        (run,) = run_rows(board, tid)
        assert run.outcome == "succeeded" and run.completion_tokens == 4
    board.db.dispose()


async def test_fencing_refuses_a_late_completion(board_url: str) -> None:
    config = dispatch_config(board_url)
    board = new_board(config)
    (tid,) = add_tasks(board, 1)
    old = ClaimKernel(board, "old-dispatcher")
    (claim,) = old.claim(1)
    with board.db.write() as conn:  # the old dispatcher stops heartbeating
        conn.execute(update(runs).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    new = ClaimKernel(board, "new-dispatcher")
    assert new.reclaim_expired() == [claim.run_id]
    assert statuses(board)[tid] == "ready"
    (again,) = new.claim(1)
    (late,) = old.finish([Completion(claim.run_id, tid, "succeeded", result="stale")])
    assert not late.accepted
    task = board.get(tid)
    assert (task.status, task.current_run_id, task.result, task.attempts) == ("active", again.run_id, None, 0)
    # the rightful owner completes normally
    (ok,) = new.finish([Completion(again.run_id, tid, "succeeded", result="fresh")])
    assert ok.accepted and board.get(tid).result == "fresh"
    assert [r.outcome for r in run_rows(board, tid)] == ["lost", "succeeded"]
    board.db.dispose()


async def test_task_errors_retry_then_fail(board_url: str, tmp_path: Path) -> None:
    config = dispatch_config(
        board_url, profiles={"sh": {"runner": "command", "command": ["sh", "-c", "echo boom >&2; exit 3"]}}
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1, max_attempts=2)
    async with running(board, workspace_root=tmp_path):
        await wait_for(lambda: all_in(board, "failed"), what="task failed")
    task = board.get(tid)
    assert task.attempts == 2 and "exit status 3: boom" in task.error
    kinds = [e.kind for e in board.show(tid).events]
    assert kinds.count("retry_scheduled") == 1 and kinds[-1] == "failed"
    board.db.dispose()


async def test_missing_command_fails_clearly_and_dispatcher_survives(board_url: str, tmp_path: Path) -> None:
    config = dispatch_config(
        board_url,
        profiles={
            "broken": {"runner": "command", "command": ["/nonexistent/agent", "--", "{prompt}"]},
            "fine": {"runner": "noop"},
        },
    )
    board = new_board(config)
    (bad,) = add_tasks(board, 1, "broken")
    good = add_tasks(board, 3, "fine")
    async with running(board, workspace_root=tmp_path):
        await wait_for(lambda: all_in(board, "done", "failed"), what="tasks settled")
    task = board.get(bad)
    assert task.status == "failed" and task.attempts == 1  # not retryable: no point retrying
    assert "command not found: /nonexistent/agent" in task.error
    assert all(board.get(t).status == "done" for t in good)
    board.db.dispose()


async def test_command_runner_env_workspace_and_placeholders(
    board_url: str, tmp_path: Path, gateways
) -> None:
    gw = gateways()
    # the agent gets its gateway's key; the result shows whether it did without printing it
    script = (
        'key=no; [ "$OPENAI_API_KEY" = sekret-key ] && key=yes; '
        'echo "$LANEWARDEN_TASK_ID|$OPENAI_BASE_URL|$OPENAI_MODEL|$key|$(pwd)|$1"'
    )
    config = dispatch_config(
        board_url,
        gateways={"g": {"base_url": gw.base_url, "api_key_env": "LW_TEST_KEY"}},
        profiles={
            "agent": {
                "runner": "command",
                "gateway": "g",
                "model": "m1",
                "command": ["sh", "-c", script, "sh", "{task_id}:{prompt}"],
            }
        },
    )
    os.environ["LW_TEST_KEY"] = "sekret-key"
    try:
        board = new_board(config)
        (tid,) = add_tasks(board, 1)
        async with running(board, workspace_root=tmp_path):
            await wait_for(lambda: all_in(board, "done"), what="done")
    finally:
        del os.environ["LW_TEST_KEY"]
    result = board.get(tid).result
    (run_id,) = [r.id for r in run_rows(board, tid)]
    workspace = tmp_path / board_key(board.db.url) / f"task-{tid}-run-{run_id}"
    assert result == f"{tid}|{gw.base_url}|m1|yes|{workspace}|{tid}:[task 0]"
    assert not workspace.exists(), "a succeeded run's workspace is removed (keep_workspaces = failed)"
    board.db.dispose()


async def test_cancel_kills_the_process_group(board_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {marker}.child; echo $$ > {marker}.shell; wait"
    config = dispatch_config(
        board_url, profiles={"slow": {"runner": "command", "command": ["sh", "-c", script]}}
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1)
    async with running(board, workspace_root=tmp_path) as dispatcher:
        # a redirection creates the file before echo writes it: wait for whole lines
        await wait_for(
            lambda: all(_written(Path(f"{marker}.{k}")) for k in ("child", "shell")), what="started"
        )
        pids = [int(Path(f"{marker}.{k}").read_text()) for k in ("child", "shell")]
        assert all(_alive(p) for p in pids)
        board.cancel(tid, "test")
        await wait_for(lambda: not any(_alive(p) for p in pids), timeout=10, what="process group gone")
        await wait_for(lambda: run_rows(board, tid)[0].outcome == "cancelled", what="slot freed")
        # the row is written a moment before the worker task itself returns
        await wait_for(lambda: not dispatcher.workers, what="the worker gone")
    assert board.get(tid).status == "cancelled"
    board.db.dispose()


def _written(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_block_stops_an_llm_call(board_url: str, gateways) -> None:
    gw = gateways(delay=30, tokens=30)
    config = dispatch_config(
        board_url, gateways={"g": {"base_url": gw.base_url}}, profiles=llm_profiles(("p", "g", 1))
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1)
    async with running(board):
        await wait_for(lambda: gw.in_flight == 1, what="request in flight")
        board.block(tid, "test", "needs a human")
        await wait_for(lambda: gw.in_flight == 0, timeout=10, what="HTTP call aborted")
    assert board.get(tid).status == "blocked"
    assert run_rows(board, tid)[0].outcome == "cancelled"
    board.db.dispose()


async def test_gateway_outage_waits_then_slow_starts(board_url: str, gateways) -> None:
    gw = gateways(delay=0.2)
    config = dispatch_config(
        board_url,
        gateways={
            "g": {
                "base_url": gw.base_url,
                "max_concurrency": 4,
                "kind": "llamacpp",
                "probe_interval_seconds": 0.2,
            }
        },
        profiles=llm_profiles(("p", "g", 4)),
    )
    board = new_board(config)
    from lanewarden.core.gateways import GatewayMonitor

    monitor = GatewayMonitor(board.db, dict(config.gateways))
    gw.stop()
    ids = add_tasks(board, 16)
    async with running(board) as dispatcher:
        monitor.on_change = lambda *_: dispatcher.wake()
        probe_task = asyncio.create_task(monitor.run())
        await wait_for(lambda: board.limits()[0].gateways["g"].healthy is False, what="gateway seen down")
        await asyncio.sleep(1.0)  # a while of outage: nothing may fail meanwhile
        assert all(s in ("ready", "active") for s in statuses(board).values())
        assert any("gateway g is down" in r for r in board.show(ids[-1]).waiting_on)
        gw.start()
        await wait_for(lambda: all_in(board, "done"), what="all done after recovery")
        probe_task.cancel()
    after = gw.starts_in_flight()
    assert after[0] == 1, after  # the first request after the outage is alone
    assert all(n <= i + 1 for i, n in enumerate(after)), after  # then it climbs, never bursts
    assert max(after) > 1  # and does climb
    for tid in ids:
        task = board.get(tid)
        assert task.status == "done" and task.attempts == 1  # outage cost no attempts
    board.db.dispose()


async def test_backpressure_honours_retry_after_without_using_attempts(board_url: str, gateways) -> None:
    gw = gateways(delay=0.05)
    gw.fail_next(429, retry_after="1")
    config = dispatch_config(
        board_url,
        gateways={"g": {"base_url": gw.base_url, "max_concurrency": 2}},
        profiles=llm_profiles(("p", "g", 2)),
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1, max_attempts=1)
    async with running(board):
        await wait_for(lambda: all_in(board, "done"), what="done after backpressure")
    outcomes = [r.outcome for r in run_rows(board, tid)]
    assert outcomes == ["backpressure", "succeeded"]
    first, second = run_rows(board, tid)
    assert (second.claimed_at - first.finished_at).total_seconds() >= 0.9  # Retry-After: 1
    assert board.get(tid).attempts == 1
    board.db.dispose()


async def test_unreachable_gateway_and_unknown_profile_wait_with_reasons(board_url: str) -> None:
    config = dispatch_config(
        board_url, gateways={"g": {"base_url": "http://127.0.0.1:9/v1"}}, profiles=llm_profiles(("p", "g", 1))
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1)
    with board.db.write() as conn:  # a task written by a process with another config
        conn.execute(update(tasks).values(profile="ghost").where(tasks.c.id == tid))
    (real,) = add_tasks(board, 1, "p")
    async with running(board):
        await wait_for(lambda: board.limits()[0].gateways["g"].healthy is False, what="gateway marked down")
    assert statuses(board) == {tid: "ready", real: "ready"}
    assert board.get(real).attempts == 0
    assert any("gateway g is down" in r and "cannot connect" in r for r in board.show(real).waiting_on)
    assert any("profile 'ghost' is not configured" in r for r in board.show(tid).waiting_on)
    board.db.dispose()


async def test_windowed_mode_starts_only_released_tasks_within_caps(board_url: str, gateways) -> None:
    gw = gateways(delay=0.3)
    config = dispatch_config(
        board_url,
        gateways={"g": {"base_url": gw.base_url, "max_concurrency": 1}},
        profiles=llm_profiles(("p", "g", 4)),
        dispatcher={"enabled": False},
    )
    board = new_board(config)
    ids = add_tasks(board, 6)
    async with running(board):
        await asyncio.sleep(0.5)
        assert all_in(board, "ready") and not gw.requests
        released = board.promote_batch("ready", "active", 2, "scheduler:night")
        assert [t.id for t in released] == ids[:2]
        await wait_for(lambda: sum(s == "done" for s in statuses(board).values()) == 2, what="two done")
        await asyncio.sleep(0.3)
        assert len(gw.requests) == 2 and gw.peak == 1  # never more than N, never above the cap
        assert "windowed mode" in " ".join(board.show(ids[2]).waiting_on)
    board.db.dispose()


async def test_live_cap_change_and_pause_apply_at_next_claim(board_url: str, gateways) -> None:
    gw = gateways(delay=0.1)
    config = dispatch_config(
        board_url,
        gateways={"g": {"base_url": gw.base_url, "max_concurrency": 4}},
        profiles=llm_profiles(("p", "g", 4)),
    )
    board = new_board(config)
    board.set_cap("gateway", "g", 1, "admin")
    board.pause("profile", "p", "admin")
    add_tasks(board, 8)
    async with running(board):
        await asyncio.sleep(0.5)
        assert not gw.requests  # paused
        board.resume("profile", "p", "admin")
        await wait_for(lambda: all_in(board, "done"), what="done")
    assert gw.peak == 1
    board.db.dispose()


async def test_round_robin_between_profiles(board_url: str) -> None:
    config = dispatch_config(board_url, profiles={"a": {"runner": "noop"}, "b": {"runner": "noop"}})
    board = new_board(config)
    add_tasks(board, 6, "a")
    add_tasks(board, 3, "b")  # younger, same priority
    kernel = ClaimKernel(board, "d")
    order = []
    for _ in range(6):
        (claim,) = kernel.claim(1)
        order.append(claim.profile)
        kernel.finish([Completion(claim.run_id, claim.task_id, "succeeded")])
    assert order == ["a", "b", "a", "b", "a", "b"]
    urgent = add_tasks(board, 1, "a", priority=5)
    assert kernel.claim(1)[0].task_id == urgent[0]  # priority beats the turn
    board.db.dispose()


async def test_drain_releases_running_work_without_using_attempts(board_url: str, tmp_path: Path) -> None:
    config = dispatch_config(board_url, profiles={"slow": {"runner": "command", "command": ["sleep", "60"]}})
    board = new_board(config)
    ids = add_tasks(board, 2)
    async with running(board, workspace_root=tmp_path) as dispatcher:
        await wait_for(lambda: all_in(board, "active"), what="running")
        await dispatcher.drain(timeout=0.2)
    for tid in ids:
        task = board.get(tid)
        assert (task.status, task.attempts) == ("ready", 0)
        assert run_rows(board, tid)[-1].outcome == "released"
    board.db.dispose()


async def test_llm_prompt_carries_system_prompt_body_and_parent_results(board_url: str, gateways) -> None:
    gw = gateways()
    config = dispatch_config(
        board_url,
        gateways={"g": {"base_url": gw.base_url}},
        profiles={
            "p": {
                "gateway": "g",
                "model": "m",
                "system_prompt": "Be terse.",
                "request_params": {"temperature": 0.1},
            }
        },
    )
    board = new_board(config)
    from lanewarden.core.board import NewTask

    parent = board.add(NewTask(title="[task 1] Ingest logs"), "test")
    child = board.add(NewTask(title="[task 2] Report", body="One page.", parents=[parent.id]), "test")
    async with running(board):
        await wait_for(lambda: all_in(board, "done"), what="both done")
    first, second = gw.requests
    assert first.task_id == 1 and second.task_id == 2  # the child waited for its parent
    system, user = second.messages
    assert system == {"role": "system", "content": "Be terse."}
    assert "One page." in user["content"]
    assert f"#{parent.id} [task 1] Ingest logs" in user["content"]
    assert board.get(parent.id).result.strip() in user["content"]
    assert board.get(child.id).result == "tok0 tok1 tok2 tok3 "
    board.db.dispose()


async def test_a_server_side_timeout_is_a_timeout(board_url: str, gateways) -> None:
    gw = gateways(delay=0.05)
    gw.fail_next(408)
    config = dispatch_config(
        board_url, gateways={"g": {"base_url": gw.base_url}}, profiles=llm_profiles(("p", "g", 1))
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1, max_attempts=2)
    async with running(board):
        await wait_for(lambda: all_in(board, "done"), what="done on the second attempt")
    assert [r.outcome for r in run_rows(board, tid)] == ["timed_out", "succeeded"]
    assert "timed out the request" in run_rows(board, tid)[0].error
    board.db.dispose()
