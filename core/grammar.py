"""The board's command language, parsed once into typed commands.

Every front end speaks it: the CLI (``lanewarden add ...``), the console, Slack
(``/kanban add ...``), Discord (``/kanban add`` with typed options built from the same
specs) and scheduler jobs (``promote-batch --from ready --to active --max 2``).

A command is a frozen dataclass registered with ``@verb``; its fields, with their
``param(...)`` metadata, *are* the grammar: the parser, the help text and Discord's
option list are all generated from them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, Union

from lanewarden.core.errors import UsageError
from lanewarden.core.text import check_text

Role = Literal["none", "viewer", "operator", "admin"]  # "none": anyone, even without a role (whoami)
# the largest integer the board stores (a signed 64-bit column on SQLite and PostgreSQL)
INT_MAX = 2**63 - 1
# longest command line accepted from any front end, checked before tokenising: the
# longest legal line (a 20,000-character body plus a title and options) fits easily
MAX_COMMAND_CHARS = 32_000
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
ROLE_RANK: dict[str, int] = {"none": 0, "viewer": 1, "operator": 2, "admin": 3}

# what people and guides put in front of a verb
PREFIXES: tuple[tuple[str, ...], ...] = (
    ("hermes", "kanban"),
    ("hermes",),  # the guide's `hermes scheduler jobs ...`
    ("/kanban",),
    ("kanban",),
    ("lanewarden",),
)

# other tools' words that map one-to-one onto ours: (words) -> (our words, words appended)
ALIASES: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("scheduler", "jobs"): (("windows",), ()),  # the Hermes Kanban guide's scheduler jobs
    ("create",): (("add",), ()),  # hermes kanban create TITLE --assignee P --parent ID
    ("complete",): (("move",), ("--column", "done")),  # hermes kanban complete ID
}
# words with no one-to-one form: the error line gives ours (docs/hermes.md has the rest)
NO_ALIAS: dict[str, str] = {
    "assign": "a task's profile is set when it is added: `add TITLE --profile P` (or --assignee P)",
    "archive": "finished tasks already stay out of `list` (`list --all` shows them); "
    "`cancel ID` stops an open one",
    "claim": "the dispatcher claims tasks itself; `promote --id ID --column active` releases one",
    "unassign": "a task's profile is set when it is added: `add TITLE --profile P`",
}


@dataclass(frozen=True, slots=True)
class Param:
    """One option of a verb; the field name gives its ``--flag`` (underscores -> dashes)."""

    name: str
    type: str  # "str" | "int" | "bool" | "ids" | "words"
    help: str
    required: bool = False
    default: Any = None
    positional: bool = False  # may also be given as a bare word, in field order
    free_words: bool = False  # collects the words no flag took (the title of `add`)
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    flag: str | None = None
    complete: str | None = None  # "task" | "profile" | "gateway" | "window": for autocomplete

    @property
    def flags(self) -> tuple[str, ...]:
        primary = self.flag or self.name.replace("_", "-")
        return (primary, *self.aliases)

    @property
    def metavar(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        return {"int": "N", "ids": "ID", "bool": ""}.get(self.type, self.name.upper())


@dataclass(frozen=True, slots=True)
class Verb:
    name: str  # "add", "caps set", "windows add"
    summary: str
    role: Role
    command: type[Command]
    params: tuple[Param, ...]
    examples: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        parts = [self.name]
        for p in self.params:
            if p.free_words:
                parts.append(f"[{p.name.upper()}...]" if not p.required else f"{p.name.upper()}...")
                continue
            shown = f"--{p.flags[0]}" + (f" {p.metavar}" if p.type != "bool" else "")
            if p.positional:
                shown = f"{p.metavar if p.choices else p.name.upper()}"
            parts.append(shown if p.required else f"[{shown}]")
        return " ".join(parts)


@dataclass(frozen=True)
class Command:
    """Base of every parsed command. ``VERB`` is set by ``@verb``."""

    VERB: ClassVar[Verb]

    def role_needed(self) -> Role:
        """The role this command needs; a flag may ask more than the verb (``tune --apply``)."""
        return self.VERB.role

    def output_format(self) -> str | None:
        """ "json" or "yaml" when the command asked for machine-readable output, else None."""
        return "json" if getattr(self, "json", False) else None


REGISTRY: dict[str, Verb] = {}
C = TypeVar("C", bound=type[Command])


def param(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    positional: bool = False,
    free_words: bool = False,
    choices: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
    flag: str | None = None,
    complete: str | None = None,
) -> Any:
    meta = {
        "positional": positional,
        "free_words": free_words,
        "choices": tuple(choices) if choices else None,
        "aliases": tuple(aliases),
        "flag": flag,
        "complete": complete,
        "help": help,
    }
    if isinstance(default, list | tuple):
        return field(default_factory=lambda d=tuple(default): d, metadata={"lw": meta})
    return field(default=default, metadata={"lw": meta})


def verb(name: str, summary: str, *, role: Role, examples: Sequence[str] = ()) -> Callable[[C], C]:
    def register(cls: C) -> C:
        hints = typing.get_type_hints(cls)
        params = []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("lw")
            if meta is None:
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = None
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            params.append(
                Param(
                    name=f.name,
                    type=_kind(hints[f.name], meta["free_words"]),
                    help=meta["help"],
                    required=required,
                    default=default,
                    positional=meta["positional"],
                    free_words=meta["free_words"],
                    choices=meta["choices"],
                    aliases=meta["aliases"],
                    flag=meta["flag"],
                    complete=meta["complete"],
                )
            )
        spec = Verb(name, summary, role, cls, tuple(params), tuple(examples))
        cls.VERB = spec  # type: ignore[attr-defined]
        REGISTRY[name] = spec
        return cls

    return register


def _kind(annotation: Any, free_words: bool) -> str:
    if free_words:
        return "words"
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(inner[0], False)
    if origin is tuple:
        return "ids"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is str:
        return "str"
    raise TypeError(f"unsupported parameter type {annotation!r}")


# ------------------------------------------------------------------- parsing


def tokenize(text: str) -> list[str]:
    """Split a chat line like a shell would, forgiving the quotes chat clients produce."""
    check_size(text)
    normalized = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    normalized = normalized.replace("—", "--").replace("–", "--")
    try:
        return shlex.split(normalized)
    except ValueError as exc:
        raise UsageError(f"cannot read that command: {exc} (check your quotes)") from None


def check_size(source: str | Sequence[str]) -> None:
    """Refuse an oversized command before any work is spent on it (tokenising is quadratic
    in the worst case, and it runs on the event loop in chat adapters)."""
    size = len(source) if isinstance(source, str) else sum(len(t) + 1 for t in source)
    if size > MAX_COMMAND_CHARS:
        raise UsageError(f"that command is {size} characters long; the limit is {MAX_COMMAND_CHARS}")


def strip_prefix(tokens: list[str]) -> list[str]:
    for prefix in PREFIXES:
        if tuple(t.lower() for t in tokens[: len(prefix)]) == prefix:
            return tokens[len(prefix) :]
    return tokens


def parse(source: str | Sequence[str]) -> Command:
    """Parse a command line (a string, or argv tokens) into a typed command."""
    tokens = strip_prefix(tokenize(source) if isinstance(source, str) else list(source))
    if not tokens:
        raise UsageError("no command given; try `help`")
    spec, rest = find_verb(tokens)
    options = rest[: rest.index("--")] if "--" in rest else rest
    if "--help" in options or "-h" in options:  # where people type it: `add --help`
        return bind(REGISTRY["help"], spec.name.split())
    return bind(spec, rest)


def find_verb(tokens: list[str]) -> tuple[Verb, list[str]]:
    for words, (ours, appended) in ALIASES.items():
        if tuple(t.lower() for t in tokens[: len(words)]) == words:
            tokens = [*ours, *tokens[len(words) :], *appended]
            break
    head = tokens[0].lower()
    if head in NO_ALIAS:
        raise UsageError(f"Lanewarden has no `{head}`: {NO_ALIAS[head]}")
    if len(tokens) > 1 and f"{head} {tokens[1].lower()}" in REGISTRY:
        return REGISTRY[f"{head} {tokens[1].lower()}"], tokens[2:]
    if head in REGISTRY:
        return REGISTRY[head], tokens[1:]
    if head in GROUP_DEFAULTS:
        return REGISTRY[GROUP_DEFAULTS[head]], tokens[1:]
    close = difflib.get_close_matches(head, sorted(REGISTRY) + sorted(GROUP_DEFAULTS), n=1)
    hint = f" Did you mean `{close[0]}`?" if close else " Try `help`."
    raise UsageError(f"unknown command {tokens[0]!r}.{hint}")


# `caps` alone shows the caps, `windows` alone lists the windows
GROUP_DEFAULTS = {"windows": "windows list"}


def bind(spec: Verb, tokens: Sequence[str]) -> Command:
    """Assign tokens to a verb's parameters and convert them."""
    check_size(tokens)
    by_flag = {f: p for p in spec.params for f in p.flags}
    values: dict[str, Any] = {}
    loose: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and len(token) > 2:
            name, eq, inline = token[2:].partition("=")
            param_spec = by_flag.get(name.lower())
            if param_spec is None:
                raise UsageError(_unknown_flag(spec, check_text("an option name", name)))
            if param_spec.type == "bool":
                if eq:
                    values[param_spec.name] = _to_bool(param_spec, inline)
                else:
                    values[param_spec.name] = True
                i += 1
                continue
            if eq:
                raw = inline
                i += 1
            else:
                if i + 1 >= len(tokens) or _looks_like_flag(tokens[i + 1]):
                    raise UsageError(f"--{name} needs a value ({spec.name}: {spec.usage})")
                raw = tokens[i + 1]
                i += 2
            _assign(spec, values, param_spec, raw)
        elif token == "--":
            loose.extend(tokens[i + 1 :])
            break
        else:
            loose.append(token)
            i += 1
    _assign_loose(spec, values, loose)
    missing = [p for p in spec.params if p.required and p.name not in values]
    if missing:
        names = ", ".join(f"--{p.flags[0]}" if not p.free_words else p.name for p in missing)
        raise UsageError(f"{spec.name} needs {names} (usage: {spec.usage})")
    for p in spec.params:
        if p.name not in values:
            values[p.name] = p.default
    return spec.command(**values)


