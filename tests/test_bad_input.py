"""Bad input on every entry point: one line naming what was wrong, a documented exit
status, the board unchanged, never a traceback (issue 13, items 5 and 6; docs/faults.md)."""

from __future__ import annotations

import io
import socket
import subprocess
from pathlib import Path

import pytest
from lanewarden.bot.cli import EXIT_BROKEN_PIPE, EXIT_INFRASTRUCTURE, main
from lanewarden.bot.console import Console
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.config import load_config
from lanewarden.core.errors import UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import MAX_COMMAND_CHARS, parse, tokenize

from tests.conftest import ADMIN, LANEWARDEN
from tests.helpers import snapshot
from tests.serve_helpers import ROOT, write_config


def _config(tmp_path: Path, url: str, listen: str = "") -> Path:
    return write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "kanban.workers": {"profile": "etl"},
            "profiles.etl": {"runner": "noop"},
            "http": {"listen": listen},
        },
    )


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


BAD_BOARD_COMMANDS = [
    ("show", "99999999999999999999"),
    ("show", "²"),
    ("show", "#٣"),
    ("cancel", "--id", "99999999999999999999"),
    ("link", "1", "99999999999999999999"),
    ("add", "x", "--parent", "99999999999999999999"),
    ("add", "x", "--priority", "99999999999999999999999"),
    ("add", "x", "--priority", "²"),
    ("add", "x", "--not-before", "99999999d"),
    ("add", "x", "--not-before", "0001-01-01T00:00:00+05:00"),
    ("add", "x", "--not-before", "9999-12-31T23:00:00-05:00"),
    ("add", "x", "--not-before", "0001-01-01T00:00:00-05:00"),
    ("add", "a\x00b"),
    ("add", "x", "--body", "nul \x00 inside"),
    ("comment", "1", "nul \x00 inside"),
    ("list", "--limit", "99999999999999999999"),
    ("promote-batch", "--max", "-99999999999999999999"),
    ("caps", "set", "board", "99999999999999999999"),
]


@pytest.mark.parametrize("argv", BAD_BOARD_COMMANDS, ids=[" ".join(a)[:40] for a in BAD_BOARD_COMMANDS])
def test_bad_board_input_one_line_exit_2_nothing_changed(
    argv: tuple[str, ...], board_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, board_url)
    board = open_board(load_config(path)[0])
    board.add(NewTask(title="existing"), "cli:t")
    before = snapshot(board)
    code, out, err = _cli(capsys, "--config", str(path), *argv)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("lanewarden: error: "), err
    assert snapshot(board) == before
    board.db.dispose()


@pytest.mark.parametrize("argv", [["--config"], ["list", "--config"], ["--config=", "list"]])
def test_config_option_without_a_path(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and "--config needs a path" in err and err.count("\n") == 1


def test_non_utf8_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[board]\nurl = "sqlite:///caf\xe9.db"\n'.encode("latin-1"))
    for verb in (["list"], ["serve", "--headless"]):
        code, _, err = _cli(capsys, "--config", str(path), *verb)
        assert code == 2 and "not UTF-8" in err and err.count("\n") == 1, err
    code, out, _ = _cli(capsys, "--config", str(path), "doctor")
    assert code == 2 and "FAIL config" in out and "not UTF-8" in out


@pytest.mark.parametrize("content", [b"this is not a database, just text\n" * 50, bytes(range(256)) * 40])
def test_corrupt_sqlite_file(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_file = tmp_path / "board.db"
    db_file.write_bytes(content)
    path = _config(tmp_path, f"sqlite:///{db_file}")
    for verb in (["list"], ["show", "1"], ["add", "x"], ["db", "upgrade"]):
        code, _, err = _cli(capsys, "--config", str(path), *verb)
        assert code == EXIT_INFRASTRUCTURE, (verb, err)
        assert err.count("\n") == 1 and "not a database" in err, err
    code, out, err = _cli(capsys, "--config", str(path), "doctor")
    assert code == 2 and "FAIL database" in out and "not a board database" in out and not err
    assert db_file.read_bytes() == content, "nothing may be written into a file that is not ours"


def _serve(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LANEWARDEN, "--config", str(path), "serve", "--headless"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unbindable_or_unresolvable_listen(tmp_path: Path, lw_env: dict[str, str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for listen, why in (
            (f"127.0.0.1:{port}", "in use"),
            ("no-such-host.invalid:8787", "cannot listen"),
            ("192.0.2.1:8787", "cannot listen"),  # TEST-NET: not an address of this host
        ):
            path = _config(tmp_path, f"sqlite:///{tmp_path / 'board.db'}", listen)
            done = _serve(path, lw_env)
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith("lanewarden: error: [http] listen") and why in last, done.stderr
    finally:
        taken.close()
    assert not (tmp_path / "board.db").exists(), "refused before anything started"


@pytest.mark.parametrize("verb", [["list", "--all", "--limit", "1000"], ["doctor"], ["help"]])
def test_broken_pipe_is_quiet(verb: list[str], tmp_path: Path, lw_env: dict[str, str]) -> None:
    """`lanewarden list --all | head -1`: the reader leaves early; no traceback, a documented status."""
    path = _config(tmp_path, f"sqlite:///{tmp_path / 'board.db'}")
    board = open_board(load_config(path)[0])
    for i in range(1500):
        board.add(NewTask(title=f"task number {i} with a title long enough to fill a pipe buffer"), "t")
    board.db.dispose()
    proc = subprocess.Popen(
        [*LANEWARDEN, "--config", str(path), *verb],
        env=lw_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    code = proc.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code in (0, EXIT_BROKEN_PIPE), err  # 0 when it had written everything already


def test_oversized_input_is_refused_before_tokenising() -> None:
    """A 400,000-character token took 3 s to tokenise on the event loop; now it is refused at once."""
    huge = "add " + "'" + "x" * 400_000
    for attempt in (lambda: tokenize(huge), lambda: parse(huge), lambda: parse(["add", "x" * 400_000])):
        with pytest.raises(UsageError, match="limit is"):
            attempt()
    assert parse("add " + "x" * 100).title == "x" * 100  # type: ignore[attr-defined]


def test_oversized_console_line(board: Board) -> None:
    stdin = io.StringIO("x" * (MAX_COMMAND_CHARS * 3) + "\nadd still here\n")
    stdout = io.StringIO()
    assert Console(Executor(board), ADMIN, stdin, stdout).run() == "eof"
    lines = stdout.getvalue().splitlines()
    assert any("characters; nothing was done" in line for line in lines)
    assert lines[-1] == "1", lines  # `add` answers with the new id: the next line still works
