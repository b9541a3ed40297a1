"""Health probes that do not lie: a 404 on a kind's own health path falls back to
``{base_url}/models``; only a connection failure, a timeout or a 5xx mark a gateway down;
``sniff_kind`` names what the server really looks like (for ``doctor``)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from aiohttp import web
from lanewarden.core.config import GatewayConfig
from lanewarden.core.gateways import probe, sniff_kind

from tests.llama_server import llama_server


async def test_llama_cpp_python_told_llamacpp_is_up_through_its_models(tmp_path: Path) -> None:
    # llama-cpp-python's server has no /health: a user who says kind = "llamacpp" must not
    # get a gateway that is down forever
    with llama_server(tmp_path) as base_url:
        gateway = GatewayConfig(base_url=base_url, kind="llamacpp")
        async with httpx.AsyncClient() as client:
            health = await probe("local", gateway, client)
            kind = await sniff_kind(gateway, client)
    assert health.healthy and health.fallback, health
    assert "/health: 404" in health.detail and "/v1/models: 200" in health.detail
    assert kind == "openai"


async def _serve(routes: dict[str, int]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, status in routes.items():

        async def answer(request: web.Request, status: int = status) -> web.Response:
            return web.json_response({"object": "list", "data": []}, status=status)

        app.router.add_get(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


async def test_only_connection_failures_and_5xx_mark_a_gateway_down() -> None:
    cases = {
        "health 500": ({"/health": 500, "/v1/models": 200}, False),
        "health and models 404": ({}, False),
        "health 404, models 503": ({"/v1/models": 503}, False),
        "health 401 (an answer)": ({"/health": 401}, True),
        "health 200": ({"/health": 200}, True),
    }
    async with httpx.AsyncClient() as client:
        for what, (routes, up) in cases.items():
            runner, base_url = await _serve(routes)
            try:
                health = await probe("g", GatewayConfig(base_url=base_url, kind="vllm"), client)
            finally:
                await runner.cleanup()
            assert health.healthy is up, (what, health)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        gone = await probe(
            "g", GatewayConfig(base_url=f"http://127.0.0.1:{port}/v1", kind="llamacpp"), client
        )
    assert not gone.healthy and "ConnectError" in gone.detail