def _looks_like_flag(token: str) -> bool:
    return token.startswith("--") and len(token) > 2


def _assign(spec: Verb, values: dict[str, Any], p: Param, raw: str) -> None:
    converted = convert(spec, p, raw)
    if p.type == "ids":
        values[p.name] = tuple(dict.fromkeys((*values.get(p.name, ()), *converted)))
        return
    if p.name in values and values[p.name] != converted:
        raise UsageError(f"{spec.name}: {p.name} given twice")
    values[p.name] = converted


def _assign_loose(spec: Verb, values: dict[str, Any], loose: list[str]) -> None:
    """Bare words go to positionals in field order (an optional one only takes a word the
    required ones can spare, as in argparse, or beside free words one that looks like an
    id), then to the free-words parameter."""
    words = next((p for p in spec.params if p.free_words), None)
    positionals = [p for p in spec.params if p.positional and p.name not in values]
    required_left = sum(p.required for p in positionals)
    for p in positionals:
        if not loose:
            break
        if p.required:
            required_left -= 1
        elif words is not None:
            # beside free words (`cancel [ID] [REASON...]`) it takes only what looks like an id
            if p.type != "int" or not re.fullmatch(r"#?\d+", loose[0]):
                continue
        elif len(loose) <= required_left:
            continue
        _assign(spec, values, p, loose.pop(0))
    if words is not None and loose:
        if words.name in values:
            raise UsageError(f"{spec.name}: {words.name} given both as --{words.flags[0]} and as words")
        values[words.name] = check_text(f"--{words.flags[0]}", " ".join(loose))
        loose = []
    if loose:
        raise UsageError(f"{spec.name}: unexpected {' '.join(loose)!r} (usage: {spec.usage})")


