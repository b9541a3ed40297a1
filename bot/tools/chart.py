"""``status --chart``: a PNG of the last hour per gateway, for posting to chat.

Top panel per gateway: requests in flight (reconstructed from the runs' start and end
times) against the dispatcher's limit (the slow start / adaptive window, from
``gateway_limit_history``) and the cap. Bottom panel: request latency (and time to
first token where the runner measured it).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

from lanewarden.core.board import Board
from lanewarden.core.caps import Limits
from lanewarden.core.clock import format_seconds, utcnow
from lanewarden.core.readmodel import in_flight_steps, limit_history, recent_runs, run_intervals

WINDOW = timedelta(hours=1)


def status_chart_png(board: Board, *, window: timedelta = WINDOW, now: datetime | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    now = now or utcnow()
    since = now - window
    names = sorted(board.config.gateways) or ["(no gateways)"]
    with board.db.read() as conn:
        limits = Limits.load(conn, board.config)
        intervals = run_intervals(conn, since, now)
        samples = recent_runs(conn, since)
        history = limit_history(conn, since)
    fig, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 6), squeeze=False, sharex="col")
    for col, name in enumerate(names):
        top, bottom = axes[0][col], axes[1][col]
        steps = in_flight_steps(intervals.get(name, []), since, now)
        xs = [_minutes(at, now) for at, _ in steps] + [0.0]
        ys = [level for _, level in steps] + [steps[-1][1]]
        top.step(xs, ys, where="post", label="in flight")
        window_state = limits.gateways.get(name)
        if window_state is not None:
            top.axhline(window_state.cap, color="grey", linestyle=":", label=f"cap {window_state.cap}")
            adaptive = board.config.gateways[name].adaptive
            # before any recorded change the window was the cap, or 1 for an adaptive gateway
            lim_x, lim_y = [_minutes(since, now)], [1 if adaptive else window_state.cap]
            for h in history.get(name, []):
                if h.at <= since:
                    lim_y[0] = h.current_limit
                else:
                    lim_x.append(_minutes(h.at, now))
                    lim_y.append(h.current_limit)
            lim_x.append(0.0)
            lim_y.append(window_state.limit)
            top.step(lim_x, lim_y, where="post", color="tab:red", label="limit")
        top.set_title(f"gateway {name}")
        top.set_ylabel("requests")
        top.legend(loc="upper left", fontsize="small")
        done = [r for r in samples.get(name, []) if r.latency_ms is not None]
        bottom.scatter(
            [_minutes(r.finished_at, now) for r in done],
            [r.latency_ms / 1000 for r in done],
            s=8,
            label="latency",
        )
        ttft = [r for r in done if r.ttft_ms is not None]
        if ttft:
            bottom.scatter(
                [_minutes(r.finished_at, now) for r in ttft],
                [r.ttft_ms / 1000 for r in ttft],
                s=8,
                marker="x",
                label="time to first token",
            )
        bottom.set_ylabel("seconds")
        bottom.set_xlabel("minutes ago")
        bottom.set_xlim(-window.total_seconds() / 60, 0)
        bottom.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"Lanewarden, last {format_seconds(window.total_seconds())} (UTC {now:%H:%M:%S})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _minutes(at: datetime, now: datetime) -> float:
    return (at - now).total_seconds() / 60


def write_status_chart(board: Board, directory: Path | None = None) -> Path:
    """For the terminal front ends: the chart as a file, named by the time it was drawn."""
    path = (directory or Path.cwd()) / f"lanewarden-status-{utcnow():%Y%m%d-%H%M%S}.png"
    path.write_bytes(status_chart_png(board))
    return path
