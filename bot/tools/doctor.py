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

import asyncio
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import utcnow
from lanewarden.core.config import GatewayConfig, LanewardenConfig, config_search_path, load_config
from lanewarden.core.db import SCHEMA_REVISION, Database, current_revision
from lanewarden.core.errors import LanewardenError
from lanewarden.core.gateways import GatewayHealth, probe
from lanewarden.core.schema import TASK_STATUSES, dispatchers, gateway_state, leases, outbox, runs, tasks
from lanewarden.core.signals import Signals, read_signals
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

OK, WARN, FAIL = "ok", "WARN", "FAIL"
EXIT_STATUS = {OK: 0, WARN: 1, FAIL: 2}
PEAK_WINDOW = timedelta(hours=1)
CRASH_MEMORY = timedelta(hours=1)  # a process that died longer ago than this is history, not news
STALLED_OUTBOX = timedelta(minutes=10)
SERVER_QUEUE_KINDS = ("vllm", "llamacpp")


@dataclass(frozen=True, slots=True)
class Check:
    level: str
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{self.level:<4} {self.name}: {self.message}{tail}"


class Report:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.checks: list[Check] = []

    def add(self, level: str, name: str, message: str, fix: str = "") -> None:
        check = Check(level, name, message, fix)
        self.checks.append(check)
        self.out(check.line())

    @property
    def worst(self) -> str:
        levels = {c.level for c in self.checks}
        return FAIL if FAIL in levels else WARN if WARN in levels else OK


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
                    report.add(FAIL, "database", f"reading the board failed: {_first_line(exc.orig)}")
            if state is not None:
                check_processes_and_leader(report, config, state)
            check_gateways(report, config, state)
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
        report.add(
            FAIL,
            "database",
            f"{where}: unreachable: {_first_line(exc.orig)}",
            "start the database server or fix board.url; leader, queue, caps and outbox checks need it",
        )
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


def _first_line(value: Any) -> str:
    lines = str(value).strip().splitlines()
    return lines[0][:300] if lines else type(value).__name__


# ----------------------------------------------------------------- board state


@dataclass(slots=True)
class BoardState:
    """One read of everything the DB-based checks look at."""

    now: datetime
    limits: Limits
    usage: Usage
    processes: list[Any]
    leases: list[Any]
    gateway_rows: dict[str, Any]
    counts: dict[str, int]
    waiting_by_profile: dict[str, dict[str, int]]  # profile -> {status: count} for unfinished tasks
    released: int
    oldest_ready: Any
    runs: list[Any]  # (gateway, claimed_at, finished_at) of the peak window
    outbox_rows: list[Any]  # (adapter, state, count, oldest created_at)
    last_dead: Any


def board_state(db: Database, config: LanewardenConfig) -> BoardState:
    now = utcnow()
    since = now - PEAK_WINDOW
    with db.read() as conn:
        limits = Limits.load(conn, config)
        usage = Usage.load(conn)
        processes = conn.execute(select(dispatchers).order_by(dispatchers.c.started_at)).all()
        lease_rows = conn.execute(select(leases).order_by(leases.c.name)).all()
        gateway_rows = {r.name: r for r in conn.execute(select(gateway_state))}
        counts = dict.fromkeys(TASK_STATUSES, 0)
        by_profile: dict[str, dict[str, int]] = defaultdict(dict)
        for profile, status, count in conn.execute(
            select(tasks.c.profile, tasks.c.status, func.count()).group_by(tasks.c.profile, tasks.c.status)
        ):
            counts[status] += int(count)
            if status in ("backlog", "ready", "active", "blocked"):
                by_profile[profile][status] = int(count)
        released = conn.execute(
            select(func.count()).where(tasks.c.status == "ready", tasks.c.released.is_(True))
        ).scalar_one()
        oldest_ready = conn.execute(
            select(tasks.c.id, tasks.c.updated_at)
            .where(tasks.c.status == "ready")
            .order_by(tasks.c.updated_at, tasks.c.id)
            .limit(1)
        ).first()
        run_rows = conn.execute(
            select(runs.c.gateway, runs.c.claimed_at, runs.c.finished_at).where(
                runs.c.claimed_at < now, runs.c.finished_at.is_(None) | (runs.c.finished_at > since)
            )
        ).all()
        outbox_rows = conn.execute(
            select(outbox.c.adapter, outbox.c.state, func.count(), func.min(outbox.c.created_at))
            .where(outbox.c.state.in_(("pending", "sending", "dead")))
            .group_by(outbox.c.adapter, outbox.c.state)
        ).all()
        last_dead = conn.execute(
            select(outbox.c.adapter, outbox.c.channel, outbox.c.last_error)
            .where(outbox.c.state == "dead")
            .order_by(outbox.c.id.desc())
            .limit(1)
        ).first()
    return BoardState(
        now,
        limits,
        usage,
        processes,
        lease_rows,
        gateway_rows,
        counts,
        dict(by_profile),
        int(released),
        oldest_ready,
        run_rows,
        outbox_rows,
        last_dead,
    )


