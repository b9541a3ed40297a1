"""Arbitrary text and argument vectors against the grammar, the CLI and the chat handlers
(issue 13, item 5): no exception escapes, the CLI exits 0 or 2, and every refusal leaves
the board exactly as it was. Real code throughout: the executor, the Slack and Discord
handlers' own execute-and-render paths, the CLI's ``main``."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lanewarden.bot.cli import OPERATOR_COMMANDS, main
from lanewarden.bot.discord_app.handler import CommandHandler
from lanewarden.bot.slack_app.listeners import DATABASE_DOWN, INTERNAL_ERROR, SlackListeners
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.config import LanewardenConfig, load_config
from lanewarden.core.errors import LanewardenError, UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import REGISTRY, Command, parse

from tests.conftest import ADMIN
from tests.helpers import snapshot
from tests.serve_helpers import write_config

# values that broke an entry point once, and the words that reach deep into the verbs
TRICKY = [
    "99999999999999999999",
    "-99999999999999999999",
    "²",
    "#٣",
    "#1",
    "1",
    "2",
    "0",
    "-1",
    "1_000",
    "99999999d",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "a\x00b",
    "\x00",
    "\x1b]0;x\x07",
    "x" * 300,
    "'",
    '"',
    "--",
    "--json",
    "--all",
    "--yes",
    "--id",
    "--profile",
    "etl",
    "nope",
    "--column",
    "active",
    "ready",
    "backlog",
    "--status",
    "failed,done",
    "--max",
    "--limit",
    "--priority",
    "--not-before",
    "--parent",
    "--title",
    "--body",
    "--max-attempts",
    "--from",
    "--to",
    "board",
    "gateway",
    "profile",
    "--gateway",
    "gpu",
    "--cron",
    "* * * * *",
    "61 25 * * *",
    "--timezone",
    "Mars/Phobos",
    "--command",
    "promote-batch --max 2",
    "--channel",
    "C0123ABCD",
    "--older-than",
    "30d",
]
VERBS = sorted(REGISTRY)
token = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30))
argv_strategy = st.builds(
    lambda verb, rest: [*verb.split(), *rest], st.sampled_from(VERBS), st.lists(token, max_size=6)
)
line_strategy = st.one_of(
    st.text(max_size=200),
    argv_strategy.map(lambda argv: " ".join(argv)),
)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "kanban.workers": {"profile": "etl"},
            "gateways.gpu": {"base_url": "http://127.0.0.1:9/v1"},
            "profiles.etl": {"runner": "noop"},
            "http": {"listen": ""},
        },
    )


@pytest.fixture
def seeded(config_path: Path) -> Iterator[tuple[LanewardenConfig, Board]]:
    config = load_config(config_path)[0]
    board = open_board(config)
    first = board.add(NewTask(title="first"), "test")
    board.add(NewTask(title="second", column="backlog", parents=[first.id]), "test")
    yield config, board
    board.db.dispose()


def _harmless(argv: list[str]) -> bool:
    """Leave out what draws a chart (slow, writes PNG files) or starts a service."""
    return "--chart" not in argv and not (argv and argv[0] in OPERATOR_COMMANDS)


@given(line=line_strategy)
@SETTINGS
def test_grammar_parses_or_refuses_in_one_line(line: str) -> None:
    try:
        command = parse(line)
    except UsageError as exc:
        assert "\n" not in str(exc).strip() or str(exc).startswith("unknown"), str(exc)
        return
    assert isinstance(command, Command)


@given(line=line_strategy)
@SETTINGS
def test_chat_handlers_answer_or_refuse_with_the_board_unchanged(
    line: str, seeded: tuple[LanewardenConfig, Board]
) -> None:
    config, board = seeded
    assume("--chart" not in line)
    try:
        command = parse(line)
    except UsageError:
        return  # what both chat adapters answer before executing
    slack = SlackListeners(board, Executor(board, audit_commands=True), None, None)  # type: ignore[arg-type]
    discord = CommandHandler(config)
    discord.attach(board)
    before = snapshot(board)
    _, reply = asyncio.run(slack.run(command, ADMIN, f"/kanban {line}"))
    assert INTERNAL_ERROR not in reply.text and DATABASE_DOWN not in reply.text, reply.text
    if reply.text.startswith("Error: "):
        assert _without_audit(snapshot(board)) == _without_audit(before)
    before = snapshot(board)
    try:
        asyncio.run(discord._work(command, ADMIN, f"/kanban {line}"))
    except LanewardenError:
        assert _without_audit(snapshot(board)) == _without_audit(before)


@given(argv=st.one_of(argv_strategy, st.lists(token, max_size=6)))
@SETTINGS
def test_cli_exits_0_or_2_and_refusals_change_nothing(
    argv: list[str], seeded: tuple[LanewardenConfig, Board], config_path: Path
) -> None:
    assume(_harmless(argv) and argv[:1] not in (["--version"], ["version"]))
    _, board = seeded
    before = snapshot(board)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--config", str(config_path), *argv])
        except SystemExit as exc:  # argparse's own --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    assert code in (0, 2), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert err.getvalue().count("\n") <= 2, err.getvalue()  # one line (argparse adds its usage)
        assert snapshot(board) == before


def _without_audit(rows: dict[str, list[tuple[object, ...]]]) -> dict[str, list[tuple[object, ...]]]:
    """Chat front ends audit every command they receive, refused or not; the rest must not move."""
    return {table: found for table, found in rows.items() if table != "events"} | {
        "events": [r for r in rows["events"] if r[4] not in ("command", "denied")]
    }
