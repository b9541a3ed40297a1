"""Where discord.py talks to: its REST base and its gateway websocket.

REST and gateway proxies are common in front of Discord (shared rate limiting,
sharding), and the tests point both at a fake on 127.0.0.1. discord.py keeps the two
addresses as class attributes, so they are process-wide: one Discord adapter per
process, which is how ``serve`` runs it.
"""

from __future__ import annotations

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
from lanewarden.core.config import DiscordConfig
from lanewarden.core.errors import ConfigError

# the library's own defaults, captured before anything changes them
DISCORD_API_BASE: str = Route.BASE
DISCORD_GATEWAY: yarl.URL = DiscordWebSocket.DEFAULT_GATEWAY


def point_discord_at(config: DiscordConfig) -> None:
    """Apply ``[discord] api_base`` and ``gateway_url``; unset keys restore Discord's own."""
    Route.BASE = _checked(config.api_base, "discord.api_base", ("http", "https")) or DISCORD_API_BASE
    gateway = _checked(config.gateway_url, "discord.gateway_url", ("ws", "wss"))
    # a plain Client never asks GET /gateway: it connects to DEFAULT_GATEWAY directly
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway) if gateway else DISCORD_GATEWAY


def _checked(value: str | None, key: str, schemes: tuple[str, ...]) -> str | None:
    if not value:
        return None
    url = yarl.URL(value.strip())
    if url.scheme not in schemes or not url.host:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{key} = {value!r}: must be an absolute {allowed} URL")
    return str(url).rstrip("/")
