"""Many hosts, one PostgreSQL board (issue 19): skewed clocks, disagreeing configs, outages.

Real `serve` processes; "other hosts" are processes under libfaketime (Debian package
`faketime`), one 60 s ahead and one 60 s behind the true clock. Agents are real
`command` agents (tests/fakes/clock_agent.py) that log their start and end on the true
clock, so what ran when is judged by a clock no process under test can bend. A database
outage is a TCP proxy on loopback that the test cuts and restores (the shared server is
never stopped).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.leader import current_leader
from lanewarden.core.schema import dispatchers, events, runs, tasks
from sqlalchemy import select

from tests.conftest import IN_CI, LANEWARDEN, pg_url
from tests.serve_helpers import ROOT, ServeProcess, clean_env, wait_until, write_config
from tests.tcp_proxy import TcpProxy
from tests.test_metrics import http_port, scrape, value

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AGENT = Path(__file__).parent / "fakes" / "clock_agent.py"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def hosts_config(
    path: Path,
    url: str,
    agent_log: Path,
    *,
    cap: int,
    lease: float,
    agent_seconds: float,
    poll: float = 1.0,
    window_cron: str | None = None,
    listen: str = "",
) -> Path:
    write_config(
        path,
        {
            "board": {"url": url},
            "kanban.dispatcher": {
                "max_active_tasks": cap,
                "heartbeat_seconds": lease / 4,
                "lease_seconds": lease,
                "poll_interval_seconds": poll,
                "drain_timeout_seconds": 5,
            },
            "kanban.workers": {"profile": "agent", "max_parallel_per_profile": 100},
            "scheduler": {"leader_lease_seconds": lease},
            # the agent gets the true clock whatever the serve process that starts it has
            "profiles.agent": {
                "runner": "command",
                "command": [
                    "env",
                    "-u",
                    "LD_PRELOAD",
                    "-u",
                    "FAKETIME",
                    sys.executable,
                    str(AGENT),
                    str(agent_log),
                    str(agent_seconds),
                ],
            },
            "http": {"listen": listen},
        },
    )
    if window_cron:
        with path.open("a") as f:
            f.write(
                '\n[[scheduler.jobs]]\nname = "tick"\n'
                f'cron = "{window_cron}"\ntimezone = "UTC"\n'
                'command = "promote-batch --from backlog --to ready --max 1"\n'
            )
    return path


def skewed_env(env: dict[str, str], offset: str | None) -> dict[str, str]:
    """A process on a host whose clock is ``offset`` ("+60s") off the true time."""
    if offset is None:
        return env
    return {
        **env,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        # asyncio's timers run on the monotonic clock, which NTP never steps either
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def agent_lives(path: Path, board: Any = None) -> list[tuple[int, int, float, float]]:
    """(task, run, start, end) of each agent on the true clock; still running: end = inf.

    An agent killed with SIGKILL (its serve process died and took it along) cannot say
    when it ended; its run was closed only once its process was gone, so the run's
    finish time (on the database's clock, this host's true clock) bounds its end."""
    starts: dict[int, tuple[int, float]] = {}
    ends: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["event"] == "start":
                starts[entry["run"]] = (entry["task"], entry["at"])
            else:
                ends[entry["run"]] = entry["at"]
    if board is not None and starts.keys() - ends.keys():
        with board.db.read() as conn:
            closed = conn.execute(
                select(runs.c.id, runs.c.finished_at).where(
                    runs.c.id.in_(starts.keys() - ends.keys()), runs.c.finished_at.is_not(None)
                )
            ).all()
        ends.update({r.id: r.finished_at.timestamp() for r in closed})
    return [(task, run, at, ends.get(run, float("inf"))) for run, (task, at) in starts.items()]


def most_alive(lives: list[tuple[int, int, float, float]]) -> int:
    edges = sorted([(start, 1) for _, _, start, _ in lives] + [(end, -1) for _, _, _, end in lives])
    alive = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        alive += step
        peak = max(peak, alive)
    return peak


def same_task_overlaps(lives: list[tuple[int, int, float, float]]) -> list[int]:
    by_task: dict[int, list[tuple[float, float]]] = {}
    for task, _, start, end in lives:
        by_task.setdefault(task, []).append((start, end))
    twice = []
    for task, spans in by_task.items():
        spans.sort()
        busy_until = float("-inf")
        for start, end in spans:
            if start < busy_until:
                twice.append(task)
                break
            busy_until = max(busy_until, end)
    return twice


def lw(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LANEWARDEN, *args],
        env={**env, "LANEWARDEN_CONFIG": str(config)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def stop_all(procs: list[ServeProcess]) -> None:
    """SIGTERM to all at once (each drains), then wait; one that hangs is killed and named."""
    for p in procs:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    hung = []
    for p in procs:
        try:
            p.terminate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            hung.append(p)
    assert not hung, "did not stop on SIGTERM:\n" + "\n".join(p.output()[-3000:] for p in hung)


# ------------------------------------------------------------------ skewed clocks


def test_hosts_60s_ahead_and_behind_share_leases_and_windows(tmp_path: Path, pg_schema: str) -> None:
    if not LIBFAKETIME.exists():
        message = "needs libfaketime: apt-get install faketime (.ci/run does)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    cap, lease = 3, 4.0
    url = pg_url(pg_schema)
    agent_log = tmp_path / "agents.jsonl"
    config_path = hosts_config(
        tmp_path / "lanewarden.toml",
        url,
        agent_log,
        cap=cap,
        lease=lease,
        agent_seconds=1.0,
        window_cron="*/5 * * * * *",
        listen="127.0.0.1:0",
    )
    config, _ = load_config(config_path)
    board = open_board(config)
    for i in range(3):
        board.add(NewTask(title=f"windowed {i}", column="backlog"), "test")
    env = clean_env(tmp_path / "home")
    # the host 60 s behind starts first and leads; the others must not take the lease from it
    behind = ServeProcess(config_path, skewed_env(env, "-60s"), tmp_path / "behind.log")
    procs = [behind]
    try:
        first = wait_until(lambda: current_leader(board.db), what="a first leader", procs=procs)
        ahead = ServeProcess(config_path, skewed_env(env, "+60s"), tmp_path / "ahead.log")
        true = ServeProcess(config_path, env, tmp_path / "true.log")
        procs += [ahead, true]
        for i in range(36):
            board.add(NewTask(title=f"task {i}"), "test")
        wait_until(lambda: _live(board) == 3, what="three live processes", procs=procs)
        time.sleep(2 * lease)  # several heartbeats and lease renewals of all three
        held = current_leader(board.db)
        assert (held.holder, held.term) == (first.holder, first.term), "a skewed host took the leader lease"
        by_pid = _dispatchers_by_pid(board)
        skews = {name: by_pid[p.pid].clock_skew_ms / 1000 for name, p in _named(procs).items()}
        assert 55 < skews["ahead"] < 65 and -65 < skews["behind"] < -55 and abs(skews["true"]) < 5, skews
        port = wait_until(lambda: http_port(ahead), what="the HTTP endpoint", procs=procs)
        metrics = scrape(port)
        assert 55 < value(metrics, "lanewarden_clock_skew_seconds") < 65
        behind_id = by_pid[behind.pid].id
        assert -65 < value(metrics, "lanewarden_dispatcher_clock_skew_seconds", dispatcher=behind_id) < -55
        doctor = lw(config_path, env, "doctor").stdout
        assert "3 serve process(es) live" in doctor, doctor
        assert doctor.count("WARN clock") == 2 and "ahead of the database" in doctor, doctor

        # failover from the slow host to a fast one, on the database's clock: TTL + TTL/4 at most
        behind.kill()
        killed_at = utcnow()
        moved = wait_until(
            lambda: (lambda h: h if h is not None and h.term > first.term else None)(
                current_leader(board.db)
            ),
            timeout=60,
            what="failover",
            procs=procs[1:],
        )
        failover = (moved.acquired_at - killed_at).total_seconds()
        assert failover <= lease + lease / 4 + 2.0, f"failover took {failover:.1f}s with a {lease}s lease"
        wait_until(lambda: _done(board) == 39, timeout=90, what="every task done", procs=procs[1:])
        time.sleep(6)  # one more window on the new leader
    finally:
        stop_all(procs)
    lives = agent_lives(agent_log, board)
    assert most_alive(lives) <= cap, f"{most_alive(lives)} agents alive under a cap of {cap}"
    assert most_alive(lives) == cap, "the cap was never reached: the test proves nothing"
    assert same_task_overlaps(lives) == [], "a task ran twice at once"
    with board.db.read() as conn:
        all_runs = conn.execute(select(runs)).all()
        fired = [e.data for e in conn.execute(select(events).where(events.c.kind == "window_ran")).all()]
    board.db.dispose()
    killed_id = by_pid[behind.pid].id
    lost = [r for r in all_runs if r.outcome == "lost"]
    assert all(r.dispatcher == killed_id for r in lost), (
        "a live process's run was taken back: "
        + repr([(r.id, r.dispatcher, r.claimed_at, r.lease_expires_at, r.finished_at) for r in lost])
        + f" killed {killed_id}"
    )
    done = Counter(r.task_id for r in all_runs if r.outcome == "succeeded")
    assert set(done.values()) == {1} and len(done) == 39, "a task completed twice (or not at all)"
    # windows: each scheduled time fired once, on the 5 s grid, never before its time
    times = [datetime.fromisoformat(d["fire_time"]) for d in fired]
    assert len(times) >= 4 and len(set(times)) == len(times), f"a window fired twice: {sorted(times)}"
    assert all(t.second % 5 == 0 and t.microsecond == 0 for t in times), times
    for data in fired:
        early = datetime.fromisoformat(data["fire_time"]) - datetime.fromisoformat(data["decided_at"])
        assert early <= timedelta(seconds=1), f"a window fired {early} early by the database's clock"
    holders = {d["holder"] for d in fired}
    assert len(holders) >= 2, "the windows never changed leader: the test proves nothing"


def _named(procs: list[ServeProcess]) -> dict[str, ServeProcess]:
    return {p.log_path.stem: p for p in procs}


def _dispatchers_by_pid(board: Any) -> dict[int, Any]:
    with board.db.read() as conn:
        return {r.pid: r for r in conn.execute(select(dispatchers))}


def _live(board: Any) -> int:
    with board.db.read() as conn:
        rows = conn.execute(select(dispatchers.c.state, dispatchers.c.clock_skew_ms)).all()
    return sum(1 for r in rows if r.state == "running" and r.clock_skew_ms is not None)


def _done(board: Any) -> int:
    with board.db.read() as conn:
        return sum(1 for r in conn.execute(select(tasks.c.status)) if r.status == "done")


# ------------------------------------------------------------ configs that disagree


def test_two_configs_with_different_caps_enforce_the_boards(tmp_path: Path, pg_schema: str) -> None:
    url = pg_url(pg_schema)
    agent_log = tmp_path / "agents.jsonl"
    strict = hosts_config(tmp_path / "strict.toml", url, agent_log, cap=2, lease=4.0, agent_seconds=0.6)
    loose = hosts_config(tmp_path / "loose.toml", url, agent_log, cap=6, lease=4.0, agent_seconds=0.6)
    config, _ = load_config(strict)
    board = open_board(config)
    env = clean_env(tmp_path / "home")
    first = ServeProcess(strict, env, tmp_path / "strict.log")
    procs = [first]
    try:
        wait_until(lambda: _live(board) == 1, what="the first process", procs=procs)
        second = ServeProcess(loose, env, tmp_path / "loose.log")
        procs.append(second)
        wait_until(lambda: _live(board) == 2, what="the second process", procs=procs)
        for i in range(16):
            board.add(NewTask(title=f"task {i}"), "test")
        wait_until(lambda: _done(board) == 16, timeout=90, what="every task done", procs=procs)
        shown = lw(loose, env, "caps")
        doctor = lw(loose, env, "doctor")
    finally:
        stop_all(procs)
    board.db.dispose()
    lives = agent_lives(agent_log)
    assert most_alive(lives) == 2, f"{most_alive(lives)} agents alive under the board's cap of 2"
    assert {r for _, r, _, _ in lives} and len({p.pid for p in procs}) == 2
    assert "max_active_tasks 6 (board: 2)" in second.output(), second.output()[-2000:]
    assert "max_active_tasks 6 (board: 2)" not in first.output()
    assert "board: 0/2 active" in shown.stdout and "this config says 6" in shown.stdout, shown.stdout
    assert "WARN caps config" in doctor.stdout and "max_active_tasks 6 (board: 2)" in doctor.stdout, (
        doctor.stdout
    )
    # an admin applies the loose config: every process now enforces 6
    applied = lw(loose, env, "caps", "reset", "board")
    assert applied.returncode == 0, applied.stderr
    assert "board: 0/6 active" in lw(strict, env, "caps").stdout


# ---------------------------------------------------------------- database outage


def test_outage_longer_than_the_lease_keeps_live_runs(tmp_path: Path, pg_schema: str) -> None:
    """Both processes lose the database for twice the lease; the one that owns running
    work gets it back a moment after the other, which must not take that work back."""
    lease = 4.0
    direct = pg_url(pg_schema)
    agent_log = tmp_path / "agents.jsonl"
    proxies = [TcpProxy(("127.0.0.1", 5432)) for _ in range(2)]
    # the poll interval (the safety net) is far longer than the test waits after recovery:
    # a claim soon after recovery was woken by an event, not by a timer
    configs = [
        hosts_config(
            tmp_path / f"serve{n}.toml",
            direct.replace(":5432/", f":{proxy.port}/"),
            agent_log,
            cap=3,
            lease=lease,
            agent_seconds=16.0,
            poll=120.0,
        )
        for n, proxy in enumerate(proxies)
    ]
    config, _ = load_config(
        hosts_config(tmp_path / "direct.toml", direct, agent_log, cap=3, lease=lease, agent_seconds=16.0)
    )
    board = open_board(config)
    env = clean_env(tmp_path / "home")
    procs = [ServeProcess(path, env, tmp_path / f"serve{n}.log") for n, path in enumerate(configs)]
    try:
        wait_until(lambda: _live(board) == 2, what="two processes", procs=procs)
        board.add(NewTask(title="long 1"), "test")
        board.add(NewTask(title="long 2"), "test")
        wait_until(lambda: len(agent_lives(agent_log)) == 2, what="two agents running", procs=procs)
        with board.db.read() as conn:
            owners = {r.dispatcher for r in conn.execute(select(runs.c.dispatcher))}
        by_pid = _dispatchers_by_pid(board)
        late = next(n for n, p in enumerate(procs) if by_pid[p.pid].id in owners)
        early = 1 - late
        for proxy in proxies:
            proxy.cut()
        queued = board.add(NewTask(title="added during the outage"), "test")
        time.sleep(2 * lease)  # every lease has expired by the database's clock
        proxies[early].restore()
        restored_at = utcnow()
        time.sleep(lease / 3)  # the owner is still cut off: the other must leave its runs alone
        proxies[late].restore()
        started = wait_until(
            lambda: _run_of(board, queued.id),
            timeout=30,
            what="the task added during the outage",
            procs=procs,
        )
        wait_until(lambda: _done(board) == 3, timeout=60, what="every task done", procs=procs)
    finally:
        stop_all(procs)
        for proxy in proxies:
            proxy.cut()
    with board.db.read() as conn:
        all_runs = conn.execute(select(runs).order_by(runs.c.id)).all()
    board.db.dispose()
    logs = "".join(p.output() for p in procs)
    assert "heartbeat failed" in logs and "database back" in logs, "the outage was not noticed"
    assert [r.outcome for r in all_runs] == ["succeeded"] * 3, [
        (r.task_id, r.outcome, r.error) for r in all_runs
    ]
    assert same_task_overlaps(agent_lives(agent_log)) == []
    # dispatch resumed on the reconnect's wake-up, not on a timer (the poll interval is 120 s)
    assert started.dispatcher == by_pid[procs[early].pid].id or started.claimed_at > restored_at
    assert (started.claimed_at - restored_at).total_seconds() < config.kanban.dispatcher.poll_interval_seconds


def _run_of(board: Any, task_id: int) -> Any:
    with board.db.read() as conn:
        return conn.execute(select(runs).where(runs.c.task_id == task_id)).first()
