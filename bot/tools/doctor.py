"""``lanewarden doctor``: the operator checklist as one command.

One line per check, ``ok``, ``WARN`` or ``FAIL``, with what to do after ``->``:

* config: the file parses and validates; keys the environment must provide are there;
* database: reachable, and migrated to the revision this version needs;
* processes and leader: which ``serve`` processes heartbeat, and that exactly one of
  them holds each lease. A lease past its expiry is stale; a valid lease whose holder
  is not a live process of this board is a second claimant (a hung process, another
  program, or a copy of the database). What doctor cannot see is what a process
  *believes* in memory: holders act only within a margin inside their lease, so the
  row is the truth it checks;
* gateways: reachable, and what each server reports (its queue, slots, KV cache,
  loaded models), with the settings that contradict it (a cap above llama.cpp's slots,
  a model spilling onto the CPU, a queue building up inside the server);
* caps against the last hour: the peak of concurrent runs per gateway, rebuilt from
  the runs' claimed/finished times, and how long each sat at its cap;
* queue shape and the outbox (dead notifications, deliveries that stall).

Exit status: 0 when every check is ok, 1 when there are warnings, 2 on a failure.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lanewarden.bot.tools.doctor_gateways import check_gateways
from lanewarden.bot.tools.doctor_nodes import check_nodes
from lanewarden.bot.tools.doctor_report import EXIT_STATUS, FAIL, OK, WARN, Report, ago, first_line
from lanewarden.core.caps import Limits, Usage, config_disagreements
from lanewarden.core.config import LanewardenConfig, config_search_path, load_config
from lanewarden.core.db import SCHEMA_REVISION, Database, current_revision
from lanewarden.core.errors import LanewardenError
from lanewarden.core.liveness import SKEW_WARN_SECONDS, database_now, describe_skew, skew_is_large
from lanewarden.core.nodes import NodeView
from lanewarden.core.readmodel import (
    Interval,
    OldestWaiting,
    OutboxDepth,
    concurrency,
    live_dispatchers,
    live_window,
    node_views,
    oldest_dispatchable,
    outbox_depth,
    released_count,
    run_intervals,
    task_counts,
)
from lanewarden.core.schema import dispatchers, events, gateway_state, leases, outbox, runs, tasks
from lanewarden.core.statuses import TASK_STATUSES, Outcome, Status
from lanewarden.core.windows import check_jobs
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

PEAK_WINDOW = timedelta(hours=1)
CRASH_MEMORY = timedelta(hours=1)  # a process that died longer ago than this is history, not news
STALLED_OUTBOX = timedelta(minutes=10)


def doctor(config_path: str | None, out: Callable[[str], None] | None = None) -> int:
    report = Report(out or (lambda line: print(line, flush=True)))
    config = check_config(report, config_path)
    if config is not None:
        db = check_database(report, config)
        try:
            state = None
            if db is not None:
                try:
                    state = board_state(db, config)
                except DBAPIError as exc:  # it answered a moment ago: gone, or a schema we cannot read
                    report.add(FAIL, "database", f"reading the board failed: {first_line(exc.orig)}")
            if state is not None:
                check_processes_and_leader(report, config, state)
            check_gateways(report, config, state)
            check_nodes(report, config, state)
            if state is not None:
                check_caps(report, config, state)
                check_queue(report, config, state)
                check_outbox(report, state)
        finally:
            if db is not None:
                db.dispose()
    failures = sum(1 for c in report.checks if c.level == FAIL)
    warnings = sum(1 for c in report.checks if c.level == WARN)
    if failures or warnings:
        report.out(f"doctor: {failures} failure(s), {warnings} warning(s)")
    else:
        report.out("doctor: all checks passed")
    return EXIT_STATUS[report.worst]


# ---------------------------------------------------------------------- config


def check_config(report: Report, config_path: str | None) -> LanewardenConfig | None:
    try:
        config, path = load_config(config_path)
    except LanewardenError as exc:
        report.add(
            FAIL,
            "config",
            str(exc),
            "fix the key named above (`lanewarden init --path /tmp/example.toml` writes a commented example)",
        )
        return None
    if path is None:
        searched = ", ".join(str(p) for p in config_search_path(config_path))
        report.add(OK, "config", f"no file found ({searched}): built-in defaults, a local Ollama")
    else:
        report.add(
            OK, "config", f"{path}: {len(config.gateways)} gateway(s), {len(config.profiles)} profile(s)"
        )
    for name, gw in sorted(config.gateways.items()):
        if gw.api_key_env and not os.environ.get(gw.api_key_env):
            report.add(
                WARN,
                "config",
                f"gateways.{name}.api_key_env = {gw.api_key_env!r} but ${gw.api_key_env} is not set here",
                f"export {gw.api_key_env} in the environment of every `lanewarden serve` (and of doctor)",
            )
    chat = [name for name in ("SLACK_BOT_TOKEN", "DISCORD_TOKEN") if os.environ.get(name)]
    if chat and not config.access.admins:
        report.add(
            WARN,
            "access",
            f"{' and '.join(chat)} set but [access] names no admin: nobody can change caps, "
            "pauses or windows from chat",
            'add one under [access] admins (e.g. "slack:U0123ABCD"), or `lanewarden init --admin ...`',
        )
    try:
        check_jobs(config)  # the grammar's verdict on every job, before serve refuses to start
    except LanewardenError as exc:
        report.add(FAIL, "config", str(exc), "fix the job's command (`lanewarden help COMMAND`)")
    default = config.kanban.workers.profile
    if config.profiles and default not in config.profiles:
        report.add(
            WARN,
            "config",
            f"kanban.workers.profile = {default!r} is not a configured profile: "
            "`add` without --profile fails",
            f"set it to one of {', '.join(sorted(config.profiles))}",
        )
    return config


# -------------------------------------------------------------------- database


def check_database(report: Report, config: LanewardenConfig) -> Database | None:
    missing = _missing_sqlite_file(config.board.url)
    if missing is not None:
        report.add(
            FAIL,
            "database",
            f"{missing}: no board database at this path",
            "run `lanewarden db upgrade` (or `lanewarden init`), or fix board.url",
        )
        return None
    try:
        db = Database(config.board.url)
    except LanewardenError as exc:
        report.add(FAIL, "database", str(exc), "fix board.url")
        return None
    where = db.describe()
    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        if db.is_sqlite and "not a database" in str(exc.orig):
            message = f"{where}: not a board database (corrupt, or another kind of file)"
            fix = "restore it from a backup, or point board.url at a new file and run `lanewarden db upgrade`"
        else:
            message = f"{where}: unreachable: {first_line(exc.orig)}"
            fix = "start the database server or fix board.url; leader, queue, caps and outbox checks need it"
        report.add(FAIL, "database", message, fix)
        db.dispose()
        return None
    revision = current_revision(db)
    if revision == SCHEMA_REVISION:
        report.add(OK, "database", f"{where}: reachable, schema at revision {revision}")
        return db
    if revision is None:
        message, fix = "reachable but not initialised (no schema)", "run `lanewarden db upgrade`"
    elif revision.isdigit() and SCHEMA_REVISION.isdigit() and int(revision) > int(SCHEMA_REVISION):
        message = f"schema at revision {revision}, newer than this lanewarden ({SCHEMA_REVISION})"
        fix = "upgrade lanewarden on this host to the version that migrated the board"
    else:
        message = f"schema at revision {revision}, this version needs {SCHEMA_REVISION}"
        fix = "run `lanewarden db upgrade` (serve also migrates on start)"
    report.add(FAIL, "database", f"{where}: {message}", fix)
    db.dispose()
    return None


def _missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file named by ``url`` when it does not exist (connecting would create it,
    and doctor must not leave an empty board behind)."""
    try:
        parsed = make_url(url)
    except Exception:  # Database() reports a malformed URL
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    return None if path.exists() else path


