"""Slack's text format in both directions.

Incoming: slash-command text arrives with ``&``, ``<`` and ``>`` escaped and with
channel and user mentions encoded (``<#C123|ops>``) when the command is created with
``should_escape: true`` (manifest.yml). Outgoing: anything a user typed (titles,
comments, errors that quote input) is escaped so it cannot ping ``@channel``, forge
a link or open a code block over the rest of a message.

Escaped text is longer than what was typed, and an entity cut in half (``&g``) shows as
garbage, so text is escaped first and then cut or split (``cut``, ``split``), never the
other way round.
"""

from __future__ import annotations

import re

_CHANNEL = re.compile(r"<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")
FENCE = "```"
ENTITY_MAX = len("&amp;")


def command_text(raw: str) -> str:
    """Slash-command text as the grammar reads it: ``subscribe alerts --channel <#C1|ops>``
    becomes ``subscribe alerts --channel slack:C1``."""
    text = _CHANNEL.sub(r"slack:\1", raw)
    text = _USER.sub(r"slack:\1", text)
    text = _LINK.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Make user text inert in mrkdwn: no mentions, no links, no broadcasts, and no triple
    backtick (it would open a code block over everything after it)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace(FENCE, "`\u200b``")


def mention(actor_id: str | None) -> str:
    """``slack:U123`` -> ``<@U123>``; other actors (cli:alice, discord:42) as plain text."""
    if actor_id and actor_id.startswith("slack:"):
        user = actor_id.removeprefix("slack:")
        if re.fullmatch(r"[UW][A-Z0-9]+", user):
            return f"<@{user}>"
    return escape(actor_id or "someone")


def code_block(text: str, limit: int | None = None) -> str:
    """Preformatted text (tables, JSON); still escaped, since Slack reads entities and
    mentions inside code blocks too. With ``limit``, the whole block (fences included)
    fits in it: the text is cut after escaping, and the closing fence always stays."""
    body = escape(text)
    if limit is not None:
        body = cut(body, limit - 2 * len(FENCE))
    return FENCE + body + FENCE


def truncate(text: str, limit: int) -> str:
    """Plain text (not yet escaped) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_end(mrkdwn: str, end: int) -> int:
    """``end``, moved back to before an entity that would be cut in half at ``end``."""
    amp = mrkdwn.rfind("&", max(0, end - ENTITY_MAX + 1), end)
    if amp != -1 and ";" not in mrkdwn[amp:end]:
        return amp
    return end


def cut(mrkdwn: str, limit: int) -> str:
    """Escaped text cut to ``limit`` characters, never inside an entity."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    return mrkdwn[: safe_end(mrkdwn, limit - 1)] + "…"


def split(mrkdwn: str, room: int) -> list[str]:
    """Escaped text in chunks of at most ``room`` characters, on line boundaries where it
    can, and never inside an entity."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in mrkdwn.split("\n"):
        pieces = []
        while len(line) > room:
            end = safe_end(line, room)
            pieces.append(line[:end])
            line = line[end:]
        pieces.append(line)
        for piece in pieces:
            if current and size + len(piece) + 1 > room:
                chunks.append("\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += len(piece) + 1
    chunks.append("\n".join(current))
    return chunks
