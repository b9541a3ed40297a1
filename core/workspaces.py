"""Where command agents work, and when their workspaces are removed.

Each run gets a directory of its own, keyed by board and run:
``<root>/<board key>/task-<id>-run-<run id>``, where the root is
``$LANEWARDEN_HOME/workspaces`` and the board key names the board database (its name
plus a hash of its URL), so task #1 of one board never sees what task #1 of another
left behind, and a retry never sees the files of the attempt before it.

Retention (``[kanban.workers] keep_workspaces``):

* ``"failed"`` (default): a run's workspace is removed when it ends, unless the task
  failed or timed out there (kept for a post-mortem);
* ``"all"``: every workspace is kept; ``"none"``: every one is removed;
* whatever is kept is removed after ``keep_workspaces_days`` (default 7), and a
  workspace whose run ended without its dispatcher (a crash) is removed by the next
  dispatcher of that board on the host, by the same rule. Open runs' workspaces are
  never touched.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url

KEEP_RULES = ("failed", "all", "none")
KEPT_WHEN_FAILED = ("failed", "timed_out")
_RUN_DIR = re.compile(r"^task-(\d+)-run-(\d+)$")


def board_key(url: str) -> str:
    """A directory name for a board: readable, and unique per database."""
    parsed = make_url(url)
    database = parsed.database or "memory"
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        database = str(Path(database).expanduser().resolve())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(database).stem)[:40].strip("-.") or "board"
    identity = parsed.set(database=database).render_as_string(hide_password=True)
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def run_directory(board_root: Path, task_id: int, run_id: int) -> Path:
    return board_root / f"task-{task_id}-run-{run_id}"


def keeps(outcome: str | None, rule: str) -> bool:
    if rule == "all":
        return True
    if rule == "none":
        return False
    return outcome in KEPT_WHEN_FAILED


def discard(path: Path, outcome: str | None, rule: str) -> bool:
    """After a run: remove its workspace unless the rule keeps it. True if removed."""
    if keeps(outcome, rule) or not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def run_ids_in(board_root: Path) -> dict[int, Path]:
    """The run directories under a board's root, by run id."""
    if not board_root.is_dir():
        return {}
    found = {}
    for entry in board_root.iterdir():
        match = _RUN_DIR.match(entry.name)
        if match and entry.is_dir():
            found[int(match.group(2))] = entry
    return found


def sweep(
    directories: dict[int, Path],
    outcomes: dict[int, str | None],
    open_runs: Iterable[int],
    rule: str,
    max_age_days: float,
) -> list[Path]:
    """Apply the retention rule to workspaces whose runs are over; return what was removed.

    ``outcomes`` holds the finished runs among ``directories``; a run in neither it nor
    ``open_runs`` is gone from the board (the task was deleted) and its workspace goes too."""
    still_open = set(open_runs)
    oldest = time.time() - max_age_days * 86400
    removed = []
    for run_id, path in directories.items():
        if run_id in still_open:
            continue
        try:
            expired = path.stat().st_mtime < oldest
        except OSError:  # removed meanwhile (another dispatcher of this board on this host)
            continue
        if expired or not keeps(outcomes.get(run_id), rule):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
