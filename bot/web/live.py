"""Live updates for open board pages: one hub per process, server-sent events out.

The hub wakes on the same signals as the dispatcher: this process's commits (the
board's listeners) and other processes' (PostgreSQL NOTIFY or SQLite's data_version,
through ``serve``'s wake bus). Every change on the board is an event row, so after a
wake-up the hub reads the events it has not seen, renders the cards of their tasks
once, and sends the same bytes to every open page. Twenty pages cost what one does.

PostgreSQL may commit event ids out of order, so the hub re-reads a short tail below
its cursor and skips the ids it has already seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lanewarden.bot.web.columns import Card, column_counts, load_cards
from lanewarden.bot.web.strip import Strip, load_strip
from lanewarden.core.board import Board
from lanewarden.core.schema import events
from sqlalchemy import Connection, func, select

log = logging.getLogger("lanewarden.web.live")

TAIL = 64  # event ids below the cursor read again (transactions that committed late)
MAX_CARDS = 300  # more changed tasks than this in one go: pages reload their columns instead
QUEUE_DEPTH = 32  # messages a slow page may fall behind before it is dropped (it reconnects)
KEEPALIVE_SECONDS = 15.0


@dataclass(eq=False)
class Listener:
    """One open page's stream."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_DEPTH))
    closed: bool = False  # the stream ends at its next message

    def send(self, message: bytes) -> bool:
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            return False

    def end(self) -> None:
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass  # the stream is reading a full queue: it sees ``closed`` at its next message


def sse(event: str, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = "".join(f"data: {line}\n" for line in payload.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


class LiveHub:
    def __init__(
        self,
        board: Board,
        render_card: Callable[[Card], str],
        render_strip: Callable[[Strip], str],
        *,
        debounce: float = 0.05,
        strip_every: float = 5.0,
        strip_min_gap: float = 2.0,
    ) -> None:
        self.board = board
        self.render_card = render_card
        self.render_strip = render_strip
        self.debounce = debounce
        self.strip_every = strip_every
        self.strip_min_gap = strip_min_gap
        self.listeners: set[Listener] = set()
        self.cursor: int | None = None
        self._seen: set[int] = set()
        self._strip_html: str | None = None
        self._strip_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self.refreshes = 0  # for the benchmark and the tests

    # ------------------------------------------------------------- wake-ups

    def wake(self, topic: str = "board") -> None:
        """Thread-safe; any topic may mean the board changed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # loop closing
            pass

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.strip_every)
                changed = True
            except TimeoutError:
                changed = False
            if not self.listeners:
                self._changed.clear()
                self.cursor = None  # read afresh when someone opens a page
                continue
            await asyncio.sleep(self.debounce)  # a burst of commits becomes one message
            self._changed.clear()
            try:
                await self._refresh(cards=changed)
            except Exception as exc:  # the database may be away; pages keep their last view
                log.warning("live board refresh failed: %s", type(exc).__name__)

    async def _refresh(self, *, cards: bool) -> None:
        self.refreshes += 1
        messages: list[bytes] = []
        if cards or self.cursor is None:
            message = await asyncio.to_thread(self._card_message)
            if message is not None:
                messages.append(message)
        now = time.monotonic()
        if now - self._strip_at >= (self.strip_min_gap if cards else self.strip_every * 0.9):
            self._strip_at = now
            strip = await asyncio.to_thread(load_strip, self.board.db, self.board.config)
            html = self.render_strip(strip)
            if html != self._strip_html:
                self._strip_html = html
                messages.append(sse("strip", html))
        for message in messages:
            self.broadcast(message)

    def _card_message(self) -> bytes | None:
        db, config = self.board.db, self.board.config
        with db.read() as conn:
            if self.cursor is None:
                self._start_at_head(conn)
                return None
            rows = conn.execute(
                select(events.c.id, events.c.task_id)
                .where(events.c.id > self.cursor - TAIL)
                .order_by(events.c.id)
                .limit(MAX_CARDS * 4)
            ).all()
            fresh = [r for r in rows if r.id not in self._seen]
            if not fresh:
                return None
            self._seen.update(r.id for r in fresh)
            self.cursor = max(self.cursor, max(r.id for r in fresh))
            self._seen = {i for i in self._seen if i > self.cursor - TAIL}
            task_ids = {r.task_id for r in fresh if r.task_id is not None}
            if len(task_ids) > MAX_CARDS or len(rows) == MAX_CARDS * 4:
                # a flood (a promote-batch of thousands): pages reload their columns once
                self._start_at_head(conn)
                return sse("resync", {"cursor": self.cursor})
            cards = load_cards(conn, config, task_ids)
            counts = column_counts(conn, config)
        payload = {
            "cursor": self.cursor,
            "counts": counts,
            "cards": [
                {
                    "id": c.task.id,
                    "column": c.column,
                    "sort": c.sort_key,
                    "html": self.render_card(c) if c.column else "",
                }
                for c in cards
            ],
        }
        return sse("cards", payload)

    def _start_at_head(self, conn: Connection) -> None:
        cursor = conn.execute(select(func.max(events.c.id))).scalar() or 0
        self.cursor = cursor
        self._seen = set(conn.execute(select(events.c.id).where(events.c.id > cursor - TAIL)).scalars())

    # ------------------------------------------------------------- listeners

    def broadcast(self, message: bytes) -> None:
        for listener in list(self.listeners):
            if not listener.send(message):
                # too far behind: end its stream; the page reconnects and resyncs
                self.listeners.discard(listener)
                listener.end()

    def add(self) -> Listener:
        listener = Listener()
        self.listeners.add(listener)
        if self.cursor is None:
            self._changed.set()  # learn the cursor now, not at the next timeout
        return listener

    def remove(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for listener in list(self.listeners):
            listener.end()
        self.listeners.clear()

    def strip_html(self) -> str | None:
        return self._strip_html
