"""Tab completion for the console, from the grammar: verbs, their flags, the choices of
a flag, and the board's own names (task ids, profiles, gateways, windows).

The console's user is local and trusted as admin (as the CLI is), so every task may be
suggested. Board lookups are one small bounded query and never raise: a failure
suggests nothing rather than breaking the prompt."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from lanewarden.core.board import Board, TaskFilter
from lanewarden.core.grammar import GROUP_DEFAULTS, REGISTRY, Param, Verb
from lanewarden.core.lanes import LANES
from lanewarden.core.windows import WindowStore
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

log = logging.getLogger("lanewarden.console")

CONSOLE_WORDS = ("quit", "doctor", "clear")
TASKS_SUGGESTED = 50


class GrammarCompleter(Completer):
    def __init__(self, board: Board) -> None:
        self.board = board

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        current = "" if text.endswith(" ") or not words else words[-1]
        done = words if text.endswith(" ") else words[:-1]
        for candidate, meta in self.candidates(done, current):
            if candidate.startswith(current):
                yield Completion(candidate, start_position=-len(current), display_meta=meta)

    def candidates(self, done: list[str], current: str) -> Iterable[tuple[str, str]]:
        if not done:
            heads = {name.split()[0]: spec.summary for name, spec in REGISTRY.items()}
            yield from sorted(heads.items())
            yield from ((word, "console") for word in CONSOLE_WORDS)
            return
        if len(done) == 1:  # `caps s` -> set; `windows a` -> add
            head = f"{done[0].lower()} "
            yield from ((n.split()[1], v.summary) for n, v in REGISTRY.items() if n.startswith(head))
        spec, rest = _verb(done)
        if spec is None:
            return
        by_flag = {f"--{flag}": p for p in spec.params for flag in p.flags}
        if rest and rest[-1] in by_flag and by_flag[rest[-1]].type != "bool":
            yield from self.values(by_flag[rest[-1]])
            return
        if current.startswith("-"):
            given = set(rest)
            yield from ((f, p.help) for f, p in by_flag.items() if f not in given)
            return
        positional = next((p for p in spec.params if p.positional), None)
        if positional is not None:
            yield from self.values(positional)

    def values(self, param: Param) -> Iterable[tuple[str, str]]:
        if param.choices:
            return [(choice, "") for choice in param.choices]
        if param.name == "status":  # a free list (comma-separated) of the lanes `list` knows
            return [(lane, "status") for lane in LANES]
        config = self.board.config
        if param.complete == "profile":
            return [(name, "profile") for name in sorted(config.profiles)]
        if param.complete == "gateway":
            return [(name, "gateway") for name in sorted(config.gateways)]
        try:
            if param.complete == "task":
                found = self.board.list_tasks(TaskFilter(limit=TASKS_SUGGESTED, newest_first=True))
                return [(str(t.id), f"{t.status}: {t.title[:40]}") for t in found]
            if param.complete == "window":
                return [(w.name, w.cron) for w in WindowStore(self.board).list()]
        except Exception as exc:  # completion must never break the prompt
            log.debug("completion lookup failed: %s", exc)
        return []


def _verb(words: list[str]) -> tuple[Verb | None, list[str]]:
    head = words[0].lower()
    if len(words) > 1 and f"{head} {words[1].lower()}" in REGISTRY:
        return REGISTRY[f"{head} {words[1].lower()}"], words[2:]
    if head in REGISTRY:
        return REGISTRY[head], words[1:]
    if head in GROUP_DEFAULTS and len(words) > 1:
        return REGISTRY[GROUP_DEFAULTS[head]], words[1:]
    return None, words[1:]