# ----------------------------------------------------------------- board state


@dataclass(slots=True)
class BoardState:
    """One read of everything the DB-based checks look at (figures from core/readmodel.py)."""

    now: datetime
    limits: Limits
    usage: Usage
    processes: list[Any]  # every dispatcher row, stopped and vanished ones too
    live: list[Any]  # the live ones, as every report counts them
    leases: list[Any]
    gateway_rows: dict[str, Any]
    counts: dict[str, int]
    waiting_by_profile: dict[str, dict[str, int]]  # profile -> {status: count} for unfinished tasks
    released: int
    oldest: OldestWaiting | None  # the oldest dispatchable task
    intervals: dict[str | None, list[Interval]]  # runs of the peak window, per gateway
    outbox: OutboxDepth
    last_dead: Any
    nodes: list[NodeView] = field(default_factory=list)  # what the leader last read of each host
    cap_changes: list[Any] = field(default_factory=list)  # caps_changed events of the peak window
    taken_back: int = 0  # runs reclaimed from a process that stopped heartbeating, same window


def board_state(db: Database, config: LanewardenConfig) -> BoardState:
    with db.read() as conn:
        now = database_now(conn)  # heartbeats and leases are on the database's clock
        since = now - PEAK_WINDOW
        by_profile: dict[str, dict[str, int]] = defaultdict(dict)
        for profile, status, count in conn.execute(
            select(tasks.c.profile, tasks.c.status, func.count()).group_by(tasks.c.profile, tasks.c.status)
        ):
            if status in (Status.BACKLOG, Status.READY, Status.ACTIVE, Status.BLOCKED):
                by_profile[profile][status] = int(count)
        last_dead = conn.execute(
            select(outbox.c.adapter, outbox.c.channel, outbox.c.last_error)
            .where(outbox.c.state == "dead")
            .order_by(outbox.c.id.desc())
            .limit(1)
        ).first()
        return BoardState(
            now=now,
            limits=Limits.load(conn, config),
            usage=Usage.load(conn),
            processes=conn.execute(select(dispatchers).order_by(dispatchers.c.started_at)).all(),
            live=live_dispatchers(conn, config, now),
            leases=conn.execute(select(leases).order_by(leases.c.name)).all(),
            gateway_rows={r.name: r for r in conn.execute(select(gateway_state))},
            counts=task_counts(conn),
            waiting_by_profile=dict(by_profile),
            released=released_count(conn),
            oldest=oldest_dispatchable(conn, now),
            intervals=run_intervals(conn, now - PEAK_WINDOW, now),
            outbox=outbox_depth(conn),
            last_dead=last_dead,
            nodes=node_views(conn, config),
            cap_changes=conn.execute(
                select(events.c.at, events.c.message, events.c.data)
                .where(events.c.kind == "caps_changed", events.c.at > since)
                .order_by(events.c.id)
            ).all(),
            taken_back=conn.execute(
                select(func.count()).where(runs.c.outcome == Outcome.LOST, runs.c.finished_at > since)
            ).scalar_one(),
        )


