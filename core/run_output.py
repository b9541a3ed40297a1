"""What each run printed, for ``logs``: stored as it streams, bounded, secrets redacted.

A runner hands its output to an ``OutputRecorder`` as it comes (a command's stdout and
stderr, an llm run's answer token by token); the dispatcher flushes it to ``run_output``
every ``FLUSH_SECONDS``, so any process (the CLI's ``logs --follow``, chat, another host)
reads it while the run goes on. Only the last ``MAX_RUN_OUTPUT_CHARS`` of a run are kept:
older chunks are deleted as new ones arrive. Each chunk is redacted like results are
(core/redaction.py); a chunk ends after a separator (a space, a line end), never inside
a run of token characters, so a secret is not split between two chunks where ``redact``
could not see it whole.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from lanewarden.core.db import Database
from lanewarden.core.redaction import TOKEN_CHARACTERS, redact, tail
from lanewarden.core.schema import run_output, runs
from lanewarden.core.tasks import Run
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# the last 64 KiB (characters) of each run are kept
MAX_RUN_OUTPUT_CHARS = 64 * 1024
# how often a running run's new output reaches the board
FLUSH_SECONDS = 0.5
# a word longer than this is written anyway, cut or not
MAX_HELD_WORD = 4096


class OutputRecorder:
    """One run's output on its way to the board. ``write`` is called on the event loop by
    the runner; ``flush`` runs in a worker thread (it touches the database)."""

    def __init__(self, run_id: int, hidden: list[str]) -> None:
        self.run_id = run_id
        self.hidden = hidden  # secret values to redact (core/redaction.py secret_values)
        self._pending: list[str] = []
        self._pending_chars = 0
        self._lost = False  # output dropped before it was written: the next chunk leaves a gap
        self._seq = 0
        self._stored: deque[tuple[int, int]] = deque()  # (seq, chars) of the chunks on the board
        self._stored_chars = 0
        # the last flush may overlap a periodic one still in its thread
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars > 4 * MAX_RUN_OUTPUT_CHARS:  # a flood between two flushes
            kept = tail("".join(self._pending).encode("utf-8"), 2 * MAX_RUN_OUTPUT_CHARS)  # no half token
            self._pending, self._pending_chars = [kept], len(kept)
            self._lost = True

    def flush(self, db: Database, now: datetime, *, final: bool = False) -> None:
        """Write what has come since the last flush (up to its last line end unless ``final``)."""
        with self._lock:
            self._flush(db, now, final)

    def _flush(self, db: Database, now: datetime, final: bool) -> None:
        held = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        if not held:
            return
        cut = len(held) if final else safe_cut(held)
        if cut == 0 and len(held) > MAX_HELD_WORD:
            cut = len(held)
        chunk, rest = held[:cut], held[cut:]
        if rest:
            self._pending.append(rest)
            self._pending_chars = len(rest)
        if not chunk:
            return
        cut_short = len(chunk) > MAX_RUN_OUTPUT_CHARS or self._lost
        self._lost = False
        if len(chunk) > MAX_RUN_OUTPUT_CHARS:  # never more than the bound, and no half token
            chunk = tail(chunk.encode("utf-8"), MAX_RUN_OUTPUT_CHARS)
        chunk = redact(chunk, self.hidden) or ""
        # a gap in the numbers says output was dropped, as deleting the oldest chunks does
        self._seq += 2 if cut_short else 1
        self._stored.append((self._seq, len(chunk)))
        self._stored_chars += len(chunk)
        dropped = 0
        while self._stored_chars > MAX_RUN_OUTPUT_CHARS and len(self._stored) > 1:
            seq, chars = self._stored.popleft()
            self._stored_chars -= chars
            dropped = seq
        try:
            with db.write() as conn:
                conn.execute(insert(run_output).values(run_id=self.run_id, seq=self._seq, at=now, text=chunk))
                if dropped:
                    conn.execute(
                        delete(run_output).where(
                            run_output.c.run_id == self.run_id, run_output.c.seq <= dropped
                        )
                    )
        except DBAPIError as exc:  # the output is for reading along; the run's result matters more
            log.warning("output of run %d not stored: %s", self.run_id, exc.orig)


def safe_cut(text: str) -> int:
    """Where ``text`` may be cut: after its last character that cannot be part of a token."""
    for index in range(len(text) - 1, -1, -1):
        char = text[index]
        if not (char.isalnum() or char in TOKEN_CHARACTERS):
            return index + 1
    return 0


@dataclass(frozen=True, slots=True)
class RunLog:
    """One run and what is kept of its output."""

    run: Run
    text: str
    dropped: bool  # earlier output was dropped (only the last MAX_RUN_OUTPUT_CHARS are kept)
    last_seq: int  # for following: chunks after this one are new

    def to_json(self) -> dict[str, object]:
        return {"run": self.run.to_json(), "output": self.text, "dropped": self.dropped}


def task_logs(conn: Connection, task_id: int, attempt: int | None = None) -> list[RunLog]:
    """Every run of a task (or one attempt) with its kept output, oldest run first."""
    query = select(runs).where(runs.c.task_id == task_id).order_by(runs.c.id)
    if attempt is not None:
        query = query.where(runs.c.attempt == attempt)
    found = []
    for row in conn.execute(query):
        chunks = conn.execute(
            select(run_output.c.seq, run_output.c.text)
            .where(run_output.c.run_id == row.id)
            .order_by(run_output.c.seq)
        ).all()
        first = chunks[0].seq if chunks else 1
        found.append(
            RunLog(
                Run.from_row(row),
                "".join(c.text for c in chunks),
                dropped=first > 1,
                last_seq=chunks[-1].seq if chunks else 0,
            )
        )
    return found


def output_after(conn: Connection, run_id: int, seq: int) -> list[tuple[int, str]]:
    """The chunks of one run written after chunk ``seq`` (``logs --follow``)."""
    rows = conn.execute(
        select(run_output.c.seq, run_output.c.text)
        .where(run_output.c.run_id == run_id, run_output.c.seq > seq)
        .order_by(run_output.c.seq)
    )
    return [(r.seq, r.text) for r in rows]


def stored_chars(conn: Connection, run_id: int) -> int:
    """How much of a run's output is on the board (the bound's test)."""
    return int(
        conn.execute(
            select(func.coalesce(func.sum(func.length(run_output.c.text)), 0)).where(
                run_output.c.run_id == run_id
            )
        ).scalar_one()
    )
