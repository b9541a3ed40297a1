"""The deployment recipes in docs/deploy/ (docs/deploy.md) agree with the package: the
systemd unit passes ``systemd-analyze verify`` and its hardening is measured, and the
Containerfile's entry point, health check and config are run for real against a
``serve`` process (no container engine is needed: the image's commands are the test)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from lanewarden.core.config import DispatcherConfig, load_config

from tests.conftest import LANEWARDEN
from tests.serve_helpers import clean_env, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
UNIT = DEPLOY / "lanewarden.service"
CONTAINERFILE = DEPLOY / "Containerfile"

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ systemd unit


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat (Environment=), so no configparser."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(entries: list[tuple[str, str, str]], key: str) -> str:
    (value,) = [v for _, k, v in entries if k == key]
    return value


def unit_environment(entries: list[tuple[str, str, str]]) -> dict[str, str]:
    pairs = [v.partition("=") for _, k, v in entries if k == "Environment"]
    return {name: value for name, _, value in pairs}


def installed_lanewarden() -> str:
    """The console script of the environment running the tests: what pip installed."""
    script = Path(sys.executable).parent / "lanewarden"
    return str(script) if script.exists() else shutil.which("lanewarden") or ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (apt: systemd)")
def test_the_unit_passes_systemd_analyze_verify_and_is_hardened(tmp_path: Path) -> None:
    script = installed_lanewarden()
    assert script, "the lanewarden console script is not installed"
    # verify checks that ExecStart's program exists: point it at the one pip installed here
    unit = tmp_path / "lanewarden.service"
    unit.write_text(UNIT.read_text().replace("/opt/lanewarden/bin/lanewarden", script))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # unknown keys and bad values are only warnings (exit 0): any output is a mistake
    assert verified.returncode == 0 and verified.stderr == "" and verified.stdout == "", verified.stderr

    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security.stdout)
    assert found, security.stdout[-2000:] + security.stderr
    # systemd rates 0 (locked down) to 10 (unprotected); a plain unit scores 9.6
    assert float(found.group(1)) <= 2.0, security.stdout


def test_the_unit_runs_serve_headless_as_its_own_user_and_lets_it_drain() -> None:
    entries = unit_entries(UNIT.read_text())
    program, *args = shlex.split(unit_value(entries, "ExecStart"))
    assert Path(program).name == "lanewarden" and args == ["serve", "--headless"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "lanewarden" in pyproject["project"]["scripts"]

    assert unit_value(entries, "User") not in ("", "root", "0")
    assert unit_value(entries, "NoNewPrivileges") == "yes"
    assert unit_value(entries, "ProtectSystem") == "strict"
    assert unit_value(entries, "Restart") == "on-failure"
    assert unit_value(entries, "RestartPreventExitStatus") == "2"  # bad config: restarting cannot help
    home = unit_environment(entries)["LANEWARDEN_HOME"]
    assert unit_value(entries, "ReadWritePaths") == home
    assert unit_value(entries, "WorkingDirectory") == home
    assert unit_value(entries, "EnvironmentFile").startswith("/etc/")
    # SIGTERM to serve alone (it drains); what is left in the cgroup is killed after it
    assert unit_value(entries, "KillMode") == "mixed"
    assert unit_value(entries, "KillSignal") == "SIGTERM"
    drain = DispatcherConfig().drain_timeout_seconds
    # the drain, then up to 10 s for stopped runs to be released, then shutting down
    assert float(unit_value(entries, "TimeoutStopSec")) >= drain + 15


# -------------------------------------------------------------------- Containerfile


def containerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        word, _, rest = joined.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def containerfile() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for word, rest in containerfile_instructions(CONTAINERFILE.read_text()):
        found.setdefault(word, []).append(rest)
    return found


def image_env(image: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in image["ENV"]:
        for pair in shlex.split(line):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def image_command(image: dict[str, list[str]]) -> list[str]:
    """ENTRYPOINT + CMD (exec form), without the init process in front."""
    argv = json.loads(image["ENTRYPOINT"][-1]) + json.loads(image["CMD"][-1])
    if argv[:2] == ["tini", "--"]:
        argv = argv[2:]
    return argv


def health_command(image: dict[str, list[str]]) -> list[str]:
    (check,) = image["HEALTHCHECK"]
    return json.loads(check[check.index("CMD") + len("CMD") :].strip())


def image_config_path(image: dict[str, list[str]]) -> Path:
    target = image_env(image)["LANEWARDEN_CONFIG"]
    (source,) = [c.split()[0] for c in image["COPY"] if c.split()[-1] == target]
    return ROOT / source


def test_the_image_installs_this_package_and_runs_serve_headless_unprivileged() -> None:
    image = containerfile()
    assert image["FROM"] == ["python:3.11-slim"]
    for copy in image["COPY"]:
        *sources, _target = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {c.split()[0] for c in image["COPY"]}
    assert folders <= copied, f"the image must copy every package folder: {sorted(folders - copied)}"
    assert any("pip install /src" in run for run in image["RUN"])

    assert image_command(image) == ["lanewarden", "serve", "--headless"]
    assert "lanewarden" in pyproject["project"]["scripts"]
    (user,) = image["USER"]
    assert user not in ("root", "0")
    assert any("useradd" in run and run.split()[-1] == user for run in image["RUN"])
    env = image_env(image)
    assert image["WORKDIR"] == [env["LANEWARDEN_HOME"]]
    assert json.loads(image["VOLUME"][0]) == [env["LANEWARDEN_HOME"]]
    assert f"--home-dir {env['LANEWARDEN_HOME']}" in " ".join(image["RUN"])
    assert image["STOPSIGNAL"] == ["SIGTERM"]

    # the image's config binds every interface on the port the image exposes and checks
    config, _ = load_config(image_config_path(image))
    assert config.http.listen == f"0.0.0.0:{image['EXPOSE'][0]}"
    assert f"127.0.0.1:{image['EXPOSE'][0]}/healthz" in " ".join(health_command(image))


def test_the_image_command_and_health_check_work_against_a_real_serve(tmp_path: Path) -> None:
    """The image's CMD with the image's config (moved to a free loopback port, as tests bind),
    probed by the image's HEALTHCHECK command, then stopped with its STOPSIGNAL."""
    image = containerfile()
    config_text = image_config_path(image).read_text()
    port = image["EXPOSE"][0]
    config = tmp_path / "config.toml"
    config.write_text(
        config_text.replace(f'listen = "0.0.0.0:{port}"', 'listen = "127.0.0.1:0"').replace(
            "http://host.containers.internal:11434/v1",
            "http://127.0.0.1:9/v1",  # nothing listens
        )
    )
    env = {**clean_env(tmp_path / "home"), "LANEWARDEN_CONFIG": str(config)}
    log = tmp_path / "serve.log"
    program, *args = image_command(image)
    assert program == "lanewarden"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*LANEWARDEN, *args], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        found = wait_until(
            lambda: re.search(r"HTTP endpoint on http://127\.0\.0\.1:(\d+)", log.read_text()),
            timeout=60,
            what="the HTTP endpoint",
        )
        bound = found.group(1)

        def probe(path: str) -> int:
            argv = [
                a.replace(f"127.0.0.1:{port}/healthz", f"127.0.0.1:{bound}{path}")
                for a in health_command(image)
            ]
            assert argv[0] == "python"
            return subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=30).returncode

        assert probe("/healthz") == 0  # alive, though its gateway is down
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{bound}/healthz").json()["gateways"]["local"] == "down"
        )
        assert probe("/healthz") == 0
        assert probe("/readyz") != 0  # the same probe on /readyz: not ready without a gateway
        assert probe("/nothing-here") != 0  # the probe does fail on an error status
    finally:
        proc.send_signal(getattr(signal, image["STOPSIGNAL"][0]))
        code = proc.wait(60)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "stopping: draining the dispatcher" in output and "stopped" in output
