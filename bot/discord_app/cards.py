"""A task as a Discord card: an embed plus the buttons that make sense in its state.

The outbox posts one card per task and channel and edits it in place as the task moves;
state changes go to the card's thread. The footer carries a marker so a card posted
just before a crash can be found again instead of posted twice.
"""

from __future__ import annotations

import discord
from lanewarden.bot.discord_app.buttons import TaskButton
from lanewarden.bot.discord_app.options import shorten
from lanewarden.bot.discord_app.text import inert, plain
from lanewarden.core.statuses import Status
from lanewarden.core.tasks import Task

STATUS_COLOURS: dict[str, discord.Colour] = {
    "backlog": discord.Colour.light_grey(),
    "ready": discord.Colour.blue(),
    "active": discord.Colour.gold(),
    "done": discord.Colour.green(),
    "failed": discord.Colour.red(),
    "blocked": discord.Colour.dark_orange(),
    "cancelled": discord.Colour.dark_grey(),
}

FOOTER_PREFIX = "Lanewarden task "


def card_marker(task_id: int) -> str:
    return f"{FOOTER_PREFIX}#{task_id} "


def task_embed(task: Task) -> discord.Embed:
    embed = discord.Embed(
        title=shorten(f"{task.ref} {inert(task.title)}", 256),
        colour=STATUS_COLOURS.get(task.status, discord.Colour.default()),
        timestamp=task.updated_at,
    )
    if task.body:
        embed.description = shorten(inert(task.body), 500)
    embed.add_field(name="Status", value=task.lane)
    embed.add_field(name="Profile", value=task.profile)
    embed.add_field(name="Priority", value=str(task.priority))
    embed.add_field(name="Attempts", value=f"{task.attempts}/{task.max_attempts}")
    if task.error and task.status in (Status.FAILED, Status.BLOCKED, Status.READY):
        embed.add_field(name="Last error", value=shorten(inert(task.error), 1024), inline=False)
    if task.result and task.status == Status.DONE:
        embed.add_field(name="Result", value=shorten(inert(task.result), 1024), inline=False)
    embed.set_footer(text=shorten(f"{card_marker(task.id)}· created by {plain(task.created_by)}", 2048))
    return embed


def card_actions(task: Task) -> list[str]:
    """The buttons a card shows: only what the task's state allows."""
    actions = []
    if task.lane in ("backlog", "ready"):  # not released nor waiting on a parent or its time
        actions.append("promote")
    if task.status in (Status.FAILED, Status.CANCELLED):
        actions.append("retry")
    if task.status in (Status.BACKLOG, Status.READY, Status.ACTIVE, Status.BLOCKED, Status.FAILED):
        actions.append("cancel")
    return actions


def card_view(task: Task) -> discord.ui.View | None:
    actions = card_actions(task)
    if not actions:
        return None
    view = discord.ui.View(timeout=None)
    for action in actions:
        view.add_item(TaskButton(action, task.id))
    return view
