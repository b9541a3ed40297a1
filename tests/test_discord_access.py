"""Attacks on the Discord front end (issue 12): autocomplete reading the board past the roles,
interactions from servers the board does not serve, and user text rendered as mentions,
markup or disguised links. Everything runs through discord.py against the fake Discord."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lanewarden.core.board import NewTask
from lanewarden.core.outbox import OutboxDeliverer
from lanewarden.core.schema import events
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import ADMIN, CHANNEL, GUILD, VIEWER, RunningBot, discord_sections, running_bot
from tests.helpers import snapshot

STRANGER_GUILD = 1_300_000_000_000_000_999
HOSTILE = "<@1400000000000000009> <@&1300000000000000003> [docs](https://evil.example) **big** @everyone"


@pytest.fixture
def board_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'board.db'}"


def denials(bot: RunningBot) -> list[Any]:
    with bot.board.db.read() as conn:
        return conn.execute(select(events.c.actor, events.c.message).where(events.c.kind == "denied")).all()


async def test_autocomplete_shows_nothing_to_a_caller_without_a_role(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    sections = discord_sections(discord_fake)
    sections["access"]["default_role"] = "none"
    sections["access"]["viewers"] = [f"discord:{VIEWER}"]
    stranger = 1_400_000_000_000_000_777
    async with running_bot(make_config(board_url, **sections), discord_fake) as bot:
        bot.board.add(NewTask(title="Secret task"), "cli:t")
        assert await bot.complete("show", "id", user=stranger, id="") == []
        assert await bot.complete("show", "id", user=stranger, id="1") == []
        assert await bot.complete("show", "id", user=stranger, id="Secret") == []
        assert await bot.complete("windows remove", "name", user=stranger, name="") == []
        assert await bot.complete("show", "id", user=VIEWER, id="Secret") == ["1"]
        # a viewer may read, but not cancel: no suggestions for a verb it cannot run
        assert await bot.complete("cancel", "id", user=VIEWER, id="") == []
        assert await bot.complete("cancel", "id", user=ADMIN, id="") == ["1"]
        # whoami answers anyone: it tells a newcomer the id an admin has to add
        me = await bot.slash("whoami", user=stranger)
        assert f"you are discord:{stranger}: none" in me.text and "default_role is 'none'" in me.text


async def test_a_server_not_in_guild_ids_is_refused_and_audited(discord_bot: RunningBot) -> None:
    fake = discord_bot.fake
    fake.commands[None] = fake.commands[GUILD]  # /kanban was once registered globally
    discord_bot.board.add(NewTask(title="Secret task", body="the vendor's keys are in the vault"), "cli:t")
    before = snapshot(discord_bot.board)
    for path, values in (("show", {"id": "1"}), ("add", {"title": "Injected"}), ("list", {})):
        payload = fake.slash(path, user=ADMIN, channel_id=CHANNEL, guild_id=STRANGER_GUILD, **values)
        log = await fake.run(payload)
        assert log.ephemeral and "not one this Lanewarden serves" in log.text
        assert "Secret" not in log.text and "vault" not in log.text
    suggestions = await fake.run(
        fake.slash("show", user=ADMIN, channel_id=CHANNEL, guild_id=STRANGER_GUILD, focused="id", id="")
    )
    assert suggestions.choices == []
    assert snapshot(discord_bot.board) == before | {"events": snapshot(discord_bot.board)["events"]}
    refused = denials(discord_bot)
    assert len(refused) == 3 and all(str(STRANGER_GUILD) in r.message for r in refused)
    assert [t.title for t in discord_bot.board.list_tasks(_all())] == ["Secret task"]


async def test_direct_messages_are_refused_unless_allowed(board_url: str, discord_fake: FakeDiscord) -> None:
    async with running_bot(make_config(board_url, **discord_sections(discord_fake)), discord_fake) as bot:
        discord_fake.commands[None] = discord_fake.commands[GUILD]
        bot.board.add(NewTask(title="Secret task"), "cli:t")
        log = await discord_fake.run(
            discord_fake.slash("show", user=ADMIN, channel_id=77, guild_id=None, id="1")
        )
        assert log.ephemeral and "not in direct messages" in log.text and "Secret" not in log.text
        assert [r.message for r in denials(bot)] == [
            "interaction from a direct message refused: "
            "Lanewarden takes commands in its server channels, not in direct messages"
        ]
    sections = discord_sections(discord_fake, allow_dms=True)
    sections["access"]["viewers"] = []
    async with running_bot(make_config(board_url, **sections), discord_fake) as bot:
        discord_fake.commands[None] = discord_fake.commands[GUILD]
        log = await discord_fake.run(
            discord_fake.slash("show", user=VIEWER, channel_id=77, guild_id=None, id="1")
        )
        assert "Secret task" in log.text


def _all() -> Any:
    from lanewarden.core.board import TaskFilter

    return TaskFilter(include_closed=True)


def _rendered(text: str) -> bool:
    """Would Discord render a mention, a role ping, a masked link or a broadcast here?"""
    return bool(re.search(r"<@&?\d+>|\]\(https?://|(?<!\u200b)@everyone|(?<!\\)\*\*big", text))


async def test_user_text_never_renders_as_mentions_markup_or_masked_links(discord_bot: RunningBot) -> None:
    fake = discord_bot.fake
    added = await discord_bot.slash("add", title=HOSTILE[:200], body=HOSTILE)
    assert not _rendered(added.text)
    listed = await discord_bot.slash("list")
    shown = await discord_bot.slash("show", id="1")
    assert not _rendered(listed.text) and not _rendered(shown.text)
    await discord_bot.slash("comment", id="1", text=HOSTILE)
    await discord_bot.slash("block", id="1", reason=HOSTILE)
    engine = OutboxDeliverer(
        discord_bot.board, {"discord": discord_bot.adapter.sink}, "t", per_channel_interval=0.0
    )
    for _ in range(10):
        if await engine.deliver_due() >= 1.0:
            break
    [card] = [m for m in fake.channel_messages(CHANNEL) if m["embeds"]]
    embed = card["embeds"][0]
    card_text = " ".join(
        [embed["title"], embed.get("description", "")] + [f["name"] + f["value"] for f in embed["fields"]]
    )
    assert not _rendered(card_text)
    [thread] = fake.threads.values()
    assert not re.search(r"<@&?\d+>", thread["name"])
    updates = fake.channel_messages(int(thread["id"]))
    assert len(updates) >= 2 and not any(_rendered(m["content"]) for m in updates)
    assert "evil.example" in " ".join(m["content"] for m in updates)  # shown, as typed, not hidden
    assert not fake.refusals


async def test_a_welcome_when_added_to_a_server_it_serves_and_none_elsewhere(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    """Issue 17: a welcome message on install, pointing at whoami."""
    welcome_channel, stranger_channel = 1_300_000_000_000_000_501, 1_300_000_000_000_000_502
    async with running_bot(make_config(board_url, **discord_sections(discord_fake)), discord_fake) as bot:
        await bot.adapter.client.wait_until_ready()
        await discord_fake.join_guild(STRANGER_GUILD, stranger_channel)
        await discord_fake.join_guild(GUILD, welcome_channel)
        [hello] = await discord_fake.wait_until(lambda: discord_fake.channel_messages(welcome_channel))
        assert "/kanban whoami" in hello["content"] and "Lanewarden" in hello["content"]
        assert discord_fake.channel_messages(stranger_channel) == []
