"""The distribution installs under a name of its own: another package's top-level
``core``, ``bot`` or ``scheduler`` (``scheduler`` is a popular PyPI distribution) can
sit beside Lanewarden in one environment without either breaking."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_wheel_installs_beside_someone_elses_core_bot_and_scheduler(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("lanewarden-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # someone else's top-level packages, installed first
    for name in ("core", "bot", "scheduler"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"OWNER = 'someone else: {name}'\n")
    # Lanewarden's dependencies come from this test environment (appended, so they never
    # shadow what is installed in the new one); the editable install's finder is not
    # loaded from a path added this way, so only the wheel can provide `lanewarden`
    deps = [p for p in sys.path if p.endswith("site-packages")] or [sysconfig.get_paths()["purelib"]]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "LANEWARDEN_"))}
    env["LANEWARDEN_HOME"] = str(tmp_path / "home")
    run_dir = tmp_path / "elsewhere"  # not the repository, whose folders would shadow nothing
    run_dir.mkdir()
    lanewarden = env_dir / "bin" / "lanewarden"
    version = subprocess.run(
        [str(lanewarden), "--version"], cwd=run_dir, env=env, capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("lanewarden ")
    added = subprocess.run(
        [str(lanewarden), "add", "Summarize", "the", "logs"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [str(lanewarden), "list", "--json"], cwd=run_dir, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "Summarize the logs" in listed.stdout
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import core, bot, scheduler, lanewarden.core.board as b; "
            "print(core.OWNER, bot.OWNER, scheduler.OWNER, b.__file__, sep='|')",
        ],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr
    core_owner, bot_owner, scheduler_owner, board_file = where.stdout.strip().split("|")
    assert (core_owner, bot_owner, scheduler_owner) == (
        "someone else: core",
        "someone else: bot",
        "someone else: scheduler",
    )
    assert Path(board_file).is_relative_to(site / "lanewarden")
