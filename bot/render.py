"""Plain-text rendering of results, for the CLI, the console and chat fallbacks."""

from __future__ import annotations

import json
from datetime import datetime
from functools import singledispatch
from typing import Any

from lanewarden.core.board import Board
from lanewarden.core.clock import age, format_seconds, utcnow
from lanewarden.core.liveness import describe_skew, skew_is_large
from lanewarden.core.nodes import format_bytes
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
from lanewarden.core.run_output import RunLog
from lanewarden.core.status import GatewayStatus, NodeStatus, StatusReport
from lanewarden.core.tasks import Run, Task


def render_with_files(result: Result, board: Board) -> str:
    """``render``, plus what the terminal front ends write to disk (``status --chart``)."""
    text = render(result)
    if isinstance(result, StatusShown) and result.chart:
        from lanewarden.bot.tools.chart import write_status_chart

        output = getattr(result.command, "output", None)
        path = write_status_chart(board, output=output, window=result.chart_window)
        text += f"\nchart written to {path}"
    return text


def render(result: Result) -> str:
    """Text for people, or JSON/YAML when the command asked for it (``--json``, ``--output``)."""
    fmt = result.command.output_format() if result.command is not None else None
    if fmt == "json":
        return json.dumps(result.to_json(), indent=2, sort_keys=True, default=str)
    if fmt == "yaml":
        import yaml  # only `--output yaml` needs it

        # through JSON first: datetimes and the like become the same strings --json prints
        return yaml.safe_dump(json.loads(json.dumps(result.to_json(), default=str)), sort_keys=True).rstrip()
    return render_text(result)


@singledispatch
def render_text(result: Result) -> str:
    return json.dumps(result.to_json(), default=str)


@render_text.register
def _(result: TaskChanged) -> str:
    if result.verb == "add":
        return str(result.task.id)  # scripts chain parents: parent_id="$(lanewarden add ...)"
    return result.message


@render_text.register
def _(result: TaskList) -> str:
    if getattr(result.command, "quiet", False):
        return "\n".join(str(t.id) for t in result.tasks)
    if not result.tasks:
        return "no tasks"
    table = task_table(result.tasks)
    return f"{table}\n{list_cut_note(result)}" if result.cut else table


def list_cut_note(result: TaskList) -> str:
    return f"(the first {len(result.tasks)} shown; more match: --limit 0 lists all)"


def task_table(tasks: list[Task]) -> str:
    rows = [("ID", "STATUS", "PRI", "PROFILE", "AGE", "TITLE")]
    now = utcnow()
    for t in tasks:
        rows.append((t.ref, t.lane, str(t.priority), t.profile, age(t.created_at, now), t.title))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:5])) + "  " + r[5] for r in rows
    )


@render_text.register
def _(result: TaskShown) -> str:
    d = result.detail
    t = d.task
    lines = [
        f"{t.ref} {t.title}",
        f"  status: {t.lane}   profile: {t.profile}   priority: {t.priority}   "
        f"attempts: {t.attempts}/{t.max_attempts}",
    ]
    lines.append(
        f"  created {age(t.created_at)} ago by {t.created_by}"
        + (f" in {t.origin}" if t.origin and not t.origin.startswith("hermes:") else "")
    )
    if t.origin and t.origin.startswith("hermes:"):
        lines.append(f"  hermes {t.origin.removeprefix('hermes:')}")  # `show` finds it by that id too
    if t.not_before:
        lines.append(f"  not before: {t.not_before.isoformat(timespec='seconds')}")
    if t.body:
        lines.append("  body: " + t.body.replace("\n", "\n        "))
    if d.parents:
        lines.append("  waits for: " + ", ".join(f"{p.ref} ({p.lane})" for p in d.parents))
    if d.children:
        lines.append("  needed by: " + ", ".join(f"{c.ref} ({c.lane})" for c in d.children))
    if d.waiting_on:
        lines.append("  not starting because:")
        lines += [f"    - {reason}" for reason in d.waiting_on]
    if t.error:
        lines.append(f"  error: {t.error}")
    if t.result:
        shown = t.result if len(t.result) <= 500 else t.result[:500] + "…"
        lines.append("  result: " + shown.replace("\n", "\n          "))
    if d.runs:
        lines.append("  runs:")
        for r in d.runs:
            took = f"{r.latency_ms / 1000:.1f}s" if r.latency_ms is not None else "-"
            tokens = f" {r.completion_tokens} tok" if r.completion_tokens is not None else ""
            outcome = r.outcome or "running"
            err = f" ({r.error})" if r.error else ""
            lines.append(
                f"    {r.attempt}. {outcome:<12} {took:>7}{tokens} {_ran_where(r, d.runners)} "
                f"by {r.dispatcher}{err}"
            )
    if d.events:
        lines.append("  history:")
        for e in d.events:
            lines.append(f"    {e.at.strftime('%Y-%m-%d %H:%M:%S')}  {e.actor:<20} {e.kind:<15} {e.message}")
    return "\n".join(lines)


