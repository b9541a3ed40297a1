"""The gateway simulator over real HTTP: its batching model, its queue, its formats.

Speeds are compared with each other (orderings and ratios with wide margins), never
with absolute times: the machine is small and shared.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from lanewarden.bot.cli import main as cli_main
from lanewarden.bot.simulator import GatewaySimulator, ServerModel
from lanewarden.core.claims import Claim
from lanewarden.core.config import GatewayConfig, ProfileConfig
from lanewarden.core.gateways import probe
from lanewarden.core.runners import Job, TaskFailed
from lanewarden.core.runners.llm import LLMRunner, parse_sse_lines
from lanewarden.core.signals import SignalReader, parse_vllm_metrics
from lanewarden.core.tasks import Task

from tests.conftest import LANEWARDEN
from tests.serve_helpers import ROOT

PROMPT = [{"role": "user", "content": "say something"}]


async def started(model: ServerModel, seed: int = 0) -> GatewaySimulator:
    simulator = GatewaySimulator(model, seed=seed)
    await simulator.start()
    return simulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as c:
        yield c


def body(i: int, **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}], **extra}


async def wave(client: httpx.AsyncClient, sim: GatewaySimulator, n: int) -> tuple[float, float]:
    """``n`` requests at once: (aggregate tokens per second, mean seconds per request)."""

    async def one(i: int) -> tuple[int, float]:
        t0 = time.monotonic()
        response = await client.post(f"{sim.base_url}/chat/completions", json=body(i))
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"], time.monotonic() - t0

    t0 = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.monotonic() - t0
    return sum(tokens for tokens, _ in results) / elapsed, sum(s for _, s in results) / n


async def test_batching_throughput_rises_to_the_knee_and_latency_past_it(client: httpx.AsyncClient) -> None:
    # exponent 2: past the knee a step costs (n/knee)^2, so throughput halves at twice the knee
    model = ServerModel(knee=3, token_ms=4, output_tokens=(15, 15), max_batch=6, overload_exponent=2.0)
    sim = await started(model)
    try:
        await wave(client, sim, 1)  # warm up connections
        figures = {n: await wave(client, sim, n) for n in (1, 3, 6)}
    finally:
        await sim.stop()
    throughput = {n: tps for n, (tps, _) in figures.items()}
    latency = {n: lat for n, (_, lat) in figures.items()}
    assert throughput[3] > 1.8 * throughput[1]  # the model says 3x: the batch is free up to the knee
    assert latency[6] > 2 * latency[3]  # the model says 4x: every request slows past the knee
    assert throughput[6] < throughput[3]  # and the GPU as a whole does less
    assert sim.engine.peak_running == 6 and sim.engine.rejected == 0


async def test_queue_shows_in_metrics_and_ttft_then_503_past_max_queue(client: httpx.AsyncClient) -> None:
    model = ServerModel(knee=2, max_batch=2, max_queue=3, token_ms=5, output_tokens=(40, 40))
    sim = await started(model)
    gateway = GatewayConfig(base_url=sim.base_url, kind="vllm")
    reader = SignalReader("sim", gateway)
    seen: list[dict[str, object]] = []

    async def one(i: int) -> tuple[int, float | None, float, httpx.Response, str]:
        t0 = time.monotonic()
        first: float | None = None
        text = ""
        async with client.stream(
            "POST", f"{sim.base_url}/chat/completions", json=body(i, stream=True)
        ) as response:
            async for line in response.aiter_lines():
                text += line
                if first is None and '"content":"' in line and '"role"' not in line:
                    first = time.monotonic() - t0
            return response.status_code, first, time.monotonic() - t0, response, text

    try:
        assert (await probe("sim", gateway, client)).healthy
        requests = asyncio.gather(*(one(i) for i in range(8)))
        while not requests.done():  # the monitor's own reader, polled while the burst runs
            seen.append(await reader.read(client))
            await asyncio.sleep(0.02)
        results = await requests
        metrics = parse_vllm_metrics((await client.get(f"{sim.root_url}/metrics")).text)[0]
    finally:
        await sim.stop()

    refused = [(r, text) for status, _, _, r, text in results if status == 503]
    served = [(first, total) for status, first, total, _, _ in results if status == 200]
    # 2 run, 3 wait, the other 3 are refused at once with a Retry-After and an OpenAI-style error
    assert len(refused) == 3 and len(served) == 5
    assert all(r.headers["Retry-After"] == "1" and "overloaded" in text for r, text in refused)
    assert max(s.get("waiting", 0) for s in seen) == 3
    assert max(s.get("running", 0) for s in seen) == 2
    assert any(s.get("kv_cache_usage", 0) > 0 for s in seen)
    # the queued requests' wait shows up in their time to first token
    firsts = sorted(first for first, _ in served if first is not None)
    fastest_total = min(total for _, total in served)
    assert len(firsts) == 5
    assert firsts[1] < fastest_total / 2 < firsts[2]
    assert metrics["ttft_samples"] == 5 and metrics["running"] == 0 and metrics["waiting"] == 0


async def test_serial_profile_runs_one_request_at_a_time(client: httpx.AsyncClient) -> None:
    model = ServerModel(profile="serial", knee=8, token_ms=3, output_tokens=(10, 10), max_queue=2)
    sim = await started(model)
    reader = SignalReader("sim", GatewayConfig(base_url=sim.base_url, kind="vllm"))
    seen: list[dict[str, object]] = []
    try:
        requests = asyncio.gather(
            *(client.post(f"{sim.base_url}/chat/completions", json=body(i)) for i in range(5))
        )
        while not requests.done():
            seen.append(await reader.read(client))
            await asyncio.sleep(0.005)
        responses = await requests
    finally:
        await sim.stop()
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 503, 503]
    assert sim.engine.peak_running == 1
    assert max(s.get("running", 0) for s in seen) == 1  # never two at once, whatever the knee says
    assert sim.engine.steps == 3 * 10  # one token per step: nothing was decoded side by side


def job_for(gateway: GatewayConfig, max_tokens: int | None = None) -> Job:
    now = datetime.now(UTC)
    task = Task(
        id=7, title="Explain continuous batching", body="", profile="writer", priority=0, status="active",
        released=False, attempts=1, max_attempts=3, not_before=None, created_by="test", origin=None,
        result=None, error=None, current_run_id=1, created_at=now, updated_at=now, started_at=now,
        finished_at=None,
    )  # fmt: skip
    profile = ProfileConfig(gateway="sim", model="sim-7b", max_tokens=max_tokens)
    return Job(Claim(1, task, 1, "sim", now, now), "writer", profile, gateway)


async def test_our_runner_and_parser_read_its_stream(client: httpx.AsyncClient) -> None:
    sim = await started(ServerModel(token_ms=2, output_tokens=(20, 30)))
    gateway = GatewayConfig(base_url=sim.base_url, kind="vllm")
    runner = LLMRunner()
    try:
        output = await runner.run(job_for(gateway))
        capped = await runner.run(job_for(gateway, max_tokens=5))
        raw = await client.post(
            f"{sim.base_url}/chat/completions",
            json={
                "messages": PROMPT,
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 3,
            },
        )
        plain = await client.post(
            f"{sim.base_url}/chat/completions", json={"messages": PROMPT, "max_tokens": 3}
        )
        models = (await client.get(f"{sim.base_url}/models")).json()
    finally:
        await runner.aclose()
        await sim.stop()
    assert output.text and 20 <= (output.completion_tokens or 0) <= 30
    assert output.ttft_ms is not None and output.prompt_tokens
    assert capped.completion_tokens == 5 and len(capped.text.split()) == 5
    assert raw.text.endswith("data: [DONE]\n\n")
    frames = [line for line in raw.text.splitlines() if line.startswith("data: ")]
    assert '"role":"assistant"' in frames[0] and '"choices":[]' in frames[-2]  # role first, usage last
    answer = parse_sse_lines(raw.text.splitlines())
    assert answer.finish_reason == "length"
    assert answer.usage is not None and answer.usage["completion_tokens"] == answer.content_chunks == 3
    assert answer.usage["total_tokens"] == answer.usage["prompt_tokens"] + 3
    choice = plain.json()["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert choice["message"]["content"].strip() == answer.text.strip()  # same prompt, same answer
    assert models["data"][0]["id"] == "sim-7b"


async def test_output_lengths_follow_the_seed_not_the_arrival_order(client: httpx.AsyncClient) -> None:
    lengths: list[list[int]] = []
    for seed, order in ((1, range(6)), (1, reversed(range(6))), (2, range(6))):
        sim = await started(ServerModel(token_ms=1, output_tokens=(1, 40)), seed=seed)
        try:
            by_prompt = {}
            for i in order:
                r = await client.post(f"{sim.base_url}/chat/completions", json=body(i))
                by_prompt[i] = r.json()["usage"]["completion_tokens"]
        finally:
            await sim.stop()
        lengths.append([by_prompt[i] for i in range(6)])
    assert lengths[0] == lengths[1]
    assert lengths[0] != lengths[2]
    assert all(1 <= n <= 40 for n in lengths[0])


async def test_server_gives_up_after_its_request_timeout(client: httpx.AsyncClient) -> None:
    model = ServerModel(profile="serial", token_ms=5, output_tokens=(60, 60), request_timeout=0.15)
    sim = await started(model)
    try:
        streamed, queued = await asyncio.gather(
            client.post(f"{sim.base_url}/chat/completions", json=body(1, stream=True)),
            client.post(f"{sim.base_url}/chat/completions", json=body(2)),
        )
    finally:
        await sim.stop()
    with pytest.raises(TaskFailed, match="timed out"):
        parse_sse_lines(streamed.text.splitlines())  # tokens came, then an error event
    assert '"content":"' in streamed.text
    assert queued.status_code == 408 and "in the queue" in queued.json()["error"]["message"]
    assert sim.engine.timed_out == 2 and not sim.engine.running and not sim.engine.waiting


async def test_a_client_that_hangs_up_frees_its_slot() -> None:
    sim = await started(ServerModel(profile="serial", token_ms=5, output_tokens=(400, 400)))
    try:
        async with (
            httpx.AsyncClient(timeout=30) as hasty,
            hasty.stream("POST", f"{sim.base_url}/chat/completions", json=body(1, stream=True)) as r,
        ):
            async for line in r.aiter_lines():
                if '"content":"' in line:
                    break  # leave mid-answer, as a cancelled task does
        for _ in range(200):
            if not sim.engine.running:
                break
            await asyncio.sleep(0.01)
        assert not sim.engine.running and not sim.engine.waiting
    finally:
        await sim.stop()


def test_cli_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [*LANEWARDEN, "simulate-gateway", "--port", "0", "--profile", "serial", "--output-tokens", "4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", first)
        assert match, first
        base = match.group(1)
        assert httpx.get(base.removesuffix("/v1") + "/health", timeout=10).status_code == 200
        answer = httpx.post(f"{base}/chat/completions", json={"messages": PROMPT}, timeout=10).json()
        assert answer["usage"]["completion_tokens"] == 4
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "served 1 request(s)" in out


def test_cli_refuses_a_bad_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["simulate-gateway", "--output-tokens", "9-3"]) == 2
    assert "output_tokens" in capsys.readouterr().err
