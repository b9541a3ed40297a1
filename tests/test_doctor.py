"""`lanewarden doctor` run as a real subprocess against real boards, gateways and serve
processes: every problem it must name, and a clean bill of health when there is none."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.readmodel import concurrency
from lanewarden.core.schema import leases, outbox, runs, tasks
from sqlalchemy import delete, insert, select, update

from tests.conftest import LANEWARDEN
from tests.fakes.gateway import FakeGateway
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

ROOT = Path(__file__).parent.parent


def run_doctor(config: Path, env: dict[str, str], *entry: str) -> tuple[int, str]:
    argv = [*(entry or LANEWARDEN), "--config", str(config), *([] if entry else ["doctor"])]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def lines_of(output: str, level: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{level:<4} {name}:")]


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def board_sections(url: str, gateways: dict[str, dict[str, Any]], **more: dict[str, Any]) -> dict:
    sections: dict[str, dict[str, Any]] = {
        "board": {"url": url},
        "kanban.workers": {"profile": "writer"},
        "http": {"listen": ""},
    }
    for name, values in gateways.items():
        sections[f"gateways.{name}"] = values
    first = next(iter(gateways))
    sections["profiles.writer"] = {"gateway": first, "model": "m"}
    sections.update(more)
    return sections


def test_concurrency_rebuilds_the_peak_and_time_at_each_level() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=utcnow().tzinfo)
    minute = timedelta(minutes=1)
    curve = concurrency(
        [
            (t0, t0 + 10 * minute),  # 0-10
            (t0 + 5 * minute, t0 + 10 * minute),  # 5-10: two at once for 5 minutes
            (t0 + 10 * minute, t0 + 12 * minute),  # starts when the others end: a handover, not three
            (t0 - 90 * minute, t0 - 70 * minute),  # before the window
            (t0 + 50 * minute, None),  # still open: counts until now
        ],
        since=t0 - 60 * minute,
        now=t0 + 60 * minute,
    )
    assert curve.peak == 2
    assert curve.seconds_at_or_above[2] == 5 * 60
    assert curve.seconds_at_or_above[1] == (10 + 2 + 10) * 60


def test_bad_config_is_named_not_a_traceback(tmp_path: Path, lw_env: dict[str, str]) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        {"gateways.gpu": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 0}},
    )
    # `lanewarden doctor` and doctor's own entry point (which reports it as a check line)
    for entry in ((), (LANEWARDEN[0], "-m", "lanewarden.bot.tools.doctor")):
        code, output = run_doctor(config, lw_env, *entry)
        assert code != 0, output
        assert "gateways.gpu.max_concurrency = 0" in output and "greater than or equal to 1" in output
        assert "Traceback" not in output
    assert len(lines_of(output, "FAIL", "config")) == 1, output


def test_unreachable_gateway_and_what_a_reachable_one_reports(tmp_path: Path, lw_env: dict[str, str]) -> None:
    llama = FakeGateway(server_metrics="llamacpp")  # four slots
    try:
        llama.server_waiting = 2
        url = f"sqlite:///{tmp_path / 'board.db'}"
        config = write_config(
            tmp_path / "lanewarden.toml",
            board_sections(
                url,
                {
                    "llama": {"base_url": llama.base_url, "kind": "llamacpp", "max_concurrency": 6},
                    "gpu2": {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "kind": "vllm"},
                },
            ),
        )
        open_board(load_config(config)[0]).db.dispose()
        code, output = run_doctor(config, lw_env)
        assert code == 2, output
        down = lines_of(output, "FAIL", "gateway gpu2")
        assert len(down) == 1 and "unreachable" in down[0] and "ConnectError" in down[0], output
        up = lines_of(output, "ok", "gateway llama")
        assert len(up) == 1 and "running 0, waiting 2" in up[0] and "slots 0/4 busy" in up[0], output
        warnings = "\n".join(lines_of(output, "WARN", "gateway llama"))
        assert "queueing 2 request(s)" in warnings, output
        assert "cap 6 is above the server's 4 slot(s)" in warnings and "-np 6" in warnings, output
    finally:
        llama.close()


def set_lease(board: Board, holder: str, expires_at: datetime, term: int = 7) -> None:
    now = utcnow()
    with board.db.write() as conn:
        conn.execute(delete(leases).where(leases.c.name == "leader"))
        conn.execute(
            insert(leases).values(
                name="leader", holder=holder, term=term, acquired_at=now, expires_at=expires_at
            )
        )


def lease_holder(board: Board) -> str | None:
    with board.db.read() as conn:
        return conn.execute(select(leases.c.holder).where(leases.c.name == "leader")).scalar()


def test_leader_checks_against_a_live_serve(board_url: str, tmp_path: Path, lw_env: dict[str, str]) -> None:
    gateway = FakeGateway()
    config = write_config(
        tmp_path / "lanewarden.toml",
        board_sections(
            board_url,
            {"g": {"base_url": gateway.base_url, "kind": "openai"}},
            # a long lease: the live process renews (and retries a takeover) only every few minutes,
            # so what this test writes into the lease table stays there while doctor looks
            scheduler={"leader_lease_seconds": 900},
        ),
    )
    board = open_board(load_config(config)[0])
    proc = ServeProcess(config, clean_env(tmp_path / "home"), tmp_path / "serve.log")
    try:
        holder = wait_until(lambda: lease_holder(board), timeout=60, what="the leader lease", procs=[proc])
        assert f":{proc.pid}:" in holder

        code, output = run_doctor(config, lw_env)
        assert code == 0, output
        assert f"held by {holder}" in lines_of(output, "ok", "leader")[0], output
        assert holder in lines_of(output, "ok", "processes")[0], output
        assert output.splitlines()[-1] == "doctor: all checks passed"

        # a second claimant: a fresh lease in the name of something that is no serve process here
        set_lease(board, "intruder:4242:beef", utcnow() + timedelta(minutes=5))
        code, output = run_doctor(config, lw_env)
        assert code == 2, output
        second = lines_of(output, "FAIL", "leader")
        assert len(second) == 1 and "second claimant" in second[0], output
        assert "intruder:4242:beef" in second[0] and holder in second[0], output

        # a stale lease: expired long ago, and the live process has not taken it over
        set_lease(board, "gone:1:dead", utcnow() - timedelta(minutes=30))
        code, output = run_doctor(config, lw_env)
        assert code == 2, output
        stale = lines_of(output, "FAIL", "leader")
        assert len(stale) == 1 and "stale lease" in stale[0] and "gone:1:dead" in stale[0], output
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]

    try:
        # no process left; its own lease was released on shutdown, the stale one stays
        code, output = run_doctor(config, lw_env)
        assert code == 1, output
        assert lines_of(output, "WARN", "processes"), output
        assert "stale lease" in lines_of(output, "WARN", "leader")[0], output
    finally:
        gateway.close()
        board.db.dispose()


def add_run(board: Board, task_id: int, gateway: str, claimed: datetime, finished: datetime | None) -> None:
    with board.db.write() as conn:
        conn.execute(
            insert(runs).values(
                task_id=task_id,
                attempt=1,
                dispatcher="earlier:1:aaaa",
                profile="writer",
                gateway=gateway,
                claimed_at=claimed,
                lease_expires_at=claimed + timedelta(seconds=30),
                finished_at=finished,
                outcome=None if finished is None else "succeeded",
            )
        )


def test_caps_peaks_queue_and_outbox(board_url: str, tmp_path: Path, lw_env: dict[str, str]) -> None:
    gateway = FakeGateway()
    try:
        config = write_config(
            tmp_path / "lanewarden.toml",
            board_sections(board_url, {"g": {"base_url": gateway.base_url, "max_concurrency": 2}}),
        )
        board = open_board(load_config(config)[0])
        now = utcnow()
        task = board.add(NewTask(title="history"), "test")
        # three runs at once for ten minutes on a gateway capped at 2 (the cap was lowered meanwhile)
        for _ in range(3):
            add_run(board, task.id, "g", now - timedelta(minutes=30), now - timedelta(minutes=20))
        add_run(board, task.id, "g", now - timedelta(hours=3), now - timedelta(hours=2))  # too old to count
        orphan = board.add(NewTask(title="orphan"), "test")
        with board.db.write() as conn:
            conn.execute(update(tasks).where(tasks.c.id == orphan.id).values(profile="retired"))
            conn.execute(
                insert(outbox).values(
                    adapter="slack",
                    channel="C404",
                    kind="message",
                    payload={"text": "x"},
                    created_at=now,
                    state="dead",
                    next_attempt_at=now,
                    last_error="channel_not_found",
                )
            )
            for minutes in (30, 2):  # a delivery stalled for half an hour, and a fresh one
                conn.execute(
                    insert(outbox).values(
                        adapter="discord",
                        channel="42",
                        kind="message",
                        payload={"text": "y"},
                        created_at=now - timedelta(minutes=minutes),
                        state="pending",
                        next_attempt_at=now,
                    )
                )
        board.db.dispose()
        code, output = run_doctor(config, lw_env)
        assert code == 1, output
        caps = lines_of(output, "WARN", "caps g")
        assert len(caps) == 1 and "peak 3 concurrent of cap 2" in caps[0] and "for 10m" in caps[0], output
        assert "(3 run(s))" in caps[0], output
        assert "peak 3 concurrent of max_active_tasks 4" in lines_of(output, "ok", "caps board")[0], output
        queue = "\n".join(lines_of(output, "WARN", "queue"))
        assert "retired (1 ready)" in queue, output
        dead, stalled = lines_of(output, "WARN", "outbox")
        assert "slack: 1" in dead and "channel_not_found" in dead, output
        assert "2 notification(s) undelivered, the oldest for 30m" in stalled, output
    finally:
        gateway.close()


def test_database_not_migrated(board_url: str, tmp_path: Path, lw_env: dict[str, str]) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        board_sections(board_url, {"g": {"base_url": f"http://127.0.0.1:{closed_port()}/v1"}}),
    )
    code, output = run_doctor(config, lw_env)
    assert code == 2, output
    database = lines_of(output, "FAIL", "database")
    assert len(database) == 1 and "lanewarden db upgrade" in database[0], output
    assert not (tmp_path / "board.db").exists(), "doctor created an empty board"


def test_database_unreachable_still_checks_the_gateways(tmp_path: Path, lw_env: dict[str, str]) -> None:
    gateway = FakeGateway()
    try:
        config = write_config(
            tmp_path / "lanewarden.toml",
            board_sections(
                f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/board",
                {"g": {"base_url": gateway.base_url}},
            ),
        )
        code, output = run_doctor(config, lw_env)
        assert code == 2, output
        database = lines_of(output, "FAIL", "database")
        assert len(database) == 1 and "unreachable" in database[0], output
        assert lines_of(output, "ok", "gateway g"), output
        assert not lines_of(output, "ok", "queue"), output  # nothing claimed about a board it cannot read
    finally:
        gateway.close()
