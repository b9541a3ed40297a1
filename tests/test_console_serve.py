"""The console inside `serve`, on a real terminal (a pty): a bad line is answered and the
service goes on; `quit` stops the service; the end of input stops a console-only service,
while with another front end (the web board) a closed terminal leaves it running."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LANEWARDEN
from tests.serve_helpers import ROOT, clean_env, write_config

pytestmark = pytest.mark.slow


class Terminal:
    """`lanewarden serve` with a pty as its terminal."""

    def __init__(self, tmp_path: Path, listen: str) -> None:
        config = write_config(
            tmp_path / "lanewarden.toml",
            {
                "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
                "kanban.workers": {"profile": "etl"},
                "profiles.etl": {"runner": "noop"},
                "http": {"listen": listen},
            },
        )
        self.master, slave = pty.openpty()
        self.log = (tmp_path / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [*LANEWARDEN, "--config", str(config), "serve"],
            # a terminal that answers no cursor-position requests: say so, as its users do
            env={**clean_env(tmp_path / "home"), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"},
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=self.log,
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the other side closed
                    time.sleep(0.1)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        self.log.close()


@pytest.fixture
def terminal(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Terminal] = []

    def start(listen: str = "") -> Terminal:
        made.append(Terminal(tmp_path, listen))
        return made[-1]

    yield start
    for t in made:
        t.close()


def test_bad_lines_are_answered_and_quit_stops_a_console_only_service(terminal) -> None:  # type: ignore[no-untyped-def]
    term = terminal()
    term.expect("lanewarden>")
    for bad in ("show 99999999999999999999", "show ²", "add x --not-before 99999999d", "frobnicate"):
        term.type(bad)
        term.expect("error: ")
        term.seen = ""
    term.type("add still answering")
    term.expect("1")
    assert term.proc.poll() is None, "a bad line stopped the service"
    term.type("quit")
    assert term.proc.wait(60) == 0


def test_quit_stops_the_service_even_with_a_web_board(terminal) -> None:  # type: ignore[no-untyped-def]
    term = terminal("127.0.0.1:0")
    term.expect("lanewarden>")
    term.type("quit")
    assert term.proc.wait(60) == 0


def test_a_closed_terminal_keeps_a_service_with_a_web_board(terminal) -> None:  # type: ignore[no-untyped-def]
    term = terminal("127.0.0.1:0")
    term.expect("lanewarden>")
    os.write(term.master, b"\x04")  # Ctrl-D: the end of input
    term.expect("still serving the web board")
    time.sleep(1.0)
    assert term.proc.poll() is None, "quitting the console stopped the web board's service"
    term.proc.send_signal(signal.SIGTERM)
    assert term.proc.wait(60) == 0
