"""Gateway signals: the parsers against every recorded payload, the reader over real HTTP
(including every way a server can fail to answer), and the monitor storing them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from lanewarden.core.board import open_board
from lanewarden.core.config import GatewayConfig
from lanewarden.core.gateways import GatewayMonitor
from lanewarden.core.schema import gateway_state
from lanewarden.core.signals import (
    Histogram,
    SignalReader,
    histogram_delta,
    histogram_quantile,
    json_safe,
    parse_litellm_health,
    parse_litellm_readiness,
    parse_llamacpp_metrics,
    parse_llamacpp_slots,
    parse_ollama_ps,
    parse_vllm_metrics,
    store_signals,
)
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.gateway import FakeGateway

FIXTURES = Path(__file__).parent / "fixtures" / "gateways"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture_json(name: str) -> Any:
    return json.loads(fixture_text(name))


# --------------------------------------------------------------------- vLLM


def test_vllm_v1_busy_scrape() -> None:
    signals, ttft = parse_vllm_metrics(fixture_text("vllm_v1_metrics.txt"))
    assert signals["running"] == 1 and signals["waiting"] == 4
    assert signals["kv_cache_usage"] == 1.0  # V1 0.32 name: vllm:kv_cache_usage_perc
    assert signals["models"] == ["tiny-llama"]
    # 3 requests: 2 in (0.02, 0.04], 1 in (0.5, 0.75]; the median interpolates inside (0.02, 0.04]
    assert signals["ttft_samples"] == 3 and signals["ttft_window"] == "lifetime"
    assert signals["ttft_p50_ms"] == pytest.approx(35.0)
    assert signals["ttft_mean_ms"] == pytest.approx(243.661, abs=0.001)
    assert ttft is not None and ttft.count == 3


def test_vllm_v1_idle_scrape() -> None:
    signals, _ = parse_vllm_metrics(fixture_text("vllm_v1_metrics_idle.txt"))
    assert (signals["running"], signals["waiting"], signals["kv_cache_usage"]) == (0, 0, 0)
    assert signals["ttft_samples"] == 12
    assert signals["ttft_mean_ms"] == pytest.approx(174.63111877441406 / 12, abs=0.001)


def test_vllm_v0_scrape_uses_gpu_cache_usage() -> None:
    signals, _ = parse_vllm_metrics(fixture_text("vllm_v0_metrics.txt"))
    assert (signals["running"], signals["waiting"]) == (0, 0)
    assert signals["kv_cache_usage"] == 0.0  # V0 name: vllm:gpu_cache_usage_perc
    assert signals["models"] == ["facebook/opt-125m"]
    assert signals["ttft_samples"] == 1
    assert signals["ttft_mean_ms"] == pytest.approx(313.267, abs=0.001)


def test_vllm_early_v1_partial_scrape_without_histograms() -> None:
    signals, ttft = parse_vllm_metrics(fixture_text("vllm_v1_early_2025-03_partial.txt"))
    assert (signals["running"], signals["waiting"], signals["kv_cache_usage"]) == (0, 0, 0)
    assert ttft is None and not any(key.startswith("ttft") for key in signals)


def vllm_text(running: float, waiting: float, ttft_buckets: dict[str, float], engines: int = 1) -> str:
    lines = ["# HELP vllm:num_requests_running x", "# TYPE vllm:num_requests_running gauge"]
    lines += [f'vllm:num_requests_running{{engine="{e}",model_name="m"}} {running}' for e in range(engines)]
    lines += ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [f'vllm:num_requests_waiting{{engine="{e}",model_name="m"}} {waiting}' for e in range(engines)]
    lines += ["# TYPE vllm:kv_cache_usage_perc gauge"]
    lines += [
        f'vllm:kv_cache_usage_perc{{engine="{e}",model_name="m"}} {0.25 * (e + 1)}' for e in range(engines)
    ]
    lines += ["# TYPE vllm:time_to_first_token_seconds histogram"]
    total = max(ttft_buckets.values())
    for bound, count in ttft_buckets.items():
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="{bound}",model_name="m"}} {count}')
    lines.append(f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {total}')
    lines.append(f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} {total * 0.1}')
    return "\n".join(lines) + "\n"


def test_vllm_engines_are_summed_and_the_fullest_kv_cache_wins() -> None:
    signals, _ = parse_vllm_metrics(vllm_text(2, 3, {"1.0": 1, "+Inf": 1}, engines=2))
    assert (signals["running"], signals["waiting"]) == (4, 6)
    assert signals["kv_cache_usage"] == 0.5


def test_vllm_ttft_is_the_last_interval_not_the_lifetime() -> None:
    _, first = parse_vllm_metrics(vllm_text(0, 0, {"0.1": 10, "1.0": 10, "+Inf": 10}))
    # ten more requests since, all slow: the lifetime median would still say 0.1 s
    later, histogram = parse_vllm_metrics(vllm_text(0, 0, {"0.1": 10, "1.0": 20, "+Inf": 20}), first)
    assert later["ttft_window"] == "interval" and later["ttft_samples"] == 10
    assert later["ttft_p50_ms"] == pytest.approx(550.0)  # halfway through (0.1, 1.0]
    quiet, _ = parse_vllm_metrics(vllm_text(0, 0, {"0.1": 10, "1.0": 20, "+Inf": 20}), histogram)
    assert quiet["ttft_samples"] == 0 and "ttft_p50_ms" not in quiet
    # a restarted server's counters went down: back to lifetime figures
    restarted, _ = parse_vllm_metrics(vllm_text(0, 0, {"0.1": 1, "1.0": 1, "+Inf": 1}), histogram)
    assert restarted["ttft_window"] == "lifetime" and restarted["ttft_samples"] == 1


def test_histogram_quantile_edges() -> None:
    everything_slow = Histogram(((0.5, 0.0), (1.0, 0.0), (float("inf"), 4.0)), 4, 40)
    assert histogram_quantile(everything_slow, 0.5) == 1.0  # past the last bound: the bound itself
    assert histogram_quantile(Histogram(((1.0, 0.0), (float("inf"), 0.0)), 0, 0), 0.5) is None
    first_bucket = Histogram(((2.0, 4.0), (float("inf"), 4.0)), 4, 4)
    assert histogram_quantile(first_bucket, 0.5) == pytest.approx(1.0)  # interpolates from 0
    other_layout = Histogram(((1.0, 1.0), (float("inf"), 1.0)), 1, 1)
    assert histogram_delta(other_layout, first_bucket) is None


# ---------------------------------------------------------------- llama.cpp


def test_llamacpp_metrics_busy_idle_and_old_partial() -> None:
    busy = parse_llamacpp_metrics(fixture_text("llamacpp_metrics.txt"))
    assert (busy["running"], busy["waiting"]) == (2, 1)
    assert busy["generation_tokens_per_second"] == pytest.approx(902.708)
    assert "kv_cache_usage" not in busy  # removed upstream; this build has none
    idle = parse_llamacpp_metrics(fixture_text("llamacpp_metrics_idle.txt"))
    assert (idle["running"], idle["waiting"]) == (0, 0)
    # the June 2025 paste has counters only: nothing to say about the queue, and no error
    assert parse_llamacpp_metrics(fixture_text("llamacpp_metrics_2025-06_partial.txt")) == {}


def test_llamacpp_old_builds_kv_cache_ratio() -> None:
    text = (
        "# TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.42\n"
        "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n"
    )
    assert parse_llamacpp_metrics(text) == {"kv_cache_usage": 0.42, "running": 1}


def test_llamacpp_slots_live_shapes() -> None:
    busy = parse_llamacpp_slots(fixture_json("llamacpp_slots.json"))
    assert busy == {"slots_total": 2, "slots_busy": 2, "slot_context": 1024}
    assert parse_llamacpp_slots(fixture_json("llamacpp_slots_idle.json"))["slots_busy"] == 0
    # the 503 "no slot available" body is an error object, not a slot list
    assert parse_llamacpp_slots(fixture_json("llamacpp_slots_503_no_slot_available.json")) == {}


def test_llamacpp_slots_with_next_token_as_an_object() -> None:
    """The upstream README shows ``next_token`` as an object; the live build as a list."""
    slots = fixture_json("llamacpp_slots.json")
    assert isinstance(slots[0]["next_token"], list)
    slots[0]["next_token"] = slots[0]["next_token"][0]
    slots[1]["is_processing"] = False
    assert parse_llamacpp_slots(slots)["slots_busy"] == 1


# ------------------------------------------------------------ Ollama, LiteLLM


def test_ollama_ps_capture_and_docs_example() -> None:
    captured = parse_ollama_ps(fixture_json("ollama_api_ps.json"))
    assert captured["loaded_models"] == 1 and captured["models"][0]["name"] == "gemma3:latest"
    assert captured["vram_bytes"] == 5964735424 and captured["cpu_offload_bytes"] == 0
    docs = parse_ollama_ps(fixture_json("ollama_api_ps_docs_example.json"))
    assert docs["models"][0]["name"] == "mistral:latest" and docs["models"][0]["size"] == 5137025024


def test_ollama_ps_partial_offload_newer_fields_and_nothing_loaded() -> None:
    payload = fixture_json("ollama_api_ps.json")
    payload["models"][0]["size_vram"] = 4_000_000_000
    payload["models"][0]["context_length"] = 4096  # Ollama after PR #11331
    signals = parse_ollama_ps(payload)
    assert signals["cpu_offload_bytes"] == 5964735424 - 4_000_000_000
    assert signals["models"][0]["context_length"] == 4096
    assert parse_ollama_ps({"models": []}) == {
        "models": [],
        "loaded_models": 0,
        "vram_bytes": 0,
        "cpu_offload_bytes": 0,
    }
    assert parse_ollama_ps(fixture_json("ollama_error_503_server_busy.json")) == {}


def test_litellm_health_keeps_only_the_first_line_of_errors() -> None:
    live = parse_litellm_health(fixture_json("litellm_health.json"))
    assert (live["healthy_endpoints"], live["unhealthy_endpoints"]) == (2, 1)
    failing = live["failing"][0]
    assert failing["api_base"] == "http://127.0.0.1:8019/v1"
    assert failing["error"].startswith("litellm.InternalServerError") and "Traceback" not in failing["error"]
    docs = parse_litellm_health(fixture_json("litellm_health_docs_example.json"))  # no counts: lists
    assert (docs["healthy_endpoints"], docs["unhealthy_endpoints"]) == (2, 1)


def test_litellm_readiness_and_liveliness() -> None:
    assert parse_litellm_readiness(fixture_json("litellm_health_readiness.json")) == {
        "ready": "healthy",
        "db": "Not connected",
    }
    docs = parse_litellm_readiness(fixture_json("litellm_health_readiness_docs_example.json"))
    assert docs["version"] == "1.40.21" and docs["db"] == "connected"
    assert fixture_json("litellm_health_liveliness.json") == "I'm alive!"
    assert parse_litellm_readiness(fixture_json("litellm_health_liveliness.json")) == {}


def test_json_safe_drops_non_finite_numbers() -> None:
    assert json_safe({"a": float("nan"), "b": 1.5, "c": [float("inf"), 2]}) == {"b": 1.5, "c": [None, 2]}


# ------------------------------------------------------- the reader over HTTP


class FixtureServer:
    """A loopback server answering each path with a recorded payload (or a status)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def serve(
        self, path: str, body: str | bytes, status: int = 200, content_type: str = "text/plain"
    ) -> None:
        self.routes[path] = (status, body.encode() if isinstance(body, str) else body, content_type)

    def serve_fixture(self, path: str, name: str) -> None:
        kind = "application/json" if name.endswith(".json") else "text/plain"
        self.serve(path, (FIXTURES / name).read_bytes(), content_type=kind)

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append((request.path, request.headers.get("Authorization")))
            status, body, kind = self.routes.get(request.path, (404, b"Not Found", "text/plain"))
            return web.Response(status=status, body=body, content_type=kind)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def gateway(self, kind: str, **extra: Any) -> GatewayConfig:
        return GatewayConfig(base_url=f"http://127.0.0.1:{self.port}/v1", kind=kind, **extra)


