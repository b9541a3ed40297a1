"""A direct message to a task's creator when it finishes or fails, for those who asked
(`notify me on`): real dispatcher runs write the rows, the real OutboxDeliverer and the
Slack (slack-sdk) and Discord (discord.py) sinks deliver them to the fakes, which open DM
channels and refuse as the platforms do. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from lanewarden.bot.slack_app.adapter import SlackAdapter
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.db import Database, upgrade
from lanewarden.core.errors import UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.outbox import OutboxDeliverer, OutboxItem
from lanewarden.core.schema import outbox
from sqlalchemy import insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from tests.conftest import make_config
from tests.dispatch_helpers import FAST, all_in, running, wait_for
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import VIEWER, RunningBot, discord_sections, running_bot
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, Failure, FakeSlack

PROFILES = {
    "default": {"runner": "noop"},
    "broken": {"runner": "command", "command": ["false"]},  # exits 1: the run fails
}


def config_for(board_url: str, **sections: Any) -> Any:
    return make_config(
        board_url,
        kanban={"dispatcher": {**FAST, "max_active_tasks": 4}, "workers": {"profile": "default"}},
        profiles=PROFILES,
        **sections,
    )


def dm_rows(board: Board) -> list[Any]:
    with board.db.read() as conn:
        return list(conn.execute(select(outbox).where(outbox.c.kind == "dm").order_by(outbox.c.id)))


async def finish(board: Board, *tasks: NewTask, by: str) -> list[int]:
    """Add the tasks as ``by`` and let a real dispatcher run them to the end."""
    ids = [board.add(t, by).id for t in tasks]
    async with running(board):
        await wait_for(lambda: all_in(board, "done", "failed"), what="the tasks to end")
    return ids


async def drain(d: OutboxDeliverer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the outbox did not drain"
        await d.deliver_due()
        await asyncio.sleep(0.02)


def settled(board: Board) -> Callable[[], bool]:
    return lambda: all(r.state in ("delivered", "dead") for r in dm_rows(board))


def crash_while_sending(board: Board, row_id: int) -> None:
    with board.db.write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id)
            .values(
                state="sending", claimed_by="dead-leader", claim_expires_at=utcnow() - timedelta(seconds=1)
            )
        )


# ----------------------------------------------------------------------------- Slack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.stop()


@pytest.fixture
def board(board_url: str, slack: FakeSlack) -> Iterator[Board]:
    b = open_board(config_for(board_url, slack={"api_base": slack.api_base}))
    yield b
    b.db.dispose()


def slack_deliverer(board: Board) -> OutboxDeliverer:
    adapter = SlackAdapter.from_env(
        board.config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
    )
    return OutboxDeliverer(board, {"slack": adapter.sink}, "leader", per_channel_interval=0.0)


def notify_me(board: Board, user: str, state: str) -> str:
    actor = Actor(id=user, role="viewer", channel="slack:CTEAM")
    return Executor(board).execute(parse(["notify", "me", state]), actor).message  # type: ignore[attr-defined]


async def test_only_creators_who_opted_in_get_a_dm_when_their_task_succeeds_or_fails(
    board: Board, slack: FakeSlack
) -> None:
    assert "you will get a direct message" in notify_me(board, "slack:UALICE", "on")
    assert "already" in notify_me(board, "slack:UALICE", "on")
    good, bad = await finish(
        board,
        NewTask(title="Summarize <logs>"),
        NewTask(title="Broken job", profile="broken", max_attempts=1),
        by="slack:UALICE",
    )
    await finish(board, NewTask(title="Bob's task"), by="slack:UBOB")  # Bob never asked

    assert [(r.channel, r.task_id) for r in dm_rows(board)] == [("UALICE", good), ("UALICE", bad)]
    await drain(slack_deliverer(board), settled(board))
    [opened] = {c.args["users"] for c in slack.calls_to("conversations.open")}
    assert opened == "UALICE"
    dm = slack.dm_channels["UALICE"]
    texts = [m["text"] for m in slack.posts(dm)]
    assert len(texts) == 2, texts
    assert texts[0].startswith(f"#{good} Summarize &lt;logs&gt;:") and "done in" in texts[0]
    assert texts[1].startswith(f"#{bad} Broken job:") and "failed" in texts[1]
    assert [m["metadata"]["event_payload"]["task_id"] for m in slack.posts(dm)] == [good, bad]
    assert all(r.state == "delivered" for r in dm_rows(board))

    # off: the next task of hers ends quietly
    assert notify_me(board, "slack:UALICE", "off") == "no more direct messages about your tasks"
    await finish(board, NewTask(title="Quiet"), by="slack:UALICE")
    assert len(dm_rows(board)) == 2


async def test_a_dm_posted_before_a_crash_is_found_in_the_dm_and_not_sent_twice(
    board: Board, slack: FakeSlack
) -> None:
    notify_me(board, "slack:UALICE", "on")
    [task_id] = await finish(board, NewTask(title="Crashy"), by="slack:UALICE")
    [row] = dm_rows(board)
    d = slack_deliverer(board)
    # the leader posted it, then died before recording that it had
    await d.sinks["slack"].deliver(OutboxItem.from_row(row), board.get(task_id), None)
    crash_while_sending(board, row.id)
    await drain(d, settled(board))
    assert len(slack.posts(slack.dm_channels["UALICE"])) == 1
    assert [c.args["channel"] for c in slack.calls_to("conversations.history")] == [
        slack.dm_channels["UALICE"]
    ]
    assert dm_rows(board)[0].state == "delivered"


async def test_slack_refusals_and_outages_of_a_dm(board: Board, slack: FakeSlack) -> None:
    for user in ("slack:UALICE", "slack:UGONE"):
        notify_me(board, user, "on")
    slack.disabled_users.add("UGONE")
    d = slack_deliverer(board)
    slack.fail("conversations.open", Failure(500), times=1)  # a Slack outage: retried, not lost
    await finish(board, NewTask(title="For Alice"), by="slack:UALICE")
    await drain(d, settled(board))
    await finish(board, NewTask(title="For a leaver"), by="slack:UGONE")
    await drain(d, settled(board))
    alice, gone = dm_rows(board)
    assert alice.state == "delivered" and alice.attempts == 2
    assert gone.state == "dead" and "user_disabled" in gone.last_error
    assert len(slack.posts(slack.dm_channels["UALICE"])) == 1


def test_notify_me_needs_a_chat_identity_and_valid_input(board: Board) -> None:
    executor = Executor(board)
    cli = Actor(id="cli:alice", role="admin")
    with pytest.raises(UsageError, match="run it there"):
        executor.execute(parse(["notify", "me", "on"]), cli)
    with pytest.raises(UsageError, match="on"):
        parse(["notify", "me", "maybe"])


def test_the_migration_keeps_queued_notifications_and_admits_dm_rows_only(board_url: str) -> None:
    """0006 rebuilds the outbox on SQLite (a CHECK constraint cannot be altered there):
    rows waiting for delivery survive it, and the kind check still refuses nonsense."""
    db = Database(board_url)
    upgrade(db, "0005")
    waiting = {"adapter": "slack", "channel": "COPS", "payload": {"text": "queued before"}, "attempts": 0}
    timing = {"created_at": utcnow(), "next_attempt_at": utcnow(), "state": "pending"}
    with db.write() as conn:
        conn.execute(insert(outbox), [{**waiting, **timing, "kind": "alert"}])
    upgrade(db)
    with db.write() as conn:
        conn.execute(insert(outbox), [{**waiting, **timing, "kind": "dm", "channel": "UALICE"}])
    with db.read() as conn:
        kept = conn.execute(select(outbox.c.kind, outbox.c.payload).order_by(outbox.c.id)).all()
    assert kept == [("alert", {"text": "queued before"}), ("dm", {"text": "queued before"})]
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(insert(outbox), [{**waiting, **timing, "kind": "nonsense"}])
    with db.read() as conn:  # the delivery loop's index came through the rebuild
        assert "ix_outbox_due" in {i["name"] for i in inspect(conn).get_indexes("outbox")}
    db.dispose()


# --------------------------------------------------------------------------- Discord


@pytest.fixture
async def bot(board_url: str, discord_fake: FakeDiscord) -> AsyncIterator[RunningBot]:
    config = config_for(board_url, **discord_sections(discord_fake))
    async with running_bot(config, discord_fake) as running_:
        yield running_


def discord_deliverer(bot: RunningBot) -> OutboxDeliverer:
    return OutboxDeliverer(bot.board, {"discord": bot.adapter.sink}, "leader", per_channel_interval=0.0)


async def test_discord_notify_me_opens_a_dm_channel_and_posts_once(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    # the command as a Discord user types it: /kanban notify me state:on
    answer = await bot.slash("notify me", user=VIEWER, state="on")
    assert "direct message" in answer.text and answer.ephemeral
    [task_id] = await finish(bot.board, NewTask(title="Render @everyone"), by=f"discord:{VIEWER}")
    [row] = dm_rows(bot.board)
    assert row.channel == str(VIEWER)

    d = discord_deliverer(bot)
    # posted, then the leader died before recording it: the nonce returns the same message
    await d.sinks["discord"].deliver(OutboxItem.from_row(row), bot.board.get(task_id), None)
    crash_while_sending(bot.board, row.id)
    await drain(d, settled(bot.board))

    opens = discord_fake.requests("POST", "/users/@me/channels")
    assert {int(o.body["recipient_id"]) for o in opens} == {VIEWER}
    dm = discord_fake.dm_channels[VIEWER]
    [message] = discord_fake.channel_messages(dm)
    assert message["content"].startswith(f"#{task_id} Render") and "done in" in message["content"]
    assert message["allowed_mentions"] == {"parse": []}  # @everyone in a title pings nobody
    assert dm_rows(bot.board)[0].state == "delivered"


async def test_discord_a_user_who_refuses_dms_leaves_a_dead_row_with_the_reason(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    await bot.slash("notify me", user=VIEWER, state="on")
    discord_fake.dms_refused.add(VIEWER)
    await finish(bot.board, NewTask(title="Nobody hears"), by=f"discord:{VIEWER}")
    await drain(discord_deliverer(bot), settled(bot.board))
    [row] = dm_rows(bot.board)
    assert row.state == "dead" and "50007" in row.last_error
