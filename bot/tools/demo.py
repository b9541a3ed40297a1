"""``lanewarden serve --demo``: the whole product on a laptop, with no GPU.

A simulated vLLM gateway (bot/simulator/: continuous batching that slows down past
3 requests at once) runs inside serve's event loop; a board of its own, recreated at
every start under ``$LANEWARDEN_HOME/demo/``, is seeded with a few dozen tasks on two
profiles: ``writer`` (LLM calls to the simulator, under an adaptive limit) and
``checker`` (a small command line). Some tasks form parent/child chains, some sit in
the backlog until the ``demo-release`` window promotes four of them every 30 seconds,
one check fails once and is retried, another always fails (and its child waits).

The user's own config and board are not read or touched. The demo process points
``LANEWARDEN_HOME`` at the demo directory (so command tasks get their workspaces
there) and ignores chat tokens (a second Socket Mode client would steal the real
service's commands).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import LanewardenConfig, lanewarden_home, parse_config, server_root
from lanewarden.core.errors import UsageError

DEMO_MARKER = ".lanewarden-demo"  # only a directory carrying it is ever deleted
DEMO_LOCK = "demo.lock"  # beside the demo directory: held by the running demo
DEMO_HTTP_PORT = 8787  # the README's /metrics address, when it is free
ACTOR = "demo:seed"
CHAT_TOKENS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN")

# the simulated GPU: full speed up to 3 requests at once; the dispatcher may send up to 8
SIM_KNEE = 3
SIM_TOKEN_MS = 25.0
SIM_OUTPUT_TOKENS = (32, 192)
GATEWAY_CAP = 8
RELEASE_CRON = "*/30 * * * * *"  # every 30 seconds (a leading seconds field)
RELEASE_COMMAND = "promote-batch --from backlog --to ready --max 4"

# the checker profile's command: a second or two of "work"; titles say which checks fail.
# No braces: the command runner fills {placeholders} in every argv part.
CHECK_SCRIPT = """\
import pathlib, sys, time
task, title, workspace = sys.argv[2:5]  # after the "--"
time.sleep(1.0 + int(task) % 3 * 0.5)
# each run has a workspace of its own: the memory of the first failure sits beside them
marker = pathlib.Path(workspace).parent / ('failed-once-' + task)
if 'always fails' in title or ('fails once' in title and not marker.exists()):
    marker.touch()
    sys.exit('check failed: ' + title)
print('checked #' + task + ' (' + title + '): all good')
"""


def demo_home() -> Path:
    return lanewarden_home() / "demo"


def prepare_demo() -> LanewardenConfig:
    """Take the demo lock, recreate the demo home, write its config and seed its board.

    Refuses while another demo runs: its board lives in the very directory this one
    would recreate. The user's own config, board and chat channels are never read."""
    home = demo_home()
    hold_demo_lock(home.parent / DEMO_LOCK)
    recreate_demo_home(home)
    raw = demo_settings(home, sim_port=free_port(), http_port=port_or_free(DEMO_HTTP_PORT))
    demo = parse_config(raw, source="the demo config")
    # so a second terminal can look at the demo board: lanewarden --config <this> status
    (home / "config.toml").write_text(to_toml(raw), encoding="utf-8")
    seed_board(demo)
    return demo


def isolate_demo_process(config: LanewardenConfig) -> None:
    """Point this process's ``LANEWARDEN_HOME`` at the demo (command tasks get their
    workspaces there) and forget the chat tokens (a second Socket Mode client would steal
    the real service's commands)."""
    os.environ["LANEWARDEN_HOME"] = str(demo_directory(config))
    for name in CHAT_TOKENS:
        os.environ.pop(name, None)


def demo_directory(config: LanewardenConfig) -> Path:
    return Path(config.board.url.removeprefix("sqlite:///")).parent


_lock_file: IO[str] | None = None  # held open (and locked) for the life of the demo process


