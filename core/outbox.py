"""Delivering the outbox to chat: never lost, never duplicated, about one message per
second per channel.

Rows are written in the same transaction as the events that caused them
(core/notifications.py). The leader delivers them through one ``OutboxSink`` per chat
adapter:

1. A due row is marked ``sending`` (with a claim that expires) in its own transaction.
2. The sink posts it, carrying the row id as an idempotency key (Slack message
   metadata, Discord's enforced nonce).
3. The row is marked ``delivered`` with the remote message reference.

A crash between 2 and 3 leaves a ``sending`` row whose claim expires; before sending
it again the sink is asked whether the message already exists (``find_delivered``),
so nothing is posted twice. Rate limits (429 + Retry-After) and server errors retry
with backoff and never drop a row; only a permanent refusal (unknown channel, no
permission) marks it ``dead``, with the reason kept.

A card row posts the task's card if the channel has none yet and edits it otherwise,
rendered from the task *as it is now*, so the newest pending card row says it all
(older ones are superseded when they are written). Update rows reply in the card's
thread, so they wait until their card exists.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from lanewarden.core.board import Board
from lanewarden.core.clock import utcnow
from lanewarden.core.schema import cards, outbox
from lanewarden.core.tasks import Task
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.outbox")

CLAIM_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 300.0
PER_CHANNEL_ROUND = 10  # rows one channel may take in one delivery round


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    adapter: str
    channel: str
    kind: str  # card | update | alert | digest | message
    task_id: int | None
    payload: dict[str, Any]
    attempts: int
    state: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> OutboxItem:
        return cls(
            row.id,
            row.adapter,
            row.channel,
            row.kind,
            row.task_id,
            row.payload or {},
            row.attempts,
            row.state,
            row.created_at,
        )


@dataclass(frozen=True, slots=True)
class Card:
    """Where a task's card lives in one channel."""

    message_ref: str
    thread_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the sink did: the message it created or edited."""

    message_ref: str
    thread_ref: str | None = None


class RateLimited(Exception):
    def __init__(self, retry_after: float | None, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(Exception):
    """A 5xx, a timeout, a dropped connection: try again later."""


class PermanentError(Exception):
    """The chat service refused for good (unknown channel, missing permission)."""


class OutboxSink(Protocol):
    adapter: str

    async def deliver(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        """Post or edit. ``card`` is the existing card for card/update rows, if any."""
        ...

    async def find_delivered(self, item: OutboxItem, card: Card | None) -> Delivery | None:
        """After a crash mid-send: the message this row already produced, if any."""
        ...


class OutboxDeliverer:
    def __init__(
        self,
        board: Board,
        sinks: dict[str, OutboxSink],
        owner: str,
        *,
        per_channel_interval: float = 1.0,
        batch: int = 50,
    ) -> None:
        self.board = board
        self.db = board.db
        self.sinks = sinks
        self.owner = owner
        self.per_channel_interval = per_channel_interval
        self.batch = batch
        self._next_send: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()

    def wake(self, _topic: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self.deliver_due()
            except DBAPIError as exc:
                log.warning("outbox: database unavailable: %s", exc.orig)
                delay = 2.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def deliver_due(self) -> float:
        """Deliver what is due now; return how long until something may be due again."""
        items = await asyncio.to_thread(self._due)
        if not items:
            return 1.0
        by_channel: dict[tuple[str, str], list[OutboxItem]] = {}
        for item in items:
            by_channel.setdefault((item.adapter, item.channel), []).append(item)
        await asyncio.gather(*(self._deliver_channel(key, queue) for key, queue in by_channel.items()))
        return 0.05

    def _due(self) -> list[OutboxItem]:
        now = utcnow()
        adapters = list(self.sinks)
        if not adapters:
            return []
        # the oldest rows of *each* channel: a burst to one busy channel (about one message a
        # second) must not hold back every other channel's rows, alerts included
        channel_rank = (
            func.row_number()
            .over(partition_by=(outbox.c.adapter, outbox.c.channel), order_by=outbox.c.id)
            .label("channel_rank")
        )
        ranked = (
            select(outbox, channel_rank)
            .where(
                outbox.c.adapter.in_(adapters),
                ((outbox.c.state == "pending") & (outbox.c.next_attempt_at <= now))
                | ((outbox.c.state == "sending") & (outbox.c.claim_expires_at < now)),
            )
            .subquery()
        )
        query = (
            select(ranked)
            .where(ranked.c.channel_rank <= PER_CHANNEL_ROUND)
            .order_by(ranked.c.id)
            .limit(self.batch)
        )
        with self.db.read() as conn:
            return [OutboxItem.from_row(r) for r in conn.execute(query)]

    async def _deliver_channel(self, key: tuple[str, str], queue: list[OutboxItem]) -> None:
        """One channel, in order, at most one message per interval."""
        sink = self.sinks[key[0]]
        for item in cards_first(queue):
            wait = self._next_send.get(key, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            outcome = await self._deliver_one(sink, item)
            if outcome == "blocked":
                return  # keep the channel's order: the rest waits for the next round
            if outcome == "sent":
                self._next_send[key] = time.monotonic() + self.per_channel_interval

    async def _deliver_one(self, sink: OutboxSink, item: OutboxItem) -> str:
        recovering = item.state == "sending"
        if not await asyncio.to_thread(self._claim, item):
            return "skipped"  # delivered, superseded or claimed meanwhile
        task = await asyncio.to_thread(self._task, item.task_id) if item.task_id else None
        card = await asyncio.to_thread(self._card, item) if item.task_id else None
        if item.kind == "update" and card is None and await asyncio.to_thread(self._card_pending, item):
            # its card is not posted yet: put the row back and let the card go first
            await asyncio.to_thread(self._retry, item, 0.5, "waiting for the task's card", count=False)
            return "blocked"
        try:
            delivery = await sink.find_delivered(item, card) if recovering else None
            if delivery is None:
                delivery = await sink.deliver(item, task, card)
        except RateLimited as exc:
            delay = exc.retry_after if exc.retry_after is not None else _backoff(item.attempts)
            log.info(
                "outbox %d to %s:%s rate limited; retry in %.1fs", item.id, item.adapter, item.channel, delay
            )
            await asyncio.to_thread(self._retry, item, delay, str(exc))
            self._next_send[(item.adapter, item.channel)] = time.monotonic() + delay
            return "blocked"
        except PermanentError as exc:
            log.error("outbox %d to %s:%s refused for good: %s", item.id, item.adapter, item.channel, exc)
            await asyncio.to_thread(self._dead, item, str(exc))
            return "dead"
        except Exception as exc:  # transient by default: never drop a notification on a surprise
            delay = _backoff(item.attempts)
            log.warning(
                "outbox %d to %s:%s failed (%s); retry in %.1fs",
                item.id,
                item.adapter,
                item.channel,
                exc,
                delay,
            )
            await asyncio.to_thread(self._retry, item, delay, f"{type(exc).__name__}: {exc}")
            return "blocked"
        await asyncio.to_thread(self._delivered, item, delivery)
        return "sent"

    # ------------------------------------------------------------ database

    def _claim(self, item: OutboxItem) -> bool:
        now = utcnow()
        with self.db.write() as conn:
            changed = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == item.id, outbox.c.state == item.state, outbox.c.attempts == item.attempts
                )
                .values(
                    state="sending",
                    claimed_by=self.owner,
                    claim_expires_at=now + timedelta(seconds=CLAIM_SECONDS),
                )
            ).rowcount
        return bool(changed)

    def _delivered(self, item: OutboxItem, delivery: Delivery) -> None:
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item.id)
                .values(
                    state="delivered",
                    delivered_at=now,
                    remote_ref=delivery.message_ref,
                    attempts=outbox.c.attempts + 1,
                    last_error=None,
                )
            )
            if item.kind == "card" and item.task_id is not None:
                exists = conn.execute(
                    select(cards.c.message_ref).where(
                        cards.c.task_id == item.task_id,
                        cards.c.adapter == item.adapter,
                        cards.c.channel == item.channel,
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        insert(cards).values(
                            task_id=item.task_id,
                            adapter=item.adapter,
                            channel=item.channel,
                            message_ref=delivery.message_ref,
                            thread_ref=delivery.thread_ref,
                        )
                    )
                elif exists.message_ref != delivery.message_ref:
                    # the old card was deleted in the chat and the sink posted a new one:
                    # later edits and thread replies must go to the new message
                    conn.execute(
                        update(cards)
                        .where(
                            cards.c.task_id == item.task_id,
                            cards.c.adapter == item.adapter,
                            cards.c.channel == item.channel,
                        )
                        .values(message_ref=delivery.message_ref, thread_ref=delivery.thread_ref)
                    )

    def _retry(self, item: OutboxItem, delay: float, error: str, *, count: bool = True) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item.id)
                .values(
                    state="pending",
                    claimed_by=None,
                    claim_expires_at=None,
                    attempts=outbox.c.attempts + (1 if count else 0),
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    last_error=error[:2000],
                )
            )

    def _card_pending(self, item: OutboxItem) -> bool:
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(outbox.c.id)
                    .where(
                        outbox.c.task_id == item.task_id,
                        outbox.c.adapter == item.adapter,
                        outbox.c.channel == item.channel,
                        outbox.c.kind == "card",
                        outbox.c.state.in_(("pending", "sending")),
                    )
                    .limit(1)
                ).first()
                is not None
            )

    def _dead(self, item: OutboxItem, error: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item.id)
                .values(state="dead", attempts=outbox.c.attempts + 1, last_error=error[:2000])
            )

    def _task(self, task_id: int) -> Task | None:
        try:
            return self.board.get(task_id)
        except Exception:
            return None

    def _card(self, item: OutboxItem) -> Card | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(cards.c.message_ref, cards.c.thread_ref).where(
                    cards.c.task_id == item.task_id,
                    cards.c.adapter == item.adapter,
                    cards.c.channel == item.channel,
                )
            ).first()
        return None if row is None else Card(row.message_ref, row.thread_ref)


def cards_first(queue: list[OutboxItem]) -> list[OutboxItem]:
    """Channel order, except that a task's pending card goes before its thread replies."""
    last_card = {item.task_id: item for item in queue if item.kind == "card"}
    ordered: list[OutboxItem] = []
    placed: set[int] = set()
    for item in queue:
        if item.kind == "update" and item.task_id in last_card and last_card[item.task_id].id not in placed:
            ordered.append(last_card[item.task_id])
            placed.add(last_card[item.task_id].id)
        if item.id not in placed:
            ordered.append(item)
            placed.add(item.id)
    return ordered


def _backoff(attempts: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 1.0 * 2**attempts) * random.uniform(0.8, 1.2)
