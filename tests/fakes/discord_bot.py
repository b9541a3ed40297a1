"""Lanewarden's Discord adapter against the fake Discord: the test guild, channels and
people, the config sections that point the adapter at the fake, and the started bot with
shortcuts for slash commands, autocomplete and button presses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.discord_api import FakeDiscord, InteractionLog

GUILD = 1_300_000_000_000_000_001
CHANNEL = 1_300_000_000_000_000_002
NOTIFY = 1_300_000_000_000_000_010  # [discord] notify_channel_id, where the outbox tests want it
ALERTS = 1_300_000_000_000_000_011  # [discord] alert_channel_id
ADMIN_ROLE = 1_300_000_000_000_000_003  # [access] admins = ["discord-role:<this>"]
ADMIN = 1_400_000_000_000_000_001  # has ADMIN_ROLE
OPERATOR = 1_400_000_000_000_000_002  # [access] operators = ["discord:<this>"]
VIEWER = 1_400_000_000_000_000_003  # unlisted: default_role = viewer
TOKEN = "fake-discord-token.never-logged"


def discord_sections(fake: FakeDiscord, **discord: Any) -> dict[str, Any]:
    """The [discord] and [access] config sections for a bot talking to ``fake``."""
    return {
        "discord": {
            "api_base": fake.api_base,
            "gateway_url": fake.gateway_url,
            "guild_ids": [GUILD],
            **discord,
        },
        "access": {
            "admins": [f"discord-role:{ADMIN_ROLE}"],
            "operators": [f"discord:{OPERATOR}"],
            "default_role": "viewer",
        },
    }


@dataclass
class RunningBot:
    """The started adapter, its board and the fake, with shortcuts for interactions."""

    adapter: Any
    board: Any
    fake: FakeDiscord

    async def slash(
        self, path: str, *, user: int = ADMIN, channel_id: int = CHANNEL, **values: Any
    ) -> InteractionLog:
        roles = (ADMIN_ROLE,) if user == ADMIN else ()
        payload = self.fake.slash(
            path, user=user, roles=roles, channel_id=channel_id, guild_id=GUILD, **values
        )
        return await self.fake.run(payload)

    async def complete(self, path: str, focused: str, *, user: int = ADMIN, **values: Any) -> list[str]:
        """The suggestions for ``focused`` (its value is what was typed so far): their values."""
        roles = (ADMIN_ROLE,) if user == ADMIN else ()
        payload = self.fake.slash(
            path, user=user, roles=roles, channel_id=CHANNEL, guild_id=GUILD, focused=focused, **values
        )
        log = await self.fake.run(payload)
        assert log.types == [8], log.callbacks
        return [c["value"] for c in log.choices or []]

    async def click(self, message: dict[str, Any], custom_id: str, *, user: int = ADMIN) -> InteractionLog:
        roles = (ADMIN_ROLE,) if user == ADMIN else ()
        payload = self.fake.click(message, custom_id, user=user, roles=roles, guild_id=GUILD)
        return await self.fake.run(payload)


@asynccontextmanager
async def running_bot(config: Any, fake: FakeDiscord, board: Any = None) -> AsyncIterator[RunningBot]:
    """Lanewarden's Discord adapter, started as ``serve`` starts it, talking to ``fake``."""
    from lanewarden.bot.chat import AdapterContext
    from lanewarden.bot.discord_app.adapter import DiscordAdapter
    from lanewarden.bot.discord_app.endpoints import point_discord_at
    from lanewarden.core.board import open_board
    from lanewarden.core.config import DiscordConfig

    own_board = board is None
    board = open_board(config) if own_board else board
    adapter = DiscordAdapter.from_env(config, {"DISCORD_TOKEN": TOKEN})
    try:
        await adapter.start(AdapterContext(config, board, None))
        await fake.wait_until(lambda: fake.connected.is_set())
        yield RunningBot(adapter, board, fake)
    finally:
        await adapter.stop()
        await fake.wait_until(lambda: not fake.connected.is_set())
        if own_board:
            board.db.dispose()
        point_discord_at(DiscordConfig())
