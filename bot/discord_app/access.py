"""Who clicked or typed: a Discord interaction's user as a board ``Actor``.

Roles come from ``[access]`` (``discord:<user id>``, ``discord-role:<role id>``) and are
enforced by the executor for every command and button. Discord's own
``default_permissions`` is only a hint that server admins can change, so it decides
nothing here.
"""

from __future__ import annotations

import discord
from lanewarden.core.access import Actor, resolve_role
from lanewarden.core.config import AccessConfig


def identities(user: discord.User | discord.Member) -> list[str]:
    found = [f"discord:{user.id}"]
    # The raw role ids from the interaction payload: Member.roles resolves them through
    # the guild cache, which a bot without the guilds intent never fills.
    role_ids = getattr(user, "_roles", ())
    found += [f"discord-role:{role_id}" for role_id in role_ids]
    return found


def actor_for(interaction: discord.Interaction, access: AccessConfig) -> Actor:
    user = interaction.user
    return Actor(
        id=f"discord:{user.id}",
        role=resolve_role(access, identities(user)),
        channel=f"discord:{interaction.channel_id}" if interaction.channel_id else None,
        name=user.name,
    )
