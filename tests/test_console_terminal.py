"""The console on a real pseudo-terminal, as a person uses it: Tab completes from the
grammar and the board, the Up arrow recalls history (kept across sessions), `doctor`
and `clear` work, a bad line never ends it."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
from lanewarden.bot.console_completion import GrammarCompleter
from lanewarden.core.board import Board, NewTask
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from tests.conftest import ADMIN

PROMPT = "lanewarden>"  # the space after it is drawn as a cursor move


def spawn(lw_env: dict[str, str]) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lanewarden.bot.cli", "console"],
        # a terminal that answers no cursor-position requests (as pexpect's) makes
        # prompt_toolkit print a warning and wait; say so up front, as such users do
        env={**lw_env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"},
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
    )
    child.expect_exact(PROMPT)
    return child


def test_tab_history_doctor_and_a_bad_line_on_a_real_terminal(lw_env: dict[str, str]) -> None:
    child = spawn(lw_env)
    child.send("ad\t")
    child.expect_exact("add")
    child.send(" Write the release notes\r")
    child.expect_exact("1")  # add prints the new id
    child.expect_exact(PROMPT)
    child.send("show 99999999999999999999999\r")  # a line that once killed the console
    child.expect_exact("error:")
    child.expect_exact(PROMPT)
    child.send("show \t")
    child.expect_exact("show 1")  # the only task: Tab fills its id in
    child.send("\x15")  # Ctrl-U: clear the line
    child.send("doctor\r")
    child.expect("doctor: (all checks passed|\\d+ failure)")
    child.expect_exact(PROMPT)
    child.send("quit\r")
    child.expect(pexpect.EOF)
    history = (Path(lw_env["LANEWARDEN_HOME"]) / "history").read_text()
    assert "add Write the release notes" in history and "doctor" in history

    again = spawn(lw_env)  # history survives: the Up arrow brings back the last commands
    again.send("\x1b[A\x1b[A\x1b[A")
    again.expect_exact("show 99999999999999999999999")
    again.send("\x15quit\r")
    again.expect(pexpect.EOF)


def completions(board: Board, text: str) -> list[str]:
    return [c.text for c in GrammarCompleter(board).get_completions(Document(text), CompleteEvent())]


def test_completion_offers_verbs_flags_choices_and_board_names(board: Board) -> None:
    task = board.add(NewTask(title="Summarize the logs"), ADMIN.id)
    assert completions(board, "prom") == ["promote", "promote-batch"]
    assert "quit" in completions(board, "")
    assert completions(board, "caps s") == ["set"]
    assert "--column" in completions(board, "list --c")
    assert completions(board, "list --column rea") == ["ready"]
    assert completions(board, "add x --profile res") == ["researcher"]
    assert completions(board, "show ") == [str(task.id)]
    assert completions(board, "pause --gateway ") == ["gpu"]
    assert completions(board, "frobnicate ") == []
