"""``lanewarden import hermes``: bring Hermes Kanban boards (one SQLite file each) over.

Hermes keeps a board in ``~/.hermes/kanban.db`` (named boards under
``~/.hermes/kanban/boards/<slug>/kanban.db``): tables ``tasks`` (text ids like
``t_ab12cd34``), ``task_links``, ``task_comments``, ``task_events`` and ``task_runs``.
Each task comes over once, keeping its title, body, assignee (as the profile), parents,
priority, result, comments and history, with its Hermes id in ``origin``
(``hermes:t_ab12cd34``), which makes a second run skip it and lets ``show t_ab12cd34``
find it. Hermes statuses map as docs/hermes.md explains (``STATUS_MAP``); nothing is
dispatched by the import itself. Every item that cannot be carried is reported.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lanewarden.core.board import Board
from lanewarden.core.clock import utcnow
from lanewarden.core.edits import MAX_ATTEMPTS_RANGE, PRIORITY_RANGE
from lanewarden.core.errors import LanewardenError
from lanewarden.core.schema import BODY_MAX, COMMENT_MAX, TITLE_MAX, events, task_links, tasks
from lanewarden.core.statuses import Status
from sqlalchemy import insert, select

ORIGIN_PREFIX = "hermes:"
ACTOR = "import:hermes"

# Hermes status -> (Lanewarden status, why, when it is not obvious)
STATUS_MAP: dict[str, tuple[str, str]] = {
    "triage": ("backlog", "was in triage: needs a person to shape it before it is promoted"),
    "todo": ("backlog", ""),  # with parents: ready, shown as waiting until they are done
    "scheduled": ("backlog", "was scheduled in Hermes: promote it (or add a window) when it is due"),
    "ready": ("ready", ""),
    "running": ("ready", "was running in Hermes when imported; it starts here when dispatched"),
    "blocked": ("blocked", ""),
    "review": ("blocked", "awaiting review in Hermes: `move ID done` accepts it, `unblock ID` runs it again"),
    "done": ("done", ""),
    "archived": ("done", "archived in Hermes"),  # cancelled when it never completed
}
# `kanban:` keys of Hermes' config.yaml and what becomes of them
CONFIG_CAPS = {
    "max_in_progress": ("board", "[kanban.dispatcher] max_active_tasks"),
    "max_in_progress_per_profile": ("profile", "[kanban.workers] max_parallel_per_profile"),
}
CONFIG_EXPLAINED = {
    "failure_limit": "becomes max_attempts of the imported tasks",
    "default_assignee": "becomes the profile of imported tasks that had no assignee (when configured here)",
    "dispatch_interval_seconds": "not needed: Lanewarden dispatches on every change "
    "(kanban.dispatcher.poll_interval_seconds is only a safety net)",
}


@dataclass
class HermesBoard:
    path: Path
    slug: str
    tasks: list[dict[str, Any]]
    links: list[tuple[str, str]]
    comments: list[dict[str, Any]]
    events: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    attachments: dict[str, int]
    subscriptions: int


@dataclass
class ImportReport:
    lines: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)
    imported: int = 0
    skipped: int = 0

    def text(self, dry_run: bool) -> str:
        out = list(self.lines)
        if self.not_carried:
            out.append(f"not carried ({len(self.not_carried)}):")
            out += [f"  - {item}" for item in self.not_carried]
        else:
            out.append("not carried: nothing")
        if dry_run:
            out.append("dry run: nothing was written")
        return "\n".join(out)


def read_board(path: Path) -> HermesBoard:
    """Read one Hermes board file, or raise one line saying why it cannot be read."""
    if not path.is_file():
        raise LanewardenError(f"cannot read Hermes board {path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = {"tasks", "task_links"} - present
            if missing:
                raise LanewardenError(
                    f"cannot read {path} as a Hermes board: no {', '.join(sorted(missing))} table"
                )
            board = HermesBoard(
                path=path,
                slug=_slug(path),
                tasks=[dict(r) for r in conn.execute("SELECT * FROM tasks ORDER BY created_at, id")],
                links=[(r[0], r[1]) for r in conn.execute("SELECT parent_id, child_id FROM task_links")],
                comments=_rows(conn, present, "task_comments", "created_at, id"),
                events=_rows(conn, present, "task_events", "created_at, id"),
                runs=_rows(conn, present, "task_runs", "started_at, id"),
                attachments={},
                subscriptions=0,
            )
            if "task_attachments" in present:
                for r in conn.execute("SELECT task_id, count(*) FROM task_attachments GROUP BY task_id"):
                    board.attachments[r[0]] = int(r[1])
            if "kanban_notify_subs" in present:
                board.subscriptions = int(
                    conn.execute("SELECT count(*) FROM kanban_notify_subs").fetchone()[0]
                )
            return board
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LanewardenError(f"cannot read {path} as a Hermes board: {exc}") from None


def _rows(conn: sqlite3.Connection, present: set[str], table: str, order: str) -> list[dict[str, Any]]:
    if table not in present:
        return []
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]


def _slug(path: Path) -> str:
    """``.../kanban/boards/<slug>/kanban.db`` is board <slug>; anything else is ``default``."""
    if path.parent.parent.name == "boards":
        return path.parent.name
    return "default"


def origin_of(board: HermesBoard, task_id: str) -> str:
    where = "" if board.slug == "default" else f"{board.slug}/"
    return f"{ORIGIN_PREFIX}{where}{task_id}"


def read_config(path: Path | None) -> dict[str, Any]:
    """The ``kanban:`` section of Hermes' config.yaml ({} when no file was named)."""
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.expanduser().read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LanewardenError(f"cannot read Hermes config {path}: {str(exc).splitlines()[0]}") from None
    section = loaded.get("kanban") if isinstance(loaded, dict) else None
    return section if isinstance(section, dict) else {}


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _clip(text: str | None, limit: int) -> tuple[str, bool]:
    text = text or ""
    return (text, False) if len(text) <= limit else (text[: limit - 1] + "…", True)


