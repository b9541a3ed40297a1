"""Block Kit rendering: command replies, task cards, thread updates, notices, App Home.

Every message carries a plain ``text`` too: Slack shows it in notifications and to
screen readers, and uses it when blocks cannot be shown. Anything a user typed is
escaped (``mrkdwn.escape``). Slack's limits shape the code: a section holds at most
3,000 characters and a message at most 50 blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

from lanewarden.bot.render import node_line, render, render_text, status_text
from lanewarden.bot.slack_app.mrkdwn import FENCE, code_block, cut, escape, mention, split, truncate
from lanewarden.core.access import Actor
from lanewarden.core.clock import age
from lanewarden.core.notifications import who
from lanewarden.core.results import (
    BatchPromoted,
    DigestShown,
    Done,
    HelpShown,
    Result,
    StatusShown,
    TaskChanged,
    TaskList,
    TaskShown,
    WebLinkShown,
)
from lanewarden.core.status import StatusReport
from lanewarden.core.statuses import Status
from lanewarden.core.tasks import Task

SECTION_LIMIT = 3000  # Slack's limit for a section's (and a context element's) text
MAX_BLOCKS = 45  # of Slack's 50, leaving room for a header and a "truncated" note
BUTTONS = ("retry", "cancel", "promote")
ACTION_PREFIX = "lanewarden."

# a ready task released and waiting for a slot, or waiting on a parent or its not_before
LANE_EMOJI = {"released": ":arrow_forward:", "waiting": ":hourglass:"}
STATUS_EMOJI = {
    "backlog": ":inbox_tray:",
    "ready": ":large_blue_circle:",
    "active": ":hourglass_flowing_sand:",
    "done": ":white_check_mark:",
    "failed": ":x:",
    "blocked": ":no_entry:",
    "cancelled": ":heavy_multiplication_x:",
}

# Board-wide changes and the queue picture are for the whole channel; task-level changes
# are confirmed to the caller only, because the task's card and its thread already tell
# the channel. Reads, help and errors are for the caller alone.
IN_CHANNEL_VERBS = frozenset(
    {
        "add",
        "status",
        "promote-batch",
        "caps set",
        "caps reset",
        "pause",
        "resume",
        "windows add",
        "windows remove",
        "subscribe",
        "unsubscribe",
    }
)


@dataclass(frozen=True)
class Reply:
    """A message for response_url (slash commands, buttons). ``text`` is plain (it is
    escaped on the way out), ``blocks`` are ready mrkdwn."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    in_channel: bool = False

    @property
    def fallback(self) -> str:
        return escape(truncate(self.text, 3000))

    def respond_args(self) -> dict[str, Any]:
        return {
            "text": self.fallback,
            "blocks": self.blocks,
            "response_type": "in_channel" if self.in_channel else "ephemeral",
            "replace_original": False,
        }


# ------------------------------------------------------------------ primitives


