"""The grammar's verbs as Discord subcommands, and Discord option values back to argv.

Every verb of core/grammar.py becomes a subcommand of ``/kanban`` with one option per
parameter, named as the CLI flag (``title``, ``profile``, ``parent``, ``not-before``,
``from``, ...). Multi-word verbs become subcommand groups: ``caps set`` is
``/kanban caps set``, and a bare verb that shares its first word with a group (``caps``)
is that group's ``show`` subcommand. Discord allows 25 subcommands per level, so a few
related verbs share a group there (``DISCORD_GROUP``: ``/kanban caps tune``,
``/kanban deps link``, ``/kanban notify subscribe``); their grammar names do not change.
The options are turned back into ``--flag=value`` tokens and bound by
``core.grammar.bind``, so conversion and validation live in one place for every front end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanewarden.core.grammar import REGISTRY, Param, Verb

DESCRIPTION_LIMIT = 100  # Discord's limit for command and option descriptions
SUBCOMMAND_LIMIT = 25  # Discord's limit for the children of a command or group
GROUP_DEFAULT_NAME = "show"  # `caps` alone is `/kanban caps show`
# Discord allows 25 subcommands per level: these verbs sit in the group of what they are
# about on Discord only (`tune` advises caps: `/kanban caps tune`; `/kanban deps link`,
# `/kanban notify subscribe`); the grammar, the CLI and Slack keep their names, and the
# verb run is the same
DISCORD_GROUP: dict[str, str] = {
    "tune": "caps",
    "link": "deps",
    "unlink": "deps",
    "subscribe": "notify",
    "unsubscribe": "notify",
    "digest": "notify",
}

# A Discord-only switch on the read commands (those that take --json): answers are
# ephemeral by default, ``public: True`` posts them in the channel. It is presentation,
# not grammar, so it never reaches bind().
PUBLIC_OPTION = "public"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One Discord option of a subcommand, derived from a grammar parameter."""

    param_name: str  # the command's field, and the Python parameter of the callback
    name: str  # the Discord option name: the CLI flag
    annotation: type  # str | int | bool, what discord.py registers and converts
    required: bool
    description: str
    choices: tuple[str, ...] | None
    complete: str | None  # task | profile | gateway | scope | window | verb


def discord_name(param: Param) -> str:
    return param.flags[0]


def option_specs(spec: Verb) -> list[OptionSpec]:
    found = [_option(spec, p) for p in spec.params]
    if takes_public(spec):
        found.append(
            OptionSpec(
                param_name=PUBLIC_OPTION,
                name=PUBLIC_OPTION,
                annotation=bool,
                required=False,
                description="post the answer in this channel for everyone (default: only you see it)",
                choices=None,
                complete=None,
            )
        )
    return found


def takes_public(spec: Verb) -> bool:
    return any(p.name == "json" for p in spec.params)


def _option(spec: Verb, p: Param) -> OptionSpec:
    complete = p.complete
    if spec.name == "help" and p.name == "topic":
        complete = "verb"
    if p.type == "bool":
        annotation: type = bool
    elif p.type == "int" and p.complete != "task":
        annotation = int
    else:
        # task ids are strings so people can type #42 and pick from labelled suggestions;
        # the grammar converts them like any CLI argument
        annotation = str
    return OptionSpec(
        param_name=p.name,
        name=discord_name(p),
        annotation=annotation,
        required=p.required,
        description=_describe(p),
        choices=p.choices,
        complete=complete,
    )


def _describe(p: Param) -> str:
    text = p.help
    if p.default not in (None, (), False, ""):
        text += f" (default {p.default})"
    return shorten(text, DESCRIPTION_LIMIT)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def to_argv(spec: Verb, values: Mapping[str, Any]) -> list[str]:
    """The verb and ``--flag=value`` for every option given (values keyed by field name).

    The ``--flag=value`` form keeps a value that starts with dashes from being read as a
    flag, and options that were not given are left out so the grammar's defaults apply.
    """
    argv = spec.name.split()
    for p in spec.params:
        value = values.get(p.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        argv.append(f"--{discord_name(p)}={value}")
    return argv


def command_layout(registry: Mapping[str, Verb] = REGISTRY) -> dict[str, Verb | dict[str, Verb]]:
    """Top-level subcommand name -> verb, or -> {subcommand name -> verb} for a group."""
    group_heads = {name.split()[0] for name in registry if " " in name} | set(DISCORD_GROUP.values())
    layout: dict[str, Verb | dict[str, Verb]] = {}
    for name, spec in registry.items():
        head, _, tail = name.partition(" ")
        if name in DISCORD_GROUP:
            head, tail = DISCORD_GROUP[name], name
        if head in group_heads:
            group = layout.setdefault(head, {})
            assert isinstance(group, dict)
            group[tail or GROUP_DEFAULT_NAME] = spec
        else:
            layout[name] = spec
    too_big = [
        head for head, entry in layout.items() if isinstance(entry, dict) and len(entry) > SUBCOMMAND_LIMIT
    ]
    if len(layout) > SUBCOMMAND_LIMIT or too_big:
        # Discord refuses the whole registration; fail at build time with the reason
        raise RuntimeError(
            f"/kanban would have {len(layout)} subcommands (groups over the limit: {too_big or 'none'}); "
            f"Discord allows {SUBCOMMAND_LIMIT} per level"
        )
    return layout


def discord_path(verb_name: str) -> str:
    """How a verb is typed after ``/kanban``: ``caps`` -> ``caps show``, ``link`` -> ``deps link``."""
    for head, entry in command_layout().items():
        if isinstance(entry, dict):
            for sub, spec in entry.items():
                if spec.name == verb_name:
                    return f"{head} {sub}"
        elif entry.name == verb_name:
            return head
    raise KeyError(verb_name)
