"""A missing gateway is explained once, /healthz says it is degraded, /readyz says the
process cannot do work: a real `serve` against a port where nothing listens."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.fakes.gateway import FakeGateway
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config
from tests.test_metrics import http_port

pytestmark = pytest.mark.slow


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def test_a_missing_gateway_is_explained_once_and_reported_degraded(tmp_path: Path) -> None:
    missing = f"http://127.0.0.1:{dead_port()}"
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "gateways.local": {"base_url": missing, "kind": "ollama", "probe_interval_seconds": 0.2},
            "profiles.default": {"gateway": "local", "model": "m"},
            "http": {"listen": "127.0.0.1:0"},
        },
    )
    proc = ServeProcess(config_path, clean_env(tmp_path / "home"), tmp_path / "serve.log")
    try:
        port = wait_until(lambda: http_port(proc), timeout=60, what="the HTTP endpoint", procs=[proc])
        wait_until(lambda: health(port, "/healthz").json()["gateways"]["local"] == "down", what="down")
        live = health(port, "/healthz")
        assert live.status_code == 200  # the process is alive: liveness holds
        assert live.json()["status"] == "degraded" and live.json()["database"] == "ok"
        ready = health(port, "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        # many probes later the next step has been said exactly once
        seen: set[str] = set()

        def probed_five_times() -> bool:
            with sqlite3.connect(tmp_path / "board.db", timeout=5) as conn:
                row = conn.execute("SELECT checked_at FROM gateway_state WHERE name = 'local'").fetchone()
            seen.add(row[0])
            return len(seen) >= 5

        wait_until(probed_five_times, what="five probes of the missing gateway", procs=[proc])
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]
    output = proc.output()
    assert output.count("nothing runs on gateway local") == 1, output[-3000:]
    assert "lanewarden init" in output and "serve --demo" in output


def test_readyz_is_ready_once_a_gateway_is_up(tmp_path: Path) -> None:
    fake = FakeGateway(delay=0.0, tokens=1)
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "gateways.g": {"base_url": fake.base_url, "probe_interval_seconds": 0.2},
            "profiles.default": {"gateway": "g", "model": "m"},
            "http": {"listen": "127.0.0.1:0"},
        },
    )
    proc = ServeProcess(config_path, clean_env(tmp_path / "home"), tmp_path / "serve.log")
    try:
        port = wait_until(lambda: http_port(proc), timeout=60, what="the HTTP endpoint", procs=[proc])
        wait_until(lambda: health(port, "/readyz").status_code == 200, what="ready")
        body = health(port, "/healthz").json()
        assert body["status"] == "ok" and body["gateways"] == {"g": "up"}
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]
    assert "nothing runs on gateway" not in proc.output()
