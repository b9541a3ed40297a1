"""A GPU host's exporters on loopback: the real captured pages, with chosen values.

Serves ``/dcgm`` (the Tesla T4 dcgm-exporter capture) and ``/node`` (the node_exporter
1.5.0 live capture) from tests/fixtures/nodes, byte for byte except the sample values a
test sets: GPU busy, VRAM used (free shrinks to match, the card stays the same size),
RAM available, and the CPU counters, which advance by a chosen busy share per scrape.
``down = True`` makes both answer 503, ``hang_seconds`` makes them slow, ``stop()`` makes
them refuse connections.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nodes"
DCGM = (FIXTURES / "dcgm_exporter_metrics_1x_t4_datadog_fixture.txt").read_text(encoding="utf-8")
NODE = (FIXTURES / "node_exporter_1.5.0_live_trimmed.txt").read_text(encoding="utf-8")
T4_MIB = 15109  # FB_USED 0 + FB_FREE 15109 in the capture


def _set(text: str, name: str, value: float, labels: str = "") -> str:
    """Replace the value of every sample of ``name`` (whose labels contain ``labels``)."""
    pattern = re.compile(rf"^({re.escape(name)}(?:\{{[^}}]*{re.escape(labels)}[^}}]*\}})?) \S+$", re.M)
    found, count = pattern.subn(lambda m: f"{m.group(1)} {value!r}", text)
    assert count, f"{name} {labels} not in the capture"
    return found


class FakeNodeExporter:
    def __init__(self) -> None:
        self.gpu_util = 30.0
        self.vram_used_mib = 2000.0
        self.ram_available_bytes = 2.4113422336e10
        self.cpu_busy = 0.25
        self.down = False
        self.hang_seconds = 0.0  # answer this late (an exporter stuck on a slow collector)
        self.scrapes = 0
        self._cpu_idle = 0.0
        self._cpu_user = 0.0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/dcgm", f"http://127.0.0.1:{self.port}/node"]

    def dcgm_page(self) -> str:
        text = _set(DCGM, "DCGM_FI_DEV_GPU_UTIL", self.gpu_util)
        text = _set(text, "DCGM_FI_DEV_FB_USED", self.vram_used_mib)
        return _set(text, "DCGM_FI_DEV_FB_FREE", T4_MIB - self.vram_used_mib)

    def node_page(self) -> str:
        # ten seconds per scrape on each of the two CPUs, split by the chosen busy share
        self._cpu_idle += 10 * (1 - self.cpu_busy)
        self._cpu_user += 10 * self.cpu_busy
        text = _set(NODE, "node_memory_MemAvailable_bytes", self.ram_available_bytes)
        for cpu in ("0", "1"):
            text = _set(text, "node_cpu_seconds_total", 1000 + self._cpu_idle, f'cpu="{cpu}",mode="idle"')
            text = _set(text, "node_cpu_seconds_total", 500 + self._cpu_user, f'cpu="{cpu}",mode="user"')
        return text

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/dcgm", self._serve(self.dcgm_page))
        app.router.add_get("/node", self._serve(self.node_page))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    def _serve(self, page):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.Response:
            self.scrapes += 1
            if self.hang_seconds:
                await asyncio.sleep(self.hang_seconds)
            if self.down:
                return web.Response(status=503, text="exporter restarting")
            return web.Response(text=page(), content_type="text/plain", charset="utf-8")

        return handler

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
