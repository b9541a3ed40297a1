"""Start a real llama.cpp server (llama-cpp-python) on a tiny random-weight GGUF."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.fakes.tiny_gguf import write_tiny_llama


def require_llama() -> None:
    try:
        import llama_cpp
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI=true but llama-cpp-python[server] is not installed: {exc}")
        pytest.skip(f"llama-cpp-python[server] not installed ({exc}); CI runs this tier")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(tmp_path: Path, **model: int) -> Iterator[str]:
    """Yields the OpenAI base URL (``http://127.0.0.1:PORT/v1``) of a running server."""
    require_llama()
    gguf_path = write_tiny_llama(tmp_path / "tiny.gguf", **model)
    port = free_port()
    log = (tmp_path / "llama-server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "512",
            "--n_threads",
            "1",
            "--model_alias",
            "tiny",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"llama server exited: {(tmp_path / 'llama-server.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("llama server did not come up")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
