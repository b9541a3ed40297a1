"""The leader's scraper against exporters on loopback: readings stored, unknown never down."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from lanewarden.bot.simulator.model import ServerModel
from lanewarden.bot.simulator.server import GatewaySimulator
from lanewarden.core.board import Board, open_board
from lanewarden.core.node_monitor import SCRAPE_TIMEOUT, NodeMonitor
from lanewarden.core.nodes import MIB, cpu_busy, parse_exporter
from lanewarden.core.readmodel import node_history, node_views
from lanewarden.core.schema import gateway_state
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.node_exporter import T4_MIB, FakeNodeExporter


@pytest.fixture
async def exporter() -> FakeNodeExporter:
    fake = FakeNodeExporter()
    await fake.start()
    yield fake
    await fake.stop()


def board_for(board_url: str, urls: list[str]) -> Board:
    return open_board(
        make_config(
            board_url,
            gateways={"gpu1": {"base_url": "http://127.0.0.1:9/v1", "node_metrics": urls}},
            profiles={"default": {"runner": "noop"}, "llm": {"gateway": "gpu1", "model": "m"}},
        )
    )


async def test_readings_follow_the_exporters_and_a_silent_one_is_unknown(
    board_url: str, exporter: FakeNodeExporter
) -> None:
    board = board_for(board_url, exporter.urls)
    monitor = NodeMonitor(board.db, board.config)
    gateway = board.config.gateways["gpu1"]
    async with httpx.AsyncClient() as client:
        first = await monitor.read_once("gpu1", gateway, client)
        assert first.known and first.figures.gpu_util == 30.0
        assert first.figures.cpu_busy is None  # a rate needs two scrapes
        exporter.gpu_util, exporter.vram_used_mib, exporter.cpu_busy = 98.0, 14800.0, 0.6
        second = await monitor.read_once("gpu1", gateway, client)
        assert second.figures.gpu_util == 98.0
        assert second.figures.vram_used_bytes == 14800 * MIB
        assert second.figures.vram_total_bytes == T4_MIB * MIB
        assert second.figures.cpu_busy == pytest.approx(0.6)
        assert second.figures.ram_total_bytes == 2.5276059648e10
        exporter.down = True
        third = await monitor.read_once("gpu1", gateway, client)
    assert not third.known
    assert any("HTTP 503" in e for e in third.figures.errors)
    with board.db.read() as conn:
        [view] = node_views(conn, board.config)
        stored = node_history(conn, "gpu1", first.at)
        health = conn.execute(select(gateway_state)).all()
    assert [r.known for r in stored] == [True, True, False]
    # per-GPU figures stay only on the newest round that has them; the history keeps totals
    assert [len(r.figures.gpus) for r in stored] == [0, 1, 0] and stored[0].figures.gpu_util == 30.0
    # status shows "unknown" with the last figures read and their age, and the gateway is
    # not marked down: its own health probe decides that
    assert not view.known and view.last_known is not None and view.last_known.figures.gpu_util == 98.0
    assert health == []
    board.db.dispose()


async def test_a_refused_connection_is_unknown_too(board_url: str) -> None:
    fake = FakeNodeExporter()
    await fake.start()
    urls = fake.urls
    await fake.stop()
    board = board_for(board_url, urls)
    monitor = NodeMonitor(board.db, board.config)
    async with httpx.AsyncClient() as client:
        reading = await monitor.read_once("gpu1", board.config.gateways["gpu1"], client)
    assert not reading.known and len(reading.figures.errors) == 2
    assert all("ConnectError" in e for e in reading.figures.errors)
    board.db.dispose()


async def test_an_exporter_that_hangs_is_given_up_on(board_url: str, exporter: FakeNodeExporter) -> None:
    exporter.hang_seconds = SCRAPE_TIMEOUT.read + 2
    board = board_for(board_url, exporter.urls)
    monitor = NodeMonitor(board.db, board.config)
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        reading = await monitor.read_once("gpu1", board.config.gateways["gpu1"], client)
    # both endpoints concurrently, each cut at SCRAPE_TIMEOUT: the round is not stuck
    assert time.monotonic() - started < SCRAPE_TIMEOUT.read + 5
    assert not reading.known and all("ReadTimeout" in e for e in reading.figures.errors)
    board.db.dispose()


async def test_the_simulator_host_gets_busier_under_load() -> None:
    sim = GatewaySimulator(ServerModel(token_ms=5.0))
    await sim.start()
    try:
        async with httpx.AsyncClient() as client:
            idle = parse_exporter((await client.get(f"{sim.root_url}/exporters/dcgm")).text)
            node_before = parse_exporter((await client.get(f"{sim.root_url}/exporters/node")).text)
            body = {"model": "sim-7b", "max_tokens": 200, "messages": [{"role": "user", "content": "x"}]}

            async def ask(i: int) -> None:
                await client.post(
                    f"{sim.base_url}/chat/completions",
                    json={**body, "messages": [{"role": "user", "content": f"q{i}"}]},
                    timeout=60,
                )

            load = asyncio.gather(*(ask(i) for i in range(8)))
            await asyncio.sleep(1.2)
            busy = parse_exporter((await client.get(f"{sim.root_url}/exporters/dcgm")).text)
            node_after = parse_exporter((await client.get(f"{sim.root_url}/exporters/node")).text)
            await load
    finally:
        await sim.stop()
    [gpu_idle], [gpu_busy] = idle.gpus, busy.gpus
    assert gpu_idle.util == 0.0 and gpu_busy.util is not None and gpu_busy.util > 50
    assert gpu_busy.vram_used_bytes > gpu_idle.vram_used_bytes  # the KV cache fills
    assert gpu_busy.vram_total_bytes == gpu_idle.vram_total_bytes
    assert (cpu_busy(node_before.cpu, node_after.cpu) or 0) > 0
