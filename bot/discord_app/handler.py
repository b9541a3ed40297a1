"""Running a slash command or a button click: bind, execute, answer within 3 seconds.

Discord drops an interaction that is not answered within 3 seconds. The command runs
in a worker thread (board calls are blocking database calls) while the event loop
waits up to ``defer_after`` seconds for it; if it is not done by then the interaction
is deferred ("Lanewarden is thinking…") and the answer replaces that placeholder when
it is ready. Work known to be slow (``status --chart``) defers at once.

Errors are always ephemeral (responder.py): bad input is caught by the grammar before
anything runs, refused operations by the board, and roles by the executor, which also
audits the denial.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import threading
from datetime import timedelta
from typing import Any

import discord
from lanewarden.bot.discord_app.access import actor_for, place_refusal, place_refusal_for_guild
from lanewarden.bot.discord_app.buttons import confirm_cancel_view
from lanewarden.bot.discord_app.options import PUBLIC_OPTION, to_argv
from lanewarden.bot.discord_app.replies import Reply, reply_for
from lanewarden.bot.discord_app.responder import Responder
from lanewarden.bot.discord_app.suggestions import Suggestions
from lanewarden.core.access import Actor
from lanewarden.core.board import Board
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import LanewardenError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import REGISTRY, Command, Verb, bind
from lanewarden.core.results import StatusShown
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.discord")

DEFER_AFTER_SECONDS = 1.5  # leaves half of Discord's 3 s for the network and the defer itself
INTERNAL_ERROR = "something went wrong on Lanewarden's side; the details are in its log"
DATABASE_DOWN = "the board database is unavailable right now; try again shortly"
WELCOME = (
    "Hi, I am **Lanewarden**: a Kanban board for LLM-agent tasks that keeps your GPU gateways busy "
    "but never overloaded.\n"
    "• `/kanban help` lists the commands; `/kanban add` creates a task, and its card follows it here.\n"
    "• `/kanban whoami` shows your Discord id and your role. An admin gives roles under `[access]` "
    "in Lanewarden's config (the first admin adds themself first)."
)


_chart_lock = threading.Lock()  # matplotlib's pyplot state is process-global


class CommandHandler:
    def __init__(self, config: LanewardenConfig, *, defer_after: float = DEFER_AFTER_SECONDS) -> None:
        self.config = config
        self.defer_after = defer_after
        self.board: Board | None = None
        self.executor: Executor | None = None
        self.suggestions = Suggestions(config, self._board)

    def attach(self, board: Board) -> None:
        self.board = board
        self.executor = Executor(board, audit_commands=True)

    # ------------------------------------------------------------ welcome

    async def welcome(self, guild: discord.Guild) -> None:
        """The bot was added to a server: say hello where the server posts its notices."""
        if place_refusal_for_guild(guild.id, self.config.discord):
            log.warning(
                "added to server %s (%s), which is not in [discord] guild_ids: not serving it",
                guild.name,
                guild.id,
            )
            return
        channel = guild.system_channel or next(iter(guild.text_channels), None)
        if channel is None:
            return
        try:
            await channel.send(WELCOME, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.info("no welcome in %s: %s %s", guild.id, exc.status, exc.text)

    # ---------------------------------------------------------- admission

    async def admit(self, interaction: discord.Interaction[Any]) -> bool:
        """False (the interaction answered and the refusal audited) when it comes from a
        server not in ``[discord] guild_ids`` or a DM that is not allowed. Autocomplete is
        answered with no suggestions and not audited: it fires on every keystroke."""
        reason = place_refusal(interaction, self.config.discord)
        if reason is None:
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            await interaction.response.autocomplete([])
            return False
        actor = actor_for(interaction, self.config.access)
        where = f"guild {interaction.guild_id}" if interaction.guild_id else "a direct message"
        log.info("refused an interaction from %s by %s: %s", where, actor.id, reason)  # audited too
        try:
            await asyncio.to_thread(
                self._board().audit,
                actor.id,
                "denied",
                f"interaction from {where} refused: {reason}",
                data={"guild": interaction.guild_id, "channel": actor.channel},
            )
        finally:
            await Responder(interaction, public=False).error(reason)
        return False

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
            chart = await asyncio.to_thread(self._chart, result.chart_window)
        return reply_for(result, chart_png=chart)

    def _chart(self, window: timedelta) -> bytes:
        from lanewarden.bot.tools.chart import status_chart_png

        with _chart_lock:
            return status_chart_png(self._board(), window=window)

    # -------------------------------------------------------------- buttons

    async def on_card_button(self, interaction: discord.Interaction[Any], action: str, task_id: int) -> None:
        if not await self.admit(interaction):
            return
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
        if not await self.admit(interaction):
            return
        if not confirmed:
            await interaction.response.edit_message(content=f"#{task_id} stays as it is.", view=None)
            return
        await self.run(
            interaction, REGISTRY["cancel"], ["cancel", f"--id={task_id}"], edit=True, via="button"
        )

    # --------------------------------------------------------------- helpers

    def _board(self) -> Board:
        if self.board is None:
            raise RuntimeError("the Discord adapter is not started: no board attached")
        return self.board

    def _executor(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("the Discord adapter is not started: no board attached")
        return self.executor
