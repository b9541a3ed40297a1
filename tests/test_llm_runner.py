"""The LLM runner's stream and error handling, against real server captures."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanewarden.core.runners import TaskFailed
from lanewarden.core.runners.llm import error_message, parse_sse_lines, retry_after_seconds

FIXTURES = Path(__file__).parent / "fixtures" / "gateways"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def test_vllm_stream_with_usage() -> None:
    answer = parse_sse_lines(lines("vllm_chat_stream_include_usage.sse"))
    assert answer.text and answer.finish_reason == "length"
    assert answer.usage["completion_tokens"] == answer.content_chunks == 8


def test_llamacpp_stream_with_usage_and_timings() -> None:
    answer = parse_sse_lines(lines("llamacpp_chat_stream_include_usage.sse"))
    assert answer.text
    assert answer.usage["completion_tokens"] > 0


def test_vllm_engine_dead_mid_stream_is_a_task_error() -> None:
    with pytest.raises(TaskFailed, match="failed mid-stream"):
        parse_sse_lines(lines("vllm_chat_stream_engine_dead_error.sse"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vllm_error_404_model_not_found.json", "does not exist"),
        ("ollama_error_503_server_busy.json", "server busy"),
        ("litellm_error_429_rate_limit.json", "limit"),
    ],
)
def test_error_bodies(name: str, expected: str) -> None:
    assert expected.lower() in error_message((FIXTURES / name).read_bytes()).lower()


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: go now