def import_hermes(
    board: Board, paths: Iterable[Path], config_path: Path | None = None, *, dry_run: bool = False
) -> ImportReport:
    """Import every board file; all are read before anything is written."""
    hermes_boards = [read_board(Path(p).expanduser()) for p in paths]
    kanban = read_config(config_path)
    report = ImportReport()
    profiles = board.config.profiles
    default_profile = board.config.default_profile
    fallback = kanban.get("default_assignee")
    if fallback and fallback not in profiles:
        report.not_carried.append(f"kanban.default_assignee {fallback!r}: not a profile here")
        fallback = None
    attempts = _attempts(kanban.get("failure_limit"))
    with board.db.read() as conn:
        known = {
            r.origin: r.id
            for r in conn.execute(
                select(tasks.c.id, tasks.c.origin).where(tasks.c.origin.like(f"{ORIGIN_PREFIX}%"))
            )
        }
    rows, links, history, ids = [], [], [], {}
    now = utcnow()
    for hb in hermes_boards:
        new = [t for t in hb.tasks if origin_of(hb, t["id"]) not in known]
        report.skipped += len(hb.tasks) - len(new)
        parents_of: dict[str, list[str]] = {}
        for parent, child in hb.links:
            parents_of.setdefault(child, []).append(parent)
        for t in new:
            rows.append(
                _task_row(hb, t, parents_of, profiles, fallback or default_profile, attempts, now, report)
            )
        fresh = {t["id"] for t in new}
        for parent, child in hb.links:
            if child in fresh:
                links.append((origin_of(hb, parent), origin_of(hb, child)))
        history += _history(hb, fresh)
        for tid, count in sorted(hb.attachments.items()):
            if tid in fresh:
                report.not_carried.append(
                    f"{tid}: {count} attachment(s) (files stay in Hermes' attachments dir)"
                )
        if hb.subscriptions:
            report.not_carried.append(
                f"{hb.path}: {hb.subscriptions} chat notification subscription(s) "
                "(use `subscribe` in the channel)"
            )
        report.lines.append(
            f"hermes board {hb.slug} ({hb.path}): {len(hb.tasks)} task(s), {len(new)} new, "
            f"{len(hb.tasks) - len(new)} already imported; "
            f"{sum(1 for _, c in hb.links if c in fresh)} link(s), "
            f"{sum(1 for c in hb.comments if c['task_id'] in fresh)} comment(s), "
            f"{sum(1 for r in hb.runs if r['task_id'] in fresh)} run(s), "
            f"{sum(1 for e in hb.events if e['task_id'] in fresh)} event(s)"
        )
    report.imported = len(rows)
    caps = _caps(board, kanban, report)
    if dry_run:
        return report
    with board.db.write() as conn:
        for row in rows:
            ids[row["origin"]] = conn.execute(insert(tasks).values(**row).returning(tasks.c.id)).scalar_one()
        resolved = {**known, **ids}
        for parent, child in links:
            if parent not in resolved:
                report.not_carried.append(
                    f"link {parent} -> {child}: the parent is not on the imported boards"
                )
                continue
            conn.execute(
                insert(task_links).values(
                    parent_id=resolved[parent], child_id=resolved[child], created_at=now
                )
            )
        entries = [
            {"task_id": resolved[h["origin"]], **{k: v for k, v in h.items() if k != "origin"}}
            for h in history
        ]
        if entries:
            conn.execute(insert(events), entries)
        if ids:
            board.record(
                conn, ACTOR, "imported", f"imported {len(ids)} task(s) from Hermes", data={"tasks": len(ids)}
            )
            board.signal(conn, "dispatch")
    for scope, name, value in caps:
        board.set_cap(scope, name, value, ACTOR)
    return report


