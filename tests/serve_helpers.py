"""Run `lanewarden serve --headless` processes against a shared board."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import LANEWARDEN

ROOT = Path(__file__).parent.parent


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Sections as {"kanban.dispatcher": {...}, "gateways.g1": {...}} -> a TOML file."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class ServeProcess:
    def __init__(self, config: Path, env: dict[str, str], log: Path, *extra: str) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [*LANEWARDEN, "serve", "--headless", *extra],
            env={**env, "LANEWARDEN_CONFIG": str(config), "LANEWARDEN_LOG_LEVEL": "INFO"},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text()


def wait_until(
    predicate, timeout: float = 120.0, what: str = "condition", procs: list[ServeProcess] = ()
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.proc.poll() is not None and p.proc.returncode not in (0, -9):
                raise AssertionError(f"serve exited {p.proc.returncode}:\n{p.output()[-3000:]}")
        time.sleep(0.1)
    logs = "\n".join(p.output()[-2000:] for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "LANEWARDEN_"))}
    env["LANEWARDEN_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env
