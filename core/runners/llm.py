"""OpenAI-compatible chat completions over httpx, streamed to time the first token.

Works against vLLM, llama.cpp's llama-server, Ollama's /v1, LiteLLM and other proxies.
HTTP 429 and 503 are backpressure (Retry-After honoured by the dispatcher); a refused
connection means the gateway is down; 4xx other than 408/429 is a task error that
retrying will not fix.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from lanewarden.core.clock import utcnow
from lanewarden.core.config import GatewayConfig
from lanewarden.core.runners import GatewayBusy, GatewayDown, Job, RunOutput, TaskFailed

MAX_RESULT_CHARS = 200_000


@dataclass
class StreamedAnswer:
    """What an SSE chat stream said, accumulated chunk by chunk."""

    text_parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    first_token_at: float | None = None
    # tokens seen as content deltas: the count when a server sends no usage (llama-cpp-python)
    content_chunks: int = 0

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def feed(self, data: str, now: float) -> bool:
        """One ``data:`` payload; returns False at ``[DONE]``. Raises on an error event."""
        if data == "[DONE]":
            return False
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise TaskFailed(f"the gateway sent a malformed stream chunk: {data[:200]!r}") from None
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise TaskFailed(f"the gateway failed mid-stream: {message}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") is not None and "role" not in delta:
                self.content_chunks += 1
            piece = delta.get("content") or delta.get("reasoning_content")
            if piece:
                if self.first_token_at is None:
                    self.first_token_at = now
                if delta.get("content"):
                    self.text_parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return True


def parse_sse_lines(lines: Iterable[str], now: float = 0.0) -> StreamedAnswer:
    """Parse a whole recorded stream (used by tests against real captures)."""
    answer = StreamedAnswer()
    for line in lines:
        line = line.strip()
        if line.startswith("data:") and not answer.feed(line[5:].strip(), now):
            break
    return answer


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def error_message(body: bytes) -> str:
    """The message inside OpenAI-style or Ollama error bodies, else the raw text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            return str(err.get("message", err))[:300]
        return str(err)[:300]
    return text[:300]


class LLMRunner:
    """One shared HTTP client per gateway; connections are reused across runs."""

    def __init__(self) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client_for(self, gateway: GatewayConfig) -> httpx.AsyncClient:
        client = self._clients.get(gateway.base_url)
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=10.0, read=gateway.timeout_seconds, write=30.0, pool=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            self._clients[gateway.base_url] = client
        return client

    async def run(self, job: Job) -> RunOutput:
        gateway = job.gateway
        if gateway is None or not job.profile.model:
            raise TaskFailed("profile has no gateway or model", retryable=False)
        messages = []
        if job.profile.system_prompt:
            messages.append({"role": "system", "content": job.profile.system_prompt})
        messages.append({"role": "user", "content": job.prompt()})
        payload: dict[str, Any] = {
            **job.profile.request_params,
            "model": job.profile.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if job.profile.max_tokens:
            payload["max_tokens"] = job.profile.max_tokens
        headers = {"Accept": "text/event-stream"}
        key = gateway.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        started = time.monotonic()
        answer = StreamedAnswer()
        client = self.client_for(gateway)
        try:
            async with client.stream(
                "POST", f"{gateway.base_url}/chat/completions", json=payload, headers=headers
            ) as response:
                await _raise_for_status(response)
                async for data in _sse_data(response):
                    seen = len(answer.text_parts)
                    going_on = answer.feed(data, time.monotonic())
                    for piece in answer.text_parts[seen:]:
                        job.output(piece)
                    if not going_on:
                        break
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise GatewayDown(f"cannot connect to {gateway.base_url}: {exc or type(exc).__name__}") from None
        except httpx.RemoteProtocolError as exc:
            if answer.first_token_at is None and not answer.text_parts:
                raise GatewayDown(f"{gateway.base_url} closed the connection: {exc}") from None
            raise TaskFailed(f"the stream broke off: {exc}") from None
        except (httpx.ReadError, httpx.WriteError) as exc:
            raise TaskFailed(f"network error talking to {gateway.base_url}: {exc}") from None
        except httpx.ReadTimeout:
            raise TimeoutError(f"no data from {gateway.base_url} for {gateway.timeout_seconds:g}s") from None
        usage = answer.usage or {}
        ttft = None if answer.first_token_at is None else (answer.first_token_at - started) * 1000
        text = answer.text
        if len(text) > MAX_RESULT_CHARS:
            text = text[:MAX_RESULT_CHARS] + "\n[truncated]"
        return RunOutput(
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens", answer.content_chunks or None),
            ttft_ms=ttft,
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    body = await response.aread()
    message = f"HTTP {response.status_code}: {error_message(body)}"
    if response.status_code in (429, 503):
        raise GatewayBusy(message, retry_after_seconds(response.headers.get("retry-after")))
    if response.status_code in (502, 504):
        raise GatewayDown(message)
    if response.status_code == 408:
        # the server gave up on the request under load: a timeout, which the limiter must see
        raise TimeoutError(f"the gateway timed out the request ({message})")
    retryable = response.status_code >= 500
    raise TaskFailed(message, retryable=retryable)


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()
