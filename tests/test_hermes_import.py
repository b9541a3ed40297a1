"""`lanewarden import hermes` against board files laid out as Hermes writes them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from lanewarden.core.board import open_board
from lanewarden.core.config import load_config
from lanewarden.core.schema import events, task_links, tasks
from sqlalchemy import func, select

from tests.conftest import LANEWARDEN
from tests.helpers import snapshot

SCHEMA = (Path(__file__).parent / "fixtures" / "hermes" / "kanban_schema.sql").read_text()
T0 = 1_760_000_000

# one task in every Hermes status, a chain of parents, comments, runs, events, an attachment
HERMES_TASKS = [
    # id, title, assignee, status, priority, completed_at offset or None, result
    ("t_0001aaaa", "Ingest logs", "etl-worker", "done", 5, 600, "42 files"),
    ("t_0002bbbb", "Clean logs", "etl-worker", "running", 4, None, None),
    ("t_0003cccc", "Write report", "analytics-worker", "todo", 3, None, None),
    ("t_0004dddd", "Triage inbox", None, "triage", 0, None, None),
    ("t_0005eeee", "Weekly brief", "analytics-worker", "scheduled", 1, None, None),
    ("t_0006ffff", "Summarize", "etl-worker", "ready", 2, None, None),
    ("t_0007abab", "Vendor access", "ops", "blocked", 0, None, None),
    ("t_0008cdcd", "Review PR", "etl-worker", "review", 7, None, "PR #12 opened"),
    ("t_0009efef", "Old chore", "etl-worker", "archived", 0, 100, "done long ago"),
    ("t_000aabcd", "Dropped idea", None, "archived", 0, None, None),
]
CONFIG = """
[board]
url = "{url}"

[kanban.workers]
profile = "etl-worker"

[profiles.etl-worker]
runner = "noop"

[profiles.analytics-worker]
runner = "noop"

[http]
listen = ""
"""


def make_hermes_board(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for i, (tid, title, assignee, status, priority, done, result) in enumerate(HERMES_TASKS):
        conn.execute(
            "INSERT INTO tasks (id, title, body, assignee, status, priority, created_by, created_at,"
            " completed_at, result, max_retries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tid, title, f"body of {title}", assignee, status, priority, "alice", T0 + i,
             T0 + done if done else None, result, 2 if tid == "t_0006ffff" else None),
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO task_links VALUES (?, ?)", [("t_0001aaaa", "t_0002bbbb"), ("t_0002bbbb", "t_0003cccc")]
    )
    conn.executemany(
        "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?, ?, ?, ?)",
        [
            ("t_0002bbbb", "alice", "use the April bucket", T0 + 50),
            ("t_0007abab", "ops", "waiting on IT", T0 + 60),
        ],
    )
    conn.execute(
        "INSERT INTO task_runs (task_id, profile, status, started_at, ended_at, outcome, summary)"
        " VALUES ('t_0001aaaa', 'etl-worker', 'done', ?, ?, 'completed', 'ingested 42 files')",
        (T0 + 100, T0 + 600),
    )
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at)"
        " VALUES ('t_0001aaaa', 1, 'completed', ?, ?)",
        (json.dumps({"summary": "ok"}), T0 + 600),
    )
    conn.execute(
        "INSERT INTO task_attachments (task_id, filename, stored_path, size, created_at)"
        " VALUES ('t_0006ffff', 'spec.pdf', '/x/spec.pdf', 10, ?)",
        (T0,),
    )
    conn.commit()
    conn.close()
    return path


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LANEWARDEN, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(board_url: str, lw_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "lanewarden.toml"
    path.write_text(CONFIG.format(url=board_url))
    return {**lw_env, "LANEWARDEN_CONFIG": str(path)}


def test_import_carries_every_status_links_history_and_is_idempotent(
    env: dict[str, str], tmp_path: Path
) -> None:
    hermes = make_hermes_board(tmp_path / "hermes" / "kanban.db")
    config = tmp_path / "hermes" / "config.yaml"
    config.write_text(
        "kanban:\n  max_in_progress: 3\n  max_in_progress_per_profile: 2\n  failure_limit: 4\n"
        "  dispatch_interval_seconds: 30\n  auto_decompose: true\n"
    )
    board = open_board(load_config(env["LANEWARDEN_CONFIG"])[0])
    before = snapshot(board)
    dry = run(env, "import", "hermes", str(hermes), "--config", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "10 task(s), 10 new" in dry.stdout and "dry run: nothing was written" in dry.stdout
    assert snapshot(board) == before

    first = run(env, "import", "hermes", str(hermes), "--config", str(config))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "10 new, 0 already imported; 2 link(s), 2 comment(s), 1 run(s), 1 event(s)" in out
    assert "t_0006ffff: 1 attachment(s)" in out
    assert "profile 'ops' is not configured here" in out
    assert "kanban.auto_decompose: no Lanewarden equivalent" in out
    by_ref = {}
    with board.db.read() as conn:
        for row in conn.execute(select(tasks)):
            by_ref[row.origin.removeprefix("hermes:")] = row
        link_count = conn.execute(select(func.count()).select_from(task_links)).scalar_one()
    statuses = {ref: row.status for ref, row in by_ref.items()}
    assert statuses == {
        "t_0001aaaa": "done", "t_0002bbbb": "ready", "t_0003cccc": "ready", "t_0004dddd": "backlog",
        "t_0005eeee": "backlog", "t_0006ffff": "ready", "t_0007abab": "blocked", "t_0008cdcd": "blocked",
        "t_0009efef": "done", "t_000aabcd": "cancelled",
    }  # fmt: skip
    assert link_count == 2
    assert by_ref["t_0004dddd"].profile == "etl-worker"  # no assignee: the default profile
    assert by_ref["t_0008cdcd"].result == "PR #12 opened" and by_ref["t_0008cdcd"].priority == 7
    assert (by_ref["t_0006ffff"].max_attempts, by_ref["t_0002bbbb"].max_attempts) == (2, 4)

    shown = run(env, "show", "t_0002bbbb")
    assert shown.returncode == 0, shown.stderr
    assert "hermes t_0002bbbb" in shown.stdout and "use the April bucket" in shown.stdout
    assert "was running in Hermes" in shown.stdout
    child = json.loads(run(env, "show", "t_0003cccc", "--json").stdout)
    assert child["task"]["lane"] == "waiting"  # its parent is not done here either
    assert run(env, "list", "--status", "waiting", "--quiet").stdout.split() == [str(by_ref["t_0003cccc"].id)]
    caps = run(env, "caps").stdout
    assert "board: 0/3" in caps and "profile analytics-worker: 0/2" in caps

    with board.db.read() as conn:
        event_count = conn.execute(select(func.count()).select_from(events)).scalar_one()
    second = run(env, "import", "hermes", str(hermes), "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert "0 new, 10 already imported" in second.stdout
    with board.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar_one() == 10
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == event_count
    board.db.dispose()


def test_unreadable_boards_are_refused_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    good = make_hermes_board(tmp_path / "hermes" / "kanban.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    missing = tmp_path / "nowhere.db"
    for bad, message in ((junk, "file is not a database"), (missing, "no such file")):
        proc = run(env, "import", "hermes", str(good), str(bad))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    # nothing was written from the good board either
    assert run(env, "list", "--all", "--quiet").stdout.strip() == ""
    unknown = run(env, "show", "t_0001aaaa")
    assert unknown.returncode == 2 and "no task imported from Hermes as t_0001aaaa" in unknown.stderr
