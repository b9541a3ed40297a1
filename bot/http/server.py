"""The HTTP endpoint (aiohttp): /healthz, /readyz, /metrics and, in Slack HTTP mode,
/slack/events.

``/healthz`` is liveness: 200 while the database answers, with each gateway's state in
the body (``degraded`` when one is down). ``/readyz`` is readiness: 503 while no
configured gateway is up, so a load balancer or an orchestrator can tell "running" from
"able to do work".
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from lanewarden.core.db import Database
from lanewarden.core.errors import ConfigError
from lanewarden.core.schema import gateway_state
from sqlalchemy import select

log = logging.getLogger("lanewarden.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_listen(listen: str) -> None:
    """Fail before anything starts if ``[http] listen`` cannot be bound (taken, not local,
    or a name that does not resolve): one line, not a traceback after the dispatcher ran."""
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(
            host or "127.0.0.1", int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            probe.bind(address)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"[http] listen = {listen}: cannot listen: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class HttpEndpoint:
    def __init__(
        self,
        listen: str,
        db: Database,
        *,
        dispatcher_id: str = "",
        metrics: Callable[[], Awaitable[bytes]] | None = None,
        is_leader: Callable[[], bool] | None = None,
        gateways: Sequence[str] = (),
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.db = db
        self.dispatcher_id = dispatcher_id
        self.metrics = metrics
        self.is_leader = is_leader or (lambda: False)
        self.gateways = list(gateways)
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Routes must be added before start()."""
        self.app.router.add_route(method, path, handler)

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:  # also socket.gaierror: a host name that does not resolve
            await self._runner.cleanup()
            raise ConfigError(
                f"[http] listen = {self.host}:{self.port}: cannot listen: {_reason(exc)}"
            ) from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("HTTP endpoint on http://%s:%d (/healthz, /readyz, /metrics)", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        body = await self._health()
        return web.json_response(body, status=200 if body["database"] == "ok" else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        body = await self._health()
        up = [name for name, state in body["gateways"].items() if state == "up"]
        ready = body["database"] == "ok" and (bool(up) or not self.gateways)
        body["status"] = "ready" if ready else "not ready"
        return web.json_response(body, status=200 if ready else 503)

    async def _health(self) -> dict[str, Any]:
        try:
            states = await asyncio.wait_for(asyncio.to_thread(self._gateway_states), timeout=5)
            database = "ok"
        except Exception as exc:  # any failure means the process cannot do its job
            states, database = {}, f"unavailable: {type(exc).__name__}"
        gateways = {name: states.get(name, "unknown") for name in self.gateways}
        degraded = database != "ok" or any(state == "down" for state in gateways.values())
        return {
            "status": "degraded" if degraded else "ok",
            "database": database,
            "gateways": gateways,
            "dispatcher": self.dispatcher_id,
            "leader": self.is_leader(),
        }

    def _gateway_states(self) -> dict[str, str]:
        """up, down, or unknown (not probed yet), as the monitors recorded them."""
        with self.db.read() as conn:
            rows = conn.execute(select(gateway_state.c.name, gateway_state.c.healthy))
            return {r.name: "unknown" if r.healthy is None else "up" if r.healthy else "down" for r in rows}

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="metrics are not enabled\n")
        body = await self.metrics()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
