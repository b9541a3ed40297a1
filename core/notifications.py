"""Which chat channels hear about an event: rows for the outbox, written in the event's
own transaction so a notification is never lost and never sent for a change that
rolled back.

Card rows carry only the task id: the adapter renders the task as it is when the row
is delivered, so pending card edits coalesce into the newest state for free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import UsageError
from lanewarden.core.schema import dm_optins, outbox, subscriptions
from sqlalchemy import Connection, delete, insert, select, update

ADAPTERS = ("slack", "discord")

# task events that change what a card shows
CARD_EVENTS = frozenset(
    {
        "created",
        "promoted",
        "released",
        "moved",
        "started",
        "succeeded",
        "failed",
        "retry_scheduled",
        "requeued",
        "blocked",
        "unblocked",
        "cancelled",
        "retried",
        "commented",
    }
)


# the events that end a task for its creator: a DM goes out for them (`notify me on`)
DM_EVENTS = frozenset({"succeeded", "failed"})

HUMAN_ACTORS = ("slack", "discord", "cli", "console", "scheduler")


def who(actor: str | None) -> str:
    """`` (by slack:U123)`` for people and windows; nothing for dispatchers, whose ids are noise."""
    if actor and actor.partition(":")[0] in HUMAN_ACTORS:
        return f" (by {actor})"
    return ""


# what a channel id looks like on each platform: Slack C/G/D + upper-case letters and
# digits; Discord a snowflake (a 64-bit integer, 17 to 20 digits today)
CHANNEL_SHAPES = {"slack": re.compile(r"[CGD][A-Z0-9]{2,20}"), "discord": re.compile(r"[0-9]{15,20}")}


def channel_shape_error(adapter: str, channel: str) -> str | None:
    """Why ``channel`` cannot be a channel id of ``adapter``; None when it can."""
    if CHANNEL_SHAPES[adapter].fullmatch(channel):
        return None
    example = "slack:C0123ABCD" if adapter == "slack" else "discord:1234567890123456789"
    return f"{adapter}:{channel} is not a {adapter.title()} channel id (like {example})"


def parse_channel(ref: str | None) -> tuple[str, str] | None:
    """``slack:C123`` -> ("slack", "C123"); anything else (cli, console) -> None."""
    if not ref:
        return None
    adapter, sep, channel = ref.partition(":")
    if sep and adapter in ADAPTERS and channel:
        return adapter, channel
    return None


def configured_channels(config: LanewardenConfig, topic: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if topic in ("tasks", "digest") and config.slack.notify_channel:
        found.add(("slack", config.slack.notify_channel))
    if topic in ("alerts", "digest") and config.slack.alert_channel:
        found.add(("slack", config.slack.alert_channel))
    if topic in ("tasks", "digest") and config.discord.notify_channel_id:
        found.add(("discord", str(config.discord.notify_channel_id)))
    if topic in ("alerts", "digest") and config.discord.alert_channel_id:
        found.add(("discord", str(config.discord.alert_channel_id)))
    return found


def subscribed_channels(conn: Connection, topic: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        select(subscriptions.c.adapter, subscriptions.c.channel).where(subscriptions.c.topic == topic)
    )
    return {(r.adapter, r.channel) for r in rows}


@dataclass(frozen=True, slots=True)
class TaskNote:
    """A task event that may concern chat channels."""

    event_id: int | None
    kind: str
    task_id: int
    origin: str | None
    message: str
    actor: str | None = None
    creator: str | None = None  # tasks.created_by: who gets a DM when it ends, if they asked


def task_channels(conn: Connection, config: LanewardenConfig) -> set[tuple[str, str]]:
    """Channels that follow every task (subscriptions and the config's notify channels)."""
    return subscribed_channels(conn, "tasks") | configured_channels(config, "tasks")


def fan_out_task_events(
    conn: Connection,
    config: LanewardenConfig,
    notes: list[TaskNote],
    now: datetime,
    channels: set[tuple[str, str]] | None = None,
) -> None:
    """Card and thread-update rows for each note, for every channel following its task."""
    notes = [n for n in notes if n.kind in CARD_EVENTS]
    if not notes:
        return
    following = task_channels(conn, config) if channels is None else channels
    rows: list[dict[str, Any]] = []
    for note in notes:
        targets = set(following)
        origin_channel = parse_channel(note.origin)
        if origin_channel:
            targets.add(origin_channel)
        for adapter, channel in sorted(targets):
            key = f"card:{note.task_id}:{adapter}:{channel}"
            rows.append(
                _row(
                    adapter,
                    channel,
                    "card",
                    now,
                    task_id=note.task_id,
                    event_id=note.event_id,
                    key=key,
                    payload={"event": note.kind},
                )
            )
            if note.kind != "created":
                rows.append(
                    _row(
                        adapter,
                        channel,
                        "update",
                        now,
                        task_id=note.task_id,
                        event_id=note.event_id,
                        payload={"event": note.kind, "text": note.message, "actor": note.actor},
                    )
                )
    rows += _direct_message_rows(conn, notes, now)
    if rows:
        _supersede_pending_cards(conn, sorted({r["coalesce_key"] for r in rows if r["coalesce_key"]}))
        conn.execute(insert(outbox), rows)


def may_direct_message(kind: str, creator: str | None) -> bool:
    """Whether an event could be DMed to the task's creator (before asking the database)."""
    return kind in DM_EVENTS and parse_channel(creator) is not None


def _direct_message_rows(conn: Connection, notes: list[TaskNote], now: datetime) -> list[dict[str, Any]]:
    """A ``dm`` row to the creator of each task that ended, if they opted in. The row's
    channel is the user id: the sink opens the DM channel when it delivers."""
    ending = [n for n in notes if may_direct_message(n.kind, n.creator)]
    if not ending:
        return []
    creators = {n.creator for n in ending}
    opted_in = set(
        conn.execute(select(dm_optins.c.user_ref).where(dm_optins.c.user_ref.in_(creators))).scalars()
    )
    rows = []
    for note in ending:
        if note.creator in opted_in:
            adapter, user = parse_channel(note.creator)  # type: ignore[misc]  # may_direct_message checked it
            payload = {"event": note.kind, "text": note.message}
            rows.append(
                _row(adapter, user, "dm", now, task_id=note.task_id, event_id=note.event_id, payload=payload)
            )
    return rows


def set_dm_optin(conn: Connection, user_ref: str, wanted: bool) -> bool:
    """Opt ``slack:U123`` / ``discord:42`` in or out of DMs about their tasks; True if it changed."""
    if parse_channel(user_ref) is None:
        raise UsageError(
            f"notify me sends direct messages in {' or '.join(a.title() for a in ADAPTERS)}: "
            f"run it there (you are {user_ref})"
        )
    exists = conn.execute(select(dm_optins.c.user_ref).where(dm_optins.c.user_ref == user_ref)).first()
    if wanted and not exists:
        conn.execute(insert(dm_optins).values(user_ref=user_ref, created_at=utcnow()))
    elif not wanted and exists:
        conn.execute(delete(dm_optins).where(dm_optins.c.user_ref == user_ref))
    return bool(wanted) != bool(exists)


def fan_out_notice(
    conn: Connection,
    config: LanewardenConfig,
    *,
    topic: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    event_id: int | None = None,
) -> int:
    """Alerts and digests: every subscribed and configured channel gets one row."""
    channels = subscribed_channels(conn, topic) | configured_channels(config, topic)
    rows = [_row(a, c, kind, now, event_id=event_id, payload=payload) for a, c in sorted(channels)]
    if rows:
        conn.execute(insert(outbox), rows)
    return len(rows)


def _supersede_pending_cards(conn: Connection, keys: list[str]) -> None:
    """A newer card row makes older undelivered ones pointless: delivering a card posts
    it if it does not exist yet and edits it otherwise, always with the task's state at
    delivery time, so the newest row alone shows everything (latest state wins)."""
    conn.execute(
        update(outbox)
        .where(outbox.c.coalesce_key.in_(keys), outbox.c.state == "pending")
        .values(state="superseded")
    )


def _row(
    adapter: str,
    channel: str,
    kind: str,
    now: datetime,
    *,
    payload: dict[str, Any],
    task_id: int | None = None,
    event_id: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "adapter": adapter,
        "channel": channel,
        "kind": kind,
        "task_id": task_id,
        "event_id": event_id,
        "coalesce_key": key,
        "payload": payload,
        "created_at": now,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
    }
