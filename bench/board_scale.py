"""Board scale: 1,000,000 tasks (most done) and 10,000 ready on SQLite.

Times the operations people run all day: ``list --status ready --limit 50``, the
per-status counts, ``show``, and ``add``, through the same executor the CLI uses
(in process, so interpreter start-up is not counted; the CLI's wall time is reported
separately). Target: each under 50 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from lanewarden.core.access import Actor
from lanewarden.core.board import open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import parse_config
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.schema import events, tasks
from sqlalchemy import insert

from bench.common import ROOT, percentile, save, table

ACTOR = Actor(id="cli:bench", role="admin")


def populate(board, total: int, ready: int) -> None:
    now = utcnow()
    rng = random.Random(7)
    chunk = 20_000
    statuses = ["done"] * 90 + ["failed"] * 3 + ["cancelled"] * 2 + ["backlog"] * 5
    made = 0
    while made < total:
        rows = []
        for _ in range(min(chunk, total - made)):
            i = made + len(rows)
            status = "ready" if i >= total - ready else rng.choice(statuses)
            created = now - timedelta(seconds=total - i)
            rows.append(
                {
                    "title": f"task {i}",
                    "body": "",
                    "profile": "default",
                    "priority": rng.randint(0, 5),
                    "status": status,
                    "released": False,
                    "attempts": 1 if status == "done" else 0,
                    "max_attempts": 3,
                    "created_by": "bench",
                    "created_at": created,
                    "updated_at": created,
                    "finished_at": created if status == "done" else None,
                    "result": "ok" if status == "done" else None,
                }
            )
        with board.db.write() as conn:
            conn.execute(insert(tasks), rows)
            first = (
                conn.execute(tasks.select().order_by(tasks.c.id.desc()).limit(1)).first().id - len(rows) + 1
            )
            conn.execute(
                insert(events),
                [
                    {
                        "task_id": first + k,
                        "at": r["created_at"],
                        "actor": "bench",
                        "kind": "created",
                        "message": "created",
                    }
                    for k, r in enumerate(rows)
                ],
            )
        made += len(rows)
        print(f"  {made:,} tasks", end="\r", flush=True)
    print()


def timed(executor: Executor, text: str, repeat: int) -> list[float]:
    command = parse(text)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        executor.execute(command, ACTOR, source_text=text)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--ready", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["board_scale"] else sys.argv[1:])
    workdir = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    url = f"sqlite:///{workdir / 'board.db'}"
    config = parse_config(
        {"board": {"url": url}, "profiles": {"default": {"runner": "noop"}}, "http": {"listen": None}}
    )
    board = open_board(config)
    print(f"populating {args.tasks:,} tasks ({args.ready:,} ready) in {url}")
    started = time.perf_counter()
    populate(board, args.tasks, args.ready)
    print(
        f"  took {time.perf_counter() - started:.0f}s; "
        f"size {os.path.getsize(workdir / 'board.db') / 1e6:.0f} MB"
    )
    executor = Executor(board)
    some_id = args.tasks - args.ready // 2  # a ready task: show explains why it waits
    operations = {
        "list --status ready --limit 50": "list --status ready --limit 50",
        "counts per status (caps + status)": "status",
        f"show {some_id}": f"show {some_id}",
        "add": "add benchmark task --priority 3",
    }
    rows, figures = [], {}
    for label, text in operations.items():
        timed(executor, text, 3)  # warm the page cache
        samples = timed(executor, text, args.repeat)
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        rows.append((label, p50, p99, max(samples), "yes" if p99 < 50 else "NO"))
        figures[label] = {"p50_ms": p50, "p99_ms": p99, "max_ms": max(samples), "samples": len(samples)}
    env = {**os.environ, "LANEWARDEN_HOME": str(workdir), "LANEWARDEN_CONFIG": str(workdir / "c.toml")}
    (workdir / "c.toml").write_text(f'[board]\nurl = "{url}"\n[profiles.default]\nrunner = "noop"\n')
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lanewarden.bot.cli", "list", "--status", "ready", "--limit", "50", "--quiet"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    cli_ms = (time.perf_counter() - start) * 1000
    print()
    print(table(["operation (in process)", "p50 ms", "p99 ms", "max ms", "< 50 ms"], rows))
    print(f"\nthe same list as a CLI process, interpreter start-up included: {cli_ms:.0f} ms")
    board.db.dispose()
    result = {"tasks": args.tasks, "ready": args.ready, "operations": figures, "cli_list_wall_ms": cli_ms}
    save("board_scale", result)
    return result


if __name__ == "__main__":
    main()
