"""Issue 12, item 7: `lanewarden init` names the first admin (flag, or asked on a terminal),
so a new install does not start with everybody a viewer and nobody able to change anything."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from lanewarden.core.access import resolve_role
from lanewarden.core.config import load_config

from tests.conftest import LANEWARDEN


def init(env: dict[str, str], *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LANEWARDEN, "init", *args], env=env, capture_output=True, text=True, timeout=60, **kw
    )


def test_admin_flag_makes_that_user_admin(lw_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    proc = init(
        lw_env, "--path", str(target), "--admin", "slack:U0123ABCD", "--admin", "discord:123456789012345678"
    )
    assert proc.returncode == 0, proc.stderr
    access = load_config(target)[0].access
    assert access.admins == ["slack:U0123ABCD", "discord:123456789012345678"]
    assert resolve_role(access, ["slack:U0123ABCD"]) == "admin"
    assert resolve_role(access, ["discord:123456789012345678"]) == "admin"
    assert resolve_role(access, ["slack:U999STRANGER"]) == "viewer"  # everyone else stays a viewer


def test_a_malformed_admin_is_refused_before_anything_is_written(
    lw_env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "config.toml"
    for bad in ("slack:C0123ABCD", "discord:@someone", "U0123ABCD", 'slack:U1"] x = ["'):
        proc = init(lw_env, "--path", str(target), "--admin", bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a chat user" in proc.stderr
        assert not target.exists()


def test_asks_on_a_terminal_until_the_answer_is_valid(lw_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"slack:general\ndiscord:123456789012345678\n")
        proc = init(lw_env, "--path", str(target), stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert "First admin" in proc.stdout and "not a chat user" in proc.stderr  # the first answer was refused
    assert load_config(target)[0].access.admins == ["discord:123456789012345678"]


def test_without_a_terminal_or_flag_it_says_nobody_is_admin(lw_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    proc = init(lw_env, "--path", str(target), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "no admin yet" in proc.stderr
    assert load_config(target)[0].access.admins == []


def test_doctor_warns_when_chat_has_no_admin(lw_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    assert init(lw_env, "--path", str(target), stdin=subprocess.DEVNULL).returncode == 0
    # a token that reaches no server: doctor only reads the environment for this check
    env = {**lw_env, "DISCORD_TOKEN": "not-a-real-token", "LANEWARDEN_CONFIG": str(target)}
    warned = subprocess.run([*LANEWARDEN, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert "[access] names no admin" in warned.stdout
    assert "not-a-real-token" not in warned.stdout + warned.stderr
    target.unlink()
    assert init(lw_env, "--path", str(target), "--admin", "discord:123456789012345678").returncode == 0
    quiet = subprocess.run([*LANEWARDEN, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert "names no admin" not in quiet.stdout
