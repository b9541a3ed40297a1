"""The Discord chat adapter that ``serve`` starts (bot/chat.py's contract).

``start`` points discord.py at ``[discord] api_base`` / ``gateway_url``, logs in with
DISCORD_TOKEN (from the environment only, never logged) and registers /kanban in
``[discord] guild_ids``. ``sink`` is what the leader's outbox deliverer posts cards,
thread updates, alerts and digests through; it needs only REST.

One gateway session per board: Discord sends every interaction to every session of a
bot, so two ``serve`` processes both connected would both run each command (two tasks
for one ``/kanban add``). The gateway connection therefore follows a lease of its own
(``discord-gateway`` in the board's ``leases`` table, held under the process's
dispatcher id like the leader lease): the holder connects, the others stay REST-only
and take over within one lease period if the holder dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any

import discord
from lanewarden.bot.chat import AdapterContext
from lanewarden.bot.discord_app.client import LanewardenClient, sync_tree
from lanewarden.bot.discord_app.endpoints import point_discord_at
from lanewarden.bot.discord_app.handler import DEFER_AFTER_SECONDS, CommandHandler
from lanewarden.bot.discord_app.sink import DiscordSink
from lanewarden.core.board import Board
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import ConfigError
from lanewarden.core.leader import LeaderLease
from lanewarden.core.schema import dispatchers
from sqlalchemy import select

log = logging.getLogger("lanewarden.discord")

GATEWAY_LEASE = "discord-gateway"


class DiscordAdapter:
    name = "discord"

    def __init__(
        self, config: LanewardenConfig, token: str, *, defer_after: float = DEFER_AFTER_SECONDS
    ) -> None:
        self.config = config
        self._token = token
        self.handler = CommandHandler(config, defer_after=defer_after)
        self.client = LanewardenClient(self.handler)
        self._sink = DiscordSink(self.client)
        self._lease: LeaderLease | None = None
        self._lease_loop: asyncio.Task[None] | None = None
        self._gateway: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, config: LanewardenConfig, env: dict[str, str], **options: Any) -> DiscordAdapter:
        token = (env.get("DISCORD_TOKEN") or "").strip()
        if not token:
            raise ConfigError("DISCORD_TOKEN is empty; set it to the bot token from the Developer Portal")
        return cls(config, token, **options)

    def __repr__(self) -> str:  # never show the token
        return f"<DiscordAdapter guilds={list(self.config.discord.guild_ids)}>"

    @property
    def sink(self) -> DiscordSink:
        return self._sink

    @property
    def holds_gateway(self) -> bool:
        return self._gateway is not None

    async def start(self, ctx: AdapterContext) -> None:
        point_discord_at(ctx.config.discord)
        self.handler.attach(ctx.board)
        try:
            await self.client.login(self._token)
        except discord.LoginFailure:
            await self.client.close()
            raise ConfigError("Discord refused DISCORD_TOKEN (401): check the bot token") from None
        for guild_id in ctx.config.discord.guild_ids:
            try:
                count = await sync_tree(self.client.tree, guild_id)
            except discord.HTTPException as exc:
                # the bot still serves the guilds where /kanban is registered
                log.error("could not register /kanban in guild %s: %s %s", guild_id, exc.status, exc.text)
            else:
                log.info("registered /kanban (%d subcommands) in guild %s", count, guild_id)
        holder = await asyncio.to_thread(_process_id, ctx.board)
        self._lease = LeaderLease(
            ctx.board.db, holder, ctx.config.scheduler.leader_lease_seconds, name=GATEWAY_LEASE
        )
        self._lease_loop = asyncio.create_task(
            self._lease.run(self._connect, self._disconnect), name="discord-gateway-lease"
        )
        log.info("Discord adapter started as %s", self.client.user)

    async def stop(self) -> None:
        if self._lease_loop is not None:
            self._lease_loop.cancel()  # its exit disconnects the gateway if we held it
            await asyncio.gather(self._lease_loop, return_exceptions=True)
            self._lease_loop = None
        if self._lease is not None:
            # hand the gateway over at once instead of after the lease's expiry
            await asyncio.to_thread(self._lease.release)
        await self._disconnect()
        await self.client.close()

    async def _connect(self) -> None:
        log.info("this process holds the Discord gateway; connecting")
        self._gateway = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        self._gateway.add_done_callback(_report_gateway_end)

    async def _disconnect(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is None:
            return
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
        if self.client.ws is not None and self.client.ws.open:
            await self.client.ws.close(code=1000)


def _process_id(board: Board) -> str:
    """This serve process's dispatcher id (what `doctor` expects lease holders to be)."""
    with board.db.read() as conn:
        found = conn.execute(
            select(dispatchers.c.id)
            .where(
                dispatchers.c.host == socket.gethostname()[:128],
                dispatchers.c.pid == os.getpid(),
                dispatchers.c.state == "running",
            )
            .order_by(dispatchers.c.started_at.desc())
            .limit(1)
        ).scalar()
    # without a dispatcher (tests, tools) the adapter still needs a unique holder id
    return found or f"discord:{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(2)}"


def _report_gateway_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("the Discord gateway connection ended: %s", exc, exc_info=exc)
