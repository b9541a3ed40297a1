"""The Hermes Kanban guide's host-cron wrapper, run verbatim, ticked against a real board.

A real ``serve`` (windowed mode) dispatches to a real simulated gateway subprocess and a
command agent; the board has parent chains, a child promoted before its parent is done,
caps below the demand and a slow gateway. Every tick must exit 0, release at most
MAX_TO_PROMOTE tasks, and the board must drain completely with nothing run twice.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from lanewarden.core.board import NewTask, TaskFilter, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.schema import runs, tasks
from sqlalchemy import select

from tests.conftest import LANEWARDEN, pg_url
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

pytestmark = pytest.mark.slow

# the guide's wrapper, as its readers copy it into their crontab
GUIDE_SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
MAX_TO_PROMOTE="${MAX_TO_PROMOTE:-2}"
ready_ids="$(lanewarden list --column ready --limit "${MAX_TO_PROMOTE}" --quiet)"
if [ -z "${ready_ids}" ]; then
  exit 0
fi
for id in ${ready_ids}; do
  echo "Promoting task ${id} to active"
  lanewarden promote --id "${id}" --column active
done
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'board.db'}"
    return pg_url(request.getfixturevalue("pg_schema"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLOW_GATEWAY = ("--knee", "2", "--token-ms", "60", "--output-tokens", "20-40")


@pytest.fixture
def gateway(tmp_path: Path):
    """A slow simulated vLLM server in its own process: 25 ms a token, slower past 2 at once."""
    port = free_port()
    log = (tmp_path / "sim.log").open("w")
    proc = subprocess.Popen(
        [*LANEWARDEN, "simulate-gateway", "--port", str(port), *SLOW_GATEWAY],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="the simulated gateway")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def lanewarden_on_path(tmp_path: Path) -> str:
    """A `lanewarden` executable as the guide expects it on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "lanewarden"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m lanewarden.bot.cli "$@"\n')
    exe.chmod(0o755)
    return str(bin_dir)


def test_guide_cron_wrapper_ticks_until_the_board_drains(tmp_path: Path, url: str, gateway: str) -> None:
    gate = tmp_path / "agents-may-finish"
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "kanban.dispatcher": {
                "enabled": False,  # windowed: only released tasks start, as in the guide
                "max_active_tasks": 2,
                "heartbeat_seconds": 0.5,
                "lease_seconds": 5.0,
            },
            "kanban.workers": {"profile": "writer"},
            "gateways.sim": {"base_url": gateway, "kind": "vllm", "max_concurrency": 1},
            "profiles.writer": {"gateway": "sim", "model": "sim-7b", "max_parallel": 2},
            "profiles.agent": {
                "runner": "command",
                # a real agent process that works until the test opens its gate
                "command": [
                    "sh",
                    "-c",
                    f"while [ ! -e {gate} ]; do sleep 0.1; done; echo finished {{task_id}}",
                ],
                "max_parallel": 1,
            },
            "scheduler": {"enabled": False},
            "alerts": {"digest_cron": ""},
            "http": {"listen": ""},
        },
    )
    config, _ = load_config(config_path)
    board = open_board(config)

    def add(title: str, **kw) -> int:
        return board.add(NewTask(title=title, **kw), "guide-test").id

    # a chain whose later links sit in backlog, then get promoted to ready early (the guide's
    # `promote-batch --from backlog --to ready` morning window): they must wait, not abort a tick
    ingest = add("ingest", priority=5)
    clean = add("clean", column="backlog", parents=[ingest], priority=9)
    report = add("report", column="backlog", parents=[clean], profile="agent", priority=9)
    board.promote_batch("backlog", "ready", 10, "guide-test")
    others = [add(f"summarize {i}", priority=i % 3) for i in range(3)]
    # released first; one slot for their profile, so the second waits released on the next tick
    agents = [add(f"agent {i}", profile="agent", priority=50) for i in range(2)]
    later = add("later", not_before=utcnow() + timedelta(seconds=4), priority=20)
    all_ids = [ingest, clean, report, *others, *agents, later]

    script = tmp_path / "promote-ready.sh"
    script.write_text(GUIDE_SCRIPT)
    env = {
        **clean_env(tmp_path / "home"),
        "LANEWARDEN_CONFIG": str(config_path),
        "MAX_TO_PROMOTE": "2",
    }
    env["PATH"] = lanewarden_on_path(tmp_path) + os.pathsep + env["PATH"]

    def lanes() -> dict[int, str]:
        return {t.id: t.lane for t in board.list_tasks(TaskFilter(limit=0, include_closed=True))}

    serve = ServeProcess(config_path, env, tmp_path / "serve.log")
    ticks: list[tuple[dict[int, str], list[str]]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            before = lanes()
            if all(lane == "done" for lane in before.values()):
                break
            proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"tick {len(ticks) + 1} aborted: {proc.stderr}\n{proc.stdout}"
            promoted = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("Promoting")]
            assert len(promoted) <= 2, proc.stdout
            for task_id in promoted:  # never one already released (a parent may finish meanwhile)
                assert before[int(task_id)] in ("ready", "waiting"), (task_id, before)
            ticks.append((before, promoted))
            if len(ticks) == 2:
                gate.touch()
            time.sleep(0.3)
        wait_until(lambda: all(v == "done" for v in lanes().values()), timeout=30, procs=[serve])
    finally:
        assert serve.terminate() == 0, serve.output()[-3000:]

    # the situations that used to abort the wrapper did occur, and every tick ran on
    assert any("released" in before.values() for before, _ in ticks), "no tick met a released task"
    assert any(before.get(clean) == "waiting" for before, _ in ticks), "no tick met a waiting child"
    assert any(before.get(later) == "waiting" for before, _ in ticks)
    assert {int(i) for _, p in ticks for i in p} == set(all_ids)  # all released by the wrapper
    with board.db.read() as conn:
        done = conn.execute(select(tasks.c.id, tasks.c.status).where(tasks.c.id.in_(all_ids))).all()
        run_rows = conn.execute(
            select(runs.c.task_id, runs.c.outcome, runs.c.claimed_at, runs.c.finished_at)
        ).all()
    assert {s for _, s in done} == {"done"}
    succeeded = sorted(r.task_id for r in run_rows if r.outcome == "succeeded")
    assert succeeded == sorted(all_ids), "a task ran twice or not at all"
    # the board cap held: never more than 2 runs open at one moment
    marks = sorted([(r.claimed_at, 1) for r in run_rows] + [(r.finished_at, -1) for r in run_rows])
    open_now = peak = 0
    for _, step in marks:
        open_now += step
        peak = max(peak, open_now)
    assert peak <= 2
    board.db.dispose()
