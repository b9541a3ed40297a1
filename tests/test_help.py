"""Help where people reach for it: `--help` on every verb and operator command, one help
that lists everything, and shell completion generated from the grammar."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from lanewarden.bot.cli import OPERATOR_COMMANDS
from lanewarden.core.commands import HelpCommand
from lanewarden.core.grammar import REGISTRY, parse

from tests.conftest import LANEWARDEN


def run(lw_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LANEWARDEN, *args], env=lw_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_verb_takes_help_where_people_type_it(name: str) -> None:
    for flag in ("--help", "-h"):
        command = parse([*name.split(), flag])
        assert isinstance(command, HelpCommand) and command.topic == name
    # after `--` it is a word like any other: a title may say "--help"
    assert not isinstance(parse(["add", "--", "--help"]), HelpCommand)


def test_cli_help_lists_every_verb_operator_command_and_option(lw_env: dict[str, str]) -> None:
    for args in (("--help",), ("help",), ()):
        result = run(lw_env, *args)
        assert result.returncode == 0, result.stderr
        for name in REGISTRY:
            assert f"  {name} " in result.stdout, name
        for name in OPERATOR_COMMANDS:
            assert f"  {name} " in result.stdout, name
        for option in ("--config", "--version"):
            assert option in result.stdout


def test_help_on_a_verb_and_an_operator_command(lw_env: dict[str, str]) -> None:
    added = run(lw_env, "add", "--help")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("add: Create a task")
    assert "--profile" in added.stdout
    for args in (("help", "serve"), ("serve", "--help"), ("serve", "-h")):
        result = run(lw_env, *args)
        assert result.returncode == 0, result.stderr
        assert "--headless" in result.stdout and "--demo" in result.stdout
    # nothing was created by asking for help
    assert not (Path(lw_env["LANEWARDEN_HOME"]) / "board.db").exists()


def _complete(script: Path, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    probe = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        '_lanewarden; echo "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completion_completes_verbs_flags_and_choices(lw_env: dict[str, str], tmp_path: Path) -> None:
    result = run(lw_env, "completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "lanewarden.bash"
    script.write_text(result.stdout)
    assert _complete(script, "lanewarden", "prom") == ["promote", "promote-batch"]
    assert "serve" in _complete(script, "lanewarden", "se")
    assert "--column" in _complete(script, "lanewarden", "list", "--co")
    assert _complete(script, "lanewarden", "list", "--column", "rea") == ["ready"]
    assert _complete(script, "lanewarden", "caps", "r") == ["reset"]
    assert "--headless" in _complete(script, "lanewarden", "serve", "--he")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_verb(lw_env: dict[str, str], shell: str) -> None:
    result = run(lw_env, "completion", shell)
    assert result.returncode == 0, result.stderr
    for name in REGISTRY:
        assert name.split()[0] in result.stdout
    refused = run(lw_env, "completion", "powershell")
    assert refused.returncode == 2


def test_promote_batch_says_it_once_on_a_terminal(lw_env: dict[str, str], tmp_path: Path) -> None:
    """On a terminal stdout says what was released; the timestamped log line is for cron."""
    for title in ("a", "b"):
        assert run(lw_env, "add", title, "--column", "backlog").returncode == 0
    command = " ".join(
        shlex.quote(a)
        for a in [*LANEWARDEN, "promote-batch", "--from", "backlog", "--to", "ready", "--max", "5"]
    )
    # `script` gives the command a real terminal, as a person's shell would
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"], env=lw_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("#1") == 1 and result.stdout.count("#2") == 1, result.stdout


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["list", "--column", "readyy"], "Did you mean `ready`?"),
        (["add", "x", "--column", "bakclog"], "Did you mean `backlog`?"),
    ],
)
def test_a_mistyped_value_gets_a_did_you_mean(lw_env: dict[str, str], args: list[str], hint: str) -> None:
    result = run(lw_env, *args)
    assert result.returncode == 2 and hint in result.stderr and result.stderr.count("\n") == 1


def test_a_mistyped_config_key_gets_a_did_you_mean(lw_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "lanewarden.toml"
    config.write_text('[gateways.g]\nbase_url = "http://127.0.0.1:1/v1"\nmax_concurency = 3\n')
    result = run(lw_env, "--config", str(config), "list")
    assert result.returncode == 2
    assert "gateways.g.max_concurency: unknown key (did you mean max_concurrency?)" in result.stderr
