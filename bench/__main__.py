"""``python -m bench NAME [options]`` or ``python -m bench all``: Lanewarden's benchmarks.

Each prints a table and writes ``bench/results/NAME.json``; BENCHMARKS.md collects the
latest figures. PostgreSQL benchmarks use $LANEWARDEN_BENCH_PG (default: the local
server, database ``test``).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "dispatch": "task lifecycles per second and dispatch delay, one process, SQLite",
    "scale_out": "lifecycles per second with 1, 2 and 4 processes on PostgreSQL vs SQLite",
    "board_scale": "list, counts, show and add on a board of 1,000,000 tasks",
    "memory": "serve's RSS with 100,000 ready tasks",
    "gateway_protection": "uncapped vs best fixed cap vs adaptive on llama.cpp and the simulator",
    "node_scrape": "the leader's CPU for scraping 10 hosts' dcgm-exporter and node_exporter every 15 s",
    "web_board": "the web board's first screen with 10,000 ready tasks; the live stream's CPU with 20 pages",
    "adaptive_scenarios": "adaptive limits: two gateways on one board, a server slower halfway",
    "report": "write BENCHMARKS.md from the latest results",
}


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        for name, what in BENCHMARKS.items():
            print(f"  {name:<20} {what}")
        return
    names = list(BENCHMARKS) if args[0] == "all" else [args[0]]  # "all" ends with the report
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"no benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or all")
        print(f"\n=== {name}: {BENCHMARKS[name]} ===", flush=True)
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [sys.argv[0], name, *(args[1:] if args[0] != "all" else [])]
        module.main()


if __name__ == "__main__":
    main()
