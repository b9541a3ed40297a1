"""The simulator's HTTP side: vLLM's OpenAI-compatible routes over the model in model.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from lanewarden.bot.simulator.model import (
    WORDS,
    DecodeEngine,
    Generation,
    ServerModel,
    ServerOverloaded,
    SimulatorMetrics,
)
from lanewarden.bot.simulator.node_exporters import SimulatedHost

log = logging.getLogger("lanewarden.simulate")

# ---------------------------------------------------------------- the server


class BadRequest(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    words: tuple[str, ...]


class GatewaySimulator:
    """The simulator as an object: ``port = await sim.start()``, later ``await sim.stop()``."""

    def __init__(
        self,
        model: ServerModel | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        model_name: str = "sim-7b",
    ) -> None:
        self.model = model or ServerModel()
        self.host = host
        self.port = port
        self.seed = seed
        self.model_name = model_name
        self.metrics = SimulatorMetrics(model_name)
        self.engine = DecodeEngine(self.model, self.metrics)
        self.metrics.bind(self.engine)
        self.host_figures = SimulatedHost(self.engine, self.metrics)
        self.completed = 0
        self._engine_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a gateway's ``base_url`` should be."""
        return f"{self.root_url}/v1"

    async def start(self) -> int:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/exporters/dcgm", self._dcgm)
        app.router.add_get("/exporters/node", self._node)
        # a client that hangs up (a cancelled task) frees its slot at once, as in vLLM
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._engine_task = asyncio.create_task(self.engine.run(), name="simulator-engine")
        log.info("simulated %s gateway on %s (%s)", self.model.profile, self.base_url, self.model_name)
        return self.port

    async def stop(self) -> None:
        self.engine.fail_all("the server is shutting down")
        if self._engine_task is not None:
            self._engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine_task
            self._engine_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ endpoints

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)  # vLLM answers an empty 200

    async def _models(self, request: web.Request) -> web.Response:
        entry = {
            "id": self.model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "lanewarden-simulator",
            "max_model_len": self.model.kv_capacity,
        }
        return web.json_response({"object": "list", "data": [entry]})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.scrape(), content_type="text/plain", charset="utf-8")

    async def _dcgm(self, request: web.Request) -> web.Response:
        return web.Response(body=self.host_figures.dcgm_text(), content_type="text/plain", charset="utf-8")

    async def _node(self, request: web.Request) -> web.Response:
        return web.Response(body=self.host_figures.node_text(), content_type="text/plain", charset="utf-8")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            chat = self._parse(await request.read())
        except BadRequest as exc:
            return error_response(400, str(exc), "BadRequestError")
        generation = Generation(chat.prompt_tokens, chat.output_tokens, arrived)
        try:
            self.engine.submit(generation)
        except ServerOverloaded as exc:
            return error_response(
                503,
                str(exc),
                "ServiceUnavailableError",
                headers={"Retry-After": str(self.model.retry_after_seconds)},
            )
        try:
            if chat.stream:
                return await self._stream(request, chat, generation)
            return await self._complete(chat, generation)
        finally:
            if not generation.done:
                self.engine.cancel(generation)

    def _parse(self, raw: bytes) -> ChatRequest:
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadRequest("'max_tokens' must be a positive integer")
        text = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        # seeded by the prompt, not by arrival order: the same tasks get the same lengths under any cap
        digest = hashlib.sha256(f"{self.seed}\0{text}".encode()).digest()
        rng = random.Random(digest)
        natural = rng.randint(*self.model.output_tokens)
        if limit is not None and (body.get("ignore_eos") or limit < natural):
            length, reason = limit, "length"
        else:
            length, reason = natural, "stop"
        options = body.get("stream_options") or {}
        return ChatRequest(
            model=str(body.get("model") or self.model_name),
            stream=bool(body.get("stream")),
            include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
            prompt_tokens=max(1, len(text) // 4),  # about four characters per token
            output_tokens=length,
            finish_reason=reason,
            words=tuple(rng.choice(WORDS) for _ in range(min(length, 64))),
        )

    async def _complete(self, chat: ChatRequest, generation: Generation) -> web.Response:
        while not generation.done:
            await generation.changed.wait()
            generation.changed.clear()
        if generation.error is not None:
            self.metrics.outcome("abort")
            return error_response(408, generation.error, "TimeoutError")
        self.completed += 1
        self.metrics.outcome(chat.finish_reason)
        return web.json_response(
            {
                "id": generation.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer_text(chat, 0, chat.output_tokens)},
                        "logprobs": None,
                        "finish_reason": chat.finish_reason,
                    }
                ],
                "usage": usage(chat),
            }
        )

    async def _stream(
        self, request: web.Request, chat: ChatRequest, generation: Generation
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)  # vLLM sends the headers at once; tokens come when they come
        chunk = ChunkWriter(generation.id, chat.model)
        sent = 0
        while True:
            await generation.changed.wait()
            generation.changed.clear()
            frames: list[bytes] = []
            if generation.error is not None:
                self.metrics.outcome("abort")
                error = {"message": generation.error, "type": "TimeoutError", "code": 408}
                frames.append(sse({"error": error}))
                frames.append(b"data: [DONE]\n\n")
                await response.write(b"".join(frames))
                break
            produced = generation.generated
            if sent == 0 and produced > 0:
                frames.append(chunk.frame({"role": "assistant", "content": ""}))
            for index in range(sent, produced):
                last = index == chat.output_tokens - 1
                frames.append(
                    chunk.frame(
                        {"content": answer_text(chat, index, index + 1)},
                        chat.finish_reason if last else None,
                    )
                )
            sent = produced
            if generation.finished_at is not None:
                if chat.include_usage:
                    frames.append(sse({**chunk.head, "choices": [], "usage": usage(chat)}))
                frames.append(b"data: [DONE]\n\n")
            if frames:
                # one write per wake-up, however many tokens it carries
                await response.write(b"".join(frames))
            if generation.finished_at is not None:
                self.completed += 1
                self.metrics.outcome(chat.finish_reason)
                break
        await response.write_eof()
        return response