def section(text: str) -> dict[str, Any]:
    """A section of mrkdwn (already escaped); a last guard cuts it to Slack's limit."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}]}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, 150), "emoji": True}}


def long_text(text: str, *, code: bool = False) -> list[dict[str, Any]]:
    """Sections for text of any length, split on line boundaries; too much is cut with a note.

    ``text`` is mrkdwn (escaped by the caller), or with ``code`` raw text that is escaped
    here, before it is split, so no chunk grows past the limit and no entity is cut."""
    if code:
        chunks = [FENCE + c + FENCE for c in split(escape(text), SECTION_LIMIT - 2 * len(FENCE))]
    else:
        chunks = split(text, SECTION_LIMIT)
    blocks = [section(c) for c in chunks[:MAX_BLOCKS]]
    if len(chunks) > MAX_BLOCKS:
        blocks.append(context("… cut here: Slack shows at most 50 blocks. Use the CLI for the whole output."))
    return blocks


def error_reply(message: str) -> Reply:
    return Reply(f"Error: {message}", [section(f":warning: {escape(message)}")])


# ------------------------------------------------------------------ task cards


def status_line(task: Task) -> str:
    emoji = LANE_EMOJI.get(task.lane) or STATUS_EMOJI[task.status]
    return (
        f"{emoji} *{escape(task.lane)}* · profile `{escape(task.profile)}` · priority {task.priority}"
        f" · attempt {task.attempts}/{task.max_attempts}"
    )


def task_buttons(task: Task) -> list[dict[str, Any]]:
    """The buttons that make sense in the task's state (the executor still checks)."""
    buttons: list[dict[str, Any]] = []
    if task.lane in ("backlog", "ready"):  # not released nor waiting on a parent or its time
        label = "Promote to ready" if task.status == Status.BACKLOG else "Release"
        buttons.append(_button("promote", label, task, style="primary"))
    if task.status in (Status.FAILED, Status.CANCELLED):
        buttons.append(_button("retry", "Retry", task, style="primary"))
    if task.status not in (Status.DONE, Status.CANCELLED):
        cancel = _button("cancel", "Cancel", task, style="danger")
        cancel["confirm"] = {
            "title": {"type": "plain_text", "text": f"Cancel {task.ref}?"},
            "text": {
                "type": "mrkdwn",
                "text": cut(
                    f"*{escape(task.title)}* will not run again"
                    + (" and its running attempt is stopped." if task.status == Status.ACTIVE else ".")
                    + " Retry brings it back with a fresh retry budget.",
                    300,
                ),
            },
            "confirm": {"type": "plain_text", "text": "Cancel task"},
            "deny": {"type": "plain_text", "text": "Keep it"},
            "style": "danger",
        }
        buttons.append(cancel)
    return buttons


def _button(action: str, label: str, task: Task, *, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": ACTION_PREFIX + action,
        "text": {"type": "plain_text", "text": label},
        "value": str(task.id),
    }
    if style:
        button["style"] = style
    return button


def task_card(task: Task) -> tuple[str, list[dict[str, Any]]]:
    """The card: one message per task and channel, edited in place as the task moves.
    Returns (plain text, blocks), as every renderer here does."""
    text = f"{task.ref} {truncate(task.title, 150)} — {task.lane}"
    blocks = [
        section(f"*{task.ref} · {escape(task.title)}*\n{status_line(task)}"),
    ]
    details = [f"created by {mention(task.created_by)} {age(task.created_at)} ago"]
    if task.not_before:
        details.append(f"not before {task.not_before.isoformat(timespec='minutes')}")
    blocks.append(context(" · ".join(details)))
    if task.error and task.status in (Status.FAILED, Status.READY, Status.BLOCKED, Status.CANCELLED):
        blocks.append(section(f":warning: {escape(truncate(task.error, 500))}"))
    if task.result and task.status == Status.DONE:
        blocks.append(section("*Result*\n" + escape(truncate(task.result, 1500))))
    buttons = task_buttons(task)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"task-{task.id}", "elements": buttons})
    return text, blocks


