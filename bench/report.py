"""Write BENCHMARKS.md from the latest JSON results (``python -m bench report``).

The figures in BENCHMARKS.md are never typed by hand: rerun a benchmark, then this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

OUT = ROOT / "BENCHMARKS.md"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def section_gateway(data: dict[str, Any]) -> str:
    runs = data["runs"]
    rows = []
    for r in runs:
        cap = r["cap"] if r["mode"] != "adaptive" else f"adaptive (settled {r.get('settled_limit')})"
        rows.append(
            [
                r["server"],
                r["mode"] if r["mode"] != "adaptive" else "adaptive",
                cap,
                r["tasks"],
                r["tokens_per_s"],
                r["throughput_tasks_per_s"],
                r["mean_tokens"],
                r["p50_s"],
                r["p99_s"],
                r["timeouts"],
                r["rejected_503"],
                r.get("steady_after_s"),
            ]
        )
    summary_rows = []
    for name, s in data["summary"].items():
        best = s["best_fixed"]
        summary_rows.append(
            [
                name,
                best["cap"] if best else "-",
                s.get("best_fixed_throughput_vs_uncapped"),
                s.get("uncapped_p99_vs_best_p99"),
                s.get("adaptive_throughput_vs_best"),
                s.get("adaptive_steady_throughput_vs_best"),
                s.get("adaptive_p99_vs_best"),
                s.get("adaptive_steady_p99_vs_best"),
                s["adaptive"]["timeouts"],
            ]
        )
    spread_rows = []
    for name, s in data["summary"].items():
        for rep in s.get("repeats", []):
            path = " ".join(
                f"{limit} ({why})"
                for limit, why in zip(rep["limit_history"] or [], rep["reasons"] or [], strict=False)
            )
            spread_rows.append(
                [
                    name,
                    rep["repeat"],
                    rep["tokens_vs_best"],
                    rep["steady_tokens_vs_best"],
                    rep["p99_vs_best"],
                    rep["timeouts"],
                    rep["settled_limit"],
                    rep["steady_after_s"],
                    path or "-",
                ]
            )
    charts = "\n".join(f"- `{r['chart']}`" for r in runs)
    return f"""## Gateway protection (`python -m bench gateway_protection`)

A burst of tasks dropped at once on each server, every request with a {data["timeout_seconds"]} s timeout,
through the real dispatcher: *uncapped* is a cap of 50 (a dispatcher left at its defaults),
*fixed* is a sweep of caps, *adaptive* is `adaptive = true` with 50 as its bound and nothing
else told. Throughput is output tokens per second over the whole batch (tasks per second
too, but a server that cuts answers short finishes "tasks" faster: see tokens/answer).
Latency is per request as the dispatcher saw it, queueing inside the server included.
The 2-core machine was shared with other work while these ran (its load average stayed
between 5 and 12): compare the runs of one sweep with each other, not with other days'
figures. The simulators run in a process of their own, llama.cpp servers on one thread.

{
        md_table(
            [
                "server",
                "mode",
                "cap",
                "tasks",
                "tokens/s",
                "tasks/s",
                "tokens/answer",
                "p50 s",
                "p99 s",
                "timeouts",
                "503s",
                "knee found after s",
            ],
            rows,
        )
    }

Against the best fixed cap (the knee: output within 3% of the most, lowest p99 among those):

{
        md_table(
            [
                "server",
                "best fixed cap",
                "best/uncapped tokens/s",
                "uncapped p99 / best p99",
                "adaptive/best tokens/s (whole run)",
                "(after the knee was found)",
                "adaptive/best p99 (whole run)",
                "(after)",
                "adaptive timeouts",
            ],
            summary_rows,
        )
    }

Every adaptive run of each server against the same sweep's best fixed cap (repeat 0 is the
sweep's own; later repeats ran with `--modes adaptive --repeat N`, at another moment of a
machine shared with other work, so their spread includes the machine's), with the limit's
path and the reason recorded for each move:

{
        md_table(
            [
                "server",
                "repeat",
                "adaptive/best tokens/s (whole run)",
                "(after the knee was found)",
                "adaptive/best p99",
                "timeouts",
                "settled limit",
                "knee found after s",
                "limit path (reason)",
            ],
            spread_rows,
        )
    }

One chart per run (in flight, limit and latency over time):

