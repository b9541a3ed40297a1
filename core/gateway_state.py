"""Gateway state: the one owner of what every process knows about a gateway.

Health (written by probes), the shared window (slow start after an outage, halving on
backpressure), the adaptive limiter's state and the limit history all live in the
``gateway_state`` and ``gateway_limit_history`` tables and are written only here, so
the claim kernel, the monitor and the signal reader agree on one definition.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lanewarden.core.caps import Usage, gateway_cap
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.limiter import AdaptiveLimiter, LimiterState, Sample
from lanewarden.core.saturation import server_view
from lanewarden.core.schema import gateway_limit_history, gateway_state, tasks
from sqlalchemy import Connection, insert, select, update

if TYPE_CHECKING:
    from lanewarden.core.claims import Completion
    from lanewarden.core.gateways import GatewayHealth


def _for_update(conn: Connection, query: Any) -> Any:
    """Row locks on PostgreSQL; SQLite's write transaction already excludes everyone."""
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def set_gateway_state(conn: Connection, name: str, now: datetime, **values: Any) -> None:
    """Upsert one gateway's shared state (portable: update, then insert if missing)."""
    changed = conn.execute(
        update(gateway_state).where(gateway_state.c.name == name).values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(gateway_state).values(name=name, **values))


def record_limit(
    conn: Connection, gateway: str, now: datetime, limit: int, in_flight: int, reason: str
) -> None:
    conn.execute(
        insert(gateway_limit_history).values(
            gateway=gateway, at=now, current_limit=limit, in_flight=in_flight, reason=reason
        )
    )


def record_health(
    db: Database, health: GatewayHealth, now: datetime | None = None, *, adaptive: bool = False
) -> bool:
    """Store a probe result; returns True when the gateway changed state.

    Coming back (down -> up) restarts the window at 1: slow start. Only the transition
    writes the window, so several processes probing the same gateway agree.
    """
    now = now or utcnow()
    with db.write() as conn:
        row = conn.execute(select(gateway_state).where(gateway_state.c.name == health.name)).first()
        previous = None if row is None else row.healthy
        if previous is health.healthy:
            set_gateway_state(conn, health.name, now, checked_at=now)
            return False
        values: dict[str, object] = {"healthy": health.healthy, "checked_at": now, "changed_at": now}
        if health.healthy:
            values["last_error"] = None
            if previous is False:
                values["current_limit"] = 1
                values["backoff_until"] = None
                if adaptive:  # the server may have come back different: measure it again
                    values["limiter"] = AdaptiveLimiter(1).start(now.timestamp()).to_json()
                record_limit(conn, health.name, now, 1, 0, "recovered")
        else:
            values["last_error"] = health.detail
            # nothing is sent while it is down: the history (and the chart) shows the outage
            # as a window of 0 until "recovered"
            record_limit(conn, health.name, now, 0, 0, "down")
        set_gateway_state(conn, health.name, now, **values)
        return True


def update_gateway_window(
    conn: Connection, config: LanewardenConfig, gateway: str, finished: list[Completion], now: datetime
) -> None:
    """Slow start after an outage, and shrinking on backpressure, in the shared window.

    Steady state (no window in force, no trouble) writes nothing."""
    trouble = any(c.outcome in ("backpressure", "gateway_down") for c in finished)
    state = conn.execute(
        _for_update(conn, select(gateway_state).where(gateway_state.c.name == gateway))
    ).first()
    settings = config.gateways.get(gateway)
    if settings is not None and settings.adaptive:
        _adapt(conn, config, gateway, finished, now, state)
        return
    if not trouble and (state is None or state.current_limit is None):
        return
    cap = gateway_cap(conn, config, gateway)
    limit = state.current_limit if state is not None else None
    for done in finished:
        if done.outcome == "backpressure":
            in_flight = Usage.load(conn).by_gateway.get(gateway, 0)
            limit = max(1, min(limit if limit is not None else cap, in_flight) // 2)
            wait = done.retry_after if done.retry_after is not None else 1.0
            set_gateway_state(
                conn,
                gateway,
                now,
                current_limit=limit,
                backoff_until=now + timedelta(seconds=min(wait, 300)),
                last_error=done.error,
            )
            record_limit(conn, gateway, now, limit, in_flight, "backpressure")
        elif done.outcome == "gateway_down":
            set_gateway_state(conn, gateway, now, healthy=False, last_error=done.error, changed_at=now)
        elif done.outcome == "succeeded" and limit is not None:
            limit = limit + 1 if limit < cap else None
            set_gateway_state(conn, gateway, now, current_limit=limit)
            if limit is not None:
                record_limit(
                    conn, gateway, now, limit, Usage.load(conn).by_gateway.get(gateway, 0), "slow_start"
                )


def _adapt(
    conn: Connection,
    config: LanewardenConfig,
    gateway: str,
    finished: list[Completion],
    now: datetime,
    state: Any,
) -> None:
    """Feed the adaptive limiter (core/limiter.py) and publish its limit to every process."""
    settings = config.gateways[gateway]
    limiter = AdaptiveLimiter(
        gateway_cap(conn, config, gateway),
        tolerance=settings.adaptive_tolerance,
        probe_interval=settings.adaptive_probe_interval_seconds,
    )
    clock = now.timestamp()
    current = LimiterState.from_json(state.limiter if state is not None else None) or limiter.start(clock)
    before = state.current_limit if state is not None and state.current_limit is not None else 1
    # the concurrency these requests ran under: what is still open plus this batch itself
    in_flight = Usage.load(conn).by_gateway.get(gateway, 0) + len(finished)
    # is more work waiting for this gateway? (in_flight alone cannot tell: a finished
    # request's slot is refilled a moment after its completion is written)
    profiles = [name for name, p in config.profiles.items() if p.gateway == gateway]
    saturated = (
        bool(profiles)
        and conn.execute(
            select(tasks.c.id).where(tasks.c.status == "ready", tasks.c.profile.in_(profiles)).limit(1)
        ).first()
        is not None
    )
    # what the server says about itself, read as of now (core/saturation.py)
    view = server_view(
        state.signals if state is not None else None,
        settings.kind,
        in_flight - len(finished),
        clock,
        settings.probe_interval_seconds,
    )
    values: dict[str, Any] = {}
    for done in sorted(finished, key=lambda c: finished_at(c, clock)):
        if done.outcome == "gateway_down":
            values.update(healthy=False, last_error=done.error, changed_at=now)
            continue
        if done.outcome == "backpressure":
            wait = done.retry_after if done.retry_after is not None else 1.0
            values.update(backoff_until=now + timedelta(seconds=min(wait, 300)), last_error=done.error)
        sample = Sample(
            done.outcome,
            in_flight,
            finished_at(done, clock),
            done.ttft_ms,
            done.latency_ms,
            done.completion_tokens,
            saturated,
            view.pressure,
            view.pressure_at,
            view.slots,
            view.reads_queue,
        )
        current = limiter.update(current, sample)
    set_gateway_state(
        conn, gateway, now, limiter=current.to_json(), current_limit=current.current_limit, **values
    )
    if current.current_limit != before:
        reason = "probe" if current.probing else current.reason
        record_limit(conn, gateway, now, current.current_limit, in_flight, reason)


def finished_at(done: Completion, default: float) -> float:
    """When the worker saw the request end (the batch is written later, all at once)."""
    if done.started_at is None or done.latency_ms is None:
        return default
    return done.started_at.timestamp() + done.latency_ms / 1000