# ---------------------------------------------------------- processes, leader


def check_processes_and_leader(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    now = state.now
    stale_after = live_window(config)
    live = state.live
    live_ids = {p.id for p in live}
    vanished = [
        p
        for p in state.processes
        if p.state != "stopped" and stale_after < now - p.heartbeat_at <= CRASH_MEMORY + stale_after
    ]
    if live:
        described = ", ".join(f"{p.id} ({p.state}, {_skew(p)})" for p in live)
        report.add(OK, "processes", f"{len(live)} serve process(es) live: {described}")
        for p in live:
            skew = None if p.clock_skew_ms is None else p.clock_skew_ms / 1000
            if skew_is_large(skew):
                report.add(
                    WARN,
                    "clock",
                    f"{p.id} on {p.host}: {describe_skew(skew)} (more than {SKEW_WARN_SECONDS:g}s); "
                    "leases and windows use the database's clock and are safe, "
                    "but that host's logs and times are off",
                    f"fix the time on {p.host} (chrony/systemd-timesyncd)",
                )
    else:
        report.add(
            WARN,
            "processes",
            "no serve process is heartbeating on this board: nothing is dispatched",
            "start `lanewarden serve` (one or more hosts)",
        )
    for p in vanished:
        report.add(
            WARN,
            "processes",
            f"{p.id} stopped heartbeating {ago(now - p.heartbeat_at)} ago without shutting down "
            "(killed, crashed or cut off from the database)",
            "check that host's logs; its runs go back to ready when their lease expires",
        )

    ttl = timedelta(seconds=config.scheduler.leader_lease_seconds)
    rows = {row.name: row for row in state.leases}
    if "leader" not in rows:
        settled = [p for p in live if now - p.started_at > ttl]
        if settled:
            report.add(
                FAIL,
                "leader",
                f"no process holds the leader lease though {len(live)} process(es) are live: "
                "windows, alert rules and outbox delivery are not running",
                "look for 'leader lease check failed' in their logs",
            )
        elif live:
            report.add(OK, "leader", "no leader yet: the processes started moments ago")
        else:
            report.add(WARN, "leader", "no leader: no serve process is running", "start `lanewarden serve`")
    for name, row in sorted(rows.items()):
        check_lease(report, name, row, state, live_ids, ttl)


def check_lease(
    report: Report, name: str, row: Any, state: BoardState, live_ids: set[str], ttl: timedelta
) -> None:
    now = state.now
    label = "leader" if name == "leader" else f"lease {name}"
    term = f"term {row.term}"
    if row.expires_at <= now:
        expired = now - row.expires_at
        if not live_ids:
            report.add(
                WARN,
                label,
                f"stale lease: held by {row.holder} ({term}), expired {ago(expired)} ago; "
                "no serve process is running to take it over",
                "start `lanewarden serve`: it takes the lease over at once",
            )
        elif expired <= ttl:
            report.add(
                WARN,
                label,
                f"{row.holder}'s lease ({term}) expired {ago(expired)} ago: failover in progress",
                "run doctor again in a few seconds",
            )
        else:
            report.add(
                FAIL,
                label,
                f"stale lease: held by {row.holder} ({term}), expired {ago(expired)} ago, "
                f"and none of the {len(live_ids)} live process(es) took it over",
                "their lease loop cannot write to the database: check their logs",
            )
        return
    remaining = ago(row.expires_at - now)
    if row.holder in live_ids:
        report.add(OK, label, f"held by {row.holder} ({term}, expires in {remaining})")
        return
    known = {p.id: p for p in state.processes}
    others = ", ".join(sorted(live_ids)) or "none"
    holder = known.get(row.holder)
    if holder is None:
        why = "which is not a serve process of this board (no dispatcher row)"
        fix = (
            "find the program or host using this holder id (another board pointed at this database, "
            "or a restored copy); it blocks failover until the lease lapses"
        )
    else:
        why = f"whose process is {holder.state} with its last heartbeat {ago(now - holder.heartbeat_at)} ago"
        fix = f"check {holder.host} (pid {holder.pid}): hung or cut off from the database"
    report.add(
        FAIL,
        label,
        f"second claimant: the lease ({term}, expires in {remaining}) is held by {row.holder}, {why}; "
        f"live processes ({others}) cannot lead meanwhile",
        fix,
    )


# ------------------------------------------------------------------------ caps


def check_caps(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    differs = config_disagreements(state.limits)
    if differs:
        report.add(
            WARN,
            "caps config",
            f"this config's caps differ from the board's, which every process enforces: {differs}",
            "edit the config to match, or apply it to the board with `lanewarden caps reset <scope> [name]`",
        )
    since = state.now - PEAK_WINDOW
    by_gateway = state.intervals
    for name, window in sorted(state.limits.gateways.items()):
        curve = concurrency(by_gateway.get(name, []), since, state.now)
        runs_seen = len(by_gateway.get(name, []))
        text_ = f"peak {curve.peak} concurrent of cap {window.cap} in the last hour ({runs_seen} run(s))"
        if window.limit != window.cap:
            text_ += f"; window now {window.limit} (slow start or backoff)"
        if curve.peak > window.cap:
            report.add(
                WARN,
                f"caps {name}",
                text_
                + f": above the cap for {ago(timedelta(seconds=curve.seconds_at_or_above[window.cap + 1]))}",
                _over_cap_cause(state, "gateway", name),
            )
        elif curve.peak == window.cap and curve.peak > 0:
            at_cap = ago(timedelta(seconds=curve.seconds_at_or_above[window.cap]))
            report.add(
                OK,
                f"caps {name}",
                text_ + f": at the cap for {at_cap}, so the cap is what limits throughput "
                "(raise it only if the server shows headroom: no queue, KV cache not full)",
            )
        else:
            report.add(OK, f"caps {name}", text_)
    board_curve = concurrency((iv for ivs in by_gateway.values() for iv in ivs), since, state.now)
    level = OK if board_curve.peak <= state.limits.board_cap else WARN
    report.add(
        level,
        "caps board",
        f"peak {board_curve.peak} concurrent of max_active_tasks {state.limits.board_cap} in the last hour",
        "" if level == OK else _over_cap_cause(state, "board", ""),
    )


def _over_cap_cause(state: BoardState, scope: str, name: str) -> str:
    """Why more ran than the cap allows, from what the board recorded in the same hour."""
    changed = [
        e
        for e in state.cap_changes
        if isinstance(e.data, dict) and e.data.get("scope") == scope and e.data.get("name") == name
    ]
    if changed:
        last = changed[-1]
        return (
            f"the cap was changed while work ran ({last.message}, {ago(state.now - last.at)} ago): "
            "running work is never killed, so the excess drains as it finishes"
        )
    if state.taken_back:
        return (
            f"{state.taken_back} run(s) were taken back from a process that stopped heartbeating "
            "(kill -9, a host cut off from the database) while its agents may still have been running; "
            "check that the old process and its agents are gone"
        )
    return (
        "no cap change and no run taken back explains it: a process running an older Lanewarden "
        "(caps from its own config, leases on its host's clock) may share the board; "
        "check the processes in `status`, else report it as a bug"
    )


def _skew(process: Any) -> str:
    if process.clock_skew_ms is None:
        return "clock not measured"
    return f"clock {process.clock_skew_ms / 1000:+.1f}s"


# ----------------------------------------------------------------------- queue


def check_queue(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    counts = state.counts
    shape = ", ".join(f"{counts[s]} {s}" for s in TASK_STATUSES)
    extra = ""
    if not config.kanban.dispatcher.enabled:
        extra = f"; windowed mode: {state.released} of {counts['ready']} ready released"
    oldest_text = ""
    if state.oldest is not None:
        waited = ago(state.oldest.waited(state.now))
        oldest_text = f"; oldest dispatchable #{state.oldest.task_id} waits {waited}"
    report.add(OK, "queue", shape + extra + oldest_text)
    limits = state.limits
    unknown = {
        profile: statuses
        for profile, statuses in state.waiting_by_profile.items()
        if profile not in config.profiles
    }
    if unknown:
        described = ", ".join(
            f"{profile} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"
            for profile, statuses in sorted(unknown.items())
        )
        report.add(
            WARN,
            "queue",
            f"tasks on profiles missing from the config never start: {described}",
            "add those [profiles.*] back, or move/cancel the tasks",
        )
    if limits.is_paused("board", "") and counts["ready"]:
        report.add(
            WARN, "queue", f"the board is paused with {counts['ready']} ready task(s)", "`lanewarden resume`"
        )
    for profile, statuses in sorted(state.waiting_by_profile.items()):
        ready = statuses.get("ready", 0)
        if not ready or profile not in config.profiles:
            continue
        gateway = config.profiles[profile].gateway
        if limits.is_paused("profile", profile):
            report.add(
                WARN,
                "queue",
                f"profile {profile} is paused with {ready} ready task(s)",
                f"`lanewarden resume --profile {profile}`",
            )
        elif gateway is not None and limits.is_paused("gateway", gateway):
            report.add(
                WARN,
                "queue",
                f"gateway {gateway} is paused with {ready} ready task(s) of profile {profile}",
                f"`lanewarden resume --gateway {gateway}`",
            )
    if state.oldest is not None and config.kanban.dispatcher.enabled:
        age = state.oldest.waited(state.now)
        limit = timedelta(seconds=config.alerts.oldest_ready_seconds)
        if age > limit:
            report.add(
                WARN,
                "queue",
                f"dispatchable task #{state.oldest.task_id} has waited {ago(age)} "
                f"(alert threshold {ago(limit)})",
                f"`lanewarden show {state.oldest.task_id}` says why it is not starting",
            )


# ---------------------------------------------------------------------- outbox


def check_outbox(report: Report, state: BoardState) -> None:
    pending, dead = state.outbox.undelivered, state.outbox.dead
    oldest_pending = state.outbox.oldest_undelivered
    if dead:
        described = ", ".join(f"{a}: {n}" for a, n in sorted(dead.items()))
        last = state.last_dead
        why = f"; last: {last.adapter} {last.channel}: {first_line(last.last_error or '?')}" if last else ""
        report.add(
            WARN,
            "outbox",
            f"{sum(dead.values())} notification(s) refused for good ({described}){why}",
            "fix the channel or the bot's permissions; dead rows are kept for inspection",
        )
    if oldest_pending is not None and state.now - oldest_pending > STALLED_OUTBOX:
        report.add(
            WARN,
            "outbox",
            f"{sum(pending.values())} notification(s) undelivered, "
            f"the oldest for {ago(state.now - oldest_pending)}",
            "is a leader running with chat tokens set? its log says why deliveries retry",
        )
    elif not dead:
        depth = ", ".join(f"{a}: {n}" for a, n in sorted(pending.items())) or "empty"
        report.add(OK, "outbox", f"undelivered {depth}, none dead")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bot.doctor [--config PATH]``, for hosts without the console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    return doctor(path)


if __name__ == "__main__":
    raise SystemExit(main())
