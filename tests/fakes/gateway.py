"""A test gateway: an OpenAI-compatible server on 127.0.0.1 that records what it saw.

It streams chat completions like vLLM does, and records every request (which task,
which model, when it started and ended) and the peak number of requests in flight, per
server, per model and across a group of servers (the board). It can be stopped and
restarted on the same port (an outage), answer 429/503 on demand, or delay answers.
``hold()`` keeps every new chat request waiting until ``release()``, so a test can look
at a board with a known number of requests in flight. With ``server_metrics="vllm"``
(or ``"llamacpp"``) it also serves that server's ``/metrics`` (and llama.cpp ``/slots``)
reporting its real in-flight count as running and ``server_waiting`` as the queue.

It runs its own event loop in a thread, so tests (and the ``serve`` subprocesses they
start) talk to it over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

TASK_ID = re.compile(r"\[task (\d+)\]")


@dataclass
class Request:
    task_id: int | None
    model: str
    started: float
    in_flight_at_start: int
    messages: list[dict] = field(default_factory=list)
    ended: float | None = None


@dataclass
class Tracker:
    """Concurrency shared by several fake gateways: the whole board's in-flight count."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    peak: int = 0

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class FakeGateway:
    def __init__(
        self,
        *,
        delay: float = 0.05,
        tokens: int = 4,
        tracker: Tracker | None = None,
        port: int = 0,
        server_metrics: str | None = None,
    ) -> None:
        self.server_metrics = server_metrics
        self.server_waiting = 0
        self.delay = delay
        self.tokens = tokens
        self.tracker = tracker or Tracker()
        self.port = port
        self.requests: list[Request] = []
        self.in_flight = 0
        self.peak = 0
        self.model_in_flight: Counter[str] = Counter()
        self.model_peak: Counter[str] = Counter()
        self.fail_queue: list[tuple[int, dict[str, str]]] = []
        self.health_status = 200
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._open = asyncio.Event()  # cleared by hold(): chat requests wait for release()
        self._loop.call_soon_threadsafe(self._open.set)
        self._runner: web.AppRunner | None = None
        self.start()

    # ----------------------------------------------------------- control

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        """An outage: the port stops accepting connections; in-flight requests are cut."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after else {}
        with self._lock:
            self.fail_queue.extend([(status, headers)] * count)

    def hold(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_open(False), self._loop).result(10)

    def release(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_open(True), self._loop).result(10)

    async def _set_open(self, value: bool) -> None:
        if value:
            self._open.set()
        else:
            self._open.clear()

    def task_counts(self) -> Counter[int]:
        with self._lock:
            return Counter(r.task_id for r in self.requests if r.ended is not None and r.task_id is not None)

    def starts_in_flight(self) -> list[int]:
        with self._lock:
            return [r.in_flight_at_start for r in self.requests]

    # ------------------------------------------------------------ server

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/api/tags", self._health)
        if self.server_metrics is not None:
            app.router.add_get("/metrics", self._server_metrics)
        if self.server_metrics == "llamacpp":
            app.router.add_get("/slots", self._slots)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok"} if self.health_status == 200 else {"error": "down"}, status=self.health_status
        )

    async def _server_metrics(self, request: web.Request) -> web.Response:
        with self._lock:
            running, waiting = self.in_flight, self.server_waiting
        if self.server_metrics == "llamacpp":
            names = ("llamacpp:requests_processing", "llamacpp:requests_deferred")
            labels = ""
        else:
            names = ("vllm:num_requests_running", "vllm:num_requests_waiting")
            labels = '{engine="0",model_name="fake"}'
        lines = []
        for name, value in zip(names, (running, waiting), strict=True):
            lines += [f"# HELP {name} fake", f"# TYPE {name} gauge", f"{name}{labels} {float(value)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _slots(self, request: web.Request) -> web.Response:
        with self._lock:
            busy = self.in_flight
        return web.json_response([{"id": i, "n_ctx": 1024, "is_processing": i < busy} for i in range(4)])

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            if self.fail_queue:
                status, headers = self.fail_queue.pop(0)
                return web.json_response(
                    {"error": {"message": "busy", "code": status}}, status=status, headers=headers
                )
        model = body.get("model", "?")
        prompt = json.dumps(body.get("messages", []))
        match = TASK_ID.search(prompt)
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.model_in_flight[model] += 1
            self.model_peak[model] = max(self.model_peak[model], self.model_in_flight[model])
            record = Request(
                int(match.group(1)) if match else None,
                model,
                time.monotonic(),
                self.in_flight,
                body.get("messages", []),
            )
            self.requests.append(record)
        self.tracker.enter()
        try:
            await self._open.wait()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            step = self.delay / max(1, self.tokens)
            for i in range(self.tokens):
                await asyncio.sleep(step)
                chunk = {"choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            usage = {"prompt_tokens": 10, "completion_tokens": self.tokens, "total_tokens": 10 + self.tokens}
            await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            record.ended = time.monotonic()
            return response
        finally:
            self.tracker.leave()
            with self._lock:
                self.in_flight -= 1
                self.model_in_flight[model] -= 1