{charts}
"""


def section_scenarios(data: dict[str, Any]) -> str:
    lines = ["## Adaptive scenarios (`python -m bench adaptive_scenarios`)", ""]
    two = data.get("two_gateways")
    if two:
        lines += [
            "Two simulated servers (knees 2 and 5) on one board, one dispatcher, each adaptive under a",
            f"cap of 50. Final limits: {two['final_limits']}.",
            "",
            md_table(
                ["s", "gateway", "limit", "reason"],
                [[h["t"], h["gateway"], h["limit"], h["reason"]] for h in two["history"]],
            ),
            "",
        ]
    slower = data.get("slower_halfway")
    if slower:
        lines += [
            "One simulated server (knee 4); another tenant keeps 3 requests in flight on it from",
            f"{slower['tenant_arrived_s']} s to {slower['tenant_left_s']} s.",
            "",
            md_table(
                ["s", "limit", "reason"], [[h["t"], h["limit"], h["reason"]] for h in slower["history"]]
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Written by `python -m bench report` from `bench/results/*.json`; rerun any benchmark with",
        "`python -m bench NAME` (or `make bench` for all of them) and then the report.",
        "",
    ]
    dispatch = load("dispatch")
    machine = (dispatch or load("board_scale") or {}).get("machine", {})
    if machine:
        parts += [
            f"Machine: {machine.get('cpus')} cores ({machine.get('cpu')}), Python {machine.get('python')}, "
            f"SQLite {machine.get('sqlite')}, {machine.get('postgres_client')}. All figures are from this "
            "one machine, with the database, the dispatcher and the servers sharing its two cores.",
            "",
        ]
    if dispatch:
        tp, dl = dispatch["throughput"], dispatch["delay"]
        parts += [
            "## Dispatch (`python -m bench dispatch`)",
            "",
            "One process, SQLite, a no-op runner: the whole life of a task (claim, run, record).",
            "",
            md_table(
                ["measure", "value", "target"],
                [
                    ["lifecycles per second", tp["lifecycles_per_second"], ">= 1,000"],
                    ["ready -> started p50 (ms)", dl["start_p50_ms"], ""],
                    ["ready -> started p99 (ms)", dl["start_p99_ms"], "<= 20"],
                ],
            ),
            "",
        ]
    scale = load("scale_out")
    if scale:
        parts += [
            "## Scale-out (`python -m bench scale_out`)",
            "",
            "No-op lifecycles per second with several `serve` processes on one board, and the",
            "delay for a task added by another process (woken by LISTEN/NOTIFY on PostgreSQL,",
            "by `data_version` on SQLite). Published anchors for PostgreSQL queues on comparable",
            "hardware: PgQueuer 6-18k jobs/s, Oban ~17k/s, River ~46k/s (Go). Target: >= 2,000/s",
            "with 4 processes.",
            "",
            md_table(
                ["engine", "processes", "lifecycles/s", "delay p50 ms", "delay p99 ms"],
                [
                    [
                        r["engine"],
                        r["processes"],
                        r["lifecycles_per_second"],
                        r["delay_p50_ms"],
                        r["delay_p99_ms"],
                    ]
                    for r in scale["runs"]
                ],
            ),
            "",
            "What limits it: the two cores, shared by PostgreSQL and every Python process; each",
            "claim takes the board-wide advisory lock (caps are global), and each lifecycle is two",
            "short transactions (claim, finish) batched per process. Real tasks last seconds.",
            "",
        ]
    board = load("board_scale")
    if board:
        parts += [
            "## Board scale (`python -m bench board_scale`)",
            "",
            f"{board['tasks']:,} tasks ({board['ready']:,} ready, most of the rest done) on SQLite; each",
            "operation through the executor the CLI uses, in process. Target: each under 50 ms.",
            "",
            md_table(
                ["operation", "p50 ms", "p99 ms"],
                [[k, v["p50_ms"], v["p99_ms"]] for k, v in board["operations"].items()],
            ),
            "",
            f"The same `list` as a CLI process, interpreter start-up included: "
            f"{board['cli_list_wall_ms']:.0f} ms.",
            "",
        ]
    memory = load("memory")
    if memory:
        parts += [
            "## Memory (`python -m bench memory`)",
            "",
            f"`serve --headless` on a board of {memory['tasks']:,} ready tasks, dispatching for "
            f"{memory['seconds']:.0f} s ({memory['done_meanwhile']:,} finished meanwhile).",
            "",
            md_table(
                ["measure", "MB", "target"],
                [
                    ["RSS at the end", memory["rss_mb"], "<= 150"],
                    ["peak RSS (VmHWM)", memory["peak_rss_mb"], "<= 150"],
                ],
            ),
            "",
        ]
    nodes = load("node_scrape")
    if nodes:
        parts += [
            "## Node exporters (`python -m bench node_scrape`)",
            "",
            f"The leader scraping {nodes['hosts']} hosts every {nodes['interval_seconds']:g} s, each a "
            f"dcgm-exporter page ({nodes['dcgm_page_bytes'] // 1024} kB, 8 GPUs with MIG) and a "
            f"node_exporter page ({nodes['node_page_lines']:,} lines: {nodes['node_exporter']}), "
            "parsing both and writing one reading per host to SQLite.",
            "",
            md_table(
                ["measure", "value", "target"],
                [
                    ["CPU per round (all hosts)", f"{nodes['cpu_ms_per_round']:.1f} ms", ""],
                    ["wall per round", f"{nodes['wall_ms_per_round']:.1f} ms", ""],
                    ["share of one core", f"{nodes['share_of_one_core']:.2%}", "< 1%"],
                ],
            ),
            "",
        ]
    web_board = load("web_board")
    if web_board:
        screens = web_board["first_screen"]
        live = web_board["live"]
        parts += [
            "## Web board (`python -m bench web_board`)",
            "",
            f"Server time for the board's first screen (every column's first page and count, the "
            f"gateway strip, the page rendered) with {web_board['ready_tasks']:,} ready tasks; and a real "
            f"`serve` with {live['pages']} pages following `/events`, its CPU less its CPU with no page "
            "open, quiet and with another process changing one task per second.",
            "",
            md_table(
                ["measure", "value", "target"],
                [
                    *[
                        [
                            f"first screen, {db} (p50 / p95)",
                            f"{f['p50_ms']:.0f} / {f['p95_ms']:.0f} ms",
                            "< 300 ms",
                        ]
                        for db, f in screens.items()
                    ],
                    [
                        f"{live['pages']} pages, quiet",
                        f"{live['stream_cpu_percent_quiet']:.2f}% of a core",
                        "< 1%",
                    ],
                    [
                        f"{live['pages']} pages, one change per second",
                        f"{live['stream_cpu_percent_one_change_per_second']:.2f}% of a core",
                        "< 1%",
                    ],
                ],
            ),
            "",
        ]
    gateway = load("gateway_protection")
    if gateway:
        parts += [section_gateway(gateway)]
    scenarios = load("adaptive_scenarios")
    if scenarios:
        parts += [section_scenarios(scenarios)]
    OUT.write_text("\n".join(parts).rstrip() + "\n")
    print(f"wrote {Path(OUT).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
