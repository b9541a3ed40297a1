"""The ``/kanban`` app-command group, generated from the grammar's registry.

Each verb becomes a ``discord.app_commands.Command`` whose callback signature is built
from the verb's parameters, so discord.py registers typed options (string, integer,
boolean, with choices and autocomplete) and converts what Discord sends exactly as it
does for hand-written commands. The callback hands the values to ``CommandHandler``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Optional

import discord
from discord import app_commands
from lanewarden.bot.discord_app.handler import INTERNAL_ERROR, CommandHandler
from lanewarden.bot.discord_app.options import (
    DESCRIPTION_LIMIT,
    OptionSpec,
    command_layout,
    option_specs,
    shorten,
)
from lanewarden.bot.discord_app.responder import Responder
from lanewarden.core.errors import LanewardenError
from lanewarden.core.grammar import Verb

log = logging.getLogger("lanewarden.discord")

ROOT_NAME = "kanban"
ROOT_DESCRIPTION = "Lanewarden: the LLM-agent task board (tasks, caps, windows)"


def build_kanban_group(handler: CommandHandler) -> app_commands.Group:
    # guild only unless [discord] allow_dms: roles come from guild membership, and cards
    # belong in team channels
    dms = handler.config.discord.allow_dms
    root = app_commands.Group(
        name=ROOT_NAME,
        description=ROOT_DESCRIPTION,
        guild_only=not dms,
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=dms),
    )
    for name, entry in command_layout().items():
        if isinstance(entry, dict):
            group = app_commands.Group(
                name=name, description=shorten(f"{name}: {', '.join(entry)}", DESCRIPTION_LIMIT)
            )
            for sub_name, spec in entry.items():
                group.add_command(build_command(spec, sub_name, handler))
            root.add_command(group)
        else:
            root.add_command(build_command(entry, name, handler))
    return root


def build_command(spec: Verb, name: str, handler: CommandHandler) -> app_commands.Command[Any, ..., None]:
    options = option_specs(spec)

    async def callback(interaction: discord.Interaction[Any], **values: Any) -> None:
        await handler.on_slash(interaction, spec, values)

    # discord.py reads the options from the callback's signature: build it from the grammar
    parameters = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
        )
    ]
    for option in options:
        parameters.append(
            inspect.Parameter(
                option.param_name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=option.annotation if option.required else Optional[option.annotation],  # noqa: UP045
                default=inspect.Parameter.empty if option.required else None,
            )
        )
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__name__ = callback.__qualname__ = "kanban_" + spec.name.replace(" ", "_").replace("-", "_")

    app_commands.describe(**{o.param_name: o.description for o in options})(callback)
    renames = {o.param_name: o.name for o in options if o.name != o.param_name}
    if renames:
        app_commands.rename(**renames)(callback)
    choices = {
        o.param_name: [app_commands.Choice(name=c, value=c) for c in o.choices] for o in options if o.choices
    }
    if choices:
        app_commands.choices(**choices)(callback)
    completers = {o.param_name: _completer(handler, spec, o) for o in options if o.complete and not o.choices}
    if completers:
        app_commands.autocomplete(**completers)(callback)
    return app_commands.Command(
        name=name, description=shorten(spec.summary, DESCRIPTION_LIMIT), callback=callback
    )


def _completer(handler: CommandHandler, spec: Verb, option: OptionSpec) -> Any:
    kind = option.complete or ""
    many = next((p.type == "ids" for p in spec.params if p.name == option.param_name), False)

    async def complete(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return await handler.suggestions(kind, spec, interaction, current, many=many)

    return complete


class KanbanTree(app_commands.CommandTree):
    """Admits only the configured servers; answers what discord.py itself refuses (a stale
    command, a value it cannot convert)."""

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return await self.client.kanban.admit(interaction)  # type: ignore[attr-defined,no-any-return]

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", None)
        if isinstance(original, LanewardenError):
            message = str(original)
        elif isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            message = (
                "this /kanban command is out of date: ask an admin to run `lanewarden discord sync` "
                "(or restart serve with [discord] guild_ids)"
            )
        elif isinstance(error, app_commands.TransformerError):
            message = f"{error.value!r} is not a valid value here"
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "you cannot run this command here"
        else:
            log.error("/kanban failed", exc_info=error)
            message = INTERNAL_ERROR
        await Responder(interaction, public=False).error(message)
