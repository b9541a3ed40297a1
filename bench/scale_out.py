"""Scale-out: no-op lifecycles per second with 1, 2 and 4 `serve` processes on
PostgreSQL, against one process on SQLite; and the dispatch delay across processes
(a task added by another process, woken through LISTEN/NOTIFY or data_version).

Anchors published for PostgreSQL queues on comparable hardware: PgQueuer 6-18k
jobs/s, Oban ~17k/s, River ~46k/s (Go). Target: >= 2,000 lifecycles/s with 4
processes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import parse_config
from lanewarden.core.schema import runs, tasks
from sqlalchemy import func, select

from bench.common import ROOT, drop_pg_schema, fresh_pg_schema, insert_ready_tasks, percentile, save, table

CAP = 256


def config_toml(url: str) -> str:
    return f"""
[board]
url = "{url}"
[kanban.dispatcher]
max_active_tasks = {CAP}
max_claims_per_transaction = 64
poll_interval_seconds = 2
[kanban.workers]
profile = "noop"
max_parallel_per_profile = {CAP}
[profiles.noop]
runner = "noop"
[scheduler]
enabled = false
[alerts]
digest_cron = ""
[http]
listen = ""
"""


def start_fleet(url: str, processes: int, work: Path) -> list[subprocess.Popen]:
    path = work / "lanewarden.toml"
    path.write_text(config_toml(url))
    env = {
        **os.environ,
        "LANEWARDEN_CONFIG": str(path),
        "LANEWARDEN_HOME": str(work),
        "LANEWARDEN_LOG_LEVEL": "WARNING",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "lanewarden.bot.cli", "serve", "--headless"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(work / f"serve{i}.log").open("w"),
        )
        for i in range(processes)
    ]


def stop_fleet(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)


def wait_done(board, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with board.db.read() as conn:
            if conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one() >= count:
                return
        time.sleep(0.2)
    raise TimeoutError("the fleet did not finish")


def run_once(url: str, processes: int, count: int, delay_tasks: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lw-scale-"))
    board = open_board(
        parse_config(
            {"board": {"url": url}, "profiles": {"noop": {"runner": "noop"}}, "http": {"listen": None}}
        )
    )
    insert_ready_tasks(board, count)
    procs = start_fleet(url, processes, work)
    try:
        wait_done(board, count)
        with board.db.read() as conn:
            first, last = conn.execute(
                select(func.min(runs.c.claimed_at), func.max(runs.c.finished_at))
            ).one()
            per_process = conn.execute(
                select(runs.c.dispatcher, func.count()).group_by(runs.c.dispatcher)
            ).all()
        seconds = (last - first).total_seconds()
        # dispatch delay: the fleet is idle, tasks arrive one at a time from this (other) process
        before = count
        for i in range(delay_tasks):
            board.add(NewTask(title=f"d{i}", profile="noop"), "bench")
            time.sleep(0.02)
        wait_done(board, before + delay_tasks)
        with board.db.read() as conn:
            rows = conn.execute(
                select(runs.c.ready_at, runs.c.claimed_at, runs.c.started_at).where(runs.c.task_id > count)
            ).all()
    finally:
        stop_fleet(procs)
        board.db.dispose()
    delays = [(r.started_at - r.ready_at).total_seconds() * 1000 for r in rows]
    return {
        "processes": processes,
        "tasks": count,
        "seconds": seconds,
        "lifecycles_per_second": count / seconds,
        "per_process": {d: n for d, n in per_process},
        "delay_p50_ms": percentile(delays, 50),
        "delay_p99_ms": percentile(delays, 99),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--delay-tasks", type=int, default=200)
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["scale_out"] else sys.argv[1:])
    results = []
    work = Path(tempfile.mkdtemp(prefix="lw-scale-sqlite-"))
    sqlite = run_once(f"sqlite:///{work / 'board.db'}", 1, args.tasks, args.delay_tasks)
    sqlite["engine"] = "sqlite"
    results.append(sqlite)
    for n in (int(x) for x in args.processes.split(",")):
        schema, url = fresh_pg_schema("scale")
        try:
            result = run_once(url, n, args.tasks, args.delay_tasks)
        finally:
            drop_pg_schema(schema)
        result["engine"] = "postgresql"
        results.append(result)
        print(f"  {n} process(es) on PostgreSQL: {result['lifecycles_per_second']:,.0f}/s", flush=True)
    print(
        table(
            ["engine", "processes", "lifecycles/s", "delay p50 ms", "delay p99 ms"],
            [
                (
                    r["engine"],
                    r["processes"],
                    r["lifecycles_per_second"],
                    r["delay_p50_ms"],
                    r["delay_p99_ms"],
                )
                for r in results
            ],
        )
    )
    out = {"runs": results}
    save("scale_out", out)
    return out


if __name__ == "__main__":
    main()