def convert(spec: Verb, p: Param, raw: str) -> Any:
    """One raw string to the parameter's type, with a message that names the option."""
    label = f"--{p.flags[0]}"
    if p.type == "int" and p.complete == "task":
        return parse_task_id(raw)
    if p.type == "int":
        text = raw.strip().lstrip("#")
        if not _WHOLE_NUMBER.fullmatch(text):
            raise UsageError(f"{label} must be a whole number, got {_shown(raw)}")
        if len(text) > 20 or abs(int(text, 10)) > INT_MAX:
            raise UsageError(f"{label} is out of range, got {_shown(raw)}")
        return int(text, 10)
    if p.type == "ids":
        found = []
        for part in raw.replace(",", " ").split():
            try:
                found.append(parse_task_id(part))
            except UsageError:
                raise UsageError(f"{label} takes task ids like 42 or #42, got {part!r}") from None
        if not found:
            raise UsageError(f"{label} needs at least one task id")
        return tuple(found)
    if p.type == "bool":
        return _to_bool(p, raw)
    value = check_text(label, raw.strip())
    if p.choices:
        lowered = value.lower()
        if lowered not in p.choices:
            hint = did_you_mean(lowered, p.choices)
            raise UsageError(f"{label} must be one of {', '.join(p.choices)}, got {raw!r}{hint}")
        return lowered
    return value


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    """`` Did you mean `x`?`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f". Did you mean `{close[0]}`?" if close else ""


class ImportedRef(str):
    """A task named by the id it had on the board it was imported from (``t_ab12cd34``);
    the executor turns it into our id before any handler sees the command."""


IMPORTED_REF = re.compile(r"(?:[a-z0-9][a-z0-9_-]{0,63}/)?t_[0-9a-f]{4,32}")


def parse_task_id(raw: str) -> int:
    if IMPORTED_REF.fullmatch(str(raw).strip()):
        return ImportedRef(str(raw).strip())  # type: ignore[return-value]
    text = str(raw).strip().lstrip("#")
    # ASCII digits only (str.isdigit() accepts '²'), and within the database's integer range
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 0 < int(text) <= INT_MAX):
        raise UsageError(f"{_shown(raw)} is not a task id (use 42 or #42)")
    return int(text)


def _shown(raw: str) -> str:
    """A user's value quoted for an error line, cut short: the line stays one line."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


