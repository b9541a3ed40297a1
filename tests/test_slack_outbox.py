"""Notifications to Slack through the outbox: the real OutboxDeliverer and the Slack
sink (slack-sdk's AsyncWebClient) against the fake Slack, on SQLite and PostgreSQL.

What must hold: a task's card is one message edited in place with state changes in
its thread; 429 (with Retry-After) and 5xx lose nothing and duplicate nothing; a
channel gets about one message per interval; a crash between the post and the mark
does not post twice; alerts reach the alert channel; subscriptions choose channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from lanewarden.bot.slack_app.adapter import SlackAdapter
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.outbox import OutboxDeliverer
from lanewarden.core.schema import cards, outbox
from sqlalchemy import select, update

from tests.conftest import make_config
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, Failure, FakeSlack

ALERTS = "CALERTS"
OPS = "COPS"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = await FakeSlack().start()
    yield slack
    await slack.stop()


@pytest.fixture
def board(board_url: str, fake: FakeSlack) -> Iterator[Board]:
    config = make_config(board_url, slack={"api_base": fake.api_base, "alert_channel": ALERTS})
    b = open_board(config)
    yield b
    b.db.dispose()


def deliverer(board: Board, owner: str = "leader-1", interval: float = 0.0) -> OutboxDeliverer:
    # the sink exactly as serve gets it from the adapter
    adapter = SlackAdapter.from_env(
        board.config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
    )
    return OutboxDeliverer(board, {"slack": adapter.sink}, owner, per_channel_interval=interval)


def rows(board: Board) -> list[Any]:
    with board.db.read() as conn:
        return conn.execute(select(outbox).order_by(outbox.c.id)).all()


def undelivered(board: Board) -> list[Any]:
    return [r for r in rows(board) if r.state in ("pending", "sending")]


async def deliver_until(d: OutboxDeliverer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run delivery rounds (as the leader's loop does) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "outbox did not drain in time"
        await d.deliver_due()
        await asyncio.sleep(0.02)


def slack_actor(user: str = "UOPS", channel: str = OPS) -> Actor:
    return Actor(id=f"slack:{user}", role="admin", channel=f"slack:{channel}")


def top_level(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [m for m in fake.posts(channel) if "thread_ts" not in m]


def replies(fake: FakeSlack, channel: str, ts: str) -> list[dict[str, Any]]:
    return [m for m in fake.posts(channel) if m.get("thread_ts") == ts]


async def test_a_card_is_posted_once_edited_in_place_and_changes_go_to_its_thread(
    board: Board, fake: FakeSlack
) -> None:
    task = board.add(
        NewTask(title="Summarize logs & <traces>", column="backlog", origin=f"slack:{OPS}"), "slack:UOPS"
    )
    d = deliverer(board)
    await deliver_until(d, lambda: not undelivered(board))
    [card] = top_level(fake, OPS)
    assert card["metadata"]["event_payload"]["task_id"] == task.id
    assert "Summarize logs" in str(card["blocks"]) and ":inbox_tray: *backlog*" in str(card["blocks"])
    actions = next(b for b in card["blocks"] if b["type"] == "actions")["elements"]
    assert [a["action_id"] for a in actions] == ["lanewarden.promote", "lanewarden.cancel"]
    assert actions[1]["confirm"]["confirm"]["text"] == "Cancel task"  # destructive: a confirm dialog

    # three changes before the next delivery: the card is edited once, to the newest state
    board.promote(task.id, "ready", "slack:UOPS")
    board.block(task.id, "slack:UOPS", "waiting for data")
    board.comment(task.id, "the data lands at 9", "slack:UADMIN")
    assert [r.state for r in rows(board) if r.kind == "card"].count("superseded") == 2
    await deliver_until(d, lambda: not undelivered(board))

    assert top_level(fake, OPS) == [card]  # still one message
    [edit] = fake.calls_to("chat.update")
    assert edit.args["ts"] == card["ts"] and card["edited"] == 1
    assert edit.args["text"].startswith(f"#{task.id} Summarize logs &amp; &lt;traces&gt;")
    assert ":no_entry: *blocked*" in str(card["blocks"])
    thread = [m["text"] for m in replies(fake, OPS, card["ts"])]
    assert thread == [
        f"#{task.id} promoted to ready (by slack:UOPS)",
        f"#{task.id} blocked: waiting for data (by slack:UOPS)",
        f"#{task.id} the data lands at 9 (by slack:UADMIN)",
    ]
    with board.db.read() as conn:
        [stored] = conn.execute(select(cards)).all()
    assert (stored.channel, stored.message_ref, stored.thread_ref) == (OPS, card["ts"], card["ts"])


async def test_429_and_500_lose_nothing_and_duplicate_nothing(board: Board, fake: FakeSlack) -> None:
    for n in range(3):
        board.add(NewTask(title=f"Task {n}", origin=f"slack:{OPS}"), "slack:UOPS")
    board.notify(
        "alerts",
        "alerts",
        "alert",
        ":rotating_light: gateway gpu down",
        {"key": "gw:gpu"},
        outbox_kind="alert",
    )
    fake.fail("chat.postMessage", Failure(429, retry_after=0.3), times=2)
    fake.fail("chat.postMessage", Failure(500))
    # Slack did the work but the answer was a 500: only the idempotency check avoids a duplicate
    fake.fail("chat.postMessage", Failure(500, store_first=True), times=1)
    d = deliverer(board)
    await deliver_until(d, lambda: not undelivered(board))

    assert {r.state for r in rows(board)} == {"delivered"}
    for row in rows(board):
        [message] = fake.posts_for_outbox(row.id)  # exactly one each
        assert row.remote_ref == message["ts"]
    assert len(fake.posts()) == 4
    # Retry-After was honoured: the channel's next post came no sooner than it said
    posts = [c for c in fake.calls if c.method == "chat.postMessage"]
    first_429 = next(i for i, c in enumerate(posts) if c.status == 429)
    retried = next(c for c in posts[first_429 + 1 :] if c.args["channel"] == posts[first_429].args["channel"])
    assert retried.at - posts[first_429].at >= 0.3
    # the message Slack stored behind a 500 was found in the history, not posted again
    assert fake.calls_to("conversations.history")


async def test_each_channel_gets_at_most_one_message_per_interval(board: Board, fake: FakeSlack) -> None:
    for channel in (OPS, "CDEV"):
        for n in range(4):
            board.add(NewTask(title=f"{channel} {n}", origin=f"slack:{channel}"), "slack:UOPS")
    interval = 0.25
    d = deliverer(board, interval=interval)
    await deliver_until(d, lambda: not undelivered(board))
    for channel in (OPS, "CDEV"):
        times = [c.at for c in fake.calls_to("chat.postMessage", channel=channel)]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= interval, gaps


async def test_a_crash_between_send_and_mark_does_not_post_twice(board: Board, fake: FakeSlack) -> None:
    task = board.add(NewTask(title="Crash me", origin=f"slack:{OPS}"), "slack:UOPS")
    [card_row] = undelivered(board)

    async def crash_mid_send(row_id: int) -> None:
        """Slack stores the message, then the leader dies before it hears back."""
        fake.hold("chat.postMessage")
        first = asyncio.create_task(deliverer(board, owner="leader-1").deliver_due())
        await fake.wait_for(lambda: fake.posts_for_outbox(row_id))
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        fake.release("chat.postMessage")
        [row] = [r for r in rows(board) if r.id == row_id]
        assert row.state == "sending"  # never marked
        with board.db.write() as conn:  # the dead leader's claim runs out (60 s in real life)
            conn.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(claim_expires_at=utcnow() - timedelta(seconds=1))
            )

    await crash_mid_send(card_row.id)
    await deliver_until(deliverer(board, owner="leader-2"), lambda: not undelivered(board))
    [card] = fake.posts_for_outbox(card_row.id)
    assert len(top_level(fake, OPS)) == 1
    [row] = [r for r in rows(board) if r.id == card_row.id]
    assert (row.state, row.remote_ref) == ("delivered", card["ts"])
    with board.db.read() as conn:
        assert conn.execute(select(cards.c.message_ref)).scalar_one() == card["ts"]

    # the same for a reply in the card's thread: found through conversations.replies
    board.comment(task.id, "one more thing", "slack:UOPS")
    [update_row] = [r for r in undelivered(board) if r.kind == "update"]
    await crash_mid_send(update_row.id)
    await deliver_until(deliverer(board, owner="leader-3"), lambda: not undelivered(board))
    assert len(fake.posts_for_outbox(update_row.id)) == 1
    assert [m["text"] for m in replies(fake, OPS, card["ts"])] == [
        f"#{task.id} one more thing (by slack:UOPS)"
    ]
    assert fake.calls_to("conversations.replies", ts=card["ts"])


async def test_alerts_and_their_resolutions_reach_the_alert_channel(board: Board, fake: FakeSlack) -> None:
    ex = Executor(board, audit_commands=True)
    ex.execute(parse("subscribe alerts"), slack_actor(channel=OPS))
    board.notify(
        "alerts",
        "alerts",
        "alert",
        ":rotating_light: gateway gpu down",
        {"key": "gw:gpu", "state": "fired"},
        outbox_kind="alert",
    )
    ex.execute(parse("unsubscribe alerts"), slack_actor(channel=OPS))
    board.notify(
        "alerts",
        "alerts",
        "alert_resolved",
        ":white_check_mark: resolved after 4m: gateway gpu down",
        {"key": "gw:gpu", "state": "resolved"},
        outbox_kind="alert",
    )
    ex.execute(parse("digest --post"), slack_actor(channel=OPS))  # digests go there too
    await deliver_until(deliverer(board), lambda: not undelivered(board))
    alerts = [m["text"] for m in fake.posts(ALERTS)]
    assert alerts[:2] == [
        "Alert: :rotating_light: gateway gpu down",
        "Resolved: :white_check_mark: resolved after 4m: gateway gpu down",
    ]
    assert alerts[2].startswith("Lanewarden digest, last 24h")
    assert fake.posts(ALERTS)[2]["blocks"][0]["type"] == "header"
    # the subscribed channel heard the alert, and after unsubscribing not the resolution
    assert [m["text"] for m in fake.posts(OPS)] == ["Alert: :rotating_light: gateway gpu down"]


async def test_subscriptions_choose_which_channels_get_task_cards(board: Board, fake: FakeSlack) -> None:
    ex = Executor(board, audit_commands=True)
    ex.execute(parse("subscribe tasks"), slack_actor(channel="CWATCH"))
    from_cli = board.add(NewTask(title="From a script"), "cli:alice")  # no chat origin
    from_slack = board.add(NewTask(title="From Slack", origin=f"slack:{OPS}"), "slack:UOPS")
    await deliver_until(deliverer(board), lambda: not undelivered(board))
    assert {m["metadata"]["event_payload"]["task_id"] for m in top_level(fake, "CWATCH")} == {
        from_cli.id,
        from_slack.id,
    }
    assert [m["metadata"]["event_payload"]["task_id"] for m in top_level(fake, OPS)] == [from_slack.id]

    ex.execute(parse("unsubscribe tasks"), slack_actor(channel="CWATCH"))
    board.cancel(from_cli.id, "cli:alice")
    assert not undelivered(board)  # nobody wants to hear about it any more
    board.cancel(from_slack.id, "slack:UOPS")
    assert {r.channel for r in undelivered(board)} == {OPS}


async def test_a_deleted_card_is_posted_again_and_followed(board: Board, fake: FakeSlack) -> None:
    task = board.add(NewTask(title="Phoenix", origin=f"slack:{OPS}"), "slack:UOPS")
    d = deliverer(board)
    await deliver_until(d, lambda: not undelivered(board))
    [old] = top_level(fake, OPS)
    fake.messages[OPS].remove(old)  # someone deleted the card in Slack
    board.block(task.id, "slack:UOPS", "")
    await deliver_until(d, lambda: not undelivered(board))
    [new] = top_level(fake, OPS)
    assert new["ts"] != old["ts"] and ":no_entry: *blocked*" in str(new["blocks"])
    with board.db.read() as conn:
        assert conn.execute(select(cards.c.message_ref)).scalar_one() == new["ts"]
    assert [m["text"] for m in replies(fake, OPS, new["ts"])] == [f"#{task.id} blocked (by slack:UOPS)"]


async def test_a_channel_the_app_cannot_post_to_is_refused_for_good_with_the_reason(
    board: Board, fake: FakeSlack
) -> None:
    fake.closed_channels.add("CPRIVATE")
    board.add(NewTask(title="Nobody will see this", origin="slack:CPRIVATE"), "slack:UOPS")
    await deliver_until(deliverer(board), lambda: not undelivered(board))
    [row] = rows(board)
    assert row.state == "dead" and "not_in_channel" in row.last_error and "/invite" in row.last_error
    assert fake.posts() == []


async def test_a_busy_channel_does_not_hold_back_the_others(board: Board, fake: FakeSlack) -> None:
    for n in range(60):  # a burst of cards to one channel: a minute of posting at Slack's pace
        board.add(NewTask(title=f"Bulk {n}", origin=f"slack:{OPS}"), "cli:import")
    board.notify(
        "alerts", "alerts", "alert", ":rotating_light: gateway gpu down", {"key": "gw"}, outbox_kind="alert"
    )
    await deliver_until(deliverer(board, interval=0.02), lambda: not undelivered(board))
    posted_to = [c.args["channel"] for c in fake.calls_to("chat.postMessage")]
    assert len(posted_to) == 61
    assert posted_to.index(ALERTS) < 15  # in the first round, not after the burst