def _ran_where(run: Run, runners: dict[str, str]) -> str:
    """``on gpu1`` for a gateway request; a command run has no gateway: its profile and runner."""
    if run.gateway:
        return f"on {run.gateway}"
    runner = runners.get(run.profile)
    return f"as {run.profile} ({runner})" if runner else f"as {run.profile}"


# what a chat message shows of `logs`: the last runs, each cut to its tail
CHAT_LOG_RUNS = 3
CHAT_LOG_LINES = 30
CHAT_LOG_CHARS = 2500


@render_text.register
def _(result: LogsShown) -> str:
    task, logs = result.task, result.logs
    if not logs:
        return f"{task.ref} has not run yet ({task.lane})"
    lines: list[str] = []
    shown = logs[-CHAT_LOG_RUNS:] if result.bounded else logs
    if len(shown) < len(logs):
        lines.append(f"(the last {len(shown)} of {len(logs)} runs; `logs {task.id} --attempt N` for one)")
    tail = result.command.tail  # type: ignore[attr-defined]
    if result.bounded:
        tail = min(tail or CHAT_LOG_LINES, CHAT_LOG_LINES)
    for log in shown:
        lines.append(run_log_header(task, log))
        text, cut = log_tail(log.text, tail, CHAT_LOG_CHARS if result.bounded else None)
        if log.dropped or cut:
            lines.append(
                "[earlier output not shown" + ("" if cut else ": only the last 64 KiB are kept") + "]"
            )
        lines.append(text.strip("\n") if text.strip("\n") else "(no output)")
    if result.bounded and result.command.follow:  # type: ignore[attr-defined]
        lines.append(f"(--follow works in the CLI and console: `lanewarden logs {task.id} --follow`)")
    return "\n".join(lines)


def run_log_header(task: Task, log: RunLog) -> str:
    r = log.run
    took = f", {r.latency_ms / 1000:.1f}s" if r.latency_ms is not None else ""
    return f"--- {task.ref} attempt {r.attempt}: {r.outcome or 'running'} {_ran_where(r, {})}{took} ---"


def log_tail(text: str, lines: int | None, chars: int | None) -> tuple[str, bool]:
    """The last ``lines`` lines and at most ``chars`` characters of ``text``; whether it cut."""
    cut = False
    if lines is not None:
        kept = text.splitlines(keepends=True)
        if len(kept) > lines:
            text, cut = "".join(kept[-lines:]), True
    if chars is not None and len(text) > chars:
        text, cut = text[-chars:], True
    return text, cut


@render_text.register
def _(result: BatchPromoted) -> str:
    if not result.tasks:
        return f"nothing to promote from {result.from_column}"
    verb = "released" if result.to_column == "active" else f"promoted to {result.to_column}"
    return f"{verb}: " + ", ".join(t.ref for t in result.tasks)


