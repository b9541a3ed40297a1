"""``lanewarden serve --demo``: a seeded board flowing through a simulated gateway."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest
from lanewarden.bot.tools.demo import (
    DEMO_MARKER,
    demo_tasks,
    guide,
    isolate_demo_process,
    prepare_demo,
    recreate_demo_home,
)
from lanewarden.core.config import parse_config
from lanewarden.core.errors import UsageError

from tests.conftest import LANEWARDEN
from tests.serve_helpers import ROOT, ServeProcess, clean_env, wait_until


def board_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql).fetchall()


def test_demo_config_seeds_its_own_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANEWARDEN_HOME", str(tmp_path))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-real-one")
    (tmp_path / "board.db").write_text("the user's real board")
    first = prepare_demo()
    isolate_demo_process(first)
    home = tmp_path / "demo"
    assert os.environ["LANEWARDEN_HOME"] == str(home)  # command tasks get their workspaces in there
    assert "SLACK_BOT_TOKEN" not in os.environ  # a second Socket Mode client would steal commands
    monkeypatch.setenv("LANEWARDEN_HOME", str(tmp_path))
    again = prepare_demo()  # recreated, not appended to

    db = home / "board.db"
    assert again.board.url == f"sqlite:///{db}" and first.board.url == again.board.url
    assert (tmp_path / "board.db").read_text() == "the user's real board"
    profiles = dict(board_rows(db, "SELECT profile, count(*) FROM tasks GROUP BY profile"))
    assert (
        sum(profiles.values()) == len(demo_tasks()) and profiles["writer"] > 10 and profiles["checker"] >= 3
    )
    assert board_rows(db, "SELECT count(*) FROM tasks WHERE status = 'backlog'")[0][0] >= 4
    assert board_rows(db, "SELECT count(*) FROM task_links")[0][0] >= 5
    # the file a second terminal uses describes the very same board
    written = parse_config(tomllib.loads((home / "config.toml").read_text()))
    assert written == again
    assert again.gateways["sim"].kind == "vllm" and again.gateways["sim"].adaptive


def test_demo_never_deletes_a_directory_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "demo"
    (mine / "workspaces").mkdir(parents=True)
    with pytest.raises(UsageError, match="not made by the demo"):
        recreate_demo_home(mine)
    assert (mine / "workspaces").is_dir()
    (mine / DEMO_MARKER).touch()
    recreate_demo_home(mine)
    assert not (mine / "workspaces").exists() and (mine / DEMO_MARKER).exists()


def test_serve_demo_runs_tasks_through_the_simulator(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home)
    log = tmp_path / "serve.log"
    # ServeProcess sets LANEWARDEN_CONFIG; the demo ignores the user's config, so any valid file does
    user_config = tmp_path / "lanewarden.toml"
    user_config.write_text(f'[board]\nurl = "sqlite:///{tmp_path / "user.db"}"\n')
    proc = ServeProcess(user_config, env, log, "--demo")
    db = home / "demo" / "board.db"
    try:
        guide = wait_until(lambda: "Lanewarden demo" in proc.output(), 30, "the guide", [proc])
        assert guide
        sim_url = re.search(r"simulated vLLM server at (\S+)", proc.output())
        assert sim_url is not None

        def settled() -> dict[str, int] | None:
            """Both profiles got work done; the flaky check passed on its retry, the broken one failed."""
            attempts = {t: (s, a) for t, s, a in board_rows(db, "SELECT title, status, attempts FROM tasks")}
            done = dict(
                board_rows(db, "SELECT profile, count(*) FROM tasks WHERE status = 'done' GROUP BY 1")
            )
            if (
                attempts["Lint the docs (fails once, then passes)"] == ("done", 2)
                and attempts["Validate the API schema (always fails)"] == ("failed", 2)
                and done.get("writer", 0) >= 2
                and done.get("checker", 0) >= 2
            ):
                return done
            return None

        wait_until(settled, 30, "done tasks on both profiles and the retries played out", [proc])
        links = board_rows(db, "SELECT count(*) FROM task_links")[0][0]
        assert links == sum(len(parents) for _, parents in demo_tasks())
        # the writer's answers came from the simulator, with its token counts
        tokens = board_rows(db, "SELECT completion_tokens, ttft_ms FROM runs WHERE profile = 'writer' "
                                "AND outcome = 'succeeded'")  # fmt: skip
        assert tokens and all(n is not None and n >= 32 and ttft is not None for n, ttft in tokens)

        # a second terminal sees the same board through the config file the demo wrote
        shown = subprocess.run(
            [*LANEWARDEN, "--config", str(home / "demo" / "config.toml"), "show", "12", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        assert any("#11 is failed" in reason for reason in detail["waiting_on"]), detail["waiting_on"]
        windows = board_rows(db, "SELECT name, cron, command FROM windows")
        assert windows == [
            ("demo-release", "*/30 * * * * *", "promote-batch --from backlog --to ready --max 4")
        ]

        assert proc.terminate(30) == 0
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert "stopped" in proc.output()
    assert board_rows(db, "SELECT count(*) FROM tasks WHERE status = 'active'")[0][0] == 0
    with pytest.raises(httpx.ConnectError):  # the simulated gateway went with it
        httpx.get(sim_url.group(1).removesuffix("/v1") + "/health", timeout=5)


def test_every_demo_banner_says_how_to_reach_the_board_and_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANEWARDEN_HOME", str(tmp_path))
    config = prepare_demo()
    for headless in (True, False):
        text = guide(config, headless=headless)
        assert f"alias lw='lanewarden --config {tmp_path / 'demo' / 'config.toml'}'" in text
        assert f"curl http://{config.http.listen}/metrics" in text


def test_a_second_demo_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home)
    user_config = tmp_path / "lanewarden.toml"
    user_config.write_text(f'[board]\nurl = "sqlite:///{tmp_path / "user.db"}"\n')
    first = ServeProcess(user_config, env, tmp_path / "first.log", "--demo")
    db = home / "demo" / "board.db"
    try:
        wait_until(lambda: "Lanewarden demo" in first.output(), 60, "the first demo", [first])
        inode = db.stat().st_ino
        second = subprocess.run(
            [*LANEWARDEN, "--config", str(user_config), "serve", "--headless", "--demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "a demo is already running" in lines[0], second.stderr
        assert f"pid {first.pid}" in lines[0]
        assert db.stat().st_ino == inode  # the running demo's board was not recreated under it
        assert first.proc.poll() is None
    finally:
        if first.proc.poll() is None:
            assert first.terminate(30) == 0
    # once the first demo is gone the next one starts (the lock went with the process)
    again = ServeProcess(user_config, env, tmp_path / "again.log", "--demo")
    try:
        wait_until(lambda: "Lanewarden demo" in again.output(), 60, "the next demo", [again])
    finally:
        again.kill()