def _to_bool(p: Param, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"--{p.flags[0]} is a switch (true or false), got {raw!r}")


def _unknown_flag(spec: Verb, name: str) -> str:
    known = [f for p in spec.params for f in p.flags if not p.free_words or p.flag]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean --{close[0]}?" if close else ""
    options = ", ".join(f"--{p.flags[0]}" for p in spec.params)
    return f"{spec.name} has no option --{name}.{hint} Options: {options or 'none'}"


# --------------------------------------------------------------------- help


def help_text(name: str | None = None) -> str:
    """Help generated from the registry: a list of verbs, or one verb in full."""
    if name:
        key = name.lower().strip()
        spec = REGISTRY.get(key) or REGISTRY.get(GROUP_DEFAULTS.get(key, ""))
        if spec is None:
            close = difflib.get_close_matches(key, sorted(REGISTRY), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"no command {name!r}.{hint}")
        lines = [f"{spec.name}: {spec.summary}", f"usage: {spec.usage}", f"role: {spec.role}"]
        if spec.params:
            lines.append("options:")
            for p in spec.params:
                flags = ", ".join(f"--{f}" for f in p.flags)
                extra = f" (default {p.default})" if p.default not in (None, (), False, "") else ""
                lines.append(f"  {flags:<24} {p.help}{extra}")
        for example in spec.examples:
            lines.append(f"example: {example}")
        return "\n".join(lines)
    width = max(len(v) for v in REGISTRY)
    lines = ["commands (help COMMAND for its options):"]
    lines += [f"  {v.name:<{width}}  {v.summary}" for v in REGISTRY.values()]
    return "\n".join(lines)


# the verbs register themselves on import; whoever parses must see all of them
import lanewarden.core.commands  # noqa: E402, F401
