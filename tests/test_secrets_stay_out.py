"""Issue 12, item 2: doctor, /metrics, logs at DEBUG and `show --json` stay free of secrets.

A real `serve --headless` at DEBUG runs an LLM task (the gateway key goes out in its
Authorization header) and a command agent that prints the key it was given, on a
PostgreSQL board whose URL carries a password. Then every surface a viewer or an
operator reads is searched for every secret value.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import load_config

from tests.conftest import LANEWARDEN, pg_url
from tests.fakes.gateway import FakeGateway
from tests.serve_helpers import ROOT, clean_env, wait_until, write_config

SECRETS = {
    "GW_KEY": "gateway-key-secret-4242",
    "PGPASSWORD": "pg-env-password-5353",
    "LANEWARDEN_WEB_SECRET": "web-signing-secret-6464-0123456789abcdef",
}
URL_PASSWORD = "url-password-7575"
# an agent printing the key it was given
PRINT_KEY = "import os; print('key=' + os.environ['OPENAI_API_KEY'])"
# serve hides its /proc/<pid>/environ from processes of its own uid (agents). As root the
# probe first becomes nobody (root reads everything anyway), makes itself readable again
# (a change of uid had hidden it) to show the attack, then hides itself as serve does.
PROC_ENVIRON_PROBE = """
import ctypes, os, subprocess
from lanewarden.core.redaction import PR_SET_DUMPABLE, hide_process_environment
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
def agent_reads_parent():
    read = subprocess.run(["cat", f"/proc/{os.getpid()}/environ"], capture_output=True, cwd="/")
    return b"PROBE_SECRET=" in read.stdout
before = agent_reads_parent()
hidden = hide_process_environment()
print(before, hidden, agent_reads_parent())
"""


def test_no_surface_shows_a_secret(tmp_path: Path, pg_schema: str) -> None:
    fake = FakeGateway(delay=0.01, tokens=3)
    url = pg_url(pg_schema).replace("postgres@", f"postgres:{URL_PASSWORD}@", 1)
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "kanban.dispatcher": {"poll_interval_seconds": 0.5},
            "kanban.workers": {"profile": "writer"},
            "gateways.g": {"base_url": fake.base_url, "api_key_env": "GW_KEY", "probe_interval_seconds": 0.5},
            "profiles.writer": {"gateway": "g", "model": "m"},
            "profiles.agent": {
                "gateway": "g",
                "runner": "command",
                "command": [sys.executable, "-c", PRINT_KEY],
            },
            "http": {"listen": "127.0.0.1:0"},
        },
    )
    board = open_board(load_config(config_path)[0])
    llm_task = board.add(NewTask(title="write a haiku"), "test").id
    agent_task = board.add(NewTask(title="print your key", profile="agent"), "test").id
    env = {**clean_env(tmp_path / "home"), **SECRETS, "LANEWARDEN_CONFIG": str(config_path)}
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        serve = subprocess.Popen(
            [*LANEWARDEN, "serve", "--headless"],
            env={**env, "LANEWARDEN_LOG_LEVEL": "DEBUG"},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            port = wait_until(
                lambda: (
                    (m := re.search(r"HTTP endpoint on http://127\.0\.0\.1:(\d+)", log_path.read_text()))
                    and int(m.group(1))
                ),
                timeout=60,
                what="the HTTP endpoint",
                procs=[SimpleNamespace(proc=serve, output=log_path.read_text)],
            )
            wait_until(
                lambda: {board.get(llm_task).status, board.get(agent_task).status} == {"done"},
                timeout=60,
                what="both tasks done",
            )
            surfaces = {"/metrics": httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text}
            surfaces["/healthz"] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text
            for argv in (
                ["doctor"],
                ["show", str(llm_task), "--json"],
                ["show", str(agent_task), "--json"],
                ["list", "--all", "--json"],
                ["status", "--json"],
            ):
                proc = subprocess.run(
                    [*LANEWARDEN, *argv], env=env, capture_output=True, text=True, timeout=120
                )
                surfaces[" ".join(argv)] = proc.stdout + proc.stderr
        finally:
            serve.terminate()
            serve.wait(30)
            fake.close()
            board.db.dispose()
    surfaces["serve log at DEBUG"] = log_path.read_text()
    assert " DEBUG " in surfaces["serve log at DEBUG"]  # the log really is at DEBUG
    shown = surfaces[f"show {agent_task} --json"]
    assert "key=[redacted]" in shown  # the agent printed its key
    assert "postgres:***@" in surfaces["doctor"]  # doctor names the database, password hidden
    for name, text in surfaces.items():
        for secret in [*SECRETS.values(), URL_PASSWORD]:
            assert secret not in text, f"{secret} appears in {name}"


def test_serve_environment_is_unreadable_to_its_own_uid() -> None:
    """An agent given no secrets could still read /proc/$PPID/environ; not once hidden."""
    env = {**os.environ, "PROBE_SECRET": "probe-secret-value"}
    proc = subprocess.run(
        [sys.executable, "-c", PROC_ENVIRON_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["True", "True", "False"], proc.stderr


def test_a_bad_board_url_is_reported_without_its_password(lw_env: dict[str, str], tmp_path: Path) -> None:
    for url in ("mysql://lw:url-password-7575@db/lw", "postgresql+psycopg://lw:url-password-7575@db:port/lw"):
        path = tmp_path / "lanewarden.toml"
        path.write_text(f'[board]\nurl = "{url}"\n')
        for argv in (["list"], ["doctor"]):
            proc = subprocess.run(
                [*LANEWARDEN, "--config", str(path), *argv],
                env=lw_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            said = proc.stdout + proc.stderr
            assert proc.returncode == 2 and "board.url = '" in said and "lw:***@db" in said, said
            assert URL_PASSWORD not in said
