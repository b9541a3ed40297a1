"""``status --chart``: a PNG per board, for a terminal or a chat channel.

For each gateway, four panels over the same time axis:

* **requests**: in flight (from the runs' start and end times), the dispatcher's limit
  (slow start, adaptive, backpressure; each recorded change marked with its reason) and
  the cap (the config's, then each ``caps set``/``caps reset`` as it happened);
  outages are shaded;
* **delivered tokens/s**: what the adaptive limit optimises (each answer's tokens spread
  over the time it was generated);
* **latency**: each finished request, and its time to first token where measured;
* **node**: GPU busy and VRAM used, from the node exporters' rounds.

Only recorded history is drawn: the axis starts at the first thing recorded in the window
(``--since``, an hour by default), lines start where their record starts, and a panel
with nothing in it says so instead of drawing an empty range. 1200 px wide, about 770 px
tall per gateway: legible in a Slack or Discord preview without opening it.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lanewarden.core.board import Board
from lanewarden.core.caps import Limits
from lanewarden.core.clock import format_seconds, utcnow
from lanewarden.core.config import lanewarden_home
from lanewarden.core.errors import UsageError
from lanewarden.core.limiter import reason_kind
from lanewarden.core.nodes import NodeReading
from lanewarden.core.readmodel import (
    DeliveredRun,
    RunSample,
    delivered_runs,
    gateway_cap_changes,
    in_flight_steps,
    limit_history,
    node_history,
    recent_runs,
    run_intervals,
)
from lanewarden.core.schema import gateway_state
from sqlalchemy import select

WINDOW = timedelta(hours=1)
MIN_SPAN = timedelta(minutes=2)  # a chart of the first seconds still has an axis to read
WIDTH_IN, HEIGHT_PER_GATEWAY_IN, DPI = 11.0, 7.0, 110
REASON_COLOURS = {  # by reason_kind: the adaptive limiter's reasons say more ("gain +31% at 6")
    "adaptive": "tab:red",
    "gain": "tab:green",
    "no gain": "tab:red",
    "server": "tab:cyan",
    "latency": "tab:pink",
    "probe": "tab:purple",
    "backpressure": "tab:orange",
    "slow_start": "tab:olive",
    "recovered": "tab:green",
    "down": "black",
}


def chart_directory() -> Path:
    return lanewarden_home() / "charts"


def status_chart_png(board: Board, *, window: timedelta = WINDOW, now: datetime | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    now = now or utcnow()
    history = ChartHistory.load(board, now - window, now)
    names = sorted(board.config.gateways)
    rows = max(1, len(names))
    fig = plt.figure(figsize=(WIDTH_IN, HEIGHT_PER_GATEWAY_IN * rows + 0.4), dpi=DPI)
    grid = fig.add_gridspec(2 * rows, 2, hspace=0.42, wspace=0.2)
    start = history.start
    span_minutes = (now - start).total_seconds() / 60
    for row, name in enumerate(names):
        axes = [fig.add_subplot(grid[2 * row + r, c]) for r in (0, 1) for c in (0, 1)]
        for ax in axes:
            ax.set_xlim(-span_minutes, 0)
            ax.grid(alpha=0.25)
            ax.tick_params(labelsize=8)
        requests, tokens, latency, node = axes
        _draw_requests(requests, board, history, name, now)
        _draw_tokens(tokens, history.delivered.get(name, []), start, now)
        _draw_latency(latency, history.runs.get(name, []), now)
        _draw_node(node, history.nodes.get(name, []), bool(board.config.gateways[name].node_metrics), now)
        for ax in (latency, node):
            ax.set_xlabel("minutes ago", fontsize=8)
        for ax in axes:
            _shade_outages(ax, history.outages.get(name, []), now)
    if not names:
        fig.text(0.5, 0.5, "no gateways configured", ha="center", fontsize=14)
    fig.suptitle(
        f"Lanewarden, the last {format_seconds((now - start).total_seconds())} (UTC {now:%H:%M:%S})",
        fontsize=12,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class ChartHistory:
    """Everything recorded about the gateways in the window, read in one transaction."""

    def __init__(self) -> None:
        self.start: datetime = utcnow()
        self.limits: Limits | None = None
        self.intervals: dict[str | None, list[Any]] = {}
        self.runs: dict[str, list[RunSample]] = {}
        self.delivered: dict[str, list[DeliveredRun]] = {}
        self.limit_rows: dict[str, list[Any]] = {}
        self.caps: dict[str, list[tuple[datetime, int]]] = {}
        self.nodes: dict[str, list[NodeReading]] = {}
        self.outages: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)

    @classmethod
    def load(cls, board: Board, since: datetime, now: datetime) -> ChartHistory:
        h = cls()
        config = board.config
        with board.db.read() as conn:
            h.limits = Limits.load(conn, config)
            h.intervals = run_intervals(conn, since, now)
            h.runs = recent_runs(conn, since)
            h.delivered = delivered_runs(conn, since)
            h.limit_rows = limit_history(conn, since)
            h.caps = gateway_cap_changes(conn, config, now)
            h.nodes = {name: node_history(conn, name, since) for name in config.gateways}
            states = {r.name: r for r in conn.execute(select(gateway_state))}
        firsts: list[datetime] = []
        for name in config.gateways:
            firsts += [max(c, since) for c, _ in h.intervals.get(name, [])]
            firsts += [r.at for r in h.limit_rows.get(name, []) if r.at > since]
            firsts += [r.at for r in h.nodes.get(name, [])[:1]]
            h.outages[name] = _outages(h.limit_rows.get(name, []), states.get(name), since)
            firsts += [max(start, since) for start, _ in h.outages[name]]
        first = min(firsts, default=now)
        h.start = max(since, min(first, now - MIN_SPAN))
        return h


def _outages(rows: Sequence[Any], state: Any, since: datetime) -> list[tuple[datetime, datetime | None]]:
    """(down at, back at or None): from the recorded "down"/"recovered" limit changes, and the
    current state for an outage older than its record (a board from before that was kept)."""
    found: list[tuple[datetime, datetime | None]] = []
    began: datetime | None = None
    for r in rows:
        if r.reason == "down" and began is None:
            began = r.at
        elif r.reason == "recovered" and began is not None:
            found.append((began, r.at))
            began = None
    if began is None and state is not None and state.healthy is False and state.changed_at is not None:
        began = state.changed_at
    if began is not None:
        found.append((began, None))
    return [(b, e) for b, e in found if e is None or e > since]


def _minutes(at: datetime, now: datetime) -> float:
    return (at - now).total_seconds() / 60


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))


def _empty(ax: Any, text: str) -> None:
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")


def _draw_requests(ax: Any, board: Board, h: ChartHistory, name: str, now: datetime) -> None:
    start = h.start
    steps = in_flight_steps(h.intervals.get(name, []), start, now)
    # per bin, the peak and the mean: a raw 0/1/0 curve of short requests is a solid block
    xs, peak, mean = _binned(steps, start, now)
    ax.step([*xs, 0.0], [*peak, peak[-1]], where="post", label="in flight (peak)", color="tab:blue")
    ax.fill_between(
        [*xs, 0.0], [*mean, mean[-1]], step="post", alpha=0.3, color="tab:blue", label="in flight (mean)"
    )
    top = max(peak)
    assert h.limits is not None
    window = h.limits.gateways[name]
    # the cap: the config's until the first recorded change, then each change
    config_cap = board.config.gateways[name].max_concurrency
    changes = h.caps.get(name, [])
    cap_now = next((v for at, v in reversed(changes) if at <= start), config_cap)
    cap_x, cap_y = [_minutes(start, now)], [cap_now]
    for at, value in changes:
        if at > start:
            cap_x.append(_minutes(at, now))
            cap_y.append(value)
    cap_x.append(0.0)
    cap_y.append(window.cap)
    ax.step(cap_x, cap_y, where="post", color="grey", linestyle=":", label=f"cap (now {window.cap})")
    top = max(top, *cap_y)
    # the limit: only where recorded (a gateway without changes runs at its cap)
    rows = h.limit_rows.get(name, [])
    if rows:
        lim_x = [_minutes(max(rows[0].at, start), now)]
        lim_y = [rows[0].current_limit]
        for r in rows[1:]:
            lim_x.append(_minutes(r.at, now))
            lim_y.append(r.current_limit)
        lim_x.append(0.0)
        lim_y.append(0 if window.healthy is False else window.limit)
        ax.step(lim_x, lim_y, where="post", color="tab:red", linewidth=1.2, label="limit")
        seen: set[str] = set()
        for r in rows:
            if r.at <= start:
                continue
            kind = reason_kind(r.reason)
            colour = REASON_COLOURS.get(kind, "tab:brown")
            label = None if kind in seen else f"limit: {kind.replace('_', ' ')}"
            seen.add(kind)
            ax.plot([_minutes(r.at, now)], [r.current_limit], "o", ms=3.5, color=colour, label=label)
    ax.set_ylim(0, top * 1.45 + 1)  # head room for the legend
    _integer_ticks(ax)
    why = f" (limit {rows[-1].current_limit}: {rows[-1].reason})" if rows else ""
    ax.set_title(f"gateway {name}: requests{why}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.85)


def _bin_width(start: datetime, now: datetime) -> float:
    """About sixty bins whatever the window, none shorter than five seconds."""
    return max(5.0, (now - start).total_seconds() / 60)


def _binned(
    steps: list[tuple[datetime, int]], start: datetime, now: datetime
) -> tuple[list[float], list[int], list[float]]:
    """A step curve (instant, level from then on) as bins: left edges, peak, time-weighted mean."""
    width = _bin_width(start, now)
    count = int((now - start).total_seconds() // width) + 1
    peak, total = [0] * count, [0.0] * count
    ends = [at for at, _ in steps[1:]] + [now]
    for (at, level), until in zip(steps, ends, strict=True):
        begin, end = (at - start).total_seconds(), (until - start).total_seconds()
        for i in range(int(begin // width), min(int(end // width), count - 1) + 1):
            overlap = min(end, (i + 1) * width) - max(begin, i * width)
            if overlap > 0 or (i == int(begin // width) and begin == end):
                peak[i] = max(peak[i], level)
                total[i] += level * max(overlap, 0.0)
    xs = [_minutes(start + timedelta(seconds=i * width), now) for i in range(count)]
    return xs, peak, [t / width for t in total]


def _draw_tokens(ax: Any, delivered: list[DeliveredRun], start: datetime, now: datetime) -> None:
    ax.set_title("delivered tokens/s", fontsize=10)
    if not delivered:
        _empty(ax, "no answers with a token count")
        return
    span = (now - start).total_seconds()
    width = _bin_width(start, now)
    bins = [0.0] * (int(span // width) + 1)
    for run in delivered:
        begin = max((run.start - start).total_seconds(), 0.0)
        end = max((run.end - start).total_seconds(), begin + 1e-3)
        rate = run.tokens / (end - begin)
        first, last = int(begin // width), min(int(end // width), len(bins) - 1)
        for i in range(first, last + 1):
            overlap = min(end, (i + 1) * width) - max(begin, i * width)
            if overlap > 0:
                bins[i] += rate * overlap
    xs = [_minutes(start + timedelta(seconds=i * width), now) for i in range(len(bins))]
    ys = [total / width for total in bins]
    ax.step([*xs, 0.0], [*ys, ys[-1]], where="post", color="tab:green")
    ax.fill_between([*xs, 0.0], [*ys, ys[-1]], step="post", alpha=0.2, color="tab:green")
    ax.set_ylim(0, max(ys) * 1.15 or 1)


def _draw_latency(ax: Any, samples: list[RunSample], now: datetime) -> None:
    ax.set_title("latency (s)", fontsize=10)
    done = [r for r in samples if r.latency_ms is not None]
    if not done:
        _empty(ax, "no requests finished")
        return
    ax.scatter(
        [_minutes(r.finished_at, now) for r in done],
        [r.latency_ms / 1000 for r in done],
        s=8,
        label="latency",
    )
    ttft = [r for r in done if r.ttft_ms is not None]
    if ttft:
        ax.scatter(
            [_minutes(r.finished_at, now) for r in ttft],
            [r.ttft_ms / 1000 for r in ttft],
            s=8,
            marker="x",
            label="time to first token",
        )
    ax.set_ylim(0, max(r.latency_ms for r in done) / 1000 * 1.15)
    ax.legend(loc="upper left", fontsize=7)


def _draw_node(ax: Any, readings: list[NodeReading], configured: bool, now: datetime) -> None:
    ax.set_title("node: GPU busy and VRAM used (%)", fontsize=10)
    if not any(r.known for r in readings):
        _empty(ax, "node exporters not read yet" if configured else "no node_metrics configured")
        return
    # a round whose exporters did not answer breaks the lines (unknown, not zero)
    xs = [_minutes(r.at, now) for r in readings]
    util = [r.figures.gpu_util if r.known else None for r in readings]
    vram = [
        100 * r.figures.vram_ratio if r.known and r.figures.vram_ratio is not None else None for r in readings
    ]
    if any(v is not None for v in util):
        ax.plot(xs, [float("nan") if v is None else v for v in util], color="tab:orange", label="GPU busy")
    if any(v is not None for v in vram):
        ax.plot(xs, [float("nan") if v is None else v for v in vram], color="tab:purple", label="VRAM used")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", fontsize=7)


def _shade_outages(ax: Any, outages: list[tuple[datetime, datetime | None]], now: datetime) -> None:
    for began, ended in outages:
        right = 0.0 if ended is None else _minutes(ended, now)
        ax.axvspan(_minutes(began, now), right, color="tab:red", alpha=0.12, lw=0)


def chart_path(output: str | None) -> Path:
    """Where ``status --chart`` writes: ``--output`` (a file, or a directory to put it in),
    else ``~/.lanewarden/charts/``; never the current directory by default."""
    name = f"lanewarden-status-{utcnow():%Y%m%d-%H%M%S}.png"
    if output is None:
        directory = chart_directory()
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name
    path = Path(output).expanduser()
    if path.is_dir():
        return path / name
    if not path.parent.is_dir():
        raise UsageError(f"--output {output}: the directory {path.parent} does not exist")
    if path.suffix.lower() != ".png":
        raise UsageError(f"--output {output}: must end in .png (or name a directory)")
    return path


def write_status_chart(board: Board, *, output: str | None = None, window: timedelta = WINDOW) -> Path:
    """For the terminal front ends: the chart as a file."""
    path = chart_path(output)
    try:
        path.write_bytes(status_chart_png(board, window=window))
    except OSError as exc:
        raise UsageError(f"cannot write the chart to {path}: {exc.strerror}") from None
    return path
