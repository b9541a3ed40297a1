"""The console adapter: a terminal REPL over the board's command language.

Used by ``lanewarden console`` and by ``serve`` when no chat tokens are set, so the
board can be driven with no chat service at all (as errbot's text backend does).

One bad line never ends the console: every error, even a bug or a database outage,
becomes one ``error:`` line and the console reads the next. Only ``quit`` and the end
of input leave it (``run`` says which).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

from lanewarden.bot.render import render_with_files
from lanewarden.core.access import Actor
from lanewarden.core.errors import LanewardenError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import MAX_COMMAND_CHARS, parse, tokenize
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.console")

PROMPT = "lanewarden> "
QUIT = {"quit", "exit", ":q"}
Ending = Literal["quit", "eof"]


class Console:
    def __init__(
        self, executor: Executor, actor: Actor, stdin: TextIO | None = None, stdout: TextIO | None = None
    ) -> None:
        self.executor = executor
        self.actor = actor
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def handle_line(self, line: str) -> str:
        """One command in, its rendered answer (or one error line) out; never raises."""
        try:
            command = parse(tokenize(line))
            return render_with_files(
                self.executor.execute(command, self.actor, source_text=line), self.executor.board
            )
        except LanewardenError as exc:
            return f"error: {exc}"
        except DBAPIError as exc:
            first = str(exc.orig).strip().splitlines()[:1] or [type(exc.orig).__name__]
            return f"error: the board database is unavailable: {first[0]}"
        except Exception as exc:  # a bug: logged in full, the console keeps going
            log.exception("console: %r failed", line[:200])
            return f"error: internal error ({type(exc).__name__}); the details are in the log"

    def run(self) -> Ending:
        """Read and answer lines until ``quit`` or the end of input."""
        interactive = self.stdin.isatty()
        self._write("Lanewarden console. Type `help` for commands, `quit` to leave.\n")
        while True:
            if interactive:
                self._write(PROMPT)
            line = self._read_line()
            if line is None:
                return "eof"
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.lower() in QUIT:
                return "quit"
            self._write(self.handle_line(line) + "\n")

    def _read_line(self) -> str | None:
        """The next line, or None at the end of input. An oversized line is read to its end
        but never parsed, so a pasted megabyte costs nothing but the reading."""
        line = self.stdin.readline(MAX_COMMAND_CHARS + 1)
        if not line:
            return None
        if len(line) > MAX_COMMAND_CHARS and not line.endswith("\n"):
            while (rest := self.stdin.readline(MAX_COMMAND_CHARS)) and not rest.endswith("\n"):
                pass
            self._write(f"error: that line is over {MAX_COMMAND_CHARS} characters; nothing was done\n")
            return ""
        return line

    def say(self, line: str) -> None:
        self._write(line + "\n")

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()
