"""The console adapter: a terminal REPL over the board's command language.

Used by ``lanewarden console`` and by ``serve`` when no chat tokens are set, so the
board can be driven with no chat service at all (as errbot's text backend does).
"""

from __future__ import annotations

import sys
from typing import TextIO

from lanewarden.bot.render import render_with_files
from lanewarden.core.access import Actor
from lanewarden.core.errors import LanewardenError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse, tokenize

PROMPT = "lanewarden> "
QUIT = {"quit", "exit", ":q"}


class Console:
    def __init__(
        self, executor: Executor, actor: Actor, stdin: TextIO | None = None, stdout: TextIO | None = None
    ) -> None:
        self.executor = executor
        self.actor = actor
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def handle_line(self, line: str) -> str:
        """One command in, its rendered answer (or one error line) out."""
        try:
            command = parse(tokenize(line))
            return render_with_files(
                self.executor.execute(command, self.actor, source_text=line), self.executor.board
            )
        except LanewardenError as exc:
            return f"error: {exc}"

    def run(self) -> None:
        interactive = self.stdin.isatty()
        self._write("Lanewarden console. Type `help` for commands, `quit` to leave.\n")
        while True:
            if interactive:
                self._write(PROMPT)
            line = self.stdin.readline()
            if not line:  # end of input
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.lower() in QUIT:
                break
            self._write(self.handle_line(line) + "\n")

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()
