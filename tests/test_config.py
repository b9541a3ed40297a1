"""Config search path, Hermes keys, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanewarden.core.config import load_config, parse_config
from lanewarden.core.errors import ConfigError

HERMES = """
[kanban.dispatcher]
enabled = false
poll_interval_seconds = 10
max_active_tasks = 3

[kanban.workers]
profile = "etl-worker"
max_parallel_per_profile = 2

[[scheduler.jobs]]
name = "night"
cron = "*/15 * * * *"
timezone = "Europe/Paris"
command = "hermes kanban promote-batch --from ready --to active --max 2"

[gateways.gpu]
base_url = "http://127.0.0.1:11434/v1"
kind = "ollama"
max_concurrency = 2

[profiles.etl-worker]
gateway = "gpu"
model = "llama3.2"
runner = "command"
command = "hermes -p etl-worker chat -q {prompt}"
"""


def test_hermes_keys_accepted_as_written(tmp_path: Path) -> None:
    path = tmp_path / "lanewarden.toml"
    path.write_text(HERMES)
    config, found = load_config(path)
    assert found == path
    assert config.kanban.dispatcher.enabled is False
    assert config.kanban.dispatcher.max_active_tasks == 3
    assert config.kanban.workers.profile == "etl-worker"
    assert config.scheduler.jobs[0].command.startswith("hermes kanban")
    assert config.profiles["etl-worker"].command == ["hermes", "-p", "etl-worker", "chat", "-q", "{prompt}"]
    assert config.profile_cap("etl-worker") == 2


def test_search_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LANEWARDEN_HOME", str(home))
    monkeypatch.delenv("LANEWARDEN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_config()[1] is None  # built-in defaults
    home.mkdir()
    (home / "config.toml").write_text("[kanban.dispatcher]\nmax_active_tasks = 7\n")
    config, found = load_config()
    assert found == home / "config.toml" and config.kanban.dispatcher.max_active_tasks == 7
    (tmp_path / "lanewarden.toml").write_text("[kanban.dispatcher]\nmax_active_tasks = 8\n")
    assert load_config()[0].kanban.dispatcher.max_active_tasks == 8
    other = tmp_path / "other.toml"
    other.write_text("[kanban.dispatcher]\nmax_active_tasks = 9\n")
    monkeypatch.setenv("LANEWARDEN_CONFIG", str(other))
    assert load_config()[0].kanban.dispatcher.max_active_tasks == 9
    assert load_config(tmp_path / "lanewarden.toml")[0].kanban.dispatcher.max_active_tasks == 8
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"gateways": {"gpu": {"base_url": "http://x", "max_concurrency": 0}}},
            "gateways.gpu.max_concurrency = 0: must be greater than or equal to 1",
        ),
        (
            {"gateways": {"gpu": {"base_url": "http://x", "kind": "tgi"}}},
            "gateways.gpu.kind = 'tgi': must be 'openai', 'ollama', 'vllm', 'llamacpp' or 'litellm'",
        ),
        (
            {"gateways": {"gpu": {"base_url": "ftp://x"}}},
            "gateways.gpu.base_url = 'ftp://x': must be an http",
        ),
        (
            {"kanban": {"dispatcher": {"max_active_task": 3}}},
            "kanban.dispatcher.max_active_task: unknown key (did you mean max_active_tasks?); "
            "allowed here: drain_timeout_seconds, enabled",
        ),
        (
            {"profiles": {"p": {"gateway": "nope", "model": "m"}}},
            "profiles.p.gateway = 'nope': no such gateway",
        ),
        ({"profiles": {"p": {"runner": "llm"}}}, "runner 'llm' needs both 'gateway' and 'model'"),
        ({"kanban": {"dispatcher": {"enabled": "sometimes"}}}, "kanban.dispatcher.enabled = 'sometimes'"),
        ({"gateways": {"bad name!": {"base_url": "http://x"}}}, "gateways.bad name!"),
    ],
)
def test_errors_name_key_value_and_allowed(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_unreadable_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[kanban.dispatcher\nenabled = true\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_starter_config_is_valid(tmp_path: Path) -> None:
    from importlib.resources import files

    text = files("core").joinpath("starter_config.toml").read_text()
    path = tmp_path / "c.toml"
    path.write_text(text.replace("{board_path}", str(tmp_path / "b.db")))
    config, _ = load_config(path)
    assert config.profiles["default"].gateway == "local"
