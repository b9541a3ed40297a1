"""The Discord chat adapter that ``serve`` starts (bot/chat.py's contract).

``start`` points discord.py at ``[discord] api_base`` / ``gateway_url``, logs in with
DISCORD_TOKEN (from the environment only, never logged), registers /kanban in
``[discord] guild_ids`` and keeps the gateway connection in a background task.
``sink`` is what the leader's outbox deliverer posts cards, thread updates, alerts and
digests through.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

from bot.chat import AdapterContext
from bot.discord_app.client import LanewardenClient, sync_tree
from bot.discord_app.endpoints import point_discord_at
from bot.discord_app.handler import DEFER_AFTER_SECONDS, CommandHandler
from bot.discord_app.sink import DiscordSink
from core.config import LanewardenConfig
from core.errors import ConfigError

log = logging.getLogger("lanewarden.discord")


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
        self._gateway = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        self._gateway.add_done_callback(_report_gateway_end)
        log.info("Discord adapter started as %s", self.client.user)

    async def stop(self) -> None:
        await self.client.close()
        if self._gateway is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._gateway), timeout=5)
            except (TimeoutError, Exception):
                self._gateway.cancel()
            self._gateway = None


def _report_gateway_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("the Discord gateway connection ended: %s", exc, exc_info=exc)
