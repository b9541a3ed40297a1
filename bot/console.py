"""The console adapter: a terminal REPL over the board's command language.

Used by ``lanewarden console`` and by ``serve`` when no chat tokens are set, so the
board can be driven with no chat service at all (as errbot's text backend does).

On a terminal it is a real prompt (prompt_toolkit): line editing, history kept in
``~/.lanewarden/history``, Tab completion of verbs, flags, task ids, profiles and
gateways from the grammar, and log lines printed above the prompt instead of through
it. Piped input is read line by line, as before. Besides the board's verbs it knows
``doctor``, ``clear`` and ``quit``.

One bad line never ends the console: every error, even a bug or a database outage,
becomes one ``error:`` line and the console reads the next. Only ``quit`` and the end
of input leave it (``run`` says which).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Literal, TextIO

from lanewarden.bot.render import render_with_files
from lanewarden.core.access import Actor
from lanewarden.core.config import lanewarden_home
from lanewarden.core.errors import LanewardenError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import MAX_COMMAND_CHARS, parse, tokenize
from lanewarden.core.results import LogsShown
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.console")

PROMPT = "lanewarden> "
QUIT = {"quit", "exit", ":q"}
Ending = Literal["quit", "eof"]


class Console:
    def __init__(
        self,
        executor: Executor,
        actor: Actor,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        *,
        config_path: str | None = None,
    ) -> None:
        self.executor = executor
        self.actor = actor
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.config_path = config_path  # for `doctor`: the file this console was started with
        self._following: LogsShown | None = None  # the `logs --follow` answered last

    def handle_line(self, line: str) -> str:
        """One command in, its rendered answer (or one error line) out; never raises."""
        try:
            command = parse(tokenize(line))
            result = self.executor.execute(command, self.actor, source_text=line)
            if isinstance(result, LogsShown) and result.command.follow:  # type: ignore[attr-defined]
                self._following = result
            return render_with_files(result, self.executor.board)
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
        self._write("Lanewarden console. Type `help` for commands, Tab to complete, `quit` to leave.\n")
        if self.stdin.isatty() and self.stdout.isatty() and self.stdin is sys.stdin:
            return self._run_prompt()
        while True:
            line = self._read_line()
            if line is None:
                return "eof"
            ending = self._answer(line)
            if ending is not None:
                return ending

    def _answer(self, line: str) -> Ending | None:
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        word = line.lower()
        if word in QUIT:
            return "quit"
        if word == "clear":
            self._write("\x1b[H\x1b[2J")
        elif word == "doctor":
            from lanewarden.bot.tools.doctor import doctor  # a console command few lines use

            doctor(self.config_path, out=lambda text: self._write(text + "\n"))
        else:
            self._write(self.handle_line(line) + "\n")
            if self._following is not None:  # `logs N --follow`: until the task rests or Ctrl-C
                from lanewarden.bot.live import follow_logs

                shown, self._following = self._following, None
                try:
                    follow_logs(self.executor.board, shown, self._write)
                except KeyboardInterrupt:
                    self._write("\n")
        return None

    def _run_prompt(self) -> Ending:
        """The terminal prompt: history, completion, log lines above the prompt."""
        from lanewarden.bot.console_completion import GrammarCompleter
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        history = lanewarden_home() / "history"
        history.parent.mkdir(parents=True, exist_ok=True)
        session: PromptSession[str] = PromptSession(
            history=FileHistory(str(history)),
            completer=GrammarCompleter(self.executor.board),
            complete_while_typing=False,
        )
        # inside `serve` the console has a thread of its own: signals stay with the service
        in_main_thread = threading.current_thread() is threading.main_thread()
        with patch_stdout(raw=True), _logs_above_the_prompt():
            while True:
                try:
                    line = session.prompt(PROMPT, handle_sigint=in_main_thread)
                except KeyboardInterrupt:
                    continue  # Ctrl-C clears the line, as in a shell
                except EOFError:
                    return "eof"
                if len(line) > MAX_COMMAND_CHARS:
                    self._write(
                        f"error: that line is over {MAX_COMMAND_CHARS} characters; nothing was done\n"
                    )
                    continue
                ending = self._answer(line)
                if ending is not None:
                    return ending

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
        out = sys.stdout if self.stdout is sys.__stdout__ else self.stdout  # patched while prompting
        out.write(text)
        out.flush()


@contextlib.contextmanager
def _logs_above_the_prompt() -> Iterator[None]:
    """Point the log handlers at the patched streams while the prompt is up, so a log
    line is printed above the prompt rather than through what is being typed."""
    moved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__):
            moved.append((handler, handler.stream))
            handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
