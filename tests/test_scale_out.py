"""PostgreSQL scale-out: four `serve` processes, one board, caps still global.

Also: kill -9 of two processes (the leader among them) and a database outage mid-run.
A database restart is real (`pg_ctlcluster ... restart`) when LANEWARDEN_TEST_PG_RESTART=1
(CI sets it; nothing else uses the server then); otherwise every backend of the test's
processes is terminated repeatedly, which they see exactly as a restart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_DSN, pg_url
from tests.test_multiprocess import check_caps_and_once, run_many

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def tagged_url(schema: str) -> str:
    # an application_name of our own lets the test find (and cut) exactly these connections
    return pg_url(schema) + f"&application_name=lw_{schema}"


def test_four_processes_hold_the_caps_globally(tmp_path: Path, pg_schema: str) -> None:
    result = run_many(tmp_path, tagged_url(pg_schema), processes=4, tasks_total=200, delay=0.05)
    check_caps_and_once(result)
    assert len({r.dispatcher for r in result["runs"]}) >= 3, "work did not spread over the processes"


def test_kill_two_processes_including_the_leader(tmp_path: Path, pg_schema: str) -> None:
    lease = 2.0
    result = run_many(
        tmp_path,
        tagged_url(pg_schema),
        processes=4,
        tasks_total=80,
        kill=2,
        kill_leader=True,
        delay=0.3,
        lease=lease,
    )
    check_caps_and_once(result)
    survivors = {r.dispatcher for r in result["runs"]} - set(result["killed"])
    leader = result["leader"]
    assert leader.holder not in result["killed"] and leader.holder in survivors | {leader.holder}
    assert leader.term >= 2
    # the lease moved as soon as it expired: a survivor asks every lease/4
    moved_after = (leader.acquired_at - result["killed_at"]).total_seconds()
    assert moved_after <= lease + lease / 4 + 2.0, f"failover took {moved_after:.1f}s with a {lease}s lease"


def _terminate_backends(schema: str, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (f"lw_{schema}",),
            )
            time.sleep(0.2)


def _restart_server() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120
    )


def test_database_outage_mid_run(tmp_path: Path, pg_schema: str) -> None:
    real_restart = os.environ.get("LANEWARDEN_TEST_PG_RESTART") == "1" and shutil.which("pg_ctlcluster")

    def disrupt() -> None:
        if real_restart:
            _restart_server()
        else:
            _terminate_backends(pg_schema)

    result = run_many(
        tmp_path, tagged_url(pg_schema), processes=2, tasks_total=60, disrupt=disrupt, delay=0.1
    )
    check_caps_and_once(result)
    logs = "".join(p.output() for p in result["procs"])
    assert "database unavailable" in logs or "LISTEN connection lost" in logs, "the outage was not noticed"