def hold_demo_lock(path: Path) -> None:
    """An exclusive lock for this process's lifetime; the kernel drops it when we exit,
    even on kill -9, so a crashed demo never blocks the next one."""
    global _lock_file
    if _lock_file is not None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        config = path.parent / "demo" / "config.toml"
        raise UsageError(
            f"a demo is already running ({holder}); reach it with `lanewarden --config {config} status`, "
            "or stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _lock_file = handle


def recreate_demo_home(home: Path) -> Path:
    if home.exists():
        if not (home / DEMO_MARKER).exists():
            raise UsageError(f"{home} exists and was not made by the demo; move it away first")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("made by `lanewarden serve --demo`; deleted at its next start\n")
    return home


def port_or_free(port: int) -> int:
    """``port`` when nobody listens on it (the README's 8787), any free port otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def free_port() -> int:
    """A port nobody listens on now (the demo binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(home: Path, *, sim_port: int, http_port: int) -> dict[str, Any]:
    return {
        "board": {"url": f"sqlite:///{home / 'board.db'}"},
        "kanban": {
            "dispatcher": {
                "enabled": True,
                "max_active_tasks": 10,
                "poll_interval_seconds": 2.0,
                "drain_timeout_seconds": 5.0,
                "retry_backoff_seconds": 3.0,
                "retry_backoff_max_seconds": 20.0,
            },
            "workers": {"profile": "writer", "max_parallel_per_profile": 2},
        },
        "gateways": {
            "sim": {
                "base_url": f"http://127.0.0.1:{sim_port}/v1",
                "kind": "vllm",
                "adaptive": True,
                "max_concurrency": GATEWAY_CAP,
                "timeout_seconds": 60.0,
                "probe_interval_seconds": 2.0,
                # the simulator's own dcgm-style and node-style exporters follow its load
                "node_metrics": [
                    f"http://127.0.0.1:{sim_port}/exporters/dcgm",
                    f"http://127.0.0.1:{sim_port}/exporters/node",
                ],
            }
        },
        "profiles": {
            "writer": {
                "gateway": "sim",
                "model": "sim-7b",
                "runner": "llm",
                "system_prompt": "You are a concise technical writer.",
                "max_parallel": GATEWAY_CAP,
            },
            "checker": {
                "runner": "command",
                "command": [sys.executable, "-c", CHECK_SCRIPT, "--", "{task_id}", "{title}", "{workspace}"],
                "max_parallel": 2,
                "timeout_seconds": 30.0,
            },
        },
        "scheduler": {
            "jobs": [
                {"name": "demo-release", "cron": RELEASE_CRON, "timezone": "UTC", "command": RELEASE_COMMAND}
            ]
        },
        "alerts": {
            "interval_seconds": 5.0,
            "cooldown_seconds": 60.0,
            "min_samples": 3,
            "server_queue": 1,
            "digest_cron": "",
        },
        "http": {"listen": f"127.0.0.1:{http_port}"},
    }


# --------------------------------------------------------------------- the board


def demo_tasks() -> list[tuple[NewTask, list[int]]]:
    """The seeded tasks, in id order; parents are given by position (1-based, as ids)."""
    plan: list[tuple[str, str, dict[str, Any], list[int]]] = [
        # 1-3: a chain across both profiles; `show 3` explains why it waits
        ("writer", "Collect the changes merged since v1.4", {"priority": 5}, []),
        ("writer", "Draft the v1.5 release notes", {"priority": 5}, [1]),
        ("checker", "Check the links in the release notes", {}, [2]),
        # 4-5 and 6-8: a chain and a fan-in
        ("writer", "Ingest the April support tickets", {"priority": 3}, []),
        ("writer", "Cluster the tickets by topic", {"priority": 3}, [4]),
        ("writer", "Summarize yesterday's incident channel", {"priority": 4}, []),
        ("writer", "Summarize the on-call handover notes", {"priority": 4}, []),
        ("writer", "Compare the incident and handover summaries", {}, [6, 7]),
        ("writer", "Write the monthly support report", {"priority": 2}, [5, 8]),
        # 10-12: retries; the child of a failed parent waits and `show 12` says why
        ("checker", "Lint the docs (fails once, then passes)", {}, []),
        ("checker", "Validate the API schema (always fails)", {"max_attempts": 2}, []),
        ("writer", "Publish the validated API schema", {}, [11]),
    ]
    topics = (
        "login loop after password reset",
        "slow CSV export",
        "webhook retries",
        "dark mode contrast",
        "billing email typo",
        "timezone in reports",
        "SSO group sync",
        "mobile upload failure",
        "rate limit errors",
        "search misses accents",
        "stale dashboard cache",
        "2FA recovery codes",
    )
    for i, topic in enumerate(topics):
        plan.append(("writer", f"Summarize ticket #{4821 + i}: {topic}", {"priority": i % 3}, []))
    plan.append(("checker", "Check the runbook's commands", {"priority": 1}, []))
    plan.append(("checker", "Spell-check the FAQ", {}, []))
    for page in range(1, 9):  # released four at a time by the demo-release window
        plan.append(
            ("writer", f"Night batch: translate FAQ page {page} into French", {"column": "backlog"}, [])
        )
    plan.append(("checker", "Night batch: check the translated FAQ", {"column": "backlog"}, []))
    return [
        (NewTask(title=title, profile=profile, body=f"Demo task on the {profile} profile.", **extra), parents)
        for profile, title, extra, parents in plan
    ]


def seed_board(config: LanewardenConfig) -> int:
    """Create the demo board and its tasks; returns how many were added."""
    board = open_board(config)
    try:
        ids: list[int] = []
        for new, parents in demo_tasks():
            task = board.add(replace(new, parents=[ids[p - 1] for p in parents]), ACTOR)
            ids.append(task.id)
        return len(ids)
    finally:
        board.db.dispose()


# ------------------------------------------------------------ inside serve's loop


def demo_companion(
    config: LanewardenConfig, *, headless: bool
) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    """What ``serve`` starts before its dispatcher: the simulated gateway; returns its stop."""

    async def start() -> Callable[[], Awaitable[None]]:
        from lanewarden.bot.simulator import GatewaySimulator, ServerModel

        gateway = config.gateways["sim"]
        port = int(gateway.base_url.rsplit(":", 1)[1].split("/", 1)[0])
        simulator = GatewaySimulator(
            ServerModel(
                profile="batching", knee=SIM_KNEE, token_ms=SIM_TOKEN_MS, output_tokens=SIM_OUTPUT_TOKENS
            ),
            port=port,
            model_name="sim-7b",
        )
        await simulator.start()
        print(guide(config, headless=headless), flush=True)
        return simulator.stop

    return start


def guide(config: LanewardenConfig, *, headless: bool) -> str:
    """What the demo is and what to type, printed once at start."""
    gateway = config.gateways["sim"]
    home = demo_directory(config)
    lines = [
        "",
        "Lanewarden demo (no GPU needed)",
        f"  gateway sim  a simulated vLLM server at {gateway.base_url}",
        f"               full speed up to {SIM_KNEE} requests at once, slower past that;",
        f"               adaptive limit: probes at 1, then grows towards the cap ({GATEWAY_CAP})",
        "  profiles     writer (LLM calls to sim), checker (a command line)",
        f"  board        {len(demo_tasks())} tasks in {home}, recreated at every start",
        "  window       demo-release: every 30 s, " + RELEASE_COMMAND,
        "",
    ]
    alias = f"  alias lw='lanewarden --config {home / 'config.toml'}'"
    if headless:
        lines += ["From another terminal:", alias]
        prefix = "  lw "
    else:
        lines += ["From another terminal (the same board):", alias, "", "Type at the prompt:"]
        prefix = "  "
    commands = [
        ("status", "queue shape, gateways (in flight / limit / server queue), profiles"),
        ("list", "tasks by priority (list --status done, list --all)"),
        ("show 3", "the end of a chain: its parents, runs and history"),
        ("show 12", "a task that waits on a check that always fails (#11), and why"),
        ("caps set gateway sim 2", "a cap that holds from the next claim (caps reset gateway sim)"),
        ("windows list", "the cron window that releases the backlog"),
        ("add Explain continuous batching", "a new task on the writer profile"),
    ]
    if not headless:
        commands.append(("quit", "stop the demo"))
    width = max(len(prefix + command) for command, _ in commands) + 2
    lines += [f"{(prefix + command).ljust(width)}{why}" for command, why in commands]
    lines += [
        "",
        "In Slack or Discord, status --chart attaches a PNG of in-flight vs limit and latency.",
        f"Server metrics: curl {server_root(gateway.base_url)}/metrics   "
        f"Lanewarden's: curl http://{config.http.listen}/metrics",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------ TOML


def to_toml(raw: dict[str, Any]) -> str:
    """The demo settings as a TOML file (tables, arrays of tables, scalars, lists)."""
    out: list[str] = []
    _toml_table(raw, [], out)
    return "\n".join(out).lstrip() + "\n"


def _toml_table(table: dict[str, Any], path: list[str], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
    if scalars and path:
        out.append(f"\n[{'.'.join(path)}]")
    out += [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    for key, value in table.items():
        if _is_table(value):
            _toml_table(value, [*path, key], out)
        elif _is_table_list(value):
            for item in value:
                out.append(f"\n[[{'.'.join([*path, key])}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in item.items()]


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
