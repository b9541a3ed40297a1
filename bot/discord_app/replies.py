"""Results as Discord replies: embeds for tasks, code blocks for tables, files for the rest.

Discord caps a message at 2,000 characters, an embed description at 4,096 and all the
embeds of a message at 6,000: anything longer is attached as a text file rather than cut,
so nothing an operator asked for is silently lost. User text is made inert (text.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import singledispatch

import discord
from lanewarden.bot.discord_app.cards import task_embed
from lanewarden.bot.discord_app.options import (
    DISCORD_GROUP,
    GROUP_DEFAULT_NAME,
    PUBLIC_OPTION,
    command_layout,
    shorten,
)
from lanewarden.bot.discord_app.text import inert, plain
from lanewarden.bot.render import render, render_text, status_text
from lanewarden.core.clock import age, utcnow
from lanewarden.core.results import (
    HelpShown,
    Result,
    StatusShown,
    TaskChanged,
    TaskList,
    TaskShown,
    WebLinkShown,
)

CONTENT_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TOTAL_LIMIT = 6000  # title, description, field names and values, footer, author: all embeds
FIELD_VALUE_LIMIT = 1024
FENCE = "```"
NO_MENTIONS = discord.AllowedMentions.none()  # task titles are user text: never ping anyone


@dataclass
class Reply:
    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (filename, data)
    always_ephemeral: bool = False  # help and errors

    def files(self) -> list[discord.File]:
        # discord.File objects are single-use streams: build them when sending
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.attachments]


def code_text(text: str) -> str:
    """Text for inside a code block: markdown and mentions do not render there, but a
    triple backtick in it would close the block."""
    return text.replace(FENCE, "`\u200b``")


def text_reply(text: str, *, code: bool = False, filename: str = "lanewarden.txt") -> Reply:
    shown = f"{FENCE}\n{code_text(text)}\n{FENCE}" if code else plain(text)
    if len(shown) <= CONTENT_LIMIT:
        return Reply(content=shown)
    head = shorten(plain(text.split("\n", 1)[0]), 200)
    return Reply(
        content=f"{head}\n(the full answer is attached)", attachments=[(filename, text.encode("utf-8"))]
    )


def error_reply(message: str) -> Reply:
    return Reply(content=shorten(f"⚠️ {plain(message)}", CONTENT_LIMIT), always_ephemeral=True)


def reply_for(result: Result, *, chart_png: bytes | None = None) -> Reply:
    fmt = result.command.output_format()  # --json, list --output json|yaml
    if fmt:
        text = render(result)
        shown = f"{FENCE}{fmt}\n{code_text(text)}\n{FENCE}"
        if len(shown) <= CONTENT_LIMIT:
            return Reply(content=shown)
        return Reply(
            content=f"`{result.verb}` as {fmt.upper()}:",
            attachments=[(f"{_slug(result)}.{fmt}", text.encode())],
        )
    reply = _reply(result)
    if chart_png is not None:
        reply.attachments.append(("status.png", chart_png))
    return reply


def _slug(result: Result) -> str:
    return "lanewarden-" + result.verb.replace(" ", "-")


@singledispatch
def _reply(result: Result) -> Reply:
    # Done, BatchPromoted, DigestShown, CapsShown, WindowsShown: the shared plain text
    code = result.verb in ("caps", "windows list")
    return text_reply(render_text(result), code=code, filename=f"{_slug(result)}.txt")


@_reply.register
def _(result: TaskChanged) -> Reply:
    message = plain(result.message)
    if result.verb == "add":
        message += "; its card follows in this channel"
    return Reply(content=message, embeds=[task_embed(result.task)])


@_reply.register
def _(result: TaskList) -> Reply:
    if getattr(result.command, "quiet", False):
        return text_reply("\n".join(str(t.id) for t in result.tasks) or "no tasks", code=True)
    if not result.tasks:
        return Reply(content="no tasks")
    now = utcnow()
    lines = [
        f"`{t.ref}` **{inert(shorten(t.title, 80))}** · {t.lane} · "
        f"{t.profile} · p{t.priority} · {age(t.created_at, now)}"
        for t in result.tasks
    ]
    description, shown = _fit_lines(lines, EMBED_DESCRIPTION_LIMIT)
    if shown < len(lines):
        # the note needs room too: fit again against what is left once it is added
        description, shown = _fit_lines(lines, EMBED_DESCRIPTION_LIMIT - len(_more_note(len(lines))))
        description += _more_note(len(lines) - shown)
    embed = discord.Embed(title=f"{len(result.tasks)} task(s)", description=description)
    return Reply(embeds=[embed])


def _more_note(hidden: int) -> str:
    return f"\n… and {hidden} more (narrow with status, profile or limit)"


def _fit_lines(lines: list[str], limit: int) -> tuple[str, int]:
    total, count = 0, 0
    for line in lines:
        if total + len(line) + 1 > limit:
            break
        total += len(line) + 1
        count += 1
    return "\n".join(lines[:count]), count


@_reply.register
def _(result: TaskShown) -> Reply:
    detail = result.detail
    embed = task_embed(detail.task)
    fields: list[tuple[str, str, bool, bool]] = []  # (name, value, inline, code), most useful first
    if detail.parents:
        fields.append(("Waits for", ", ".join(f"{p.ref} ({p.lane})" for p in detail.parents), True, False))
    if detail.children:
        fields.append(("Needed by", ", ".join(f"{c.ref} ({c.lane})" for c in detail.children), True, False))
    if detail.waiting_on:
        fields.append(
            ("Not starting because", "\n".join(f"• {inert(r)}" for r in detail.waiting_on), False, False)
        )
    if detail.runs:
        runs = []
        for r in detail.runs[-5:]:
            took = f"{r.latency_ms / 1000:.1f}s" if r.latency_ms is not None else "-"
            runs.append(f"{r.attempt}. {r.outcome or 'running'} {took} on {r.gateway or '-'}")
        fields.append(("Runs", "\n".join(runs), False, False))
    if detail.events:
        history = [f"{e.at:%m-%d %H:%M} {e.kind}: {e.message}" for e in detail.events[-10:]]
        fields.append(("History", code_text("\n".join(history)), False, True))
    complete = _add_within_budget(embed, fields)
    # the full text view, for everything the embed has no room for
    full = render_text(result)
    attachments = [(f"task-{detail.task.id}.txt", full.encode())] if len(full) > 3000 or not complete else []
    return Reply(embeds=[embed], attachments=attachments)


def _add_within_budget(embed: discord.Embed, fields: list[tuple[str, str, bool, bool]]) -> bool:
    """Adds the fields, each cut to 1,024 and all within the 6,000 of an embed (``len`` of a
    discord.Embed counts what Discord counts). False when anything had to be cut or left out."""
    complete = True
    for name, value, inline, code in fields:
        room = min(FIELD_VALUE_LIMIT, EMBED_TOTAL_LIMIT - len(embed) - len(name))
        fences = len(FENCE) * 2 + 1 if code else 0
        if room - fences < 40:  # too little left to say anything useful
            return False
        shown = shorten(value, room - fences)
        complete = complete and shown == value
        embed.add_field(name=name, value=f"{FENCE}\n{shown}{FENCE}" if code else shown, inline=inline)
    return complete


@_reply.register
def _(result: StatusShown) -> Reply:
    return text_reply(status_text(result.report), code=True, filename="status.txt")


@_reply.register
def _(result: HelpShown) -> Reply:
    # an embed holds twice what a message does: the full list of verbs fits
    block = f"```\n{result.text}\n```"
    if len(block) <= EMBED_DESCRIPTION_LIMIT:
        reply = Reply(content=discord_usage(), embeds=[discord.Embed(description=block)])
    else:
        reply = text_reply(result.text, filename="help.txt")
    reply.always_ephemeral = True
    return reply


def discord_usage() -> str:
    """How the grammar's help reads in Discord, generated from the same layout as /kanban."""
    bare = [
        f"`{sub_spec.name}` alone is `/kanban {head} {sub}`"
        for head, entry in command_layout().items()
        if isinstance(entry, dict)
        for sub, sub_spec in entry.items()
        if sub == GROUP_DEFAULT_NAME
    ]
    bare += [f"`{verb}` is `/kanban {group} {verb}`" for verb, group in DISCORD_GROUP.items()]
    return (
        "In Discord: `/kanban <command>` with options named as the flags above "
        "(`--max-attempts` is `max-attempts`)"
        + "".join(f"; {b}" for b in bare)
        + f"; read commands take `{PUBLIC_OPTION}: True` to answer in the channel."
    )


@_reply.register
def _(result: WebLinkShown) -> Reply:
    # the link signs in as the caller: only they may see it, whatever `public` says
    return Reply(content=render_text(result), always_ephemeral=True)
