"""What every benchmark shares: machine facts, a table printer, JSON results."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent
PG_DSN = os.environ.get("LANEWARDEN_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = ""
    import sqlite3

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "sqlite": sqlite3.sqlite_version,
        "postgres_client": pg,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def save(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **figures,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nsaved {path.relative_to(ROOT)}")
    return path


def fresh_pg_schema(prefix: str = "bench") -> tuple[str, str]:
    """A new schema; returns (schema, SQLAlchemy URL using it)."""
    import secrets

    import psycopg

    schema = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    params = dict(p.split("=", 1) for p in PG_DSN.split())
    url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{params.get('dbname', 'test')}?options=-csearch_path%3D{schema}"
    )
    return schema, url


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def insert_ready_tasks(board: Any, count: int, profile: str = "noop") -> None:
    """Put ``count`` ready tasks on the board at once (faster than ``add``, which is measured elsewhere)."""
    from lanewarden.core.clock import utcnow
    from lanewarden.core.schema import tasks
    from sqlalchemy import insert

    now = utcnow()
    for start in range(0, count, 20_000):
        rows = [
            {
                "title": f"t{i}",
                "body": "",
                "profile": profile,
                "priority": 0,
                "status": "ready",
                "released": False,
                "attempts": 0,
                "max_attempts": 3,
                "created_by": "bench",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(count, start + 20_000))
        ]
        with board.db.write() as conn:
            conn.execute(insert(tasks), rows)
