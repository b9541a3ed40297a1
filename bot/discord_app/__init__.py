"""Discord front end: /kanban app commands, card buttons and outbox delivery.

See docs/discord.md. ``DiscordAdapter`` (adapter.py) is what ``serve`` starts;
``sync_commands`` backs ``lanewarden discord sync``.
"""

from lanewarden.bot.discord_app.sync import sync_commands

__all__ = ["sync_commands"]
