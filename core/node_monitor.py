"""Scraping the node exporters and keeping their readings where every process sees them.

The leader scrapes each gateway's ``node_metrics`` endpoints on the gateway's probe
interval (one scraper per board: the exporters need no more load than that) and writes
one ``node_readings`` row per gateway per round, with the board's view of the gateway
at that moment (in flight, limit, cap, dispatchable tasks waiting for it): the history
``tune``, the chart and the alert rules read. A gateway without exporters still gets its
board-side row, so ``tune`` can tell a full cap from an idle one there too.

An exporter that does not answer makes its figures unknown (``known`` false, the error
kept in ``detail``): never "down", which only the gateway's own health probe decides.
Rows older than a day are pruned as new ones are written.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import utcnow
from lanewarden.core.config import GatewayConfig, LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.nodes import (
    CpuCounters,
    ExporterReading,
    NodeFigures,
    NodeReading,
    cpu_busy,
    merge,
    parse_exporter,
)
from lanewarden.core.readmodel import dispatchable
from lanewarden.core.schema import node_readings, tasks
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.nodes")

# an exporter is a local HTTP server; one that takes longer is as good as absent
SCRAPE_TIMEOUT = httpx.Timeout(3.0)
KEEP = timedelta(days=1)
MAX_ERROR_CHARS = 200


# ------------------------------------------------------------------- scraping


async def scrape(
    urls: list[str], client: httpx.AsyncClient, previous_cpu: dict[str, CpuCounters]
) -> NodeFigures:
    """Every endpoint of one host, concurrently; ``previous_cpu`` (by URL) is updated."""
    results = await asyncio.gather(*(fetch_exporter(url, client) for url in urls))
    readings: list[ExporterReading] = []
    errors: list[str] = []
    busy: float | None = None
    for url, (reading, error) in zip(urls, results, strict=True):
        if error is not None:
            errors.append(error)
            continue
        assert reading is not None
        readings.append(reading)
        if reading.cpu is not None:
            found = cpu_busy(previous_cpu.get(url), reading.cpu)
            busy = found if busy is None else busy
            previous_cpu[url] = reading.cpu
    return merge(readings, busy, errors)


async def fetch_exporter(url: str, client: httpx.AsyncClient) -> tuple[ExporterReading | None, str | None]:
    try:
        response = await client.get(url, timeout=SCRAPE_TIMEOUT)
    except httpx.HTTPError as exc:
        return None, f"{url}: {type(exc).__name__} {exc}".strip()[:MAX_ERROR_CHARS]
    if response.status_code != 200:
        return None, f"{url}: HTTP {response.status_code}"
    try:
        # parsing a 100 kB node_exporter page takes a few ms: off the event loop
        reading = await asyncio.to_thread(parse_exporter, response.text)
    except ValueError as exc:
        return None, f"{url}: not Prometheus text ({exc})"[:MAX_ERROR_CHARS]
    if reading.empty:
        return None, f"{url}: no dcgm-exporter, node_exporter or AMD exporter metrics in it"
    return reading, None


class NodeMonitor:
    """The leader's scraper: one loop per gateway, on that gateway's probe interval."""

    def __init__(self, db: Database, config: LanewardenConfig) -> None:
        self.db = db
        self.config = config
        self._previous_cpu: dict[str, CpuCounters] = {}

    async def run(self) -> None:
        if not self.config.gateways:
            return
        async with httpx.AsyncClient() as client:
            await asyncio.gather(
                *(self._watch(name, gw, client) for name, gw in sorted(self.config.gateways.items()))
            )

    async def _watch(self, name: str, gateway: GatewayConfig, client: httpx.AsyncClient) -> None:
        while True:
            try:
                await self.read_once(name, gateway, client)
            except DBAPIError as exc:  # the next round writes again
                log.warning("could not record node reading of %s: %s", name, exc.orig)
            await asyncio.sleep(gateway.probe_interval_seconds)

    async def read_once(
        self, name: str, gateway: GatewayConfig, client: httpx.AsyncClient, now: datetime | None = None
    ) -> NodeReading:
        figures = await scrape(list(gateway.node_metrics), client, self._previous_cpu)
        return await asyncio.to_thread(record_reading, self.db, self.config, name, figures, now)


# -------------------------------------------------------------------- storage


def waiting_for(conn: Connection, config: LanewardenConfig, gateway: str, now: datetime) -> int:
    """Dispatchable tasks whose profile sends them to this gateway (room is all they lack)."""
    profiles = [name for name, p in config.profiles.items() if p.gateway == gateway]
    if not profiles:
        return 0
    query = select(func.count()).where(dispatchable(now), tasks.c.profile.in_(profiles))
    if not config.kanban.dispatcher.enabled:  # windowed: only what a window released
        query = query.where(tasks.c.released.is_(True))
    return int(conn.execute(query).scalar_one())


def record_reading(
    db: Database, config: LanewardenConfig, gateway: str, figures: NodeFigures, now: datetime | None = None
) -> NodeReading:
    now = now or utcnow()
    with db.write() as conn:
        limits = Limits.load(conn, config)
        window = limits.gateways[gateway]
        reading = NodeReading(
            gateway=gateway,
            at=now,
            known=figures.known,
            figures=figures,
            in_flight=Usage.load(conn).by_gateway.get(gateway, 0),
            limit=window.limit,
            cap=window.cap,
            waiting=waiting_for(conn, config, gateway, now),
        )
        previous = conn.execute(
            select(node_readings.c.id, node_readings.c.detail)
            .where(node_readings.c.gateway == gateway)
            .order_by(node_readings.c.at.desc())
            .limit(1)
        ).first()
        conn.execute(insert(node_readings).values(**_row(reading)))
        if figures.gpus and previous is not None and (previous.detail or {}).get("gpus"):
            # per-GPU figures matter only in the newest round that has them (status, /metrics,
            # doctor; an unknown round keeps the last one); the history keeps the host's totals
            # (a day of 8-GPU rounds every 10 s would be ~100 MB otherwise)
            slim = {"gpus": [], "errors": (previous.detail or {}).get("errors", [])}
            conn.execute(update(node_readings).where(node_readings.c.id == previous.id).values(detail=slim))
        conn.execute(
            delete(node_readings).where(node_readings.c.gateway == gateway, node_readings.c.at < now - KEEP)
        )
    return reading


def _row(reading: NodeReading) -> dict[str, Any]:
    f = reading.figures
    return {
        "gateway": reading.gateway,
        "at": reading.at,
        "known": reading.known,
        "gpu_util": f.gpu_util,
        "vram_used_bytes": f.vram_used_bytes,
        "vram_total_bytes": f.vram_total_bytes,
        "gpu_temperature_c": f.gpu_temperature_c,
        "gpu_power_w": f.gpu_power_w,
        "cpu_busy": f.cpu_busy,
        "load1": f.load1,
        "ram_available_bytes": f.ram_available_bytes,
        "ram_total_bytes": f.ram_total_bytes,
        "in_flight": reading.in_flight,
        "current_limit": reading.limit,
        "cap": reading.cap,
        "waiting": reading.waiting,
        "detail": {"gpus": [g.to_json() for g in f.gpus], "errors": list(f.errors)},
    }
