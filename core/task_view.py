"""One task seen whole: links, runs, history, and every reason it is not starting."""

from __future__ import annotations

from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import age, utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.schema import events, runs, task_links, tasks
from lanewarden.core.statuses import Status
from lanewarden.core.tasks import Event, Run, Task, TaskDetail
from sqlalchemy import Connection, select


def task_detail(conn: Connection, config: LanewardenConfig, task: Task, *, history: int = 20) -> TaskDetail:
    """What ``show`` prints: the task, its links, runs, recent history and why it waits."""
    task_id = task.id
    if True:
        parents = [
            Task.from_row(r)
            for r in conn.execute(
                select(tasks)
                .join(task_links, task_links.c.parent_id == tasks.c.id)
                .where(task_links.c.child_id == task_id)
                .order_by(tasks.c.id)
            )
        ]
        children = [
            Task.from_row(r)
            for r in conn.execute(
                select(tasks)
                .join(task_links, task_links.c.child_id == tasks.c.id)
                .where(task_links.c.parent_id == task_id)
                .order_by(tasks.c.id)
            )
        ]
        run_rows = [
            Run.from_row(r)
            for r in conn.execute(select(runs).where(runs.c.task_id == task_id).order_by(runs.c.id))
        ]
        event_rows = [
            Event.from_row(r)
            for r in conn.execute(
                select(events).where(events.c.task_id == task_id).order_by(events.c.id.desc()).limit(history)
            )
        ][::-1]
        waiting = why_waiting(conn, config, task, parents)
    runners = {r.profile: config.profiles[r.profile].runner for r in run_rows if r.profile in config.profiles}
    return TaskDetail(task, parents, children, run_rows, event_rows, waiting, runners)


def why_waiting(conn: Connection, config: LanewardenConfig, task: Task, parents: list[Task]) -> list[str]:
    """Every reason the dispatcher will not start this task now, in plain words."""
    reasons: list[str] = []
    if task.status == Status.BACKLOG:
        reasons.append(f"in backlog: promote it to ready (promote --id {task.id} --column ready)")
    elif task.status == Status.BLOCKED:
        reasons.append("blocked: unblock it to continue")
    if task.status not in (Status.BACKLOG, Status.READY, Status.BLOCKED):
        return reasons
    for parent in parents:
        if parent.status != Status.DONE:
            if parent.status in (Status.FAILED, Status.CANCELLED):
                reasons.append(
                    f"parent {parent.ref} is {parent.status}: retry it, or unlink it "
                    f"(unlink --parent {parent.id} --child {task.id})"
                )
            else:
                reasons.append(f"parent {parent.ref} is {parent.lane}, not done")
    now = utcnow()
    if task.not_before is not None and task.not_before > now:
        reasons.append(
            f"not before {task.not_before.isoformat(timespec='seconds')} "
            f"(in {age(now - (task.not_before - now))})"
        )
    profile = config.profile(task.profile)
    limits = Limits.load(conn, config)
    if profile is None:
        reasons.append(f"profile {task.profile!r} is not configured on this board")
    if limits.is_paused("board", ""):
        reasons.append("the board is paused (resume --board)")
    if limits.is_paused("profile", task.profile):
        reasons.append(f"profile {task.profile} is paused (resume --profile {task.profile})")
    if profile is not None and profile.gateway is not None:
        window = limits.gateways[profile.gateway]
        if limits.is_paused("gateway", window.name):
            reasons.append(f"gateway {window.name} is paused (resume --gateway {window.name})")
        if window.healthy is False:
            detail = f": {window.last_error}" if window.last_error else ""
            reasons.append(f"gateway {window.name} is down{detail}; it will start when it is back")
        if window.backoff_until is not None and window.backoff_until > now:
            reasons.append(
                f"gateway {window.name} asked to back off until "
                f"{window.backoff_until.isoformat(timespec='seconds')}"
            )
    if task.status == Status.READY and not reasons:
        if not config.kanban.dispatcher.enabled and not task.released:
            reasons.append(
                "the dispatcher runs in windowed mode (kanban.dispatcher.enabled = false): waiting "
                f"for promote --id {task.id} --column active or a promote-batch window"
            )
        usage = Usage.load(conn)
        if usage.total >= limits.board_cap:
            reasons.append(f"board cap full ({usage.total}/{limits.board_cap} active)")
        cap = limits.profile_caps.get(task.profile)
        if cap is not None and usage.by_profile.get(task.profile, 0) >= cap:
            reasons.append(f"profile {task.profile} cap full ({usage.by_profile[task.profile]}/{cap})")
        if profile is not None and profile.gateway is not None:
            window = limits.gateways[profile.gateway]
            in_use = usage.by_gateway.get(window.name, 0)
            if in_use >= window.limit:
                reasons.append(f"gateway {window.name} full ({in_use}/{window.limit}, cap {window.cap})")
    return reasons
