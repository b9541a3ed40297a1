"""What reading the node exporters costs the leader: 10 hosts, each a dcgm-exporter and a
node_exporter, scraped every 15 s.

The exporters run in other processes so that only the scraper's CPU is counted: the
real ``prometheus-node-exporter`` binary when it is installed (Debian package of that
name; its full default page, about 1,000 lines), else the captured page in
tests/fixtures/nodes; and an HTTP server replaying the 8-GPU dcgm-exporter capture
(36 kB, MIG rows included). Every round is what the leader does: fetch both pages of all
ten hosts concurrently, parse them, and write one ``node_readings`` row per host to an
SQLite board. The figure is CPU seconds of this process per round divided by 15 s.

    python -m bench.node_scrape [--rounds 40] [--hosts 10] [--interval 15]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from lanewarden.core.board import open_board
from lanewarden.core.config import parse_config
from lanewarden.core.node_monitor import NodeMonitor

from bench.common import ROOT, save, table

FIXTURES = ROOT / "tests" / "fixtures" / "nodes"
REPLAY = """
import sys
from aiohttp import web
pages = {name: open(path, "rb").read() for name, path in zip(sys.argv[2::2], sys.argv[3::2])}
app = web.Application()
for name, body in pages.items():
    page = lambda request, body=body: web.Response(body=body, content_type="text/plain")  # noqa: E731
    app.router.add_get("/" + name, page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.text
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.2)


async def rounds(monitor: NodeMonitor, count: int) -> list[float]:
    """CPU seconds of this process per round (all hosts), one figure per round."""
    costs = []
    async with httpx.AsyncClient() as client:
        gateways = sorted(monitor.config.gateways.items())
        for _ in range(count):
            before = time.process_time()
            await asyncio.gather(*(monitor.read_once(name, gw, client) for name, gw in gateways))
            costs.append(time.process_time() - before)
    return costs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=15.0)
    if argv is None:
        argv = sys.argv[2:] if sys.argv[1:2] == ["node_scrape"] else sys.argv[1:]
    opts = parser.parse_args(argv)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        dcgm_port = free_port()
        pages = ["dcgm", str(FIXTURES / "dcgm_exporter_metrics_8x_a800_mig_blog.txt")]
        binary = shutil.which("prometheus-node-exporter")
        node_port = free_port()
        if binary:
            processes.append(
                subprocess.Popen(
                    [binary, f"--web.listen-address=127.0.0.1:{node_port}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            node_url = f"http://127.0.0.1:{node_port}/metrics"
            node_source = "prometheus-node-exporter (live, default collectors)"
        else:
            pages += ["node", str(FIXTURES / "node_exporter_1.5.0_live_trimmed.txt")]
            node_url = f"http://127.0.0.1:{dcgm_port}/node"
            node_source = "tests/fixtures/nodes/node_exporter_1.5.0_live_trimmed.txt (replayed)"
        processes.append(subprocess.Popen([sys.executable, "-c", REPLAY, str(dcgm_port), *pages]))
        dcgm_url = f"http://127.0.0.1:{dcgm_port}/dcgm"
        node_page = wait_for(node_url)
        dcgm_page = wait_for(dcgm_url)
        with tempfile.TemporaryDirectory() as tmp:
            config = parse_config(
                {
                    "board": {"url": f"sqlite:///{Path(tmp) / 'board.db'}"},
                    "gateways": {
                        f"gpu{i}": {
                            "base_url": f"http://gpu{i}:8000/v1",
                            "node_metrics": [dcgm_url, node_url],
                        }
                        for i in range(opts.hosts)
                    },
                    "profiles": {"default": {"runner": "noop"}},
                }
            )
            board = open_board(config)
            monitor = NodeMonitor(board.db, config)
            asyncio.run(rounds(monitor, 3))  # warm up: imports, connections, the parser
            wall = time.monotonic()
            costs = asyncio.run(rounds(monitor, opts.rounds))
            wall = (time.monotonic() - wall) / opts.rounds
            board.db.dispose()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    per_round = sum(costs) / len(costs)
    share = per_round / opts.interval
    result = {
        "hosts": opts.hosts,
        "interval_seconds": opts.interval,
        "rounds": opts.rounds,
        "node_exporter": node_source,
        "node_page_lines": node_page.count("\n"),
        "node_page_bytes": len(node_page.encode()),
        "dcgm_page_bytes": len(dcgm_page.encode()),
        "cpu_ms_per_round": per_round * 1000,
        "cpu_ms_per_round_max": max(costs) * 1000,
        "wall_ms_per_round": wall * 1000,
        "share_of_one_core": share,
    }
    print(
        table(
            ["hosts", "every", "node page", "dcgm page", "CPU/round", "wall/round", "share of one core"],
            [
                [
                    opts.hosts,
                    f"{opts.interval:g}s",
                    f"{result['node_page_lines']} lines",
                    f"{result['dcgm_page_bytes'] // 1024} kB",
                    f"{per_round * 1000:.1f} ms",
                    f"{wall * 1000:.1f} ms",
                    f"{share:.3%}",
                ]
            ],
        )
    )
    save("node_scrape", result)
    return result


if __name__ == "__main__":
    main()
