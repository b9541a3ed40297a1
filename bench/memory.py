"""Memory: the RSS of `lanewarden serve` with 100,000 ready tasks on the board.

The board lives in the database; a process holds only what it is running, so its
memory should not grow with the queue. We start `serve --headless` on a board with
100,000 ready tasks (a no-op profile, caps 8, so it keeps claiming and finishing),
let it work for a while, and read VmRSS and the peak VmHWM from /proc.
Target: <= 150 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lanewarden.core.board import open_board
from lanewarden.core.config import parse_config
from lanewarden.core.schema import tasks
from sqlalchemy import func, select

from bench.common import ROOT, insert_ready_tasks, save, table


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["memory"] else sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="lw-memory-"))
    url = f"sqlite:///{work / 'board.db'}"
    board = open_board(
        parse_config(
            {"board": {"url": url}, "profiles": {"noop": {"runner": "noop"}}, "http": {"listen": None}}
        )
    )
    insert_ready_tasks(board, args.tasks)
    config = work / "lanewarden.toml"
    config.write_text(
        f'[board]\nurl = "{url}"\n[kanban.dispatcher]\nmax_active_tasks = 8\n'
        '[kanban.workers]\nprofile = "noop"\nmax_parallel_per_profile = 8\n'
        '[profiles.noop]\nrunner = "noop"\n[http]\nlisten = "127.0.0.1:0"\n'
    )
    env = {
        **os.environ,
        "LANEWARDEN_CONFIG": str(config),
        "LANEWARDEN_HOME": str(work),
        "LANEWARDEN_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lanewarden.bot.cli", "serve", "--headless"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = []
    try:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            samples.append(status_kb(proc.pid, "VmRSS"))
        peak = status_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(60)
    with board.db.read() as conn:
        done = conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one()
        ready = conn.execute(select(func.count()).where(tasks.c.status == "ready")).scalar_one()
    board.db.dispose()
    rss_mb, peak_mb = samples[-1] / 1024, peak / 1024
    print(
        table(
            ["measure", "value", "target"],
            [
                ("RSS at the end (MB)", rss_mb, "<= 150"),
                ("peak RSS, VmHWM (MB)", peak_mb, "<= 150"),
                ("tasks finished meanwhile", done, ""),
                ("tasks still ready", ready, ""),
            ],
        )
    )
    result = {
        "tasks": args.tasks,
        "seconds": args.seconds,
        "rss_mb": rss_mb,
        "peak_rss_mb": peak_mb,
        "rss_samples_mb": [s / 1024 for s in samples],
        "done_meanwhile": done,
    }
    save("memory", result)
    return result


if __name__ == "__main__":
    main()
