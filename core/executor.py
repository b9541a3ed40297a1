"""Runs a parsed command against the board for an actor and returns a structured result.

This is the one place that checks roles: every front end (CLI, console, Slack,
Discord, scheduler windows) goes through ``Executor.execute``. A denied command
changes nothing but leaves an audit event.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from lanewarden.core import commands as c
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask, TaskFilter
from lanewarden.core.caps import describe_caps, scope_label
from lanewarden.core.clock import parse_duration, parse_when, utcnow
from lanewarden.core.errors import AccessDenied, Conflict, NotFound, UsageError
from lanewarden.core.grammar import Command, ImportedRef, did_you_mean, help_text
from lanewarden.core.lanes import HERMES_LANES, HERMES_NO_LANE, LANES
from lanewarden.core.notifications import (
    ADAPTERS,
    channel_shape_error,
    fan_out_notice,
    parse_channel,
    set_dm_optin,
)
from lanewarden.core.results import (
    BatchPromoted,
    CapsShown,
    DigestShown,
    Done,
    HelpShown,
    LogsShown,
    Result,
    StatusShown,
    TaskChanged,
    TaskList,
    TaskShown,
    TuneShown,
    WebLinkShown,
    WindowsShown,
)
from lanewarden.core.run_output import task_logs
from lanewarden.core.schema import events, subscriptions, tasks
from lanewarden.core.signin import mint_link, sign_in_url, web_base_url
from lanewarden.core.status import build_status
from lanewarden.core.statuses import Status
from lanewarden.core.tune import advise_all, forget_advice
from lanewarden.core.windows import DIGEST_HOURS_MAX, WindowStore
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import DataError

Handler = Callable[["Executor", Any, Actor], Result]
HANDLERS: dict[type[Command], Handler] = {}


def handles(command_type: type[Command]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[command_type] = fn
        return fn

    return register


class Executor:
    def __init__(
        self,
        board: Board,
        *,
        audit_commands: bool = False,
        chart: Callable[[Board], bytes] | None = None,
    ) -> None:
        self.board = board
        self.windows = WindowStore(board)
        # chat front ends audit every command with its user and channel
        self.audit_commands = audit_commands
        # draws the status chart that `digest --post` sends along (given by the front end:
        # drawing is not the domain's business)
        self.chart = chart

    def execute(self, command: Command, actor: Actor, *, source_text: str | None = None) -> Result:
        spec = command.VERB
        needed = command.role_needed()
        if not actor.allows(needed):
            self.board.audit(
                actor.id,
                "denied",
                f"{spec.name} denied: needs {needed}, {actor.id} is {actor.role}",
                data={"verb": spec.name, "channel": actor.channel, "text": source_text},
            )
            raise AccessDenied(
                f"`{spec.name}` needs the {needed} role; you are {actor.role}. "
                "Ask an admin to add you under [access] in the config."
            )
        if self.audit_commands:
            self.board.audit(
                actor.id,
                "command",
                source_text or spec.name,
                data={"verb": spec.name, "channel": actor.channel},
            )
        command = _resolve_imported(self.board, command)
        handler = HANDLERS.get(type(command))
        if handler is None:  # a verb without a handler is a programming error, not user input
            raise NotImplementedError(spec.name)
        try:
            return handler(self, command, actor)
        except DataError as exc:  # a value the database cannot store; its transaction rolled back
            detail = (str(exc.orig).strip().splitlines() or ["invalid value"])[0]
            raise UsageError(f"the database refused a value: {detail}") from None


def _resolve_imported(board: Board, command: Command) -> Command:
    """Task ids given as Hermes ids (``show t_ab12cd34``) become our ids."""
    changes: dict[str, Any] = {}
    for p in command.VERB.params:
        if p.complete != "task":
            continue
        value = getattr(command, p.name)
        if isinstance(value, ImportedRef):
            changes[p.name] = board.find_imported(value)
        elif isinstance(value, tuple) and any(isinstance(v, ImportedRef) for v in value):
            changes[p.name] = tuple(
                board.find_imported(v) if isinstance(v, ImportedRef) else v for v in value
            )
    return dataclasses.replace(command, **changes) if changes else command


@handles(c.Add)
def _add(ex: Executor, cmd: c.Add, actor: Actor) -> Result:
    not_before = parse_when(cmd.not_before) if cmd.not_before else None
    task = ex.board.add(
        NewTask(
            title=cmd.title,
            body=cmd.body,
            profile=cmd.profile,
            priority=cmd.priority,
            column=cmd.column,
            parents=cmd.parent,
            not_before=not_before,
            max_attempts=cmd.max_attempts,
            origin=actor.channel,
        ),
        actor.id,
    )
    return TaskChanged(cmd, task, f"created {task.ref} in {task.status}")


@handles(c.ListTasks)
def _list(ex: Executor, cmd: c.ListTasks, actor: Actor) -> Result:
    cmd.output_format()  # --json with --output yaml: refused before the board is read
    lanes: tuple[str, ...] = ()
    if cmd.status:
        lanes = tuple(s.strip().lower() for s in cmd.status.split(",") if s.strip())
        lanes = tuple(HERMES_LANES.get(s, s) for s in lanes)
        hermes = next((s for s in lanes if s in HERMES_NO_LANE), None)
        if hermes:
            raise UsageError(f"Hermes' {hermes} is {HERMES_NO_LANE[hermes]} here: list --status LANE")
        bad = [s for s in lanes if s not in LANES]
        if bad:
            raise UsageError(
                f"--status (or --column) must be among {', '.join(LANES)}, "
                f"got {', '.join(bad)}{did_you_mean(bad[0], LANES)}"
            )
    if cmd.profile:
        ex.board.require_profile(cmd.profile)
    found, cut = ex.board.list_page(
        TaskFilter(
            lanes=lanes,
            profile=cmd.profile,
            limit=cmd.limit,
            include_closed=cmd.all,
            created_by=actor.id if cmd.mine else None,
        )
    )
    return TaskList(cmd, found, cut=cut)


@handles(c.Show)
def _show(ex: Executor, cmd: c.Show, actor: Actor) -> Result:
    return TaskShown(cmd, ex.board.show(cmd.id))


@handles(c.Logs)
def _logs(ex: Executor, cmd: c.Logs, actor: Actor) -> Result:
    if cmd.tail is not None and cmd.tail < 1:
        raise UsageError("--tail needs a number of lines, 1 or more")
    task = ex.board.get(cmd.id)
    with ex.board.db.read() as conn:
        logs = task_logs(conn, task.id, cmd.attempt)
    if cmd.attempt is not None and not logs:
        raise NotFound(f"{task.ref} has no attempt {cmd.attempt}")
    # a terminal can follow and scroll; a chat message gets a bounded tail
    bounded = actor.id.split(":", 1)[0] not in ("cli", "console")
    return LogsShown(cmd, task, logs, bounded=bounded)


@handles(c.Promote)
def _promote(ex: Executor, cmd: c.Promote, actor: Actor) -> Result:
    current = ex.board.get(cmd.id)
    column = cmd.column or {"backlog": "ready", "ready": "active"}.get(current.status)
    if column is None:
        raise Conflict(f"{current.ref} is {current.lane}; there is no next column to promote it to")
    task = ex.board.promote(cmd.id, column, actor.id)
    if column == "ready":
        message = f"{task.ref} promoted to ready"
    elif current.status == Status.ACTIVE:
        message = f"{task.ref} is already active; nothing to do"
    elif current.lane == "released":
        message = f"{task.ref} is already released and waits for a free slot; nothing to do"
    else:
        message = f"{task.ref} released: starts when a slot is free"
    return TaskChanged(cmd, task, message)


@handles(c.PromoteBatch)
def _promote_batch(ex: Executor, cmd: c.PromoteBatch, actor: Actor) -> Result:
    promoted = ex.board.promote_batch(cmd.from_column, cmd.to_column, cmd.max, actor.id, cmd.profile)
    return BatchPromoted(cmd, promoted, cmd.from_column, cmd.to_column)


@handles(c.Move)
def _move(ex: Executor, cmd: c.Move, actor: Actor) -> Result:
    task = ex.board.move(cmd.id, cmd.column, actor.id)
    return TaskChanged(cmd, task, f"{task.ref} moved to {task.status}")


@handles(c.Block)
def _block(ex: Executor, cmd: c.Block, actor: Actor) -> Result:
    if cmd.id is None:
        return _bulk(ex, cmd, actor, "blocked", lambda i: ex.board.block(i, actor.id, cmd.reason))
    task = ex.board.block(cmd.id, actor.id, cmd.reason)
    return TaskChanged(cmd, task, f"{task.ref} blocked")


@handles(c.Unblock)
def _unblock(ex: Executor, cmd: c.Unblock, actor: Actor) -> Result:
    task = ex.board.unblock(cmd.id, actor.id)
    return TaskChanged(cmd, task, f"{task.ref} unblocked to {task.status}")


@handles(c.Cancel)
def _cancel(ex: Executor, cmd: c.Cancel, actor: Actor) -> Result:
    if cmd.id is None:
        return _bulk(ex, cmd, actor, "cancelled", lambda i: ex.board.cancel(i, actor.id, cmd.reason))
    task = ex.board.cancel(cmd.id, actor.id, cmd.reason)
    return TaskChanged(cmd, task, f"{task.ref} cancelled")


@handles(c.Retry)
def _retry(ex: Executor, cmd: c.Retry, actor: Actor) -> Result:
    if cmd.id is None:
        return _bulk(ex, cmd, actor, "sent back to ready", lambda i: ex.board.retry(i, actor.id))
    task = ex.board.retry(cmd.id, actor.id)
    return TaskChanged(cmd, task, f"{task.ref} is ready for another try")


def _bulk(
    ex: Executor, cmd: c.Block | c.Cancel | c.Retry, actor: Actor, done: str, change: Callable[[int], Any]
) -> Result:
    """``cancel|retry|block --status S [--profile P]``: say which tasks match, and change
    them only with ``--yes``; each task is its own transaction, and one that moved on in
    the meantime (a Conflict) is skipped and named, never half-changed."""
    if not cmd.status:
        raise UsageError(f"{cmd.VERB.name} needs a task id, or --status (with --yes) for many")
    statuses = [s.strip().lower() for s in cmd.status.split(",") if s.strip()]
    ids = ex.board.select_ids(statuses, cmd.profile)
    refs = ", ".join(f"#{i}" for i in ids) or "none"
    if not cmd.yes:
        return Done(cmd, f"{len(ids)} task(s) would be {done}: {refs}; add --yes to do it", {"ids": ids})
    changed: list[int] = []
    skipped: list[str] = []
    for task_id in ids:
        try:
            change(task_id)
            changed.append(task_id)
        except Conflict as exc:
            skipped.append(str(exc))
    message = f"{len(changed)} task(s) {done}" + (
        f": {', '.join(f'#{i}' for i in changed)}" if changed else ""
    )
    if skipped:
        message += f"; skipped {len(skipped)}: " + "; ".join(skipped)
    return Done(cmd, message, {"ids": changed, "skipped": skipped})


@handles(c.Edit)
def _edit(ex: Executor, cmd: c.Edit, actor: Actor) -> Result:
    task = ex.board.edit(
        cmd.id, actor.id, title=cmd.title, body=cmd.body, priority=cmd.priority, profile=cmd.profile
    )
    return TaskChanged(cmd, task, f"{task.ref} edited")


@handles(c.Purge)
def _purge(ex: Executor, cmd: c.Purge, actor: Actor) -> Result:
    ids = ex.board.purge(parse_duration(cmd.older_than), actor.id, apply=cmd.yes)
    refs = ", ".join(f"#{i}" for i in ids) or "none"
    if not cmd.yes:
        return Done(
            cmd, f"{len(ids)} finished task(s) would be deleted: {refs}; add --yes to do it", {"ids": ids}
        )
    return Done(cmd, f"deleted {len(ids)} finished task(s)", {"ids": ids})


@handles(c.Link)
def _link(ex: Executor, cmd: c.Link, actor: Actor) -> Result:
    ex.board.link(cmd.parent, cmd.child, actor.id)
    return Done(cmd, f"#{cmd.child} now waits for #{cmd.parent}", {"parent": cmd.parent, "child": cmd.child})


@handles(c.Unlink)
def _unlink(ex: Executor, cmd: c.Unlink, actor: Actor) -> Result:
    ex.board.unlink(cmd.parent, cmd.child, actor.id)
    return Done(
        cmd, f"#{cmd.child} no longer waits for #{cmd.parent}", {"parent": cmd.parent, "child": cmd.child}
    )


@handles(c.Comment)
def _comment(ex: Executor, cmd: c.Comment, actor: Actor) -> Result:
    event = ex.board.comment(cmd.id, cmd.text, actor.id)
    return Done(cmd, f"comment added to #{cmd.id}", {"event": event.to_json()})


@handles(c.Caps)
def _caps(ex: Executor, cmd: c.Caps, actor: Actor) -> Result:
    limits, usage = ex.board.limits()
    return CapsShown(cmd, describe_caps(limits, usage))


@handles(c.CapsSet)
def _caps_set(ex: Executor, cmd: c.CapsSet, actor: Actor) -> Result:
    ex.board.set_cap(cmd.scope, cmd.name, cmd.value, actor.id)
    label = scope_label(cmd.scope, cmd.name)
    return Done(
        cmd, f"{label} cap is now {cmd.value}", {"scope": cmd.scope, "name": cmd.name, "value": cmd.value}
    )


@handles(c.CapsReset)
def _caps_reset(ex: Executor, cmd: c.CapsReset, actor: Actor) -> Result:
    ex.board.reset_cap(cmd.scope, cmd.name, actor.id)
    label = scope_label(cmd.scope, cmd.name)
    return Done(cmd, f"{label} cap follows the config again", {"scope": cmd.scope, "name": cmd.name})


def _pause_target(cmd: c.Pause | c.Resume) -> tuple[str, str | None]:
    given = [(s, n) for s, n in (("profile", cmd.profile), ("gateway", cmd.gateway)) if n]
    if len(given) + bool(cmd.board) > 1:
        raise UsageError("name one of --board, --profile or --gateway")
    return given[0] if given else ("board", None)


@handles(c.Pause)
def _pause(ex: Executor, cmd: c.Pause, actor: Actor) -> Result:
    scope, name = _pause_target(cmd)
    label = scope_label(scope, name)
    changed = ex.board.pause(scope, name, actor.id)
    text = (
        f"{label} paused: no new starts, running work goes on" if changed else f"{label} was already paused"
    )
    return Done(cmd, text, {"scope": scope, "name": name, "changed": changed})


@handles(c.Resume)
def _resume(ex: Executor, cmd: c.Resume, actor: Actor) -> Result:
    scope, name = _pause_target(cmd)
    label = scope_label(scope, name)
    changed = ex.board.resume(scope, name, actor.id)
    return Done(
        cmd,
        f"{label} resumed" if changed else f"{label} was not paused",
        {"scope": scope, "name": name, "changed": changed},
    )


@handles(c.Status)
def _status(ex: Executor, cmd: c.Status, actor: Actor) -> Result:
    window = timedelta(hours=1)
    if cmd.since is not None:
        window = parse_duration(cmd.since)
        if not timedelta(minutes=1) <= window <= timedelta(days=1):
            raise UsageError(f"--since {cmd.since}: the chart covers 1m to 1d")
    if (cmd.since or cmd.output) and not cmd.chart:
        raise UsageError("--since and --output are for the chart: add --chart")
    return StatusShown(cmd, build_status(ex.board.db, ex.board.config), chart=cmd.chart, chart_window=window)


@handles(c.Tune)
def _tune(ex: Executor, cmd: c.Tune, actor: Actor) -> Result:
    config = ex.board.config
    if cmd.gateway is not None and cmd.gateway not in config.gateways:
        known = ", ".join(sorted(config.gateways)) or "none configured"
        raise UsageError(f"no gateway {cmd.gateway!r} (known: {known})")
    with ex.board.db.read() as conn:
        advice = advise_all(conn, config, cmd.gateway)
    applied = []
    if cmd.apply:
        for a in advice:
            if a.proposed_cap is not None:
                ex.board.set_cap("gateway", a.gateway, a.proposed_cap, actor.id)
                applied.append((a.gateway, a.proposed_cap))
        forget_advice(ex.board.db.url)
    return TuneShown(cmd, advice, applied)


@handles(c.WindowsList)
def _windows_list(ex: Executor, cmd: c.WindowsList, actor: Actor) -> Result:
    return WindowsShown(cmd, ex.windows.list())


@handles(c.WindowsAdd)
def _windows_add(ex: Executor, cmd: c.WindowsAdd, actor: Actor) -> Result:
    window = ex.windows.add(cmd.name, cmd.cron, cmd.timezone, cmd.command, actor.id)
    return Done(
        cmd,
        f"window {window.name}: `{window.command}` at `{window.cron}` ({window.timezone})",
        {"window": window.to_json()},
    )


@handles(c.WindowsRemove)
def _windows_remove(ex: Executor, cmd: c.WindowsRemove, actor: Actor) -> Result:
    window = ex.windows.remove(cmd.name, actor.id)
    return Done(cmd, f"window {window.name} removed", {"window": window.to_json()})


def _channel_for(cmd: c.Subscribe | c.Unsubscribe, actor: Actor) -> tuple[str, str]:
    ref = cmd.channel or actor.channel
    parsed = parse_channel(ref)
    if parsed is None:
        raise UsageError(
            "subscribe needs a chat channel: run it in Slack or Discord, or pass "
            f"--channel slack:C123 / discord:123 (adapters: {', '.join(ADAPTERS)})"
        )
    problem = channel_shape_error(*parsed) if cmd.channel else None
    if problem:
        raise UsageError(problem)
    return parsed


@handles(c.Subscribe)
def _subscribe(ex: Executor, cmd: c.Subscribe, actor: Actor) -> Result:
    adapter, channel = _channel_for(cmd, actor)
    with ex.board.db.write() as conn:
        exists = conn.execute(
            select(subscriptions.c.topic).where(
                subscriptions.c.adapter == adapter,
                subscriptions.c.channel == channel,
                subscriptions.c.topic == cmd.topic,
            )
        ).first()
        if not exists:
            conn.execute(
                insert(subscriptions).values(
                    adapter=adapter,
                    channel=channel,
                    topic=cmd.topic,
                    created_by=actor.id,
                    created_at=utcnow(),
                )
            )
            ex.board.record(conn, actor.id, "subscribed", f"{adapter}:{channel} subscribed to {cmd.topic}")
    message = f"this channel already gets {cmd.topic}" if exists else f"this channel now gets {cmd.topic}"
    return Done(cmd, message, {"adapter": adapter, "channel": channel, "topic": cmd.topic})


@handles(c.Unsubscribe)
def _unsubscribe(ex: Executor, cmd: c.Unsubscribe, actor: Actor) -> Result:
    adapter, channel = _channel_for(cmd, actor)
    with ex.board.db.write() as conn:
        gone = conn.execute(
            delete(subscriptions).where(
                subscriptions.c.adapter == adapter,
                subscriptions.c.channel == channel,
                subscriptions.c.topic == cmd.topic,
            )
        ).rowcount
        if gone:
            ex.board.record(
                conn, actor.id, "unsubscribed", f"{adapter}:{channel} unsubscribed from {cmd.topic}"
            )
    message = (
        f"this channel no longer gets {cmd.topic}" if gone else f"this channel was not getting {cmd.topic}"
    )
    return Done(cmd, message, {"adapter": adapter, "channel": channel, "topic": cmd.topic})


@handles(c.NotifyMe)
def _notify_me(ex: Executor, cmd: c.NotifyMe, actor: Actor) -> Result:
    wanted = cmd.state == "on"
    with ex.board.db.write() as conn:
        changed = set_dm_optin(conn, actor.id, wanted)
        if changed:
            kind, what = ("subscribed", "gets") if wanted else ("unsubscribed", "no longer gets")
            ex.board.record(conn, actor.id, kind, f"{actor.id} {what} a DM when a task they created ends")
    if wanted:
        message = "you will get a direct message when a task you created finishes or fails"
        if not changed:
            message = "you already get " + message.removeprefix("you will get ")
    else:
        message = "no more direct messages about your tasks" if changed else "you were not getting them"
    return Done(cmd, message, {"user": actor.id, "dm": wanted})


@handles(c.WhoAmI)
def _whoami(ex: Executor, cmd: c.WhoAmI, actor: Actor) -> Result:
    source = actor.granted_by or "how this front end is trusted"
    message = f"you are {actor.id}: {actor.role} ({source})"
    if actor.role == "none":
        message += f'. To get a role, an admin adds "{actor.id}" under [access] in the config'
    data = {"id": actor.id, "role": actor.role, "granted_by": actor.granted_by, "channel": actor.channel}
    return Done(cmd, message, data)


@handles(c.Digest)
def _digest(ex: Executor, cmd: c.Digest, actor: Actor) -> Result:
    if not 1 <= cmd.hours <= DIGEST_HOURS_MAX:
        raise UsageError(f"--hours must be between 1 and {DIGEST_HOURS_MAX}, got {cmd.hours}")
    since = utcnow() - timedelta(hours=cmd.hours)
    report = build_status(ex.board.db, ex.board.config)
    with ex.board.db.read() as conn:
        finished = dict(
            conn.execute(
                select(tasks.c.status, func.count())
                .where(
                    tasks.c.finished_at > since,
                    tasks.c.status.in_((Status.DONE, Status.FAILED, Status.CANCELLED)),
                )
                .group_by(tasks.c.status)
            ).all()
        )
        alerts = conn.execute(
            select(func.count()).where(events.c.kind == "alert", events.c.at > since)
        ).scalar_one()
    lines = [
        f"Lanewarden digest, last {cmd.hours}h: {finished.get('done', 0)} done, "
        f"{finished.get('failed', 0)} failed, {finished.get('cancelled', 0)} cancelled, {alerts} alerts.",
        "Now: "
        + ", ".join(f"{report.counts[s]} {s}" for s in ("backlog", "ready", "active", "blocked", "failed")),
    ]
    for gw in report.gateways:
        health = {True: "up", False: "DOWN", None: "not probed"}[gw.healthy]
        lines.append(f"Gateway {gw.name}: {health}, {gw.in_flight}/{gw.limit} in flight (cap {gw.cap})")
    lines += [f"Tune: {a.text}" for a in report.advice]
    text = "\n".join(lines)
    data = {"hours": cmd.hours, "finished": finished, "alerts": alerts, "counts": report.counts}
    if cmd.post:
        ex.board.notify(actor.id, "digest", "digest", text, data)
        if ex.chart is not None:
            post_chart(
                ex.board, ex.chart(ex.board), f"Lanewarden, the last hour ({utcnow():%Y-%m-%d %H:%M} UTC)"
            )
    return DigestShown(cmd, text, data)


def post_chart(board: Board, png: bytes, caption: str) -> int:
    """The digest's chart: one outbox row per digest channel (the image travels in the row,
    so delivery does not depend on this process)."""
    payload = {"text": caption, "png_b64": base64.b64encode(png).decode("ascii")}
    with board.db.write() as conn:
        count = fan_out_notice(
            conn, board.config, topic="digest", kind="chart", payload=payload, now=utcnow()
        )
        if count:
            board.signal(conn, "outbox")
    return count


@handles(c.WebLink)
def _web_link(ex: Executor, cmd: c.WebLink, actor: Actor) -> Result:
    config = ex.board.config
    minutes = config.web.link_minutes
    web_base_url(config)  # refuses before minting when the board page is off
    link = mint_link(
        ex.board, actor_id=actor.id, role=actor.role, name=actor.name, created_by=actor.id, minutes=minutes
    )
    url = sign_in_url(config, link.token)
    return WebLinkShown(cmd, url, actor.id, actor.role, link.sign_in.expires_at, minutes)


@handles(c.HelpCommand)
def _help(ex: Executor, cmd: c.HelpCommand, actor: Actor) -> Result:
    return HelpShown(cmd, help_text(cmd.topic))
