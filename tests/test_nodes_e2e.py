"""End to end: a GPU host's exporters on loopback go from idle to saturated and back.

The fake exporter serves the real captured pages (tests/fakes/node_exporter.py) with the
GPU at 30%, then at 98% with VRAM filling up, then calm again. The leader's scraper reads
it over HTTP each round and the board goes through what an operator sees: ``status``,
``/metrics``, the alert rules (fired, then resolved) and ``tune``'s advice changing.
Rounds are one minute apart in board time (``now`` given to each round), so an hour of
history takes a second.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from lanewarden.bot.http.metrics import Metrics
from lanewarden.bot.render import render
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.node_monitor import NodeMonitor, record_reading
from lanewarden.core.nodes import NodeFigures
from lanewarden.core.schema import events, runs
from lanewarden.scheduler.alerts import AlertEngine
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select

from tests.conftest import make_config
from tests.fakes.node_exporter import FakeNodeExporter

VIEWER = Actor("slack:U1", "viewer", "slack:C1")


def e2e_board(board_url: str, exporter: FakeNodeExporter) -> Board:
    config = make_config(
        board_url,
        gateways={
            "gpu1": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 2, "node_metrics": exporter.urls}
        },
        profiles={"default": {"runner": "noop"}, "llm": {"gateway": "gpu1", "model": "m"}},
        alerts={"min_samples": 3, "cooldown_seconds": 0, "vram_usage": 0.9, "oldest_ready_seconds": 86400},
        slack={"alert_channel": "C0ALERTS1"},
    )
    return open_board(config)


def fill_the_cap(board: Board, now: datetime) -> None:
    """Two requests open on gpu1 (its cap) and six dispatchable tasks waiting for it."""
    for i in range(6):
        board.add(NewTask(title=f"waits {i}", profile="llm", column="ready"), "test")
    holder = board.add(NewTask(title="running", profile="llm", column="backlog"), "test")
    with board.db.write() as conn:
        conn.execute(insert(runs), [open_run(holder.id, i + 1, now) for i in range(2)])


def open_run(task_id: int, attempt: int, at: datetime) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "attempt": attempt,
        "dispatcher": "d",
        "profile": "llm",
        "gateway": "gpu1",
        "claimed_at": at,
        "lease_expires_at": at + timedelta(hours=2),
    }


def finished_runs(board: Board, task_id: int, times: list[datetime], latency_ms: float) -> None:
    with board.db.write() as conn:
        conn.execute(
            insert(runs),
            [
                {
                    **open_run(task_id, 100 + i, at - timedelta(milliseconds=latency_ms)),
                    "finished_at": at,
                    "outcome": "succeeded",
                    "latency_ms": latency_ms,
                    "completion_tokens": 100,
                }
                for i, at in enumerate(times)
            ],
        )


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def alert_kinds(board: Board) -> list[tuple[str, str]]:
    with board.db.read() as conn:
        rows = conn.execute(
            select(events.c.kind, events.c.data)
            .where(events.c.kind.in_(("alert", "alert_resolved")))
            .order_by(events.c.id)
        ).all()
    return [(r.kind, r.data["key"]) for r in rows if r.data["key"].split(":")[0] in NODE_KEYS]


NODE_KEYS = ("vram_high", "gpu_saturated", "ram_low")


async def test_idle_then_saturated_then_calm(board_url: str) -> None:
    exporter = FakeNodeExporter()
    await exporter.start()
    board = e2e_board(board_url, exporter)
    try:
        await run_scenario(board, exporter)
    finally:
        board.db.dispose()
        await exporter.stop()


async def run_scenario(board: Board, exporter: FakeNodeExporter) -> None:
    start = utcnow() - timedelta(minutes=46)
    fill_the_cap(board, start)
    history = board.add(NewTask(title="history", profile="llm", column="backlog"), "test")
    monitor = NodeMonitor(board.db, board.config)
    gateway = board.config.gateways["gpu1"]
    executor = Executor(board)
    alerts = AlertEngine(board, board.config)
    metrics = Metrics(board, is_leader=lambda: True)

    # -- 40 minutes at cap 2 with work waiting and the GPU 30% busy: one request a minute
    # finishing in 1 s (10 ms per token)
    async with httpx.AsyncClient() as client:
        for minute in range(40):
            await monitor.read_once("gpu1", gateway, client, now=start + timedelta(minutes=minute))
        finished_runs(board, history.id, [start + timedelta(minutes=m, seconds=30) for m in range(40)], 1000)
        status = render(executor.execute(parse("status"), VIEWER))
        assert "node gpu1: GPU 30% busy, VRAM 2.0G/14.8G (13%), CPU 25% busy" in status
        assert "RAM 22.5G of 23.5G free" in status
        tune = executor.execute(parse("tune"), VIEWER)
        [advice] = tune.advice
        assert advice.verdict == "under_used" and advice.proposed_cap == 3
        assert "GPU 30% busy while up to 6 task(s) waited at cap 2 for 4" in advice.text
        assert "tune: gpu1: GPU 30% busy" in status  # status carries the proposal too
        scraped = (await metrics.scrape()).decode()
        assert metric(scraped, "lanewarden_node_gpu_utilization_percent", gateway="gpu1", gpu="0") == 30.0
        assert metric(scraped, "lanewarden_node_up", gateway="gpu1") == 1.0
        assert metric(scraped, "lanewarden_node_memory_available_bytes", gateway="gpu1") == 2.4113422336e10

        # -- the load grows: GPU 98%, the KV cache fills VRAM minute by minute, and
        # requests take three times as long at the same rate
        exporter.gpu_util = 98.0
        for minute in range(40, 46):
            exporter.vram_used_mib = 12000 + (minute - 40) * 550  # up to 14750 of 15109 MiB
            await monitor.read_once("gpu1", gateway, client, now=start + timedelta(minutes=minute))
        now = utcnow()
        finished_runs(board, history.id, [now - timedelta(seconds=20 + 50 * i) for i in range(6)], 3000)
        alerts.evaluate(now)
        assert alert_kinds(board) == []  # one bad round is not an alert
        alerts.evaluate(now + timedelta(seconds=30))
        assert alert_kinds(board) == [("alert", "vram_high:gpu1"), ("alert", "gpu_saturated:gpu1")]
        status = render(executor.execute(parse("status"), VIEWER))
        assert "node gpu1: GPU 98% busy, VRAM 14.4G/14.8G (98%)" in status
        [advice] = executor.execute(parse("tune"), VIEWER).advice
        assert advice.verdict == "overloaded" and advice.proposed_cap == 1
        assert "p95 rose 3.0x" in advice.text and "`caps set gateway gpu1 1`" in advice.text
        scraped = (await metrics.scrape()).decode()
        assert (
            metric(scraped, "lanewarden_node_gpu_vram_used_bytes", gateway="gpu1", gpu="0") == 14750 * 2**20
        )

        # -- the exporter stops answering: unknown, and no alert resolves on no data
        exporter.down = True
        await monitor.read_once("gpu1", gateway, client)
        status = render(executor.execute(parse("status"), VIEWER))
        assert "node gpu1: unknown (http://127.0.0.1:" in status and "HTTP 503" in status
        assert "last read " in status and "GPU 98% busy" in status
        alerts.evaluate(now + timedelta(seconds=60))
        alerts.evaluate(now + timedelta(seconds=90))
        assert [k for k, _ in alert_kinds(board)] == ["alert", "alert"]
        scraped = (await metrics.scrape()).decode()
        assert metric(scraped, "lanewarden_node_up", gateway="gpu1") == 0.0

        # -- calm again: both alerts resolve (two clear rounds each)
        exporter.down = False
        exporter.gpu_util, exporter.vram_used_mib = 40.0, 8000.0
        await monitor.read_once("gpu1", gateway, client)
        alerts.evaluate(now + timedelta(seconds=120))
        alerts.evaluate(now + timedelta(seconds=150))
    assert alert_kinds(board) == [
        ("alert", "vram_high:gpu1"),
        ("alert", "gpu_saturated:gpu1"),
        ("alert_resolved", "vram_high:gpu1"),
        ("alert_resolved", "gpu_saturated:gpu1"),
    ]
    assert "node gpu1: GPU 40% busy" in render(executor.execute(parse("status"), VIEWER))
    assert exporter.scrapes >= 2 * 47


def test_ram_low_fires_and_resolves_and_unknown_changes_nothing(board_url: str) -> None:
    exporter = FakeNodeExporter()  # not started: only its URLs are configured
    exporter.port = 9
    board = e2e_board(board_url, exporter)
    alerts = AlertEngine(board, board.config)
    now = utcnow()
    total = 64 * 2**30

    def round_at(seconds: int, available: float | None) -> list[tuple[str, str]]:
        figures = NodeFigures(errors=("refused",))
        if available is not None:
            figures = NodeFigures(ram_available_bytes=available * total, ram_total_bytes=total)
        record_reading(board.db, board.config, "gpu1", figures, now + timedelta(seconds=seconds))
        return [
            (k, c) for k, c in alerts.evaluate(now + timedelta(seconds=seconds)) if k.startswith("ram_low")
        ]

    try:
        assert round_at(0, 0.05) == []
        assert round_at(30, 0.04) == [("ram_low:gpu1", "fired")]
        assert round_at(60, None) == [] and round_at(90, None) == []  # unknown: still firing
        assert round_at(120, 0.11) == [] and round_at(150, 0.11) == []  # above 10%, inside the band
        assert round_at(180, 0.3) == []
        assert round_at(210, 0.3) == [("ram_low:gpu1", "resolved")]
    finally:
        board.db.dispose()
