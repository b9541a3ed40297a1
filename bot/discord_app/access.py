"""Who clicked or typed, and from where: a Discord interaction as a board ``Actor``.

Roles come from ``[access]`` (``discord:<user id>``, ``discord-role:<role id>``) and are
enforced by the executor for every command and button. Discord's own
``default_permissions`` is only a hint that server admins can change, so it decides
nothing here.

Where comes first: a bot whose commands are registered globally receives interactions
from every server that added it, and from direct messages. Only the servers in
``[discord] guild_ids`` (when the list is set) reach the board, and direct messages only
with ``[discord] allow_dms``.
"""

from __future__ import annotations

import discord
from lanewarden.core.access import Actor, resolve_grant
from lanewarden.core.config import AccessConfig, DiscordConfig

NOT_THIS_SERVER = "this server is not one this Lanewarden serves (its [discord] guild_ids)"
NO_DMS = "Lanewarden takes commands in its server channels, not in direct messages"


def identities(user: discord.User | discord.Member) -> list[str]:
    found = [f"discord:{user.id}"]
    # The raw role ids from the interaction payload: Member.roles resolves them through
    # the guild cache, which a bot without the guilds intent never fills.
    role_ids = getattr(user, "_roles", ())
    found += [f"discord-role:{role_id}" for role_id in role_ids]
    return found


def actor_for(interaction: discord.Interaction, access: AccessConfig) -> Actor:
    user = interaction.user
    role, granted_by = resolve_grant(access, identities(user))
    return Actor(
        id=f"discord:{user.id}",
        role=role,
        channel=f"discord:{interaction.channel_id}" if interaction.channel_id else None,
        name=user.name,
        granted_by=granted_by,
    )


def place_refusal(interaction: discord.Interaction, discord_config: DiscordConfig) -> str | None:
    """Why an interaction from this guild (or DM) may not reach the board; None if it may."""
    if interaction.guild_id is None:
        return None if discord_config.allow_dms else NO_DMS
    return place_refusal_for_guild(interaction.guild_id, discord_config)


def place_refusal_for_guild(guild_id: int, discord_config: DiscordConfig) -> str | None:
    if discord_config.guild_ids and guild_id not in discord_config.guild_ids:
        return NOT_THIS_SERVER
    return None