@pytest.fixture
async def server() -> AsyncIterator[FixtureServer]:
    fixture = FixtureServer()
    await fixture.start()
    yield fixture
    await fixture.stop()


async def read(gateway: GatewayConfig, *, deep: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return await SignalReader("g", gateway).read(client, deep=deep)


async def test_reader_vllm_reads_metrics_at_the_server_root(server: FixtureServer) -> None:
    server.serve_fixture("/metrics", "vllm_v1_metrics.txt")
    signals = await read(server.gateway("vllm"))
    assert (signals["running"], signals["waiting"]) == (1, 4)
    assert signals["sources"] == ["/metrics"] and "errors" not in signals
    assert [path for path, _ in server.seen] == ["/metrics"]  # one request per probe interval


async def test_reader_llamacpp_with_metrics_and_slots(server: FixtureServer) -> None:
    server.serve_fixture("/metrics", "llamacpp_metrics.txt")
    server.serve_fixture("/slots", "llamacpp_slots.json")
    signals = await read(server.gateway("llamacpp"))
    assert (signals["running"], signals["waiting"]) == (2, 1)
    assert (signals["slots_busy"], signals["slots_total"]) == (2, 2)


async def test_reader_llamacpp_without_metrics_falls_back_to_busy_slots(server: FixtureServer) -> None:
    # llama-server started without --metrics answers 501
    server.serve(
        "/metrics", '{"error":{"code":501,"message":"This server does not support metrics endpoint."}}', 501
    )
    server.serve_fixture("/slots", "llamacpp_slots.json")
    signals = await read(server.gateway("llamacpp"))
    assert signals["running"] == 2 and "waiting" not in signals  # no deferred count without metrics
    assert signals["errors"] == {"/metrics": "HTTP 501"}


async def test_reader_ollama_and_litellm(server: FixtureServer) -> None:
    server.serve_fixture("/api/ps", "ollama_api_ps.json")
    ollama = await read(server.gateway("ollama"))
    assert ollama["loaded_models"] == 1 and "running" not in ollama  # Ollama reports no queue
    server.serve_fixture("/health/liveliness", "litellm_health_liveliness.json")
    server.serve_fixture("/health/readiness", "litellm_health_readiness.json")
    server.serve_fixture("/health", "litellm_health.json")
    cheap = await read(server.gateway("litellm"))
    assert cheap["alive"] is True and cheap["ready"] == "healthy"
    assert "unhealthy_endpoints" not in cheap and ("/health", None) not in server.seen  # /health is costly
    deep = await read(server.gateway("litellm"), deep=True)
    assert deep["unhealthy_endpoints"] == 1


async def test_reader_sends_the_gateway_key(server: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALS_TEST_KEY", "sk-test-123")
    server.serve_fixture("/metrics", "vllm_v1_metrics_idle.txt")
    await read(server.gateway("vllm", api_key_env="SIGNALS_TEST_KEY"))
    assert server.seen == [("/metrics", "Bearer sk-test-123")]


async def test_reader_tolerates_absence_and_garbage(server: FixtureServer) -> None:
    # nothing served: every path is a 404
    signals = await read(server.gateway("vllm"))
    assert "running" not in signals and signals["errors"] == {"/metrics": "HTTP 404"}
    # a proxy's HTML page and a broken exposition are absences, not exceptions
    server.serve("/metrics", "<html><body>502 Bad Gateway</body></html>")
    assert "running" not in await read(server.gateway("vllm"))
    server.serve("/metrics", "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine= 1\n")
    broken = await read(server.gateway("vllm"))
    assert broken["errors"]["/metrics"].startswith("unreadable")
    server.serve("/slots", "not json")
    assert (await read(server.gateway("llamacpp")))["errors"]["/slots"] == "not JSON"
    server.serve("/api/ps", '{"models": "nope"}', content_type="application/json")
    assert "loaded_models" not in await read(server.gateway("ollama"))


async def test_reader_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nobody listens
    signals = await read(GatewayConfig(base_url=f"http://127.0.0.1:{port}/v1", kind="llamacpp"))
    assert set(signals["errors"]) == {"/metrics", "/slots"} and signals["sources"] == []
    assert "ConnectError" in signals["errors"]["/metrics"]


# ------------------------------------------------------------- the monitor


def stored_signals(board: Any, name: str) -> tuple[bool | None, dict[str, Any] | None]:
    with board.db.read() as conn:
        row = conn.execute(
            select(gateway_state.c.healthy, gateway_state.c.signals).where(gateway_state.c.name == name)
        ).first()
    return (None, None) if row is None else (row.healthy, row.signals)


async def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("kind", ["vllm", "llamacpp"])
async def test_monitor_stores_signals_and_clears_them_when_the_gateway_goes_down(
    board_url: str, kind: str
) -> None:
    fake = FakeGateway(server_metrics=kind)
    config = make_config(
        board_url,
        gateways={"g": {"base_url": fake.base_url, "kind": kind, "probe_interval_seconds": 0.1}},
        profiles={"default": {"runner": "noop"}},
    )
    board = open_board(config)
    monitor = asyncio.create_task(GatewayMonitor(board.db, dict(config.gateways)).run())
    try:
        fake.server_waiting = 3
        healthy, signals = await wait_for(
            lambda: (s := stored_signals(board, "g"))[1] and s[1].get("waiting") == 3 and s, "signals"
        )
        assert healthy is True and signals["running"] == 0
        assert signals["sources"][0] == "/metrics" and "read_at" in signals
        fake.stop()
        await wait_for(
            lambda: stored_signals(board, "g") == (False, None), "cleared signals of a down gateway"
        )
        fake.server_waiting = 0
        fake.start()
        await wait_for(lambda: (stored_signals(board, "g")[1] or {}).get("waiting") == 0, "signals again")
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        fake.close()
        board.db.dispose()


def test_store_signals_round_trips_json(board_url: str) -> None:
    board = open_board(make_config(board_url))
    try:
        store_signals(board.db, "gpu", {"running": 1.0, "kv_cache_usage": float("nan"), "models": ["m"]})
        # stored with our own requests on the gateway at the time (the limiter's lag correction)
        assert stored_signals(board, "gpu")[1] == {"running": 1.0, "models": ["m"], "own_in_flight": 0}
        store_signals(board.db, "gpu", None)
        assert stored_signals(board, "gpu")[1] is None
    finally:
        board.db.dispose()
