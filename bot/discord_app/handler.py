"""Running a slash command or a button click: bind, execute, answer within 3 seconds.

Discord drops an interaction that is not answered within 3 seconds. The command runs
in a worker thread (board calls are blocking database calls) while the event loop
waits up to ``defer_after`` seconds for it; if it is not done by then the interaction
is deferred ("Lanewarden is thinking…") and the answer replaces that placeholder when
it is ready. Work known to be slow (``status --chart``) defers at once.

Errors are always ephemeral: bad input is caught by the grammar before anything
runs, refused operations by the board, and roles by the executor, which also audits
the denial. A public deferral that ends in an error is deleted and the error sent
ephemerally instead, so a mistake is never shown to the whole channel.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import threading
from typing import Any

import discord
from discord import app_commands
from sqlalchemy.exc import DBAPIError

from bot.discord_app.access import actor_for
from bot.discord_app.buttons import confirm_cancel_view
from bot.discord_app.options import PUBLIC_OPTION, to_argv
from bot.discord_app.replies import NO_MENTIONS, Reply, error_reply, reply_for
from core.access import Actor
from core.board import Board, TaskFilter
from core.config import LanewardenConfig
from core.errors import LanewardenError
from core.executor import Executor
from core.grammar import REGISTRY, Command, Verb, bind
from core.results import StatusShown
from core.tasks import OPEN_STATUSES, Task
from core.windows import WindowStore

log = logging.getLogger("lanewarden.discord")

DEFER_AFTER_SECONDS = 1.5  # leaves half of Discord's 3 s for the network and the defer itself
INTERNAL_ERROR = "something went wrong on Lanewarden's side; the details are in its log"
DATABASE_DOWN = "the board database is unavailable right now; try again shortly"
CHOICES_LIMIT = 25  # Discord shows at most 25 suggestions
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

_chart_lock = threading.Lock()  # matplotlib's pyplot state is process-global


class CommandHandler:
    def __init__(self, config: LanewardenConfig, *, defer_after: float = DEFER_AFTER_SECONDS) -> None:
        self.config = config
        self.defer_after = defer_after
        self.board: Board | None = None
        self.executor: Executor | None = None

    def attach(self, board: Board) -> None:
        self.board = board
        self.executor = Executor(board, audit_commands=True)

    # ------------------------------------------------------------- commands

    async def on_slash(
        self, interaction: discord.Interaction[Any], spec: Verb, values: dict[str, Any]
    ) -> None:
        public = bool(values.pop(PUBLIC_OPTION, None))
        await self.run(interaction, spec, to_argv(spec, values), public=public)

    async def run(
        self,
        interaction: discord.Interaction[Any],
        spec: Verb,
        argv: list[str],
        *,
        public: bool = False,
        edit: bool = False,
        via: str = "/kanban",
    ) -> None:
        responder = Responder(interaction, public=public, edit=edit)
        try:
            command = bind(spec, argv[len(spec.name.split()) :])
        except LanewardenError as exc:
            await responder.error(str(exc))
            return
        actor = actor_for(interaction, self.config.access)
        work = asyncio.create_task(self._work(command, actor, f"{via} {shlex.join(argv)}"))
        if not getattr(command, "chart", False):
            await asyncio.wait({work}, timeout=self.defer_after)
        if not work.done():
            try:
                await responder.defer()
            except discord.HTTPException as exc:
                # Discord gave up on the interaction (10062): the command still finishes,
                # its card and thread updates tell the channel what happened
                log.warning("could not defer %s for %s: %s", spec.name, actor.id, exc.text)
        try:
            reply = await work
        except LanewardenError as exc:
            await responder.error(str(exc))
            return
        except DBAPIError as exc:
            log.warning("%s for %s: the board database is unavailable: %s", spec.name, actor.id, exc.orig)
            await responder.error(DATABASE_DOWN)
            return
        except Exception:
            log.exception("%s failed for %s", spec.name, actor.id)
            await responder.error(INTERNAL_ERROR)
            return
        await responder.send(reply)

    async def _work(self, command: Command, actor: Actor, source: str) -> Reply:
        executor = self._executor()
        result = await asyncio.to_thread(executor.execute, command, actor, source_text=source)
        chart = None
        if isinstance(result, StatusShown) and result.chart:
            chart = await asyncio.to_thread(self._chart)
        return reply_for(result, chart_png=chart)

    def _chart(self) -> bytes:
        from bot.chart import status_chart_png

        with _chart_lock:
            return status_chart_png(self._board())

    # -------------------------------------------------------------- buttons

    async def on_card_button(self, interaction: discord.Interaction[Any], action: str, task_id: int) -> None:
        spec = REGISTRY[action]
        actor = actor_for(interaction, self.config.access)
        if action == "cancel" and actor.allows(spec.role):
            await interaction.response.send_message(
                f"Cancel #{task_id}? A running task is stopped; Retry brings it back later.",
                view=confirm_cancel_view(task_id),
                ephemeral=True,
            )
            return
        # everything else, and a cancel by someone who may not: the executor decides
        # (and audits a denial), so a card button is never a way around [access]
        await self.run(interaction, spec, [action, f"--id={task_id}"], via="button")

    async def on_cancel_answer(
        self, interaction: discord.Interaction[Any], confirmed: bool, task_id: int
    ) -> None:
        if not confirmed:
            await interaction.response.edit_message(content=f"#{task_id} stays as it is.", view=None)
            return
        await self.run(
            interaction, REGISTRY["cancel"], ["cancel", f"--id={task_id}"], edit=True, via="button"
        )

    # ---------------------------------------------------------- autocomplete

    async def suggest(
        self,
        kind: str,
        spec: Verb,
        interaction: discord.Interaction[Any],
        current: str,
        *,
        many: bool = False,
    ) -> list[app_commands.Choice[str]]:
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
                windows = await asyncio.to_thread(WindowStore(self._board()).list)
                names = [w.name for w in windows]
            elif kind == "verb":
                names = list(REGISTRY)
            else:
                names = []
        except Exception:  # a suggestion list is best effort: never an error dialog
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
            label = f"{prefix}#{task.id} · {task.title}"
            suffix = f" · {task.lane}"
            if len(label) + len(suffix) > 100:
                label = label[: 99 - len(suffix)] + "…"
            value = f"{prefix}{task.id}"
            if len(value) <= 100:
                choices.append(app_commands.Choice(name=label + suffix, value=value))
        return choices

    def _task_candidates(self, verb: str, typed: str) -> list[Task]:
        board = self._board()
        statuses = SUGGESTED_STATUSES.get(verb, OPEN_STATUSES)
        tasks = board.list_tasks(
            TaskFilter(statuses=statuses, include_closed=not statuses, limit=CANDIDATES_SCANNED)
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

    # --------------------------------------------------------------- helpers

    def _board(self) -> Board:
        if self.board is None:
            raise RuntimeError("the Discord adapter is not started: no board attached")
        return self.board

    def _executor(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("the Discord adapter is not started: no board attached")
        return self.executor


class Responder:
    """Answers one interaction once: a reply, a deferral and its follow-up, or an error.

    ``edit`` is for buttons on an ephemeral prompt (the cancel confirmation): the
    answer replaces the prompt instead of adding a message.
    """

    def __init__(self, interaction: discord.Interaction[Any], *, public: bool, edit: bool = False) -> None:
        self.interaction = interaction
        self.public = public
        self.edit = edit
        self.deferred_publicly = False

    async def defer(self) -> None:
        if self.edit:
            await self.interaction.response.defer()
        else:
            await self.interaction.response.defer(ephemeral=not self.public, thinking=True)
            self.deferred_publicly = self.public

    async def error(self, message: str) -> None:
        await self.send(error_reply(message))

    async def send(self, reply: Reply) -> None:
        try:
            await self._send(reply)
        except discord.HTTPException as exc:
            # 10062 Unknown interaction (answered too late), 40060 already acknowledged:
            # nobody is waiting for this answer any more
            log.warning("could not answer interaction %s: %s %s", self.interaction.id, exc.status, exc.text)

    async def _send(self, reply: Reply) -> None:
        interaction = self.interaction
        ephemeral = reply.always_ephemeral or not self.public
        if not interaction.response.is_done():
            if self.edit:
                await interaction.response.edit_message(
                    content=reply.content, embeds=reply.embeds, attachments=reply.files(), view=None
                )
                return
            await interaction.response.send_message(
                content=reply.content,
                embeds=reply.embeds,
                files=reply.files(),
                ephemeral=ephemeral,
                allowed_mentions=NO_MENTIONS,
            )
            return
        if self.deferred_publicly and reply.always_ephemeral:
            # the "thinking" placeholder is visible to everyone: replace it by a private note
            await interaction.delete_original_response()
            await interaction.followup.send(
                content=reply.content or "", embeds=reply.embeds, files=reply.files(), ephemeral=True
            )
            return
        await interaction.edit_original_response(
            content=reply.content,
            embeds=reply.embeds,
            attachments=reply.files(),
            allowed_mentions=NO_MENTIONS,
            **({"view": None} if self.edit else {}),
        )
