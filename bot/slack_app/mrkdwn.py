"""Slack's text format in both directions.

Incoming: slash-command text arrives with ``&``, ``<`` and ``>`` escaped and with
channel and user mentions encoded (``<#C123|ops>``) when the command is created with
``should_escape: true`` (manifest.yml). Outgoing: anything a user typed (titles,
comments, errors that quote input) is escaped so it cannot ping ``@channel`` or forge
a link.
"""

from __future__ import annotations

import re

_CHANNEL = re.compile(r"<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")


def command_text(raw: str) -> str:
    """Slash-command text as the grammar reads it: ``subscribe alerts --channel <#C1|ops>``
    becomes ``subscribe alerts --channel slack:C1``."""
    text = _CHANNEL.sub(r"slack:\1", raw)
    text = _USER.sub(r"slack:\1", text)
    text = _LINK.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Make user text inert in mrkdwn: no mentions, no links, no broadcasts."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(actor_id: str | None) -> str:
    """``slack:U123`` -> ``<@U123>``; other actors (cli:alice, discord:42) as plain text."""
    if actor_id and actor_id.startswith("slack:"):
        user = actor_id.removeprefix("slack:")
        if re.fullmatch(r"[UW][A-Z0-9]+", user):
            return f"<@{user}>"
    return escape(actor_id or "someone")


def code_block(text: str) -> str:
    """Preformatted text (tables, JSON); still escaped, since Slack reads entities and
    mentions inside code blocks too. A triple backtick inside would end the block."""
    return "```" + escape(text).replace("```", "`\u200b``") + "```"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
