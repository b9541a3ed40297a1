"""kill -9 of `serve` with command agents running: no agent outlives it, caps hold (issue 13, item 1).

Real processes throughout: a `serve` subprocess, agents that start a worker in their own
process group (as a shell running a tool does; the worker is what the parent-death
signal alone does not reach), a real SIGKILL, and a restarted `serve` on the same host.
A sampler watches which workers are alive, from the pids they log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import load_config
from lanewarden.core.schema import runs
from sqlalchemy import select

from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

pytestmark = pytest.mark.slow

AGENT = """
import os, subprocess, sys, time
task, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
role = os.environ.get("AGENT_ROLE", "agent")

def note(kind):
    with open(log, "a") as f:  # one short O_APPEND write per line: lines never interleave
        f.write(f"{kind} {task} {os.getpid()} {time.time():.3f}\\n")

if role == "helper":  # something the agent started and left running, in its process group
    note("helper")
    time.sleep(120)
    sys.exit(0)
helper_env = {**os.environ, "AGENT_ROLE": "helper"}
subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=helper_env)  # shares our pipes
note("start")
time.sleep(seconds)
note("end")
print(f"done {task}")
"""

CAP = 4


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _lines(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        kind, task, pid, _ = line.split()
        found.append((kind, int(task), int(pid)))
    return found


class Sampler(threading.Thread):
    """Every few milliseconds: which logged agents and helpers are alive, overall and per task."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.max_alive: Counter[str] = Counter()
        self.max_per_task: Counter[str] = Counter()
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            lines = _lines(self.log)
            for kind in ("start", "helper"):
                alive = [task for k, task, pid in set(lines) if k == kind and _alive(pid)]
                self.max_alive[kind] = max(self.max_alive[kind], len(alive))
                self.max_per_task[kind] = max([self.max_per_task[kind], *Counter(alive).values()])
            self.samples += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def test_kill_9_of_serve_leaves_no_agent_and_caps_hold(board_url: str, tmp_path: Path) -> None:
    log = tmp_path / "agents.log"
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": board_url},
            "kanban.dispatcher": {
                "max_active_tasks": CAP,
                "heartbeat_seconds": 0.25,
                "lease_seconds": 2.0,
                "poll_interval_seconds": 0.5,
                "drain_timeout_seconds": 10,
            },
            "kanban.workers": {"profile": "agent", "max_parallel_per_profile": 8},
            "profiles.agent": {
                "runner": "command",
                "command": [sys.executable, str(agent), "{task_id}", str(log), "8"],
            },
            "http": {"listen": ""},
        },
    )
    board = open_board(load_config(config_path)[0])
    ids = [board.add(NewTask(title=f"side effect {i}"), "test").id for i in range(CAP)]
    env = clean_env(tmp_path / "home")
    sampler = Sampler(log)
    sampler.start()
    first = ServeProcess(config_path, env, tmp_path / "first.log")
    second = None
    try:
        wait_until(
            lambda: Counter(kind for kind, _, _ in _lines(log)) == {"start": CAP, "helper": CAP},
            60,
            "every agent started",
            [first],
        )
        first.kill()  # SIGKILL: no drain, no cleanup of any kind
        second = ServeProcess(config_path, env, tmp_path / "second.log")
        wait_until(lambda: all(board.get(t).status == "done" for t in ids), 90, "every task done", [second])
        assert second.terminate() == 0
    finally:
        sampler.stop()
        for proc in (first, second):
            if proc is not None and proc.proc.poll() is None:
                proc.kill()

    lines = _lines(log)
    assert sampler.samples > 100
    assert sampler.max_alive["start"] <= CAP, f"{sampler.max_alive} agents alive under a cap of {CAP}"
    assert sampler.max_alive["helper"] <= CAP, f"{sampler.max_alive} helpers alive under a cap of {CAP}"
    assert sampler.max_per_task == {"start": 1, "helper": 1}, "a task's agent ran twice at once"
    ends = Counter(task for kind, task, _ in lines if kind == "end")
    assert ends == Counter(ids), f"each task's work must finish exactly once: {ends}"
    assert not [pid for _, _, pid in lines if _alive(pid)], "an agent or its helper outlived it all"
    with board.db.read() as conn:
        outcomes = conn.execute(select(runs.c.task_id, runs.c.outcome).order_by(runs.c.id)).all()
    for task_id in ids:
        task = board.get(task_id)
        assert task.attempts == 1, "a crash of the dispatcher must not use an attempt"
        assert [o for t, o in outcomes if t == task_id] == ["lost", "succeeded"]
    board.db.dispose()
