"""The guide's and Hermes' command forms, in real `lanewarden` subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lanewarden.bot.slack_app.blocks import status_blocks, status_summary
from lanewarden.core import commands as c
from lanewarden.core.board import Board, NewTask
from lanewarden.core.errors import UsageError
from lanewarden.core.grammar import parse
from lanewarden.core.status import build_status

from tests.conftest import LANEWARDEN

CONFIG = """
[board]
url = "sqlite:///{db}"

[kanban.dispatcher]
enabled = false

[kanban.workers]
profile = "etl-worker"

[profiles.etl-worker]
runner = "noop"

[http]
listen = ""
{jobs}
"""

BAD_JOB = """
[[scheduler.jobs]]
name = "night"
cron = "0 22 * * *"
timezone = "UTC"
command = "promote-batch --from ready --to ready --max 2"
"""


def cli(tmp_path: Path, lw_env: dict[str, str], jobs: str = "") -> dict[str, str]:
    path = tmp_path / "lanewarden.toml"
    path.write_text(CONFIG.format(db=tmp_path / "board.db", jobs=jobs))
    return {**lw_env, "LANEWARDEN_CONFIG": str(path)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LANEWARDEN, *args], env=env, capture_output=True, text=True, timeout=120)


def test_guide_and_hermes_words_parse_to_our_verbs() -> None:
    added = parse("hermes scheduler jobs add --name n --cron '*/15 * * * *' --timezone UTC --command digest")
    assert isinstance(added, c.WindowsAdd) and (added.name, added.timezone) == ("n", "UTC")
    assert isinstance(parse("lanewarden scheduler jobs list"), c.WindowsList)
    assert parse("scheduler jobs remove --name n") == c.WindowsRemove(name="n")
    created = parse("hermes kanban create Write the report --assignee analytics --parent 3")
    assert (created.title, created.profile, created.parent) == ("Write the report", "analytics", (3,))
    assert parse("hermes kanban complete 7") == c.Move(id=7, column="done")
    with pytest.raises(UsageError, match=r"no `assign`: .*add TITLE --profile P"):
        parse("hermes kanban assign 7 researcher")
    with pytest.raises(UsageError, match=r"no `archive`: .*list --all"):
        parse("archive 7")


def test_scheduler_jobs_on_the_cli_and_job_commands_checked(tmp_path: Path, lw_env: dict[str, str]) -> None:
    env = cli(tmp_path, lw_env)
    typo = run(
        env, "scheduler", "jobs", "add", "--name", "night", "--cron", "0 22 * * *", "--timezone", "UTC",
        "--command", "promote-batch --from ready --to sideways --max 2",
    )  # fmt: skip
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1, typo.stderr
    assert "--to must be one of ready, active, got 'sideways'" in typo.stderr
    # parses, but a run would refuse it: found when added, not at 22:00
    backwards = run(env, "windows", "add", "night", "--cron", "0 22 * * *", "--command", BAD_COMMAND)
    assert backwards.returncode == 2 and "--to ready is not ahead of --from ready" in backwards.stderr
    ghost = run(env, "windows", "add", "n2", "--cron", "0 22 * * *", "--command", "pause --profile ghost")
    assert ghost.returncode == 2 and "no profile 'ghost'" in ghost.stderr
    ok = run(
        env, "scheduler", "jobs", "add", "--name", "night", "--cron", "0 22 * * *", "--timezone", "UTC",
        "--command", "promote-batch --from ready --to active --max 2",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "night: `0 22 * * *` UTC -> promote-batch" in run(env, "scheduler", "jobs", "list").stdout
    assert run(env, "scheduler", "jobs", "remove", "--name", "night").returncode == 0
    assert run(env, "scheduler", "jobs", "list").stdout.strip() == "no windows"


BAD_COMMAND = "promote-batch --from ready --to ready --max 2"


def test_doctor_and_serve_refuse_a_job_that_cannot_run(tmp_path: Path, lw_env: dict[str, str]) -> None:
    env = cli(tmp_path, lw_env, jobs=BAD_JOB)
    doctor = run(env, "doctor")
    assert doctor.returncode != 0
    assert "[[scheduler.jobs]] 'night': --to ready is not ahead of --from ready" in doctor.stdout
    serve = run(env, "serve", "--headless")
    assert serve.returncode == 2, serve.stderr
    assert serve.stderr.strip().splitlines() == [
        "lanewarden: error: [[scheduler.jobs]] 'night': --to ready is not ahead of --from ready"
    ]


def test_lanes_limits_and_idempotent_release(tmp_path: Path, lw_env: dict[str, str]) -> None:
    env = cli(tmp_path, lw_env)
    parent = run(env, "add", "parent", "--priority", "1").stdout.strip()
    child = run(env, "add", "child", "--parent", parent, "--priority", "9").stdout.strip()
    for i in range(3):
        run(env, "add", f"t{i}", "--priority", str(5 - i))
    assert run(env, "list", "--column", "ready", "--quiet").stdout.split() == ["3", "4", "5", parent]
    cut = run(env, "list", "--column", "ready", "--limit", "2", "--quiet")
    assert cut.stdout.split() == ["3", "4"] and "--limit 0 lists all" in cut.stderr
    everything = run(env, "list", "--limit", "0", "--quiet")
    assert everything.stdout.split() == [child, "3", "4", "5", parent] and everything.stderr == ""
    first = run(env, "promote", "--id", "3", "--column", "active")
    again = run(env, "promote", "--id", "3", "--column", "active")
    assert (first.returncode, again.returncode) == (0, 0)
    assert "already released" in again.stdout and "nothing to do" in again.stdout
    assert run(env, "list", "--status", "released", "--quiet").stdout.split() == ["3"]
    assert run(env, "list", "--status", "waiting", "--quiet").stdout.split() == [child]
    refused = run(env, "promote", "--id", child, "--column", "active")
    assert refused.returncode == 2 and "parents are done" in refused.stderr
    assert run(env, "list", "--status", "running", "--quiet").stdout == ""  # Hermes' word for active
    review = run(env, "list", "--status", "review")
    assert review.returncode == 2 and "Hermes' review is blocked, after an import here" in review.stderr
    status = run(env, "status").stdout
    assert "ready 3  released 1  waiting 1" in status


def test_status_in_chat_names_released_and_waiting(board: Board) -> None:
    parent = board.add(NewTask(title="parent"), "test").id
    board.add(NewTask(title="child", parents=[parent]), "test")
    board.promote(parent, "active", "test")
    report = build_status(board.db, board.config)
    assert report.lanes["ready"] == 0 and report.lanes["released"] == 1 and report.lanes["waiting"] == 1
    assert "0 ready, 1 released, 1 waiting" in status_summary(report)
    fields = [f["text"] for b in status_blocks(report) for f in b.get("fields", [])]
    assert ":arrow_forward: *released* 1" in fields and ":hourglass: *waiting* 1" in fields
