"""The web board: first screen with 10,000 ready tasks, and the live stream's CPU.

1. Server time for ``GET /`` (the whole first screen: every column's first page and
   count, the gateway strip, the page rendered) on a board of 10,000 ready tasks, on
   SQLite and PostgreSQL, measured around the handler inside the server process.
2. A real ``lanewarden serve`` with 20 pages following ``/events``: the process's CPU
   (utime + stime from /proc) over a quiet minute, and over a minute in which another
   process changes one task per second (every page gets each change).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import ClientSession, ClientTimeout, web
from aiohttp.test_utils import TestClient, TestServer
from lanewarden.bot.http.server import HttpEndpoint
from lanewarden.bot.tools.demo import free_port
from lanewarden.bot.web import WebBoard
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import parse_config
from lanewarden.core.schema import tasks
from lanewarden.core.signin import mint_link

from bench.common import PG_DSN, ROOT, percentile, save, table

READY = 10_000
PAGES = 20


def _config(url: str, **extra: Any) -> Any:
    return parse_config(
        {
            "board": {"url": url},
            "gateways": {"gpu": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 4}},
            "profiles": {
                "default": {"runner": "noop"},
                "writer": {"gateway": "gpu", "model": "m"},
            },
            "http": {"listen": "127.0.0.1:0"},
            **extra,
        }
    )


def seed_ready(board: Board, count: int) -> None:
    now = utcnow()
    rows = [
        {
            "title": f"ready task {i}",
            "profile": "writer" if i % 2 else "default",
            "status": "ready",
            "priority": i % 11,
            "created_by": "bench",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    with board.db.write() as conn:
        for start in range(0, count, 2000):
            conn.execute(tasks.insert(), rows[start : start + 2000])


async def first_screen(board: Board, samples: int) -> list[float]:
    """Milliseconds the server spends on ``GET /``, timed by a middleware around it."""
    timings: list[float] = []

    @web.middleware
    async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        response = await handler(request)
        if request.path == "/":
            timings.append((time.perf_counter() - start) * 1000)
        return response

    endpoint = HttpEndpoint("127.0.0.1:0", board.db)
    endpoint.app.middlewares.append(timed)
    WebBoard(board, secret=b"bench secret that is long enough to sign").install(endpoint.app)
    client = TestClient(TestServer(endpoint.app, host="127.0.0.1"))
    await client.start_server()
    try:
        link = mint_link(
            board, actor_id="web:bench", role="admin", name="bench", created_by="bench", minutes=5
        )
        await client.post(f"/signin/{link.token}", allow_redirects=False)
        for _ in range(3):  # warm up: templates compiled, connections pooled
            assert (await client.get("/")).status == 200
        timings.clear()
        for _ in range(samples):
            response = await client.get("/")
            assert response.status == 200 and "ready task" in await response.text()
    finally:
        await client.close()
    return timings


def measure_first_screen(url: str, samples: int) -> dict[str, Any]:
    board = open_board(_config(url))
    try:
        seed_ready(board, READY)
        timings = asyncio.run(first_screen(board, samples))
    finally:
        board.db.dispose()
    return {
        "p50_ms": percentile(timings, 50),
        "p95_ms": percentile(timings, 95),
        "max_ms": max(timings),
        "samples": len(timings),
    }


def _pg_url() -> str | None:
    try:
        import psycopg

        schema = f"bench_web_{os.getpid()}"
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # no server here: the SQLite figure stands alone
        print(f"PostgreSQL unavailable ({type(exc).__name__}); skipping it")
        return None
    params = dict(part.split("=", 1) for part in PG_DSN.split())
    return (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{params.get('dbname', 'test')}?options=-csearch_path%3D{schema}"
    )


def _drop_pg(url: str) -> None:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------- the live stream


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow(url: str, cookie: str, stop: asyncio.Event, received: list[int]) -> None:
    async with (
        ClientSession(cookies={"lw_session": cookie}, timeout=ClientTimeout(total=None)) as session,
        session.get(f"{url}/events?since=999999999") as response,
    ):
        assert response.status == 200
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(response.content.readline(), 1)
            except TimeoutError:
                continue
            if line.startswith(b"event: cards"):
                received[0] += 1


async def live_cost(
    url: str, pid: int, cookies: list[str], board: Board, seconds: float, changes: bool
) -> dict:
    stop = asyncio.Event()
    received = [0]
    readers = [asyncio.create_task(follow(url, c, stop, received)) for c in cookies]
    await asyncio.sleep(3)  # every page connected and settled
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    made = 0
    while time.monotonic() - start < seconds:
        if changes:
            await asyncio.to_thread(
                board.add, NewTask(title=f"live change {made}", column="backlog"), "bench"
            )
            made += 1
        await asyncio.sleep(1.0)
    used = cpu_seconds(pid) - start_cpu
    wall = time.monotonic() - start
    stop.set()
    await asyncio.gather(*readers, return_exceptions=True)
    return {
        "cpu_percent_of_a_core": 100 * used / wall,
        "changes": made,
        "card_messages_received": received[0],
        "seconds": round(wall, 1),
    }


def measure_live(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config_path = Path(tmp) / "lanewarden.toml"
        config_path.write_text(
            f'[board]\nurl = "sqlite:///{Path(tmp) / "board.db"}"\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n'
            "[scheduler]\nenabled = false\n"
            '[profiles.default]\nrunner = "noop"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "LANEWARDEN_"))}
        env.update(LANEWARDEN_HOME=str(Path(tmp) / "home"), LANEWARDEN_CONFIG=str(config_path))
        serve = subprocess.Popen(
            [sys.executable, "-m", "lanewarden.bot.cli", "serve", "--headless"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        board = open_board(_config(f"sqlite:///{Path(tmp) / 'board.db'}"))
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("serve did not come up")
                time.sleep(0.2)
            cookies = []
            for i in range(PAGES):
                link = mint_link(
                    board, actor_id=f"web:page{i}", role="viewer", name=None, created_by="bench", minutes=5
                )
                signed = httpx.post(f"{url}/signin/{link.token}", follow_redirects=False)
                cookies.append(signed.cookies["lw_session"])
            # serve's own work (dispatcher, probes, leader, its reaction to the changes) without
            # any page open, to subtract: what is left is what the pages cost
            runs = {
                "no_page_quiet": asyncio.run(live_cost(url, serve.pid, [], board, seconds, False)),
                "no_page_changes": asyncio.run(live_cost(url, serve.pid, [], board, seconds, True)),
                "pages_quiet": asyncio.run(live_cost(url, serve.pid, cookies, board, seconds, False)),
                "pages_changes": asyncio.run(live_cost(url, serve.pid, cookies, board, seconds, True)),
            }
        finally:
            serve.terminate()
            serve.wait(30)
            board.db.dispose()
    cpu = {name: run["cpu_percent_of_a_core"] for name, run in runs.items()}
    return {
        "pages": PAGES,
        "runs": runs,
        "stream_cpu_percent_quiet": cpu["pages_quiet"] - cpu["no_page_quiet"],
        "stream_cpu_percent_one_change_per_second": cpu["pages_changes"] - cpu["no_page_changes"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    if argv is None:
        argv = sys.argv[2:] if sys.argv[1:2] == ["web_board"] else sys.argv[1:]
    opts = parser.parse_args(argv)
    screens: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        screens["sqlite"] = measure_first_screen(f"sqlite:///{Path(tmp) / 'board.db'}", opts.samples)
    pg = _pg_url()
    if pg is not None:
        try:
            screens["postgres"] = measure_first_screen(pg, opts.samples)
        finally:
            _drop_pg(pg)
    print(f"first screen of the board with {READY:,} ready tasks (server time, ms)")
    print(
        table(
            ["database", "p50", "p95", "max", "samples"],
            [[db, f["p50_ms"], f["p95_ms"], f["max_ms"], f["samples"]] for db, f in screens.items()],
        )
    )
    live = measure_live(opts.seconds)
    print(f"\nlive stream: serve's CPU (% of a core) with and without {PAGES} pages open")
    print(
        table(
            ["run", "CPU %", "changes", "card messages received"],
            [
                [name, run["cpu_percent_of_a_core"], run["changes"], run["card_messages_received"]]
                for name, run in live["runs"].items()
            ],
        )
    )
    print(
        f"the pages' share: {live['stream_cpu_percent_quiet']:.2f}% quiet, "
        f"{live['stream_cpu_percent_one_change_per_second']:.2f}% with one change per second"
    )
    result = {"ready_tasks": READY, "first_screen": screens, "live": live}
    save("web_board", result)
    return result


if __name__ == "__main__":
    main()
