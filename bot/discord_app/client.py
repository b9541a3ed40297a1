"""The discord.py client Lanewarden runs: no privileged intents, no mentions, /kanban."""

from __future__ import annotations

import logging
from typing import Any

import discord
from lanewarden.bot.discord_app.buttons import DYNAMIC_ITEMS
from lanewarden.bot.discord_app.handler import CommandHandler
from lanewarden.bot.discord_app.replies import NO_MENTIONS
from lanewarden.bot.discord_app.tree import KanbanTree, build_kanban_group

log = logging.getLogger("lanewarden.discord")

# Waits longer than this are not slept inside discord.py but raised as RateLimited, so
# the outbox reschedules the row instead of holding its delivery round (30 s is the
# smallest value discord.py accepts).
MAX_RATELIMIT_WAIT_SECONDS = 30.0


class LanewardenClient(discord.Client):
    def __init__(self, handler: CommandHandler, **options: Any) -> None:
        # Lanewarden never joins voice: skip discord.py's start-up warnings about voice libraries
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        # Interactions need no intent at all; the (unprivileged) guilds intent keeps
        # discord.py's guild and channel state consistent.
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=NO_MENTIONS,
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_SECONDS,
            **options,
        )
        self.kanban = handler
        self.tree = KanbanTree(self)
        self.tree.add_command(build_kanban_group(handler))

    async def setup_hook(self) -> None:
        # card buttons from any earlier run keep working: dispatch is by custom_id pattern
        self.add_dynamic_items(*DYNAMIC_ITEMS)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.kanban.welcome(guild)


async def sync_tree(tree: discord.app_commands.CommandTree, guild_id: int | None) -> int:
    """Register /kanban in one guild (instant) or globally; returns the subcommand count."""
    guild = discord.Object(id=guild_id) if guild_id else None
    if guild is not None:
        tree.copy_global_to(guild=guild)
    synced = await tree.sync(guild=guild)
    return sum(_leaves(command.options) for command in synced)


def _leaves(options: list[Any]) -> int:
    count = 0
    for option in options:
        if option.type is discord.AppCommandOptionType.subcommand:
            count += 1
        elif option.type is discord.AppCommandOptionType.subcommand_group:
            count += _leaves(option.options)
    return count
