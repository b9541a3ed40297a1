"""User text made inert for Discord: no markdown, no mention pills, no disguised links.

Titles, bodies, comments, block reasons, errors and results are typed by people (or
printed by agents). ``allowed_mentions`` already stops pings, but Discord still renders
``<@id>`` and ``<@&id>`` as mention pills, ``**bold**`` as markup and
``[docs](https://evil.example)`` as a link whose target is hidden. Everything built from
such text goes through ``inert`` (where Discord renders markdown: content, embed titles,
descriptions and field values) or ``plain`` (where it shows text as is: thread names,
footers, autocomplete labels; and Lanewarden's own sentences that quote user text, such
as errors and confirmations, whose backticks are meant as markup).
"""

from __future__ import annotations

import re

ZERO_WIDTH = "\u200b"
# <@user> <@!user> <@&role> <#channel> </command:id> <t:epoch> <:emoji:id> <a:emoji:id>
_ANGLE_SYNTAX = re.compile(r"<(?=[@#/:]|t:|a:)")
_BROADCAST = re.compile(r"@(?=everyone|here)")
_MASKED_LINK = re.compile(r"\](?=\()")  # [text](url): the link is made by "](" together
# markdown that works anywhere, and what only starts a line (headings, quotes, lists);
# discord.utils.escape_markdown leaves text after a URL unescaped, so it is not used
_INLINE_MARKUP = re.compile(r"([\\*_~`|\[\]])")
_LINE_MARKUP = re.compile(r"^(\s*)([#>\-+])", re.MULTILINE)


def plain(text: str) -> str:
    """Mentions, channel links, timestamps, broadcasts and masked links shown as typed."""
    text = _ANGLE_SYNTAX.sub("<" + ZERO_WIDTH, text)
    text = _MASKED_LINK.sub("]" + ZERO_WIDTH, text)
    return _BROADCAST.sub("@" + ZERO_WIDTH, text)


def inert(text: str) -> str:
    """``plain``, and markdown (bold, code, spoilers, headings, masked links) escaped."""
    escaped = _LINE_MARKUP.sub(r"\1\\\2", _INLINE_MARKUP.sub(r"\\\1", text))
    return plain(escaped)
