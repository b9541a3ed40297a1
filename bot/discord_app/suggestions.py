"""Autocomplete for /kanban options: task ids, profiles, gateways, windows, cap names, verbs.

Discord asks on every keystroke and shows at most 25 choices; there is no way to defer,
so suggestions come from one bounded query and never raise (a failure shows no
suggestions rather than an error).

Suggestions show board content (task titles, window names), so they follow the roles:
a caller gets suggestions only when their role may both read the board (what ``list``
needs) and run the verb being typed; anyone else gets none. The roles are the grammar's,
resolved from ``[access]`` as for commands; nothing is audited per keystroke.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from lanewarden.bot.discord_app.access import actor_for
from lanewarden.bot.discord_app.text import plain
from lanewarden.core.board import Board, TaskFilter
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import LanewardenError
from lanewarden.core.grammar import REGISTRY, Verb
from lanewarden.core.statuses import OPEN_STATUSES
from lanewarden.core.tasks import Task
from lanewarden.core.windows import WindowStore

log = logging.getLogger("lanewarden.discord")

CHOICES_LIMIT = 25  # Discord shows at most 25 suggestions
CHOICE_LIMIT = 100  # characters in a choice's name and in its value
CANDIDATES_SCANNED = 200

# which tasks make sense to suggest for a verb's task id; () means every task
SUGGESTED_STATUSES: dict[str, tuple[str, ...]] = {
    "promote": ("backlog", "ready"),
    "retry": ("failed", "cancelled"),
    "unblock": ("blocked",),
    "block": ("backlog", "ready", "active"),
    "move": OPEN_STATUSES,
    "cancel": OPEN_STATUSES,
    "show": (),
    "comment": (),
    "link": (),
    "unlink": (),
    "add": (),
}


class Suggestions:
    def __init__(self, config: LanewardenConfig, board: Callable[[], Board]) -> None:
        self.config = config
        self.board = board  # the board is attached when the adapter starts

    async def __call__(
        self,
        kind: str,
        spec: Verb,
        interaction: discord.Interaction[Any],
        current: str,
        *,
        many: bool = False,
    ) -> list[app_commands.Choice[str]]:
        actor = actor_for(interaction, self.config.access)
        if not (actor.allows(REGISTRY["list"].role) and actor.allows(spec.role)):
            return []
        try:
            if kind == "task":
                return await self._suggest_tasks(spec, current, many=many)
            if kind == "scope":
                scope = getattr(interaction.namespace, "scope", None)
                kind = scope if scope in ("profile", "gateway") else ""
            if kind == "profile":
                names = sorted({*self.config.profiles, self.config.default_profile})
            elif kind == "gateway":
                names = sorted(self.config.gateways)
            elif kind == "window":
                windows = await asyncio.to_thread(WindowStore(self.board()).list)
                names = [w.name for w in windows]
            elif kind == "verb":
                names = list(REGISTRY)
            else:
                names = []
        except Exception:  # best effort: never an error dialog
            log.exception("autocomplete %s for %s failed", kind, spec.name)
            return []
        wanted = current.strip().lower()
        ranked = [n for n in names if n.lower().startswith(wanted)]
        ranked += [n for n in names if wanted in n.lower() and n not in ranked]
        return [app_commands.Choice(name=n, value=n) for n in ranked[:CHOICES_LIMIT]]

    async def _suggest_tasks(self, spec: Verb, current: str, *, many: bool) -> list[app_commands.Choice[str]]:
        # `parent` takes several ids: complete the last one and keep what was typed before it
        done_part, _, typing = current.rpartition(",") if many else ("", "", current)
        prefix = f"{done_part.strip()}, " if done_part.strip() else ""
        tasks = await asyncio.to_thread(self._task_candidates, spec.name, typing.strip().lstrip("#"))
        already = {part.strip().lstrip("#") for part in done_part.split(",")}
        choices = []
        for task in [t for t in tasks if str(t.id) not in already][:CHOICES_LIMIT]:
            label = f"{prefix}#{task.id} · {plain(task.title)}"
            suffix = f" · {task.lane}"
            if len(label) + len(suffix) > CHOICE_LIMIT:
                label = label[: CHOICE_LIMIT - 1 - len(suffix)] + "…"
            value = f"{prefix}{task.id}"
            if len(value) <= CHOICE_LIMIT:
                choices.append(app_commands.Choice(name=label + suffix, value=value))
        return choices

    def _task_candidates(self, verb: str, typed: str) -> list[Task]:
        board = self.board()
        statuses = SUGGESTED_STATUSES.get(verb, OPEN_STATUSES)
        tasks = board.list_tasks(
            TaskFilter(
                statuses=statuses, include_closed=not statuses, limit=CANDIDATES_SCANNED, newest_first=True
            )
        )
        if typed.isdigit():
            exact = [t for t in tasks if str(t.id) == typed]
            if not exact:  # an older task than the scanned ones: look it up directly
                try:
                    found = board.get(int(typed))
                except LanewardenError:
                    found = None
                if found is not None and (not statuses or found.status in statuses):
                    exact = [found]
            return exact + [t for t in tasks if str(t.id).startswith(typed) and t not in exact]
        wanted = typed.lower()
        return [t for t in tasks if wanted in t.title.lower()]
