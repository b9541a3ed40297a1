"""Issue 12, items 1 and 8: what a `command` agent sees and what user text can make it do.

The agents are real subprocesses: one prints its whole environment, one parses its
argv with argparse. The server's environment holds every kind of secret Lanewarden has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lanewarden.core.board import NewTask
from lanewarden.core.config import parse_config
from lanewarden.core.errors import ConfigError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse

from tests.conftest import ADMIN, LANEWARDEN
from tests.dispatch_helpers import add_tasks, all_in, dispatch_config, new_board, running, wait_for
from tests.helpers import snapshot
from tests.serve_helpers import write_config

AGENT = str(Path(__file__).parent / "fixtures" / "argparse_agent.py")
# writes its environment where the test reads it (argv[1]), and prints it as its result
PRINT_ENV = (
    "import json, os, sys; env = json.dumps(dict(os.environ)); open(sys.argv[1], 'w').write(env); print(env)"
)

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-slack-bot-token-123",
    "SLACK_APP_TOKEN": "xapp-slack-app-token-456",
    "SLACK_SIGNING_SECRET": "slack-signing-secret-789",
    "DISCORD_TOKEN": "discord-bot-token-abc",
    "PGPASSWORD": "pg-password-def",
    "DATABASE_URL": "postgresql://lw:pg-password-def@db/lw",
    "OTHER_GATEWAY_KEY": "other-gateway-key-ghi",
    "LANEWARDEN_WEB_SECRET": "lanewarden-web-secret-jkl",
}
OWN_KEY = "own-gateway-key-mno"
ALLOWED = {
    "PATH", "HOME", "LANG", "TZ", "TMPDIR", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL",
    "LANEWARDEN_TASK_ID", "LANEWARDEN_RUN_ID", "LANEWARDEN_WORKSPACE", "PASSED_VAR", "AGENT_MODE",
}  # fmt: skip


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of `serve`: every secret, the own gateway's key, and harmless extras."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OWN_GATEWAY_KEY", OWN_KEY)
    monkeypatch.setenv("UNRELATED_VAR", "not-for-agents")
    monkeypatch.setenv("PASSED_VAR", "passed-by-name")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")


def agent_config(url: str, command: list[str], **profile: object):
    return dispatch_config(
        url,
        gateways={
            "own": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "OWN_GATEWAY_KEY"},
            "other": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "OTHER_GATEWAY_KEY"},
        },
        profiles={
            "agent": {"runner": "command", "gateway": "own", "model": "m1", "command": command, **profile}
        },
    )


def everything_stored(board) -> str:
    return json.dumps(snapshot(board), default=str)


async def test_agent_sees_only_the_minimal_environment(server_env: None, tmp_path: Path) -> None:
    config = agent_config(
        f"sqlite:///{tmp_path / 'board.db'}",
        [sys.executable, "-c", PRINT_ENV, str(tmp_path / "env.json")],
        pass_env=["PASSED_VAR", "NOT_SET_ANYWHERE"],
        env={"AGENT_MODE": "batch"},
    )
    board = new_board(config)
    (tid,) = add_tasks(board, 1)
    async with running(board, workspace_root=tmp_path / "ws"):
        await wait_for(lambda: all_in(board, "done", "failed"), what="the agent to finish")
    assert board.get(tid).status == "done"
    seen = json.loads((tmp_path / "env.json").read_text())
    unexpected = {name for name in seen if name not in ALLOWED and not name.startswith("LC_")}
    assert unexpected == set(), f"the agent saw {unexpected}"
    assert seen["OPENAI_API_KEY"] == OWN_KEY  # its own gateway's key, under the documented name
    assert seen["PASSED_VAR"] == "passed-by-name" and seen["AGENT_MODE"] == "batch"
    assert seen["LC_ALL"] == "C.UTF-8" and seen["TZ"] == "UTC" and seen["LANEWARDEN_TASK_ID"] == str(tid)
    for value in SECRETS.values():
        assert value not in json.dumps(seen)
    # it printed its environment, own key included: the result shows it redacted
    result = board.get(tid).result or ""
    assert OWN_KEY not in result and "[redacted]" in result and "passed-by-name" in result
    board.db.dispose()


async def test_secrets_an_agent_prints_are_redacted_everywhere(server_env: None, tmp_path: Path) -> None:
    # an agent that found the secrets another way (a file, /proc) prints them and fails
    leak = tmp_path / "leaked.txt"
    leak.write_text(" ".join([*SECRETS.values(), OWN_KEY]))
    script = (
        "import sys; text = open(sys.argv[1]).read(); print('stdout', text); "
        "sys.stderr.write('stderr ' + text); sys.exit(int(sys.argv[2]) - 1)"
    )
    config = agent_config(
        f"sqlite:///{tmp_path / 'board.db'}", [sys.executable, "-c", script, str(leak), "{task_id}"]
    )
    board = new_board(config)
    # the exit status is the task id minus one: the first succeeds, the second fails
    ok = board.add(NewTask(title="prints and succeeds"), "test").id
    failed = board.add(NewTask(title="prints and fails", max_attempts=1), "test").id
    assert (ok, failed) == (1, 2)
    # a channel follows the board, so results and errors also become chat cards (the outbox)
    Executor(board).execute(parse("subscribe tasks --channel slack:C0123ABCD"), ADMIN)
    async with running(board, workspace_root=tmp_path / "ws"):
        await wait_for(lambda: all_in(board, "done", "failed"), what="both agents to finish")
    assert board.get(ok).status == "done" and board.get(failed).status == "failed"
    assert "stdout [redacted]" in (board.get(ok).result or "")
    stored = everything_stored(board)
    assert "stderr [redacted]" in json.dumps(snapshot(board)["outbox"], default=str)  # the chat update
    assert "stderr [redacted]" in stored  # the failure's error went through the same filter
    for value in [*SECRETS.values(), OWN_KEY]:
        assert value not in stored, f"{value} reached the board"
    shown = Executor(board).execute(parse(["show", str(failed), "--json"]), ADMIN)
    assert "[redacted]" in json.dumps(shown.to_json(), default=str)
    board.db.dispose()


@pytest.mark.parametrize(
    ("profile", "named"),
    [
        ({"pass_env": ["SLACK_BOT_TOKEN"]}, "SLACK_BOT_TOKEN"),
        ({"pass_env": ["SLACK_SIGNING_SECRET"]}, "SLACK_SIGNING_SECRET"),
        ({"env": {"DISCORD_TOKEN": "x"}}, "DISCORD_TOKEN"),
        ({"pass_env": ["PGPASSWORD"]}, "PGPASSWORD"),
        ({"pass_env": ["DATABASE_URL"]}, "DATABASE_URL"),
        ({"pass_env": ["OTHER_GATEWAY_KEY"]}, "OTHER_GATEWAY_KEY"),
        ({"pass_env": ["LANEWARDEN_WEB_SECRET"]}, "LANEWARDEN_WEB_SECRET"),
        ({"env": {"OPENAI_API_KEY": "x"}}, "OPENAI_API_KEY"),
    ],
)
def test_a_profile_naming_a_secret_is_refused(profile: dict, named: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_config(f"sqlite:///{tmp_path / 'b.db'}", [sys.executable, AGENT], **profile)
    message = str(caught.value)
    assert named in message and "profiles.agent." in message and "\n" not in message


def test_cli_refuses_a_secret_in_pass_env_with_one_line(lw_env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "profiles.agent": {"runner": "command", "command": ["agent"], "pass_env": ["SLACK_BOT_TOKEN"]},
        },
    )
    proc = subprocess.run(
        [*LANEWARDEN, "--config", str(config), "list"], env=lw_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "profiles.agent.pass_env: SLACK_BOT_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ item 8: argv


def test_a_profile_passing_the_title_as_a_bare_argument_is_refused(
    lw_env: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "profiles.agent": {"runner": "command", "command": [sys.executable, AGENT, "{title}"]},
        },
    )
    proc = subprocess.run(
        [*LANEWARDEN, "--config", str(config), "list"], env=lw_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "profiles.agent.command" in proc.stderr and '"--"' in proc.stderr
    for safe in (["--", "{prompt}"], ["--query={prompt}"], ["-q", "{prompt}"], ["{task_id}"]):
        parse_config({"profiles": {"a": {"runner": "command", "command": ["agent", *safe]}}})


async def test_a_title_that_looks_like_an_option_stays_a_title(tmp_path: Path) -> None:
    config = agent_config(f"sqlite:///{tmp_path / 'board.db'}", [sys.executable, AGENT, "--", "{title}"])
    board = new_board(config)
    # both ways a user can write such a title
    first = Executor(board).execute(parse(["add", "--", "--output=pwned.txt"]), ADMIN)
    second = Executor(board).execute(parse("add --title=--output=pwned.txt --profile agent"), ADMIN)
    ids = [first.task.id, second.task.id]  # type: ignore[attr-defined]
    async with running(board, workspace_root=tmp_path / "ws"):
        await wait_for(lambda: all_in(board, "done", "failed"), what="the agent to finish")
    for tid in ids:
        assert board.get(tid).result == "answered: --output=pwned.txt"
    assert not list(tmp_path.rglob("pwned.txt"))  # no agent took the title for --output
    board.db.dispose()


async def test_an_option_value_beginning_with_a_dash_fails_the_run(tmp_path: Path) -> None:
    config = agent_config(f"sqlite:///{tmp_path / 'board.db'}", [sys.executable, AGENT, "-q", "{prompt}"])
    board = new_board(config)
    attack = board.add(NewTask(title="--output=pwned.txt", max_attempts=1), "test").id
    normal = board.add(NewTask(title="summarize the logs"), "test").id
    async with running(board, workspace_root=tmp_path / "ws"):
        await wait_for(lambda: all_in(board, "done", "failed"), what="the agents to finish")
    assert board.get(normal).result == "answered: summarize the logs"
    failed = board.get(attack)
    assert failed.status == "failed" and "begins with '-'" in (failed.error or "")
    assert not list(tmp_path.rglob("pwned.txt"))
    board.db.dispose()


async def test_a_secret_cut_at_the_edge_of_the_error_tail_is_redacted(
    server_env: None, tmp_path: Path
) -> None:
    # the error keeps stderr's last 2000 characters: this one begins inside the token
    token = SECRETS["SLACK_BOT_TOKEN"]
    leak = tmp_path / "leaked.txt"
    leak.write_text(token)
    script = "import sys; sys.stderr.write(open(sys.argv[1]).read() + ' ' + 'x' * 1989); sys.exit(1)"
    config = agent_config(f"sqlite:///{tmp_path / 'board.db'}", [sys.executable, "-c", script, str(leak)])
    board = new_board(config)
    tid = board.add(NewTask(title="cuts a token", max_attempts=1), "test").id
    async with running(board, workspace_root=tmp_path / "ws"):
        await wait_for(lambda: all_in(board, "failed"), what="the agent to fail")
    error = board.get(tid).error or ""
    cut = token[len(token) + 1990 - 2000 :]  # what the tail kept of the token
    assert len(cut) >= 8 and cut not in error and error.endswith(" " + "x" * 1989)
    board.db.dispose()
