"""`logs N` (issue 17, item 15): what a task's runs printed, stored as it streams, bounded,
secrets redacted; `--follow` while it runs; a bounded tail in chat.

Real agents (a Python script as the `command` runner's process), a real dispatcher, the
test gateway streaming over HTTP for `llm` runs, and `lanewarden` subprocesses reading
the board as any other process would."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lanewarden.bot.console import Console
from lanewarden.bot.render import render_text
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse, tokenize
from lanewarden.core.run_output import MAX_RUN_OUTPUT_CHARS, stored_chars, task_logs

from tests.conftest import LANEWARDEN
from tests.dispatch_helpers import FAST, dispatch_config, running, wait_for
from tests.fakes.gateway import FakeGateway

SECRET = "xoxb-test-secret-value-1234"
AGENT = """
import pathlib, sys, time
print("first line", flush=True)
print("the prompt said:", sys.argv[-1], flush=True)
print("to stderr", file=sys.stderr, flush=True)
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.05)
for i in range(int(sys.argv[2])):
    print(f"line {i:06d} " + "x" * 90)
print("last line", flush=True)
"""


def setup(tmp_path: Path, board_url: str, lines: int, **gateways: Any) -> tuple[Any, Path, dict[str, Any]]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    go = tmp_path / "go"
    profiles: dict[str, Any] = {
        "agent": {
            "runner": "command",
            "command": [sys.executable, str(script), str(go), str(lines), "--", "{prompt}"],
        }
    }
    if gateways:
        profiles["writer"] = {"gateway": "gpu", "model": "m"}
    config = dispatch_config(board_url, profiles=profiles, gateways=gateways)
    toml = [f'[board]\nurl = "{board_url}"', '[kanban.workers]\nprofile = "agent"', '[http]\nlisten = ""']
    toml.append("[kanban.dispatcher]\n" + "\n".join(f"{k} = {v}" for k, v in FAST.items()))
    for name, profile in profiles.items():
        toml.append(f"[profiles.{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in profile.items()))
    for name, gw in gateways.items():
        toml.append(f"[gateways.{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in gw.items()))
    path = tmp_path / "lanewarden.toml"
    path.write_text("\n\n".join(toml) + "\n")
    return config, go, {"LANEWARDEN_CONFIG": str(path)}


def lw(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([*LANEWARDEN, *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def output_of(board: Board, task_id: int) -> str:
    with board.db.read() as conn:
        return "".join(log.text for log in task_logs(conn, task_id))


async def test_logs_while_running_redacted_then_follow_to_the_end(
    board_url: str, lw_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)  # a secret of `serve`'s, printed by the agent
    config, go, extra = setup(tmp_path, board_url, lines=3)
    env = {**lw_env, **extra}
    board = open_board(config)
    try:
        task = board.add(NewTask(title=f"deploy with {SECRET}", profile="agent", column="ready"), "tester")
        async with running(board):
            await wait_for(lambda: "to stderr" in output_of(board, task.id), what="output while running")
            shown = await asyncio.to_thread(lw, env, "logs", str(task.id))
            assert f"--- {task.ref} attempt 1: running as agent ---" in shown
            assert "first line" in shown and "to stderr" in shown
            assert "the prompt said: deploy with [redacted]" in shown and SECRET not in shown
            assert "last line" not in shown
            follower = subprocess.Popen(
                [*LANEWARDEN, "logs", str(task.id), "--follow"], env=env, stdout=subprocess.PIPE, text=True
            )
            try:
                await asyncio.sleep(1.5)  # it prints what there is, then waits for more
                assert follower.poll() is None
                go.write_text("")
                out, _ = await asyncio.to_thread(follower.communicate, timeout=30)
            finally:
                follower.kill()
            assert follower.returncode == 0
            assert out.index("first line") < out.index("line 000002") < out.index("last line")
            assert out.rstrip().endswith(f"{task.ref} is done") and SECRET not in out
        assert "1. succeeded" in (detail := lw(env, "show", str(task.id))) and "as agent (command)" in detail
    finally:
        board.db.dispose()


async def test_output_is_bounded_and_chat_gets_a_short_tail(
    board_url: str, lw_env: dict[str, str], tmp_path: Path
) -> None:
    config, go, extra = setup(tmp_path, board_url, lines=3000)  # about 290 KiB
    go.write_text("")
    board = open_board(config)
    try:
        task = board.add(NewTask(title="noisy", profile="agent", column="ready"), "tester")
        async with running(board):
            await wait_for(lambda: board.get(task.id).status == "done", what="the run to finish")
        with board.db.read() as conn:
            run_id = task_logs(conn, task.id)[0].run.id
            assert 0 < stored_chars(conn, run_id) <= MAX_RUN_OUTPUT_CHARS
        shown = lw({**lw_env, **extra}, "logs", str(task.id))
        assert "[earlier output not shown: only the last 64 KiB are kept]" in shown
        assert "line 002999" in shown and "last line" in shown and "line 000001 " not in shown
        assert lw({**lw_env, **extra}, "logs", str(task.id), "--tail", "2").splitlines()[-2:] == [
            "line 002999 " + "x" * 90,
            "last line",
        ]
        # the console follows too: the task is done, so it prints the tail and says so
        out = io.StringIO()
        Console(
            Executor(board),
            Actor("console:tester", "admin"),
            io.StringIO(f"logs {task.id} --tail 1 --follow\n"),
            out,
        ).run()
        assert out.getvalue().rstrip().endswith(f"last line\n\n{task.ref} is done")
        # chat: the same verb through the grammar, as a viewer, cut to a short tail
        chat = Actor("slack:U1", "viewer", channel="slack:C1")
        result = Executor(board).execute(parse(tokenize(f"logs {task.id} --follow")), chat)
        text = render_text(result)
        assert "last line" in text and len(text) < 3000 and "--follow works in the CLI" in text
    finally:
        board.db.dispose()


async def test_an_llm_answer_is_readable_while_it_streams(
    board_url: str, lw_env: dict[str, str], tmp_path: Path
) -> None:
    gateway = FakeGateway(delay=6.0, tokens=12)  # a token every half second
    try:
        config, _, extra = setup(tmp_path, board_url, lines=0, gpu={"base_url": gateway.base_url})
        board = open_board(config)
        try:
            task = board.add(NewTask(title="write", profile="writer", column="ready"), "tester")
            async with running(board):
                partial = await wait_for(
                    lambda: (text := output_of(board, task.id)) and "tok1 " in text and text, what="tokens"
                )
                assert "tok11" not in partial  # read while the answer still streams
                await wait_for(lambda: board.get(task.id).status == "done", what="the answer")
            shown = lw({**lw_env, **extra}, "logs", str(task.id))
            assert " ".join(f"tok{i}" for i in range(12)) in shown
            assert f"--- {task.ref} attempt 1: succeeded on gpu" in shown
        finally:
            board.db.dispose()
    finally:
        gateway.close()


def test_output_written_before_a_crash_stays_readable_beside_the_retry(
    board_url: str, lw_env: dict[str, str], tmp_path: Path
) -> None:
    from tests.serve_helpers import ServeProcess, wait_until

    config, go, extra = setup(tmp_path, board_url, lines=1)
    env = {**lw_env, **extra}
    board = open_board(config)
    try:
        task = board.add(NewTask(title="long job", profile="agent", column="ready"), "tester")
        first = ServeProcess(Path(extra["LANEWARDEN_CONFIG"]), lw_env, tmp_path / "first.log")
        try:
            wait_until(lambda: "to stderr" in output_of(board, task.id), 60, "output", [first])
        finally:
            first.kill()  # SIGKILL: the run's output so far is all the board has
        shown = lw(env, "logs", str(task.id))
        assert "attempt 1: running" in shown and "first line" in shown and "last line" not in shown
        go.write_text("")
        second = ServeProcess(Path(extra["LANEWARDEN_CONFIG"]), lw_env, tmp_path / "second.log")
        try:
            wait_until(lambda: board.get(task.id).status == "done", 90, "the retry", [second])
        finally:
            second.terminate()
        shown = lw(env, "logs", str(task.id))
        first_run, retry = shown.split(f"--- {task.ref} attempt 2: succeeded")
        assert "first line" in first_run and "last line" not in first_run
        assert "first line" in retry and "last line" in retry
    finally:
        board.db.dispose()


def test_a_secret_split_between_stream_pieces_is_still_redacted(board: Board) -> None:
    """An llm streams a secret token by token; a flush between the pieces must not store
    half of it where redaction cannot see it. A flood between flushes keeps the bound."""
    from lanewarden.core.claims import ClaimKernel
    from lanewarden.core.clock import utcnow
    from lanewarden.core.run_output import OutputRecorder

    task = board.add(NewTask(title="leaky", column="ready"), "tester")
    (claim,) = ClaimKernel(board, "test:1:1").claim(1)  # a real run row
    recorder = OutputRecorder(claim.run_id, [SECRET])
    for piece in ("the key is ", SECRET[:9], SECRET[9:18]):
        recorder.write(piece)
        recorder.flush(board.db, utcnow())
    recorder.write(SECRET[18:] + " and more\n")
    recorder.flush(board.db, utcnow(), final=True)
    with board.db.read() as conn:
        (log,) = task_logs(conn, task.id)
    assert log.text == "the key is [redacted] and more\n"
    for i in range(40_000):
        recorder.write(f"line {i:06d}\n")  # 480 KB between two flushes
    recorder.flush(board.db, utcnow(), final=True)
    with board.db.read() as conn:
        (log,) = task_logs(conn, task.id)
        assert stored_chars(conn, claim.run_id) <= MAX_RUN_OUTPUT_CHARS
    assert (
        log.dropped and log.text.endswith("line 039999\n") and log.text.lstrip("\n").startswith("line ")
    )  # no half line
