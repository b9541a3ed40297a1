"""Outbox delivery to Discord: cards edited in place, updates in threads, nothing lost or doubled.

The real OutboxDeliverer drives the Discord sink, whose requests go through discord.py's
HTTP client (its rate-limit handling included) to the fake Discord. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from lanewarden.core.access import Actor
from lanewarden.core.board import NewTask
from lanewarden.core.clock import utcnow
from lanewarden.core.commands import Digest, Subscribe
from lanewarden.core.errors import UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.outbox import Card, OutboxDeliverer, OutboxItem
from lanewarden.core.schema import cards, outbox, subscriptions
from sqlalchemy import insert, select, update

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import ALERTS, CHANNEL, NOTIFY, RunningBot, discord_sections, running_bot

ORIGIN = f"discord:{CHANNEL}"
OPS = Actor(id="discord:7", role="admin", channel=ORIGIN)


@pytest.fixture
async def bot(board_url: str, discord_fake: FakeDiscord) -> AsyncIterator[RunningBot]:
    sections = discord_sections(discord_fake, notify_channel_id=NOTIFY, alert_channel_id=ALERTS)
    async with running_bot(make_config(board_url, **sections), discord_fake) as running:
        yield running


def deliverer(bot: RunningBot) -> OutboxDeliverer:
    return OutboxDeliverer(bot.board, {"discord": bot.adapter.sink}, "test-leader", per_channel_interval=0.0)


async def deliver_all(engine: OutboxDeliverer) -> None:
    """Rounds until nothing is due (deliver_due answers 1.0 when it found nothing)."""
    for _ in range(20):
        if await engine.deliver_due() >= 1.0:
            return
    raise AssertionError("the outbox never drained")


def rows(bot: RunningBot) -> list[Any]:
    with bot.board.db.read() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def card_ref(bot: RunningBot, task_id: int, channel: int) -> str:
    with bot.board.db.read() as conn:
        return conn.execute(
            select(cards.c.message_ref).where(cards.c.task_id == task_id, cards.c.channel == str(channel))
        ).scalar_one()


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


def add_task(bot: RunningBot, title: str) -> int:
    return bot.board.add(NewTask(title=title, origin=ORIGIN), OPS.id).id


async def test_a_card_is_posted_once_edited_in_place_and_changes_go_to_its_thread(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    task_id = add_task(bot, "Ingest the April logs")
    await deliver_all(engine)
    for channel in (CHANNEL, NOTIFY):  # the origin channel and [discord] notify_channel_id
        [card] = discord_fake.channel_messages(channel)
        assert card["embeds"][0]["title"] == f"#{task_id} Ingest the April logs"
        assert buttons(card) == [f"lw:promote:{task_id}", f"lw:cancel:{task_id}"]
        assert card["nonce"].startswith("lw") and card_ref(bot, task_id, channel) == card["id"]
    assert discord_fake.channel_messages(ALERTS) == []

    bot.board.block(task_id, OPS.id, "waiting for the vendor")
    await deliver_all(engine)
    bot.board.unblock(task_id, OPS.id)
    await deliver_all(engine)

    for channel in (CHANNEL, NOTIFY):
        [card] = discord_fake.channel_messages(channel)  # still one card: edited, not re-posted
        assert card["edited_timestamp"] is not None
        assert "Status: ready" in [f"{f['name']}: {f['value']}" for f in card["embeds"][0]["fields"]]
        thread = int(card["id"])  # a thread started from a message has the message's id
        assert discord_fake.threads[thread]["name"] == f"#{task_id} Ingest the April logs"
        assert [m["content"] for m in discord_fake.channel_messages(thread)] == [
            "blocked: waiting for the vendor (by discord:7)",
            "unblocked back to ready (by discord:7)",
        ]
    assert len(discord_fake.requests("POST", r"/channels/\d+/messages/\d+/threads")) == 2  # one per card
    assert {r.state for r in rows(bot)} <= {"delivered", "superseded"}


async def test_a_short_429_is_waited_out_and_a_long_one_goes_back_to_the_outbox(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    posts = rf"/channels/{CHANNEL}/messages"
    # short: discord.py sleeps the body's retry_after and sends again, within the same attempt
    discord_fake.rate_limit("POST", posts, retry_after=0.05)
    first = add_task(bot, "First")
    await deliver_all(engine)
    assert [c.status for c in discord_fake.requests("POST", posts)] == [429, 200]
    assert len({c.body["nonce"] for c in discord_fake.requests("POST", posts)}) == 1
    assert len(discord_fake.channel_messages(CHANNEL)) == 1

    # long (over discord.py's 30 s ceiling): the row waits in the outbox, with Discord's delay
    discord_fake.rate_limit("POST", posts, retry_after=45.0)
    second = add_task(bot, "Second")
    await deliver_all(engine)
    [row] = [r for r in rows(bot) if r.task_id == second and r.channel == str(CHANNEL)]
    assert (row.state, row.attempts) == ("pending", 1)
    assert "rate limit" in row.last_error
    wait = (row.next_attempt_at - utcnow()).total_seconds()
    assert 40 < wait <= 45
    assert len(discord_fake.channel_messages(CHANNEL)) == 1  # nothing posted, nothing lost

    # 45 s later (the engine also paces the channel in memory, so a fresh one stands for
    # the later round): the row is due again and goes out exactly once
    with bot.board.db.write() as conn:
        conn.execute(update(outbox).where(outbox.c.id == row.id).values(next_attempt_at=utcnow()))
    engine = deliverer(bot)
    await deliver_all(engine)
    titles = [m["embeds"][0]["title"] for m in discord_fake.channel_messages(CHANNEL)]
    assert titles == [f"#{first} First", f"#{second} Second"]
    assert all(r.state == "delivered" for r in rows(bot))

    # a global rate limit is honoured too
    discord_fake.rate_limit("POST", rf"/channels/{ALERTS}/messages", retry_after=0.05, is_global=True)
    bot.board.notify("alerts", "alerts", "alert", "gateway gpu is DOWN", {"gateway": "gpu"})
    await deliver_all(engine)
    assert [m["content"] for m in discord_fake.channel_messages(ALERTS)] == ["gateway gpu is DOWN"]


async def test_after_a_crash_mid_send_nothing_is_posted_twice(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    sink = bot.adapter.sink
    task_id = add_task(bot, "Crashy")

    # the leader posted the card, then died before recording it
    [card_row] = [r for r in rows(bot) if r.channel == str(CHANNEL)]
    await sink.deliver(OutboxItem.from_row(card_row), bot.board.get(task_id), None)
    _crash_while_sending(bot, card_row.id)
    with bot.board.db.write() as conn:  # the other channel's card is not part of this story
        conn.execute(update(outbox).where(outbox.c.channel == str(NOTIFY)).values(state="delivered"))
    await deliver_all(engine)
    [card] = discord_fake.channel_messages(CHANNEL)
    assert card_ref(bot, task_id, CHANNEL) == card["id"]  # found in the history, not re-posted
    assert len(discord_fake.requests("POST", rf"/channels/{CHANNEL}/messages")) == 1
    assert len(discord_fake.requests("GET", rf"/channels/{CHANNEL}/messages")) == 1  # the history search

    # the same for a thread update: sent again with its nonce, Discord returns the first one
    bot.board.block(task_id, OPS.id, "disk full")
    [update_row] = [r for r in rows(bot) if r.kind == "update" and r.channel == str(CHANNEL)]
    await sink.deliver(OutboxItem.from_row(update_row), bot.board.get(task_id), Card(card["id"], card["id"]))
    _crash_while_sending(bot, update_row.id)
    await deliver_all(engine)
    assert [m["content"] for m in discord_fake.channel_messages(int(card["id"]))] == [
        "blocked: disk full (by discord:7)"
    ]
    assert len(discord_fake.requests("POST", rf"/channels/{card['id']}/messages")) == 3  # 404, post, re-post
    assert all(r.state in ("delivered", "superseded") for r in rows(bot) if r.channel == str(CHANNEL))


def _crash_while_sending(bot: RunningBot, row_id: int) -> None:
    with bot.board.db.write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id)
            .values(
                state="sending", claimed_by="crashed-leader", claim_expires_at=utcnow() - timedelta(seconds=1)
            )
        )


async def test_refusals_are_kept_as_dead_rows_and_server_errors_are_retried(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    gone = 1_300_000_000_000_000_099  # a channel the bot cannot see
    Executor(bot.board).execute(Subscribe(topic="tasks", channel=f"discord:{gone}"), OPS)
    discord_fake.fail("POST", rf"/channels/{CHANNEL}/messages", 503, 0, "upstream connect error")
    task_id = add_task(bot, "Partly delivered")
    await deliver_all(engine)
    by_channel = {r.channel: r for r in rows(bot) if r.task_id == task_id}
    assert by_channel[str(gone)].state == "dead"
    assert (
        "10003" in by_channel[str(gone)].last_error and "Unknown Channel" in by_channel[str(gone)].last_error
    )
    assert by_channel[str(NOTIFY)].state == "delivered"
    retried = by_channel[str(CHANNEL)]
    assert (retried.state, retried.attempts) == ("pending", 1) and "503" in retried.last_error
    with bot.board.db.write() as conn:
        conn.execute(update(outbox).where(outbox.c.id == retried.id).values(next_attempt_at=utcnow()))
    await deliver_all(engine)
    assert len(discord_fake.channel_messages(CHANNEL)) == 1
    assert next(r for r in rows(bot) if r.id == retried.id).state == "delivered"


async def test_a_deleted_card_is_posted_again_and_its_thread_follows(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    task_id = add_task(bot, "Phoenix")
    await deliver_all(engine)
    old = card_ref(bot, task_id, CHANNEL)
    del discord_fake.messages[int(old)]  # someone deleted the card in Discord
    bot.board.promote(task_id, "active", OPS.id)
    await deliver_all(engine)
    new = card_ref(bot, task_id, CHANNEL)
    assert new != old
    [card] = discord_fake.channel_messages(CHANNEL)
    assert card["id"] == new and buttons(card) == [f"lw:cancel:{task_id}"]  # released: no promote
    # the change goes to the new card's thread (the old one went with its message)
    assert [m["content"] for m in discord_fake.channel_messages(int(new))] == [
        "released to start when a slot is free (by discord:7)"
    ]


async def test_digests_and_alerts_reach_their_channels(bot: RunningBot, discord_fake: FakeDiscord) -> None:
    engine = deliverer(bot)
    Executor(bot.board).execute(Subscribe(topic="alerts"), OPS)  # the origin channel asks for alerts
    bot.board.notify("alerts", "alerts", "alert", "gateway gpu is DOWN", {"gateway": "gpu"})
    Executor(bot.board).execute(Digest(post=True), OPS)
    await deliver_all(engine)
    assert [m["content"] for m in discord_fake.channel_messages(CHANNEL)] == ["gateway gpu is DOWN"]
    alerts = [m["content"] for m in discord_fake.channel_messages(ALERTS)]
    assert alerts[0] == "gateway gpu is DOWN" and alerts[1].startswith("Lanewarden digest, last 24h")
    assert discord_fake.channel_messages(NOTIFY)[0]["content"].startswith("Lanewarden digest, last 24h")


async def test_without_history_access_the_nonce_still_prevents_a_second_card(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    engine = deliverer(bot)
    task_id = add_task(bot, "Careful")
    [card_row] = [r for r in rows(bot) if r.channel == str(CHANNEL)]
    await bot.adapter.sink.deliver(OutboxItem.from_row(card_row), bot.board.get(task_id), None)
    _crash_while_sending(bot, card_row.id)
    discord_fake.fail("GET", rf"/channels/{CHANNEL}/messages", 403, 50001, "Missing Access")
    await deliver_all(engine)
    [card] = discord_fake.channel_messages(CHANNEL)
    assert card_ref(bot, task_id, CHANNEL) == card["id"]
    assert [c.status for c in discord_fake.requests("POST", rf"/channels/{CHANNEL}/messages")] == [200, 200]


async def test_a_channel_that_is_not_a_discord_id_is_refused_for_good(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    with pytest.raises(UsageError, match="not a Discord channel id"):
        Executor(bot.board).execute(Subscribe(topic="alerts", channel="discord:general"), OPS)
    with bot.board.db.write() as conn:  # a row stored before subscribe checked the shape
        conn.execute(
            insert(subscriptions).values(
                adapter="discord", channel="general", topic="alerts", created_by="t", created_at=utcnow()
            )
        )
    bot.board.notify("alerts", "alerts", "alert", "gateway gpu is DOWN", {})
    await deliver_all(deliverer(bot))
    [bad] = [r for r in rows(bot) if r.channel == "general"]
    assert bad.state == "dead" and "not a Discord channel id" in bad.last_error
    assert [m["content"] for m in discord_fake.channel_messages(ALERTS)] == ["gateway gpu is DOWN"]