class ChunkWriter:
    """``chat.completion.chunk`` frames as vLLM writes them."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def frame(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({**self.head, "choices": [choice]})


def sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def answer_text(chat: ChatRequest, start: int, end: int) -> str:
    """Tokens ``start..end`` of the answer: one word (and a space) per token."""
    words = chat.words
    return "".join(words[i % len(words)] + " " for i in range(start, end))


def usage(chat: ChatRequest) -> dict[str, int]:
    return {
        "prompt_tokens": chat.prompt_tokens,
        "total_tokens": chat.prompt_tokens + chat.output_tokens,
        "completion_tokens": chat.output_tokens,
    }


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    """OpenAI-style error body, as vLLM sends it."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status, headers=headers)


# -------------------------------------------------------------------- the CLI


def parse_token_range(text: str) -> tuple[int, int]:
    """``128`` or ``32-256`` -> (low, high)."""
    low, sep, high = text.partition("-")
    try:
        bounds = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ValueError(f"--output-tokens {text!r}: use N or MIN-MAX, e.g. 32-256") from None
    return bounds


def add_simulator_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``lanewarden simulate-gateway``."""
    parser.add_argument("--profile", choices=("batching", "serial"), default="batching")
    parser.add_argument("--knee", type=int, default=4, help="concurrency past which latency grows")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8808)
    parser.add_argument("--token-ms", type=float, default=20.0, help="per-token time at or below the knee")
    parser.add_argument("--max-queue", type=int, default=64, help="requests beyond this get 503")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, help="running requests at most (default 2 x knee)")
    parser.add_argument(
        "--overload-exponent",
        type=float,
        help="step time ~ (n/knee)^this past the knee (1.5)",
    )
    parser.add_argument("--request-timeout", type=float, help="seconds after which the server gives up")
    parser.add_argument("--output-tokens", help="answer length N or MIN-MAX tokens (default 32-256)")
    parser.add_argument("--retry-after", type=int, help="seconds sent in Retry-After with 503 (default 1)")
    parser.add_argument("--model", help="the model name /v1/models reports (default sim-7b)")
    parser.add_argument("--prefill-steps", type=int, help="steps on the prompt before the first token (0)")
    parser.add_argument("--metrics-lag", type=float, help="seconds /metrics gauges trail the engine (0)")


def model_from_options(opts: argparse.Namespace) -> ServerModel:
    model = ServerModel(
        profile=opts.profile,
        knee=opts.knee,
        token_ms=opts.token_ms,
        max_queue=opts.max_queue,
    )
    extra: dict[str, Any] = {}
    for option, key in (
        ("max_batch", "max_batch"),
        ("overload_exponent", "overload_exponent"),
        ("request_timeout", "request_timeout"),
        ("retry_after", "retry_after_seconds"),
        ("prefill_steps", "prefill_steps"),
        ("metrics_lag", "metrics_lag_seconds"),
    ):
        value = getattr(opts, option, None)
        if value is not None:
            extra[key] = value
    tokens = getattr(opts, "output_tokens", None)
    if tokens is not None:
        extra["output_tokens"] = parse_token_range(tokens)
    return replace(model, **extra)


def run_simulator(opts: argparse.Namespace) -> int:
    """``lanewarden simulate-gateway``: print the base URL, serve until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        model = model_from_options(opts)  # ServerModel checks its own ranges
    except ValueError as exc:
        print(f"lanewarden: error: simulate-gateway: {exc}", file=sys.stderr)
        return 2
    simulator = GatewaySimulator(
        model,
        host=opts.host,
        port=opts.port,
        seed=opts.seed,
        model_name=getattr(opts, "model", None) or "sim-7b",
    )
    try:
        asyncio.run(_serve_until_stopped(simulator))
    except OSError as exc:
        print(f"lanewarden: error: cannot listen on {opts.host}:{opts.port}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve_until_stopped(simulator: GatewaySimulator) -> None:
    await simulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    model = simulator.model
    print(f"simulated vLLM gateway at {simulator.base_url} (model {simulator.model_name!r})")
    print(model.describe())
    print()
    print("Point a gateway at it (kind vllm: /health, /metrics):")
    print("  [gateways.sim]")
    print(f'  base_url = "{simulator.base_url}"')
    print('  kind = "vllm"')
    print(f"  max_concurrency = {model.knee if model.profile == 'batching' else 1}")
    print("Ctrl-C stops it.", flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        engine = simulator.engine
        print(
            f"served {simulator.completed} request(s), refused {engine.rejected} with 503, "
            f"timed out {engine.timed_out}; peak {engine.peak_running} running, "
            f"{engine.peak_waiting} waiting",
            flush=True,
        )
