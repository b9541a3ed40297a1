"""Results as Discord replies: embeds for tasks, code blocks for tables, files for the rest.

Discord caps a message at 2,000 characters and an embed description at 4,096: anything
longer is attached as a text file rather than cut, so nothing an operator asked for is
silently lost.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import singledispatch

import discord
from lanewarden.bot.discord_app.cards import task_embed
from lanewarden.bot.discord_app.options import GROUP_DEFAULT_NAME, PUBLIC_OPTION, command_layout, shorten
from lanewarden.bot.render import render_text, status_text
from lanewarden.core.clock import age, utcnow
from lanewarden.core.results import (
    HelpShown,
    Result,
    StatusShown,
    TaskChanged,
    TaskList,
    TaskShown,
)

CONTENT_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
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


def text_reply(text: str, *, code: bool = False, filename: str = "lanewarden.txt") -> Reply:
    shown = f"```\n{text}\n```" if code else text
    if len(shown) <= CONTENT_LIMIT:
        return Reply(content=shown)
    head = shorten(text.split("\n", 1)[0], 200)
    return Reply(
        content=f"{head}\n(the full answer is attached)", attachments=[(filename, text.encode("utf-8"))]
    )


def error_reply(message: str) -> Reply:
    return Reply(content=shorten(f"⚠️ {message}", CONTENT_LIMIT), always_ephemeral=True)


def reply_for(result: Result, *, chart_png: bytes | None = None) -> Reply:
    if getattr(result.command, "json", False):
        text = json.dumps(result.to_json(), indent=2, sort_keys=True, default=str)
        shown = f"```json\n{text}\n```"
        if len(shown) <= CONTENT_LIMIT:
            return Reply(content=shown)
        return Reply(
            content=f"`{result.verb}` as JSON:", attachments=[(f"{_slug(result)}.json", text.encode())]
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
    message = result.message
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
        f"`{t.ref}` **{discord.utils.escape_markdown(shorten(t.title, 80))}** · {t.lane} · "
        f"{t.profile} · p{t.priority} · {age(t.created_at, now)}"
        for t in result.tasks
    ]
    description, shown = _fit_lines(lines, EMBED_DESCRIPTION_LIMIT - 40)
    if shown < len(lines):
        description += f"\n… and {len(lines) - shown} more (narrow with status, profile or limit)"
    embed = discord.Embed(title=f"{len(result.tasks)} task(s)", description=description)
    return Reply(embeds=[embed])


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
    if detail.parents:
        embed.add_field(
            name="Waits for", value=shorten(", ".join(f"{p.ref} ({p.lane})" for p in detail.parents), 1024)
        )
    if detail.children:
        embed.add_field(
            name="Needed by", value=shorten(", ".join(f"{c.ref} ({c.lane})" for c in detail.children), 1024)
        )
    if detail.waiting_on:
        embed.add_field(
            name="Not starting because",
            value=shorten("\n".join(f"• {r}" for r in detail.waiting_on), 1024),
            inline=False,
        )
    if detail.runs:
        runs = []
        for r in detail.runs[-5:]:
            took = f"{r.latency_ms / 1000:.1f}s" if r.latency_ms is not None else "-"
            runs.append(f"{r.attempt}. {r.outcome or 'running'} {took} on {r.gateway or '-'}")
        embed.add_field(name="Runs", value=shorten("\n".join(runs), 1024), inline=False)
    if detail.events:
        history = [f"{e.at:%m-%d %H:%M} {e.kind}: {e.message}" for e in detail.events[-10:]]
        embed.add_field(
            name="History", value=shorten("```\n" + "\n".join(history), 1020) + "```", inline=False
        )
    # the full text view, for everything an embed has no room for
    full = render_text(result)
    attachments = [(f"task-{detail.task.id}.txt", full.encode())] if len(full) > 3000 else []
    return Reply(embeds=[embed], attachments=attachments)


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
    return (
        "In Discord: `/kanban <command>` with options named as the flags above "
        "(`--max-attempts` is `max-attempts`)"
        + "".join(f"; {b}" for b in bare)
        + f"; read commands take `{PUBLIC_OPTION}: True` to answer in the channel."
    )