# ---------------------------------------------------------- processes, leader


def live_after(config: LanewardenConfig) -> timedelta:
    """A dispatcher whose heartbeat is older than this is not live: its runs are reclaimable."""
    dispatcher = config.kanban.dispatcher
    return timedelta(seconds=dispatcher.lease_seconds + dispatcher.heartbeat_seconds)


def check_processes_and_leader(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    now = state.now
    stale_after = live_after(config)
    live = [p for p in state.processes if p.state != "stopped" and now - p.heartbeat_at <= stale_after]
    live_ids = {p.id for p in live}
    vanished = [
        p
        for p in state.processes
        if p.state != "stopped" and stale_after < now - p.heartbeat_at <= CRASH_MEMORY + stale_after
    ]
    if live:
        described = ", ".join(f"{p.id} ({p.state})" for p in live)
        report.add(OK, "processes", f"{len(live)} serve process(es) live: {described}")
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
            f"{p.id} stopped heartbeating {_ago(now - p.heartbeat_at)} ago without shutting down "
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
                f"stale lease: held by {row.holder} ({term}), expired {_ago(expired)} ago; "
                "no serve process is running to take it over",
                "start `lanewarden serve`: it takes the lease over at once",
            )
        elif expired <= ttl:
            report.add(
                WARN,
                label,
                f"{row.holder}'s lease ({term}) expired {_ago(expired)} ago: failover in progress",
                "run doctor again in a few seconds",
            )
        else:
            report.add(
                FAIL,
                label,
                f"stale lease: held by {row.holder} ({term}), expired {_ago(expired)} ago, "
                f"and none of the {len(live_ids)} live process(es) took it over",
                "their lease loop cannot write to the database: check their logs",
            )
        return
    remaining = _ago(row.expires_at - now)
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
        why = f"whose process is {holder.state} with its last heartbeat {_ago(now - holder.heartbeat_at)} ago"
        fix = f"check {holder.host} (pid {holder.pid}): hung or cut off from the database"
    report.add(
        FAIL,
        label,
        f"second claimant: the lease ({term}, expires in {remaining}) is held by {row.holder}, {why}; "
        f"live processes ({others}) cannot lead meanwhile",
        fix,
    )