def _attempts(failure_limit: Any) -> int:
    low, high = MAX_ATTEMPTS_RANGE
    try:
        return max(low, min(high, int(failure_limit)))
    except (TypeError, ValueError):
        return 3


def _task_row(
    hb: HermesBoard,
    t: dict[str, Any],
    parents_of: dict[str, list[str]],
    profiles: Any,
    fallback: str,
    attempts: int,
    now: datetime,
    report: ImportReport,
) -> dict[str, Any]:
    tid = t["id"]
    hermes_status = str(t.get("status") or "")
    status, _why = STATUS_MAP.get(hermes_status, ("backlog", ""))
    if hermes_status not in STATUS_MAP:
        report.not_carried.append(f"{tid}: unknown Hermes status {hermes_status!r}, imported to backlog")
    if hermes_status == "todo" and parents_of.get(tid):
        status = Status.READY  # waits on its parents here too, and starts once they are done
    if hermes_status == "archived" and not t.get("completed_at"):
        status = Status.CANCELLED
    assignee = t.get("assignee") or None
    profile = assignee or fallback
    if assignee and assignee not in profiles:
        report.not_carried.append(
            f"{tid}: profile {assignee!r} is not configured here; add [profiles.{assignee}]"
        )
    title, cut_title = _clip(" ".join(str(t.get("title") or tid).split()), TITLE_MAX)
    body, cut_body = _clip(t.get("body"), BODY_MAX)
    if cut_title or cut_body:
        report.not_carried.append(f"{tid}: {'title' if cut_title else 'body'} cut to Lanewarden's limit")
    low, high = PRIORITY_RANGE
    created = _when(t.get("created_at")) or now
    finished = _when(t.get("completed_at")) if status in (Status.DONE, Status.CANCELLED) else None
    if status in (Status.DONE, Status.CANCELLED) and finished is None:
        finished = created
    own_limit = t.get("max_retries")
    return {
        "title": title,
        "body": body,
        "profile": profile[:64],
        "priority": max(low, min(high, int(t.get("priority") or 0))),
        "status": status,
        "released": False,
        "blocked_from": "ready" if status == Status.BLOCKED else None,
        "attempts": 0,
        "max_attempts": _attempts(own_limit) if own_limit else attempts,
        "created_by": (f"hermes:{t.get('created_by')}" if t.get("created_by") else ACTOR)[:128],
        "origin": origin_of(hb, tid),
        "result": t.get("result"),
        "error": t.get("last_failure_error"),
        "created_at": created,
        "updated_at": now,
        "started_at": _when(t.get("started_at")),
        "finished_at": finished,
    }


