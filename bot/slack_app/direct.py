"""Direct messages to the bot: a welcome the first time, and commands typed without /kanban.

The manifest enables the app's Messages tab and subscribes to ``message.im``, so a DM to
Lanewarden arrives as a message event. Its text is read as a command line (``list
--mine``, ``whoami``, ``/kanban show 42`` all work) and run by the executor with the
sender's role, exactly like the slash command; the answer is a reply in the same DM.
The first time someone opens the Messages tab (nothing in the DM yet), the bot says what
it is and how to start: ``whoami``, then ask an admin for a role.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lanewarden.bot.slack_app.blocks import Reply, error_reply, section
from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.bot.slack_app.mrkdwn import command_text
from lanewarden.core.errors import UsageError
from lanewarden.core.grammar import parse
from slack_sdk.errors import SlackApiError

if TYPE_CHECKING:
    from lanewarden.bot.slack_app.listeners import SlackListeners

log = logging.getLogger("lanewarden.slack")

WELCOME = (
    "Hi, I am *Lanewarden*: a Kanban board for LLM-agent tasks that keeps your GPU gateways busy "
    "but never overloaded.\n"
    "• Type a command here (`list --mine`, `show 42`, `status`) or use `/kanban` in any channel.\n"
    "• `whoami` shows your Slack id and your role. New here? Send that id to an admin, who adds "
    "it under `[access]` in Lanewarden's config.\n"
    "• `help` lists every command."
)


class DirectMessages:
    def __init__(self, listeners: SlackListeners) -> None:
        self.listeners = listeners

    async def on_message(self, event: dict[str, Any]) -> None:
        # only people's own messages in a DM with the bot; never our answers, edits or joins
        if event.get("channel_type") != "im" or event.get("bot_id") or event.get("subtype"):
            return
        user, channel = event.get("user"), event.get("channel")
        if not user or not channel:
            return
        line = command_text(event.get("text") or "").strip()
        line = line.removeprefix("/kanban").strip() or "help"
        try:
            command = parse(line)
        except UsageError as exc:
            await self._say(channel, error_reply(str(exc)))
            return
        actor = await self.listeners.identity.actor(user, channel)
        _, reply = await self.listeners.run(command, actor, f"DM {line}")
        await self._say(channel, reply)

    async def on_messages_tab(self, user: str, channel: str | None) -> None:
        """The Messages tab was opened: welcome someone whose DM with the bot is empty."""
        if not channel:
            return
        try:
            earlier = await self.listeners.client.conversations_history(channel=channel, limit=1)
            if earlier.get("messages"):
                return
        except SlackApiError as exc:
            log.info("slack: no welcome for %s: %s", user, slack_error_code(exc))
            return
        await self._say(channel, Reply("Welcome to Lanewarden", [section(WELCOME)]))

    async def _say(self, channel: str, reply: Reply) -> None:
        try:
            await self.listeners.client.chat_postMessage(
                channel=channel, text=reply.fallback, blocks=reply.blocks
            )
        except SlackApiError as exc:
            log.warning("slack: cannot answer a direct message: %s", slack_error_code(exc))
