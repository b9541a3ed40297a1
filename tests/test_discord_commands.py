"""/kanban through the real discord.py client, gateway and CommandTree, against a fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.chat import AdapterContext
from bot.discord_app.adapter import DiscordAdapter
from bot.discord_app.endpoints import point_discord_at
from core.board import open_board
from core.config import DiscordConfig
from tests.conftest import make_config
from tests.fakes.discord_api import (
    ADMIN,
    CHANNEL,
    OPERATOR,
    TOKEN,
    VIEWER,
    FakeDiscord,
    RunningBot,
    discord_sections,
)


@pytest.fixture
def board_url(tmp_path: Path) -> str:
    # the adapter's behaviour does not depend on the database engine; the outbox tests
    # (test_discord_outbox.py) run on both
    return f"sqlite:///{tmp_path / 'board.db'}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    discord_api = await FakeDiscord().start()
    discord_api.add_channel(CHANNEL)
    yield discord_api
    await discord_api.close()


@pytest.fixture
async def bot(board_url: str, fake: FakeDiscord) -> AsyncIterator[RunningBot]:
    config = make_config(board_url, **discord_sections(fake))
    board = open_board(config)
    adapter = DiscordAdapter.from_env(config, {"DISCORD_TOKEN": TOKEN})
    await adapter.start(AdapterContext(config, board, None))
    await fake.wait_until(lambda: fake.connected.is_set())
    try:
        yield RunningBot(adapter, board, fake)
    finally:
        await adapter.stop()
        board.db.dispose()
        point_discord_at(DiscordConfig())


async def test_add_from_discord_creates_the_task(bot: RunningBot) -> None:
    log = await bot.slash("add", user=OPERATOR, title="Summarize the April logs", profile="researcher")
    assert log.types == [4]
    assert log.ephemeral
    assert "created #1 in ready" in log.text
    task = bot.board.get(1)
    assert task.title == "Summarize the April logs"
    assert task.profile == "researcher"
    assert task.created_by == f"discord:{OPERATOR}"
    assert task.origin == f"discord:{CHANNEL}"
