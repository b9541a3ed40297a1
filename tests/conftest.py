"""Shared fixtures: a fresh board on SQLite and on PostgreSQL for every test that asks,
and the fake Discord the Discord tests talk to.

PostgreSQL tests get a schema of their own (dropped afterwards) in the machine's
server on 127.0.0.1:5432. Locally they are skipped when no server answers; in CI
(CI=true) an unreachable server is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, open_board
from lanewarden.core.config import LanewardenConfig, parse_config

from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import ALERTS, CHANNEL, NOTIFY, RunningBot, discord_sections, running_bot

PG_DSN = os.environ.get("LANEWARDEN_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN = Actor(id="cli:tester", role="admin")


def pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # any failure means "not here"
        return str(exc)


def require_postgres() -> None:
    problem = pg_available()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is unreachable at {PG_DSN}: {problem}")
        pytest.skip(f"PostgreSQL not reachable ({problem}); CI runs this tier")


def _pg_url(schema: str) -> str:
    params = dict(part.split("=", 1) for part in PG_DSN.split())
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    user, dbname = params.get("user", "postgres"), params.get("dbname", "test")
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh, empty schema; its URL is ``pg_url(schema)``."""
    require_postgres()
    import psycopg

    schema = f"lw_{secrets.token_hex(5)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            # backends of killed test processes may still hold locks for a moment
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND query ILIKE %s",
                (f"%{schema}%",),
            )
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_url(schema: str) -> str:
    return _pg_url(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def board_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'board.db'}"
    else:
        yield pg_url(request.getfixturevalue("pg_schema"))


def make_config(url: str, **overrides: Any) -> LanewardenConfig:
    raw: dict[str, Any] = {
        "board": {"url": url},
        "kanban": {"dispatcher": {"max_active_tasks": 4}, "workers": {"profile": "default"}},
        "gateways": {"gpu": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 2}},
        "profiles": {
            "default": {"runner": "noop"},
            "researcher": {"gateway": "gpu", "model": "m", "max_parallel": 1},
        },
        "http": {"listen": None},
    }
    for key, value in overrides.items():
        raw[key] = value
    return parse_config(raw)


@pytest.fixture
def config(board_url: str) -> LanewardenConfig:
    return make_config(board_url)


@pytest.fixture
def board(config: LanewardenConfig) -> Iterator[Board]:
    b = open_board(config)
    yield b
    b.db.dispose()


@pytest.fixture
def lw_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `lanewarden` subprocesses: an isolated home, no chat tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "LANEWARDEN_"))}
    env["LANEWARDEN_HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


LANEWARDEN = [sys.executable, "-m", "lanewarden.bot.cli"]


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    """A fake Discord on 127.0.0.1 (tests/fakes/discord_api.py) with the test channels."""
    fake = await FakeDiscord().start()
    for channel in (CHANNEL, NOTIFY, ALERTS):
        fake.add_channel(channel)
    yield fake
    await fake.close()


@pytest.fixture
async def discord_bot(board_url: str, discord_fake: FakeDiscord) -> AsyncIterator[RunningBot]:
    """Lanewarden's Discord adapter, started as serve starts it, against ``discord_fake``."""
    # [http] listen only names where `/kanban web` links point; nothing listens there
    config = make_config(board_url, http={"listen": "127.0.0.1:8787"}, **discord_sections(discord_fake))
    async with running_bot(config, discord_fake) as running:
        yield running