def _ago(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


# -------------------------------------------------------------------- gateways


def check_gateways(report: Report, config: LanewardenConfig, state: BoardState | None) -> None:
    if not config.gateways:
        report.add(OK, "gateways", "none configured (command and noop profiles only)")
        return
    results = asyncio.run(_probe_all(config.gateways))
    for name, gw in sorted(config.gateways.items()):
        health, signals = results[name]
        cap = state.limits.gateways[name].cap if state is not None else gw.max_concurrency
        row = state.gateway_rows.get(name) if state is not None else None
        for level, message, fix in judge_gateway(name, gw, cap, health, signals, row):
            report.add(level, f"gateway {name}", message, fix)


async def _probe_all(gateways: dict[str, GatewayConfig]) -> dict[str, tuple[GatewayHealth, Signals]]:
    async with httpx.AsyncClient() as client:

        async def one(name: str, gw: GatewayConfig) -> tuple[str, tuple[GatewayHealth, Signals]]:
            health = await probe(name, gw, client)
            signals = await read_signals(name, gw, client, deep=True) if health.healthy else {}
            return name, (health, signals)

        pairs = await asyncio.gather(*(one(n, g) for n, g in gateways.items()))
    return dict(pairs)


def judge_gateway(
    name: str, gw: GatewayConfig, cap: int, health: GatewayHealth, signals: Signals, row: Any
) -> list[tuple[str, str, str]]:
    """(level, message, fix) lines for one gateway: reachability first, then what it reports."""
    where = f"{gw.kind} {gw.base_url}"
    if not health.healthy:
        return [
            (
                FAIL,
                f"{where}: unreachable: {health.detail}",
                f"start the server or fix gateways.{name}.base_url; its tasks wait (nothing fails meanwhile)",
            )
        ]
    found: list[tuple[str, str, str]] = []
    took = f" in {health.latency_ms:.0f} ms" if health.latency_ms is not None else ""
    summary = describe_signals(signals)
    found.append((OK, f"{where}: up{took}" + (f"; {summary}" if summary else ""), ""))
    if row is not None and row.healthy is False:
        found.append(
            (
                WARN,
                f"the serve processes last saw it down ({_first_line(row.last_error or '')}) "
                "while doctor reaches it",
                "if this persists, check the network path from the serve hosts",
            )
        )
    errors = signals.get("errors") or {}
    if gw.kind in SERVER_QUEUE_KINDS and "/metrics" in errors and "waiting" not in signals:
        hint = "start llama-server with --metrics" if gw.kind == "llamacpp" else "expose /metrics at the root"
        found.append(
            (
                WARN,
                f"no server metrics ({errors['/metrics']}): its queue is invisible to alerts and doctor",
                hint,
            )
        )
    waiting = signals.get("waiting")
    if isinstance(waiting, int | float) and waiting > 0:
        found.append(
            (
                WARN,
                f"the server is queueing {waiting:g} request(s) "
                f"on top of {signals.get('running', 0):g} running",
                f"max_concurrency ({cap}) may exceed what it runs in parallel: lower it "
                f"(`lanewarden caps set gateway {name} N`) or give the server more slots",
            )
        )
    slots = signals.get("slots_total")
    if isinstance(slots, int) and slots and cap > slots:
        found.append(
            (
                WARN,
                f"cap {cap} is above the server's {slots} slot(s): "
                "the extra requests wait inside llama-server",
                f"set gateways.{name}.max_concurrency = {slots}, or start llama-server with -np {cap}",
            )
        )
    for model in signals.get("models") or []:
        if isinstance(model, dict) and model.get("size") and "size_vram" in model:
            on_cpu = 1 - model["size_vram"] / model["size"]
            if on_cpu > 0.01:
                found.append(
                    (
                        WARN,
                        f"model {model['name']} is {on_cpu:.0%} on the CPU (does not fit in VRAM): slow",
                        "use a smaller model or quantisation, or unload other models",
                    )
                )
    if signals.get("unhealthy_endpoints"):
        failing = signals.get("failing") or []
        first = failing[0] if failing else {}
        detail = f": {first.get('model')} at {first.get('api_base')}: {first.get('error')}" if first else ""
        found.append(
            (
                WARN,
                f"LiteLLM reports {signals['unhealthy_endpoints']} unhealthy deployment(s){detail}",
                "fix or remove those deployments in the LiteLLM config",
            )
        )
    return found


def describe_signals(signals: Signals) -> str:
    parts = []
    if "running" in signals:
        parts.append(f"running {signals['running']:g}")
    if "waiting" in signals:
        parts.append(f"waiting {signals['waiting']:g}")
    if "slots_total" in signals:
        parts.append(f"slots {signals.get('slots_busy', 0)}/{signals['slots_total']} busy")
    if "kv_cache_usage" in signals:
        parts.append(f"KV cache {signals['kv_cache_usage']:.0%}")
    if "ttft_p50_ms" in signals:
        parts.append(f"TTFT p50 {signals['ttft_p50_ms']:.0f} ms")
    models = signals.get("models") or []
    names = [m["name"] if isinstance(m, dict) else str(m) for m in models]
    if names:
        parts.append("models " + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    elif "loaded_models" in signals:
        parts.append("no model loaded")
    if "ready" in signals:
        parts.append(f"readiness {signals['ready']}" + (f" (db {signals['db']})" if "db" in signals else ""))
    if "healthy_endpoints" in signals:
        parts.append(f"{signals['healthy_endpoints']} healthy deployment(s)")
    return ", ".join(parts)


# ------------------------------------------------------------------------ caps


@dataclass(frozen=True, slots=True)
class Concurrency:
    peak: int
    seconds_at_or_above: dict[int, float]  # level -> seconds spent at that level or higher


def concurrency(
    intervals: Iterable[tuple[datetime, datetime | None]], since: datetime, now: datetime
) -> Concurrency:
    """Rebuild the concurrent-run curve of ``[since, now]`` from (claimed_at, finished_at).

    A run still open counts until now. A finish and a claim at the same instant are a
    slot handed over, not two at once: finishes sort first.
    """
    events: list[tuple[datetime, int]] = []
    for claimed, finished in intervals:
        start = max(claimed, since)
        end = now if finished is None else min(finished, now)
        if end <= start:
            continue
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    level = peak = 0
    spent: dict[int, float] = defaultdict(float)
    previous = since
    for at, step in events:
        if level > 0 and at > previous:
            spent[level] += (at - previous).total_seconds()
        previous = at
        level += step
        peak = max(peak, level)
    at_or_above: dict[int, float] = {}
    running = 0.0
    for lvl in range(peak, 0, -1):
        running += spent.get(lvl, 0.0)
        at_or_above[lvl] = running
    return Concurrency(peak, at_or_above)


def check_caps(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    since = state.now - PEAK_WINDOW
    by_gateway: dict[str | None, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for gateway, claimed, finished in state.runs:
        by_gateway[gateway].append((claimed, finished))
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
                + f": above the cap for {_ago(timedelta(seconds=curve.seconds_at_or_above[window.cap + 1]))}",
                "expected only when the cap was lowered while work ran (running work is never killed); "
                "otherwise report it as a bug",
            )
        elif curve.peak == window.cap and curve.peak > 0:
            at_cap = _ago(timedelta(seconds=curve.seconds_at_or_above[window.cap]))
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
        "" if level == OK else "expected only when the board cap was lowered while work ran",
    )


# ----------------------------------------------------------------------- queue


def check_queue(report: Report, config: LanewardenConfig, state: BoardState) -> None:
    counts = state.counts
    shape = ", ".join(f"{counts[s]} {s}" for s in TASK_STATUSES)
    extra = ""
    if not config.kanban.dispatcher.enabled:
        extra = f"; windowed mode: {state.released} of {counts['ready']} ready released"
    oldest_text = ""
    if state.oldest_ready is not None:
        age = state.now - state.oldest_ready.updated_at
        oldest_text = f"; oldest ready #{state.oldest_ready.id} waits {_ago(age)}"
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
    if state.oldest_ready is not None and config.kanban.dispatcher.enabled:
        age = state.now - state.oldest_ready.updated_at
        limit = timedelta(seconds=config.alerts.oldest_ready_seconds)
        if age > limit:
            report.add(
                WARN,
                "queue",
                f"ready task #{state.oldest_ready.id} has waited {_ago(age)} (alert threshold {_ago(limit)})",
                f"`lanewarden show {state.oldest_ready.id}` says why it is not starting",
            )


# ---------------------------------------------------------------------- outbox


def check_outbox(report: Report, state: BoardState) -> None:
    pending: dict[str, int] = defaultdict(int)
    dead: dict[str, int] = defaultdict(int)
    oldest_pending: datetime | None = None
    for adapter, row_state, count, oldest in state.outbox_rows:
        if row_state == "dead":
            dead[adapter] += int(count)
        else:
            pending[adapter] += int(count)
            if oldest is not None and (oldest_pending is None or oldest < oldest_pending):
                oldest_pending = oldest
    if dead:
        described = ", ".join(f"{a}: {n}" for a, n in sorted(dead.items()))
        last = state.last_dead
        why = f"; last: {last.adapter} {last.channel}: {_first_line(last.last_error or '?')}" if last else ""
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
            f"the oldest for {_ago(state.now - oldest_pending)}",
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
