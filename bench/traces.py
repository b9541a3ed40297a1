"""Record what a real server did at each fixed cap, for the limiter's unit tests.

``python -m bench.traces WORKDIR`` reads the boards a ``gateway_protection`` sweep left in
its work directory (``/tmp/lw-protect-*``: one SQLite board per run) and writes
``tests/fixtures/limiter_traces.json``: per server and fixed cap, every request's
latency, time to first token and output tokens, in the order they finished. The tests
replay them in a closed loop (tests/test_limiter.py): at ``n`` in flight the controller
sees what the real server answered at a cap of ``n``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "limiter_traces.json"
RUN = re.compile(r"^(?P<server>.+)-fixed-(?P<cap>\d+)\.db$")


def read_runs(board: Path) -> list[list[float]]:
    engine = create_engine(f"sqlite:///{board}")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT latency_ms, ttft_ms, completion_tokens FROM runs "
                "WHERE outcome = 'succeeded' AND latency_ms IS NOT NULL ORDER BY finished_at"
            )
        ).all()
    engine.dispose()
    return [[round(r[0], 1), None if r[1] is None else round(r[1], 1), r[2] or 0] for r in rows]


def main() -> None:
    work = Path(sys.argv[-1])
    traces: dict[str, dict[str, list[list[float]]]] = (
        json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    )
    for board in sorted(work.glob("*-fixed-*.db")):
        match = RUN.match(board.name)
        if match is None or not match["server"].startswith("llama"):
            continue
        traces.setdefault(match["server"], {})[match["cap"]] = read_runs(board)
    FIXTURE.write_text(json.dumps(traces, separators=(",", ":")) + "\n")
    for server, caps in traces.items():
        print(server, {cap: len(rows) for cap, rows in caps.items()})


if __name__ == "__main__":
    main()