def _history(hb: HermesBoard, fresh: set[str]) -> list[dict[str, Any]]:
    """Hermes comments, runs and events as Lanewarden events, at their original times."""
    found: list[dict[str, Any]] = []
    statuses = {t["id"]: t.get("status") for t in hb.tasks}
    for t in hb.tasks:
        if t["id"] not in fresh:
            continue
        status = str(t.get("status"))
        why = STATUS_MAP.get(status, ("", ""))[1]
        found.append(
            _event(hb, t["id"], _when(t.get("created_at")), ACTOR, "imported",
                   f"imported from Hermes {t['id']} ({status})" + (f": {why}" if why else ""),
                   {"hermes_id": t["id"], "hermes_status": status, "hermes_board": hb.slug})
        )  # fmt: skip
    for c in hb.comments:
        if c["task_id"] in fresh:
            body, _ = _clip(c.get("body"), COMMENT_MAX)
            author = f"hermes:{c.get('author') or 'unknown'}"[:128]
            found.append(
                _event(hb, c["task_id"], _when(c.get("created_at")), author, "commented", body, None)
            )
    for r in hb.runs:
        if r["task_id"] in fresh:
            outcome = r.get("outcome") or r.get("status") or "unknown"
            message = f"Hermes run {r['id']} by {r.get('profile') or '-'}: {outcome}"
            if r.get("summary"):
                message += f": {_clip(str(r['summary']), 500)[0]}"
            data = {
                k: r.get(k) for k in ("id", "profile", "status", "outcome", "error", "started_at", "ended_at")
            }
            found.append(
                _event(hb, r["task_id"], _when(r.get("started_at")), ACTOR, "hermes_run", message, data)
            )
    for e in hb.events:
        if e["task_id"] in fresh and e["task_id"] in statuses:
            kind = f"hermes_{str(e.get('kind') or 'event')[:40]}"
            found.append(
                _event(hb, e["task_id"], _when(e.get("created_at")), ACTOR, kind, f"Hermes {e.get('kind')}",
                       {"payload": e.get("payload"), "run_id": e.get("run_id")})
            )  # fmt: skip
    return found


def _event(
    hb: HermesBoard, task_id: str, at: datetime | None, actor: str, kind: str, message: str, data: Any
) -> dict[str, Any]:
    return {
        "origin": origin_of(hb, task_id),
        "at": at or utcnow(),
        "actor": actor,
        "kind": kind,
        "message": message,
        "data": data,
    }


def _caps(board: Board, kanban: dict[str, Any], report: ImportReport) -> list[tuple[str, str | None, int]]:
    """The config's caps as live caps (`caps set`), only where they differ; the rest reported."""
    limits, _ = board.limits()
    changes: list[tuple[str, str | None, int]] = []
    for key, value in kanban.items():
        if key in CONFIG_CAPS:
            scope, ours = CONFIG_CAPS[key]
            try:
                cap = int(value)
            except (TypeError, ValueError):
                report.not_carried.append(f"kanban.{key} = {value!r}: not a number")
                continue
            if scope == "board":
                if limits.board_cap != cap:
                    changes.append(("board", None, cap))
            else:
                changes += [
                    ("profile", p, cap) for p, now in sorted(limits.profile_caps.items()) if now != cap
                ]
            report.lines.append(f"kanban.{key} = {cap} -> {ours} = {cap} (set live with `caps set`)")
        elif key in CONFIG_EXPLAINED:
            report.lines.append(f"kanban.{key} = {value!r}: {CONFIG_EXPLAINED[key]}")
        else:
            report.not_carried.append(f"kanban.{key}: no Lanewarden equivalent (docs/hermes.md)")
    return changes