@render_text.register
def _(result: CapsShown) -> str:
    caps = result.caps
    board = caps["board"]
    lines = [f"board: {board['in_use']}/{board['cap']} active{_flags(board)}"]
    for name, p in caps["profiles"].items():
        lines.append(f"profile {name}: {p['in_use']}/{p['cap']}{_flags(p)}")
    for name, g in caps["gateways"].items():
        # the help promises "in use / limit / cap": the limit is the adaptive or slow-start window
        lines.append(f"gateway {name}: {g['in_use']} in use / {g['limit']} limit / {g['cap']} cap{_flags(g)}")
    return "\n".join(lines)


def _flags(entry: dict[str, Any]) -> str:
    flags = [f for f in ("override", "paused") if entry.get(f)]
    if entry.get("healthy") is False:
        flags.append("down")
    if entry.get("config") is not None:  # the board's caps apply to every process (core/caps.py)
        flags.append(f"this config says {entry['config']}")
    return f"  [{', '.join(flags)}]" if flags else ""


def _process(p: dict[str, Any], now: datetime) -> str:
    beat = p.get("heartbeat_at")
    shown = p["id"] if beat is None else f"{p['id']} beat {format_seconds((now - beat).total_seconds())} ago"
    skew_ms = p.get("clock_skew_ms")
    if skew_ms is None or not skew_is_large(skew_ms / 1000):
        return shown
    return f"{shown} [{describe_skew(skew_ms / 1000)}]"


@render_text.register
def _(result: StatusShown) -> str:
    return status_text(result.report)


def status_text(r: StatusReport) -> str:
    lanes = r.lanes
    shape = "  ".join(
        f"{s} {lanes[s]}"
        for s in ("backlog", "ready", "released", "waiting", "active", "done", "failed", "blocked")
    )
    oldest = (
        "" if r.oldest_ready_seconds is None else f", oldest ready {format_seconds(r.oldest_ready_seconds)}"
    )
    mode = "windowed (starts only released tasks)" if r.windowed else "continuous"
    lines = [
        f"queue: {shape}{oldest}",
        f"board: {r.active}/{r.board_cap} active, dispatch {mode}" + ("  [PAUSED]" if r.board_paused else ""),
    ]
    lines += held_back_lines(r)
    for g in r.gateways:
        health = gateway_health(g)
        lat = (
            "-"
            if g.latency_p50_ms is None
            else f"{g.latency_p50_ms / 1000:.1f}s/{g.latency_p95_ms / 1000:.1f}s"
        )
        err = "-" if g.error_rate is None else f"{g.error_rate:.0%}"
        tmo = "-" if g.timeout_rate is None else f"{g.timeout_rate:.0%}"
        queue = f", server queue {g.server_waiting:g}" if g.server_waiting is not None else ""
        flags = " [PAUSED]" if g.paused else ""
        flags += " [adaptive]" if g.adaptive else ""
        why = f"; limit: {g.limit_reason}" if g.limit_reason and g.limit != g.cap else ""
        lines.append(
            f"gateway {g.name} ({g.kind}): {health}, in flight {g.in_flight}/{g.limit} (cap {g.cap}{why}), "
            f"p50/p95 {lat}, errors {err}, timeouts {tmo} over {g.requests_5m} in 5m{queue}{flags}"
        )
        if g.healthy is False and g.last_error:
            lines.append(f"  last error: {g.last_error}")
    lines += [node_line(n) for n in r.nodes]
    lines += [f"tune: {a.text}" for a in r.advice if a.proposed_cap is not None]
    for p in r.profiles:
        flags = " [PAUSED]" if p.paused else ""
        lines.append(
            f"profile {p.name}: {p.active}/{p.cap} active, {p.ready} ready"
            f"{' via ' + p.gateway if p.gateway else ''}{flags}"
        )
    lines.append(processes_line(r))
    return "\n".join(lines)


def gateway_health(g: GatewayStatus) -> str:
    """``up, checked 4s ago``; a reading older than a few probe intervals is marked stale:
    nothing has probed the gateway since, so it is only what the gateway was."""
    health = {True: "up", False: "DOWN", None: "unknown"}[g.healthy]
    if g.checked_seconds_ago is None:
        return f"{health} (never probed)" if g.healthy is not None else "unknown (never probed)"
    checked = f"checked {format_seconds(g.checked_seconds_ago)} ago"
    return f"{health} [stale: {checked}]" if g.stale else f"{health}, {checked}"


