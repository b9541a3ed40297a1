"""Wake-ups from other processes: PostgreSQL LISTEN/NOTIFY, or SQLite's data_version.

Inside one process the board wakes the dispatcher directly after each commit. Other
processes' commits arrive here: on PostgreSQL as NOTIFY on channel ``lanewarden``
(sent inside the committing transaction, delivered at commit); on SQLite by watching
``PRAGMA data_version``, which changes whenever another connection commits. Either
way the poll interval stays a safety net only.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

log = logging.getLogger("lanewarden.wakeup")
Wake = Callable[[str], None]
CHANNEL = "lanewarden"
# what Board.signal sends: claimable work changed, running work must stop, windows changed
TOPICS = ("dispatch", "stop", "windows")


class SqliteChangeWatcher:
    """A thread that polls ``PRAGMA data_version`` on its own connection."""

    def __init__(self, url: str, wake: Wake, interval: float = 0.02) -> None:
        self.path = make_url(url).database or ""
        self.wake = wake
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.path or self.path == ":memory:":
            return
        self._thread = threading.Thread(target=self._run, name="sqlite-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._stop.wait(self.interval):
                try:
                    current = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as exc:
                    log.debug("data_version poll failed: %s", exc)
                    continue
                if current != version:
                    version = current
                    # data_version says that something changed, not what: wake every topic
                    for topic in TOPICS:
                        self.wake(topic)
        finally:
            conn.close()


# the first retry after losing the LISTEN connection comes almost at once (a dropped
# connection or a quick restart), then retries slow down to one a second: a failed
# attempt against a down server costs almost nothing, and reconnecting wakes every loop
# of the process, so this bounds how long dispatch waits after the database is back
LISTEN_RETRY_FIRST = 0.1
LISTEN_RETRY_MAX = 1.0


class PostgresListener:
    """LISTEN on a dedicated connection; reconnects after the server restarts."""

    def __init__(self, url: str, wake: Wake) -> None:
        parsed = make_url(url)
        self.conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.wake = wake
        self.connected = asyncio.Event()

    async def run(self) -> None:
        import psycopg

        delay = LISTEN_RETRY_FIRST
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    delay = LISTEN_RETRY_FIRST
                    # anything may have happened while we were away
                    for topic in TOPICS:
                        self.wake(topic)
                    async for note in conn.notifies():
                        self.wake(note.payload or "dispatch")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(LISTEN_RETRY_MAX, delay * 2)
