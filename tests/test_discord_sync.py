"""``lanewarden discord sync``: registering /kanban, per guild or globally, against the fake."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lanewarden.bot.discord_app import sync_commands
from lanewarden.bot.discord_app.endpoints import point_discord_at
from lanewarden.bot.discord_app.options import command_layout
from lanewarden.bot.discord_app.sync import register
from lanewarden.core.config import DiscordConfig

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import TOKEN

GUILD = 1_300_000_000_000_000_123


@pytest.fixture(autouse=True)
def restore_endpoints() -> Iterator[None]:
    yield
    point_discord_at(DiscordConfig())


async def test_cli_sync_registers_kanban_in_one_guild(
    discord_fake: FakeDiscord, tmp_path: Path, lw_env: dict[str, str]
) -> None:
    config_file = tmp_path / "lanewarden.toml"
    config_file.write_text(
        f'[board]\nurl = "sqlite:///{tmp_path / "board.db"}"\n\n'
        f'[discord]\napi_base = "{discord_fake.api_base}"\ngateway_url = "{discord_fake.gateway_url}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lanewarden.bot.cli",
        "--config",
        str(config_file),
        "discord",
        "sync",
        "--guild",
        str(GUILD),
        env={**lw_env, "DISCORD_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    leaves = sum(len(e) if isinstance(e, dict) else 1 for e in command_layout().values())
    assert out.decode().strip() == f"registered /kanban with {leaves} subcommands in guild {GUILD}"
    [put] = discord_fake.requests("PUT", rf"/applications/{discord_fake.APP_ID}/guilds/{GUILD}/commands")
    assert [c["name"] for c in put.body] == ["kanban"]
    assert discord_fake.requests("PUT", rf"/applications/{discord_fake.APP_ID}/commands") == []
    assert discord_fake.gateway_queries == []  # registering needs no gateway connection
    assert TOKEN not in out.decode() + err.decode()


async def test_sync_without_a_guild_registers_globally(discord_fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(
        f"sqlite:///{tmp_path / 'board.db'}",
        discord={"api_base": discord_fake.api_base, "gateway_url": discord_fake.gateway_url},
    )
    summary = await register(config, TOKEN, None)
    assert summary.endswith("subcommands globally")
    [put] = discord_fake.requests("PUT", rf"/applications/{discord_fake.APP_ID}/commands")
    assert [c["name"] for c in put.body] == ["kanban"]
    assert put.body[0]["contexts"] == [0]  # guild only: roles come from guild membership


async def test_a_refused_token_or_none_is_one_clear_line(
    discord_fake: FakeDiscord, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(f"sqlite:///{tmp_path / 'board.db'}", discord={"api_base": discord_fake.api_base})
    assert sync_commands(config, None, env={}) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err
    discord_fake.fail("GET", "/users/@me", 401, 0, "401: Unauthorized")
    status = await asyncio.to_thread(sync_commands, config, GUILD, {"DISCORD_TOKEN": "revoked"})
    assert status == 2
    assert "Discord refused DISCORD_TOKEN (401)" in capsys.readouterr().err
    assert discord_fake.requests("PUT") == []
