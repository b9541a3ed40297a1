"""``lanewarden discord sync [--guild ID]``: register /kanban with Discord.

A guild sync shows up at once (use it while developing); a global sync reaches every
server the bot is in. Registering in both places shows the commands twice in the
guild, so pick one per server.
"""

from __future__ import annotations

import asyncio
import os
import sys

import discord
from lanewarden.bot.discord_app.client import LanewardenClient, sync_tree
from lanewarden.bot.discord_app.endpoints import point_discord_at
from lanewarden.bot.discord_app.handler import CommandHandler
from lanewarden.core.config import LanewardenConfig


def sync_commands(config: LanewardenConfig, guild_id: int | None, env: dict[str, str] | None = None) -> int:
    token = ((os.environ if env is None else env).get("DISCORD_TOKEN") or "").strip()
    if not token:
        print("lanewarden: error: DISCORD_TOKEN is not set in the environment", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(register(config, token, guild_id)))
    except discord.LoginFailure:
        print("lanewarden: error: Discord refused DISCORD_TOKEN (401): check the bot token", file=sys.stderr)
        return 2
    except discord.HTTPException as exc:
        print(f"lanewarden: error: Discord refused the commands: {exc.status} {exc.text}", file=sys.stderr)
        return 1
    return 0


async def register(config: LanewardenConfig, token: str, guild_id: int | None) -> str:
    point_discord_at(config.discord)
    client = LanewardenClient(CommandHandler(config))
    try:
        await client.login(token)
        count = await sync_tree(client.tree, guild_id)
    finally:
        await client.close()
    where = f"in guild {guild_id}" if guild_id else "globally"
    return f"registered /kanban with {count} subcommands {where}"