def held_back_lines(r: StatusReport) -> list[str]:
    """The real reasons ready work is not starting (core/readmodel.py ``held_back``)."""
    lines = []
    if not r.processes and r.counts.get("ready"):
        lines.append("not starting: no live process dispatches (start `lanewarden serve`)")
    for reason, count in r.held_back[:4]:
        lines.append(f"not starting ({count} task{'s' if count != 1 else ''}): {reason}")
    return lines


def processes_line(r: StatusReport) -> str:
    """Only live processes count; with none, when the last one was seen."""
    if r.processes:
        shown = ", ".join(_process(p, r.at) for p in r.processes)
        return f"processes: {len(r.processes)} live ({shown}); leader {r.leader or 'none'}"
    if r.last_heartbeat_at is None:
        return "processes: none has run on this board yet (`lanewarden serve` starts one)"
    seen = r.last_heartbeat_at.strftime("%H:%M")
    ago = format_seconds((r.at - r.last_heartbeat_at).total_seconds())
    return f"processes: no live process since {seen} UTC ({ago} ago)"


def node_figures(n: NodeStatus) -> str:
    """``GPU 38% busy, VRAM 14.5G/15.8G (92%), CPU 12% busy, RAM 22.5G of 23.5G free``."""
    parts = []
    if n.gpu_util is not None:
        parts.append(f"GPU {n.gpu_util:.0f}% busy")
    if n.vram_used_bytes is not None and n.vram_total_bytes:
        share = n.vram_used_bytes / n.vram_total_bytes
        parts.append(
            f"VRAM {format_bytes(n.vram_used_bytes)}/{format_bytes(n.vram_total_bytes)} ({share:.0%})"
        )
    if n.cpu_busy is not None:
        parts.append(f"CPU {n.cpu_busy:.0%} busy")
    elif n.load1 is not None:
        parts.append(f"load {n.load1:g}")
    if n.ram_available_bytes is not None and n.ram_total_bytes:
        parts.append(f"RAM {format_bytes(n.ram_available_bytes)} of {format_bytes(n.ram_total_bytes)} free")
    return ", ".join(parts) or "no GPU, CPU or RAM figures in its exporters"


def node_line(n: NodeStatus) -> str:
    """One line per host: its figures and their age; unknown when the exporters are silent."""
    age = "" if n.age_seconds is None else f"read {format_seconds(n.age_seconds)} ago"
    if n.state == "not read yet":
        return f"node {n.gateway}: not read yet"
    if n.state == "unknown":
        why = n.errors[0] if n.errors else "no exporter answered"
        last = f"; last {age}: {node_figures(n)}" if n.age_seconds is not None else ""
        return f"node {n.gateway}: unknown ({why}){last}"
    return f"node {n.gateway}: {node_figures(n)}, {age}"


@render_text.register
def _(result: WindowsShown) -> str:
    if not result.windows:
        return "no windows"
    return "\n".join(
        f"{w.name}: `{w.cron}` {w.timezone} -> {w.command}  ({w.source})" for w in result.windows
    )


@render_text.register
def _(result: Done) -> str:
    return result.message


@render_text.register
def _(result: HelpShown) -> str:
    return result.text


@render_text.register
def _(result: DigestShown) -> str:
    return result.text


@render_text.register
def _(result: TuneShown) -> str:
    lines = [a.text for a in result.advice] or ["no gateways configured"]
    for gateway, cap in result.applied:
        lines.append(f"applied: gateway {gateway} cap is now {cap}")
    if not result.applied and not result.command.apply and any(a.proposed_cap for a in result.advice):
        lines.append("(nothing changed: `tune --apply` as an admin sets the proposed caps)")
    return "\n".join(lines)


@render_text.register
def _(result: WebLinkShown) -> str:
    return (
        f"Your sign-in link to the web board ({result.role}): {result.url}\n"
        f"It works once, within {result.minutes} minutes. Do not share it: it signs in as you."
    )
