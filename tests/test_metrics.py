"""/metrics: scraped over real HTTP from a `serve --headless` subprocess and parsed with
prometheus_client's own parser; plus the board gauges and the scheduler API in process."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lanewarden.bot.http.metrics import Metrics
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.db import Database
from lanewarden.core.gateway_state import record_health
from lanewarden.core.gateways import GatewayHealth
from lanewarden.core.schema import outbox
from lanewarden.core.signals import store_signals
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from tests.conftest import make_config
from tests.fakes.gateway import FakeGateway
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def http_port(proc: ServeProcess) -> int | None:
    found = re.search(r"HTTP endpoint on http://127\.0\.0\.1:(\d+)", proc.output())
    return int(found.group(1)) if found else None


def test_metrics_from_a_running_serve(board_url: str, tmp_path: Path) -> None:
    fake = FakeGateway(delay=0.05, tokens=3, server_metrics="vllm")
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": board_url},
            "kanban.dispatcher": {"max_active_tasks": 4, "poll_interval_seconds": 0.5},
            "kanban.workers": {"profile": "writer"},
            "gateways.g": {
                "base_url": fake.base_url,
                "kind": "vllm",
                "max_concurrency": 2,
                "probe_interval_seconds": 0.2,
            },
            "profiles.writer": {"gateway": "g", "model": "m", "max_parallel": 4},
            "http": {"listen": "127.0.0.1:0"},
        },
    )
    config, _ = load_config(config_path)
    board = open_board(config)
    fake.hold()  # requests that reach the server wait there until release()
    fake.fail_next(400)  # ... except the first, refused at once: a task error that no retry fixes
    for i in range(5):
        board.add(NewTask(title=f"[task {i}] write"), "test")
    proc = ServeProcess(config_path, clean_env(tmp_path / "home"), tmp_path / "serve.log")
    try:
        port = wait_until(lambda: http_port(proc), timeout=60, what="the HTTP endpoint", procs=[proc])

        def held_board() -> Samples | None:
            s = scrape(port)
            ok = (
                value(s, "lanewarden_gateway_in_flight", gateway="g") == 2
                and value(s, "lanewarden_tasks", status="failed") == 1
                and value(s, "lanewarden_gateway_server_running", gateway="g") == 2
            )
            return s if ok else None

        s = wait_until(held_board, timeout=60, what="two requests held and one failed", procs=[proc])
        assert value(s, "lanewarden_tasks", status="active") == 2
        assert value(s, "lanewarden_tasks", status="ready") == 2
        assert value(s, "lanewarden_gateway_limit", gateway="g") == 2
        assert value(s, "lanewarden_gateway_cap", gateway="g") == 2
        assert value(s, "lanewarden_gateway_healthy", gateway="g") == 1
        assert value(s, "lanewarden_profile_in_flight", profile="writer") == 2
        assert value(s, "lanewarden_board_in_flight") == 2
        assert value(s, "lanewarden_runs_finished_total", gateway="g", outcome="failed") == 1
        assert value(s, "lanewarden_runs_finished_total", gateway="g", outcome="succeeded") == 0
        assert value(s, "lanewarden_process_workers") == 2
        assert value(s, "lanewarden_database_up") == 1
        assert value(s, "lanewarden_oldest_ready_task_age_seconds") > 0

        # a live cap change shows at the next scrape; the running work is not killed
        board.set_cap("gateway", "g", 1, "test")
        s = scrape(port)
        assert value(s, "lanewarden_gateway_cap", gateway="g") == 1
        assert value(s, "lanewarden_gateway_limit", gateway="g") == 1
        assert value(s, "lanewarden_gateway_in_flight", gateway="g") == 2

        fake.server_waiting = 5
        fake.release()

        def all_done() -> Samples | None:
            s = scrape(port)
            done = value(s, "lanewarden_tasks", status="done") == 4
            waiting = value(s, "lanewarden_gateway_server_waiting", gateway="g") == 5
            return s if done and waiting else None

        s = wait_until(all_done, timeout=60, what="every task done", procs=[proc])
        assert value(s, "lanewarden_tasks", status="active") == 0
        assert value(s, "lanewarden_runs_finished_total", gateway="g", outcome="succeeded") == 4
        assert value(s, "lanewarden_request_latency_seconds_count", gateway="g") == 4
        assert value(s, "lanewarden_time_to_first_token_seconds_count", gateway="g") == 4
        assert value(s, "lanewarden_claims_total", gateway="g", profile="writer") == 5
        assert value(s, "lanewarden_dispatch_delay_seconds_count", profile="writer") == 5
        assert value(s, "lanewarden_tokens_total", gateway="g", kind="completion") == 4 * 3
        assert value(s, "lanewarden_gateway_in_flight", gateway="g") == 0
        assert value(s, "lanewarden_leader") == 1  # the only process takes the lease
        assert value(s, "lanewarden_dispatchers_live") == 1
        info = [labels for (name, labels), _ in s.items() if name == "lanewarden_process_info"]
        assert len(info) == 1 and dict(info[0])["database"] == board.db.dialect
        assert f":{proc.pid}:" in dict(info[0])["dispatcher"]
        assert value(s, "process_resident_memory_bytes") > 0
    finally:
        fake.release()
        assert proc.terminate() == 0, proc.output()[-3000:]
        fake.close()
        board.db.dispose()


def insert_outbox(board: Board, adapter: str, state: str, count: int) -> None:
    now = utcnow()
    with board.db.write() as conn:
        for i in range(count):
            conn.execute(
                insert(outbox).values(
                    adapter=adapter,
                    channel="C1",
                    kind="message",
                    payload={"text": f"n{i}"},
                    created_at=now,
                    state=state,
                    next_attempt_at=now,
                )
            )


async def test_board_gauges_and_scheduler_api_in_process(board_url: str) -> None:
    board = open_board(make_config(board_url))
    try:
        metrics = Metrics(board, is_leader=lambda: True)
        board.add(NewTask(title="waits", profile="researcher"), "test")
        board.pause("gateway", "gpu", "test")
        insert_outbox(board, "slack", "pending", 2)
        insert_outbox(board, "slack", "delivered", 3)
        insert_outbox(board, "discord", "dead", 1)
        store_signals(
            board.db,
            "gpu",
            {"running": 1, "waiting": 3, "kv_cache_usage": 0.5, "ttft_p50_ms": 35.0, "read_at": "bad"},
        )
        metrics.job_run("nightly")
        metrics.job_run("nightly")
        metrics.job_misfire("nightly")
        metrics.job_error("digest")
        s = parse((await metrics.scrape()).decode())
        assert value(s, "lanewarden_tasks", status="ready") == 1
        assert value(s, "lanewarden_tasks", status="done") == 0
        assert value(s, "lanewarden_gateway_paused", gateway="gpu") == 1
        assert value(s, "lanewarden_gateway_healthy", gateway="gpu") is None  # never probed: unknown
        assert value(s, "lanewarden_gateway_probe_age_seconds", gateway="gpu") is None
        assert value(s, "lanewarden_gateway_stale", gateway="gpu") == 1
        record_health(board.db, GatewayHealth("gpu", True, "ok"), utcnow() - timedelta(minutes=5))
        s = parse((await metrics.scrape()).decode())
        assert 299 < value(s, "lanewarden_gateway_probe_age_seconds", gateway="gpu") < 400
        assert value(s, "lanewarden_gateway_stale", gateway="gpu") == 1  # 3 intervals of 10 s went by
        record_health(board.db, GatewayHealth("gpu", True, "ok"))
        s = parse((await metrics.scrape()).decode())
        assert value(s, "lanewarden_gateway_stale", gateway="gpu") == 0
        assert value(s, "lanewarden_gateway_server_waiting", gateway="gpu") == 3
        assert value(s, "lanewarden_gateway_server_kv_cache_usage_ratio", gateway="gpu") == 0.5
        assert value(s, "lanewarden_gateway_server_ttft_p50_seconds", gateway="gpu") == pytest.approx(0.035)
        assert value(s, "lanewarden_gateway_signals_age_seconds", gateway="gpu") is None  # unparsable time
        assert value(s, "lanewarden_outbox_depth", adapter="slack") == 2
        assert value(s, "lanewarden_outbox_dead", adapter="discord") == 1
        assert value(s, "lanewarden_outbox_depth", adapter="discord") == 0
        assert value(s, "lanewarden_profile_cap", profile="researcher") == 1
        assert value(s, "lanewarden_scheduler_job_runs_total", job="nightly") == 2
        assert value(s, "lanewarden_scheduler_job_misfires_total", job="nightly") == 1
        assert value(s, "lanewarden_scheduler_job_errors_total", job="digest") == 1
        assert value(s, "lanewarden_leader") == 1
        assert value(s, "lanewarden_dispatchers_live") == 0
    finally:
        board.db.dispose()


async def test_a_scrape_without_the_database_still_answers() -> None:
    config = make_config("postgresql+psycopg://nobody@127.0.0.1:1/none")
    board = Board(Database(config.board.url), config)
    metrics = Metrics(board)
    metrics.job_run("nightly")
    s: dict[Any, float] = parse((await metrics.scrape()).decode())
    assert value(s, "lanewarden_database_up") == 0
    assert value(s, "lanewarden_scheduler_job_runs_total", job="nightly") == 1
    assert not any(name == "lanewarden_tasks" for name, _ in s)
    assert value(s, "lanewarden_leader") == 0
