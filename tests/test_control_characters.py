"""Issue 12, item 9: control characters in user text are refused on every entry point.

ESC/OSC sequences would retitle or recolour the operator's terminal when `list` prints a
title, and NUL breaks PostgreSQL. Newline and tab stay allowed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lanewarden.core.board import Board, NewTask
from lanewarden.core.errors import UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import REGISTRY, bind, parse

from tests.conftest import ADMIN, LANEWARDEN, pg_url
from tests.helpers import snapshot
from tests.serve_helpers import write_config
from tests.test_slack_http import HttpRig, fake_slack, rig, text_of  # noqa: F401 (fixtures)
from tests.web_helpers import sign_in, start_web

OSC_TITLE = "\x1b]0;owned terminal\x07"
ATTACKS = [
    f"add harmless{OSC_TITLE}",
    "add --title 'red \x1b[31malert' --profile default",
    "add ok --body 'line\x00with NUL'",
    "add ok --body 'C1 \x9b31m CSI'",
    "comment 1 'bell \x07'",
    "block 1 'reason \x1b[2J'",
    "cancel 1 'carriage \r return'",
    "windows add night --cron '0 22 * * *' --command 'promote-batch --max 2\x1b'",
]


@pytest.mark.parametrize("line", ATTACKS)
def test_grammar_refuses_control_characters(line: str) -> None:
    with pytest.raises(UsageError, match=r"control character U\+00[0-9A-F]{2}"):
        parse(line)


def test_discord_options_are_bound_by_the_same_rule() -> None:
    # Discord's typed options reach the grammar as tokens, not as a line
    with pytest.raises(UsageError, match="--title contains the control character U\\+001B"):
        bind(REGISTRY["add"], ["--title", "x\x1b[2J"])
    with pytest.raises(UsageError, match="--text contains"):
        bind(REGISTRY["comment"], ["--id", "1", "--text", "a\x00b"])


def test_newline_and_tab_stay_allowed() -> None:
    command = parse(["add", "title", "--body", "first line\n\tindented\r\nwindows line"])
    assert command.body == "first line\n\tindented\nwindows line"  # type: ignore[attr-defined]


def test_board_refuses_them_without_the_grammar(board: Board) -> None:
    """On PostgreSQL too: NUL is a clean refusal, not a database error."""
    before = snapshot(board)
    for new in (NewTask(title="a\x00b"), NewTask(title="ok", body="a\x00b"), NewTask(title=f"x{OSC_TITLE}")):
        with pytest.raises(UsageError, match="control character"):
            board.add(new, "test")
    task = board.add(NewTask(title="fine"), "test")
    with pytest.raises(UsageError):
        board.comment(task.id, "nul \x00", "test")
    with pytest.raises(UsageError):
        board.block(task.id, "test", "esc \x1b")
    with pytest.raises(UsageError):
        Executor(board).execute(parse(["cancel", str(task.id), "--", "bell\x07"]), ADMIN)
    assert board.get(task.id).status == "ready"
    assert len(snapshot(board)["tasks"]) == len(before["tasks"]) + 1


def test_cli_refuses_with_one_line_and_leaves_the_board_unchanged(
    lw_env: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        {"board": {"url": f"sqlite:///{tmp_path / 'board.db'}"}, "profiles.default": {"runner": "noop"}},
    )
    base = [*LANEWARDEN, "--config", str(config)]
    proc = subprocess.run([*base, "add", f"title{OSC_TITLE}"], env=lw_env, capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count(b"\n") == 1 and b"U+001B" in proc.stderr
    assert b"\x1b" not in proc.stderr + proc.stdout  # the error does not echo the sequence either
    listed = subprocess.run([*base, "list", "--json"], env=lw_env, capture_output=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.strip() == b"[]"


def test_console_on_postgres_refuses_nul_cleanly(
    lw_env: dict[str, str], tmp_path: Path, pg_schema: str
) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        {"board": {"url": pg_url(pg_schema)}, "profiles.default": {"runner": "noop"}},
    )
    lines = "add with\x00nul\nadd esc\x1b[31m\ncomment 1 x\x00y\nadd clean title\nlist --json\n"
    proc = subprocess.run(
        [*LANEWARDEN, "--config", str(config), "console"],
        input=lines.encode(),
        env=lw_env,
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Traceback" not in out + proc.stderr.decode()
    assert out.count("error: ") == 3 and "U+0000" in out and "U+001B" in out
    assert '"clean title"' in out and out.count('"title"') == 1  # only the clean task exists


async def test_slack_slash_command_is_refused_in_the_ack(rig: HttpRig) -> None:  # noqa: F811
    """Chat: a signed /kanban from Slack with an OSC sequence in the title."""
    before = snapshot(rig.board)
    answer = await rig.command(f"add innocent{OSC_TITLE}")
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert "U+001B" in text_of(answer) and "\x1b" not in json.dumps(answer)
    assert snapshot(rig.board) == before


async def test_web_board_form_is_refused_and_changes_nothing(board: Board) -> None:
    """The web board: a signed-in operator posts a comment and a block reason with ESC/NUL."""
    _, client = await start_web(board)
    try:
        user = await sign_in(client, board, "operator")
        task = board.add(NewTask(title="fine"), "test").id
        before = snapshot(board)
        for action, field, text in (("comment", "text", f"hi{OSC_TITLE}"), ("block", "reason", "a\x00b")):
            status, answer = await user.act(action=action, id=task, **{field: text})
            assert status == 400 and "control character" in answer["message"], answer
        assert snapshot(board)["tasks"] == before["tasks"] and board.get(task).status == "ready"
    finally:
        await client.close()