def update_message(
    task: Task | None, payload: dict[str, Any], *, with_title: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """A state change, as a reply in the card's thread (``with_title`` when it has no card)."""
    message = str(payload.get("text") or payload.get("event") or "changed") + who(payload.get("actor"))
    if task is None:
        return message, [section(escape(message))]
    emoji = STATUS_EMOJI.get(task.status, "")
    plain_title = f" {truncate(task.title, 100)}:" if with_title else ""
    title = f" *{escape(truncate(task.title, 100))}*:" if with_title else ""
    return f"{task.ref}{plain_title} {message}", [section(f"{emoji} {task.ref}{title} {escape(message)}")]


def notice_message(kind: str, payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Alerts (and their resolutions), digests and plain messages: (plain text, blocks)."""
    text = str(payload.get("text") or "").strip()
    if kind == "alert":
        # scheduler/alerts.py: payload {"text", "key", "state": "fired" | "resolved"}
        resolved = payload.get("state") in ("resolved", "ok", "cleared") or payload.get("resolved") is True
        if not text.startswith(":"):
            text = (":white_check_mark: resolved: " if resolved else ":rotating_light: ") + text
        label = "Resolved" if resolved else "Alert"
        blocks = [section(escape(text))]
        if payload.get("key"):
            blocks.append(context(f"{label} · `{escape(str(payload['key']))}`"))
        return f"{label}: {text}", blocks
    if kind == "digest":
        return text, [header("Lanewarden digest"), *long_text(escape(text))]
    return text, long_text(escape(text))


# ------------------------------------------------------------------ command replies


def reply_for(result: Result, actor: Actor) -> Reply:
    if result.command.output_format():  # --json, list --output json|yaml
        payload = render(result)
        return Reply(truncate(payload, 3000), long_text(payload, code=True))
    text, blocks = _render(result)
    in_channel = result.verb in IN_CHANNEL_VERBS
    if in_channel:
        # response_url messages carry no author: say who did it
        blocks = [context(f"{mention(actor.id)} ran `/kanban {escape(result.verb)}`"), *blocks]
    return Reply(text, blocks, in_channel)


@singledispatch
def _render(result: Result) -> tuple[str, list[dict[str, Any]]]:
    text = render_text(result)
    return text, long_text(text, code=True)


@_render.register
def _(result: TaskChanged) -> tuple[str, list[dict[str, Any]]]:
    task = result.task
    if result.verb == "add":
        text = f"Created {task.ref} {task.title} in {task.lane}"
        lines = f"Created *{task.ref} · {escape(task.title)}*\n{status_line(task)}"
        return text, [section(lines)]
    return result.message, [section(f"{escape(result.message)}\n{status_line(task)}")]


@_render.register
def _(result: TaskList) -> tuple[str, list[dict[str, Any]]]:
    if getattr(result.command, "quiet", False):
        ids = "\n".join(str(t.id) for t in result.tasks) or "(none)"
        return ids, long_text(ids, code=True)
    if not result.tasks:
        return "no tasks", [section("No tasks match.")]
    lines = [
        f"{STATUS_EMOJI.get(t.status, '')} *{t.ref}* {escape(truncate(t.title, 120))}"
        f"  ·  {escape(t.lane)} · `{escape(t.profile)}` · p{t.priority} · {age(t.created_at)}"
        for t in result.tasks
    ]
    text = f"{len(result.tasks)} tasks: " + ", ".join(t.ref for t in result.tasks[:20])
    return text, [context(f"{len(result.tasks)} tasks, highest priority first"), *long_text("\n".join(lines))]


@_render.register
def _(result: TaskShown) -> tuple[str, list[dict[str, Any]]]:
    d = result.detail
    t = d.task
    blocks = [section(f"*{t.ref} · {escape(t.title)}*\n{status_line(t)}")]
    facts = [f"created by {mention(t.created_by)} {age(t.created_at)} ago"]
    if t.origin:
        facts.append(f"in {_channel_ref(t.origin)}")
    blocks.append(context(" · ".join(facts)))
    if t.body:
        blocks.append(section("*Body*\n" + escape(truncate(t.body, 1500))))
    if d.parents:
        blocks.append(section("*Waits for* " + ", ".join(f"{p.ref} ({escape(p.lane)})" for p in d.parents)))
    if d.children:
        blocks.append(section("*Needed by* " + ", ".join(f"{c.ref} ({escape(c.lane)})" for c in d.children)))
    if d.waiting_on:
        blocks.append(section("*Not starting because*\n" + "\n".join(f"• {escape(r)}" for r in d.waiting_on)))
    if t.error:
        blocks.append(section(f":warning: {escape(truncate(t.error, 500))}"))
    if t.result:
        blocks.append(section("*Result*\n" + escape(truncate(t.result, 1000))))
    if d.runs:
        runs = []
        for r in d.runs[-10:]:
            took = f"{r.latency_ms / 1000:.1f}s" if r.latency_ms is not None else "-"
            runs.append(f"{r.attempt}. {r.outcome or 'running'} {took} on {r.gateway or '-'}")
        blocks.append(section("*Runs*\n" + code_block("\n".join(runs), SECTION_LIMIT - 10)))
    if d.events:
        history = "\n".join(f"{e.at:%m-%d %H:%M} {e.actor} {e.kind}: {e.message}" for e in d.events[-15:])
        blocks.append(section("*History*\n" + code_block(history, SECTION_LIMIT - 20)))
    buttons = task_buttons(t)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"task-{t.id}", "elements": buttons})
    return f"{t.ref} {t.title} — {t.lane}", blocks


@_render.register
def _(result: BatchPromoted) -> tuple[str, list[dict[str, Any]]]:
    text = render_text(result)
    return text, [section(escape(text))]


@_render.register
def _(result: StatusShown) -> tuple[str, list[dict[str, Any]]]:
    return status_summary(result.report), status_blocks(result.report)


def status_summary(report: StatusReport) -> str:
    c = report.lanes
    return (
        f"Queue: {c['backlog']} backlog, {c['ready']} ready, {c['released']} released, "
        f"{c['waiting']} waiting, {c['active']} active, {c['failed']} failed, {c['blocked']} blocked"
    )


def status_blocks(report: StatusReport) -> list[dict[str, Any]]:
    c = report.lanes
    fields = [
        {"type": "mrkdwn", "text": f"{LANE_EMOJI.get(s) or STATUS_EMOJI[s]} *{s}* {c[s]}"}
        for s in ("backlog", "ready", "released", "waiting", "active", "done", "failed", "blocked")
    ]
    paused = "  :double_vertical_bar: *board paused*" if report.board_paused else ""
    return [
        section(f"*Board* {report.active}/{report.board_cap} active{paused}"),
        {"type": "section", "fields": fields},
        *long_text(status_text(report), code=True),
    ]


@_render.register
def _(result: Done) -> tuple[str, list[dict[str, Any]]]:
    return result.message, [section(escape(result.message))]


@_render.register
def _(result: HelpShown) -> tuple[str, list[dict[str, Any]]]:
    text = result.text + "\n\nIn Slack: /kanban COMMAND ... (e.g. /kanban add Summarize the logs)"
    return result.text, long_text(text, code=True)


@_render.register
def _(result: DigestShown) -> tuple[str, list[dict[str, Any]]]:
    return result.text, long_text(escape(result.text))


def _channel_ref(ref: str) -> str:
    if ref.startswith("slack:C") or ref.startswith("slack:G"):
        return f"<#{ref.removeprefix('slack:')}>"
    return escape(ref)


# ------------------------------------------------------------------ App Home


def home_view(tasks: list[Task], report: StatusReport) -> dict[str, Any]:
    """The caller's open tasks and the queue shape, refreshed each time Home opens."""
    blocks: list[dict[str, Any]] = [header("Lanewarden"), *status_blocks(report)[:2]]
    for gw in report.gateways:
        health = {True: ":large_green_circle: up", False: ":red_circle: DOWN", None: ":white_circle: unknown"}
        blocks.append(
            context(
                f"gateway *{escape(gw.name)}* {health[gw.healthy]} · {gw.in_flight}/{gw.limit} in flight"
                f" (cap {gw.cap})" + (" · paused" if gw.paused else "")
            )
        )
    # the host beside each gateway (node exporters), and what `tune` proposes
    blocks += [context(f":desktop_computer: {escape(node_line(n))}") for n in report.nodes]
    blocks += [context(f":bulb: {escape(a.text)}") for a in report.advice if a.proposed_cap is not None]
    blocks.append({"type": "divider"})
    if tasks:
        blocks.append(section(f"*Your open tasks* ({len(tasks)})"))
        for task in tasks[:15]:
            blocks.append(section(f"*{task.ref} · {escape(truncate(task.title, 150))}*\n{status_line(task)}"))
            buttons = task_buttons(task)
            if buttons:
                blocks.append({"type": "actions", "block_id": f"home-task-{task.id}", "elements": buttons})
    else:
        blocks.append(section("You have no open tasks. Create one with `/kanban add What to do`."))
    blocks.append(context("`/kanban help` lists every command."))
    return {"type": "home", "blocks": blocks[:100]}


@_render.register
def _(result: WebLinkShown) -> tuple[str, list[dict[str, Any]]]:
    # never in the channel: the link signs in as the caller (not in IN_CHANNEL_VERBS)
    text = render_text(result)
    blocks = [
        section(f"<{result.url}|Open the Lanewarden board> as *{escape(result.role)}*"),
        context(
            f"The link works once, within {result.minutes} minutes. It signs in as you: do not share it."
        ),
    ]
    return text, blocks
