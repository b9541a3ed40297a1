"""Issue 12, item 12: config values have strict types; nothing is coerced from a string.

`enabled = "yes"` used to be read as true. A quoted number or boolean is a mistake the
operator should hear about, with the usual one line naming the key.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lanewarden.core.config import parse_config
from lanewarden.core.errors import ConfigError

from tests.conftest import LANEWARDEN

COERCIONS = [
    ({"kanban": {"dispatcher": {"enabled": "yes"}}}, "kanban.dispatcher.enabled = 'yes'"),
    ({"kanban": {"dispatcher": {"enabled": 1}}}, "kanban.dispatcher.enabled = 1"),
    ({"scheduler": {"enabled": "false"}}, "scheduler.enabled = 'false'"),
    ({"kanban": {"dispatcher": {"max_active_tasks": "4"}}}, "kanban.dispatcher.max_active_tasks = '4'"),
    ({"kanban": {"dispatcher": {"max_active_tasks": 4.0}}}, "kanban.dispatcher.max_active_tasks = 4.0"),
    ({"kanban": {"dispatcher": {"poll_interval_seconds": "5"}}}, "poll_interval_seconds = '5'"),
    (
        {"gateways": {"g": {"base_url": "http://h/v1", "adaptive": "true"}}, "profiles": {}},
        "gateways.g.adaptive = 'true'",
    ),
    (
        {"gateways": {"g": {"base_url": "http://h/v1", "max_concurrency": "2"}}, "profiles": {}},
        "gateways.g.max_concurrency = '2'",
    ),
    ({"discord": {"guild_ids": ["123"]}}, "discord.guild_ids.0 = '123'"),
    ({"discord": {"alert_channel_id": "42"}}, "discord.alert_channel_id = '42'"),
    ({"profiles": {"p": {"runner": "noop", "max_parallel": True}}}, "profiles.p.max_parallel = True"),
    ({"profiles": {"p": {"runner": "noop", "env": {"MODE": 1}}}}, "profiles.p.env.MODE = 1"),
]


@pytest.mark.parametrize(("raw", "named"), COERCIONS, ids=[n for _, n in COERCIONS])
def test_no_value_is_coerced(raw: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_ints_stay_valid_where_a_number_is_expected() -> None:
    config = parse_config({"kanban": {"dispatcher": {"poll_interval_seconds": 2, "enabled": False}}})
    assert config.kanban.dispatcher.poll_interval_seconds == 2.0 and config.kanban.dispatcher.enabled is False


def test_cli_names_the_key_in_one_line(lw_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "lanewarden.toml"
    path.write_text('[kanban.dispatcher]\nenabled = "yes"\n')
    proc = subprocess.run(
        [*LANEWARDEN, "--config", str(path), "list"], env=lw_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "kanban.dispatcher.enabled = 'yes': must be a valid boolean" in proc.stderr
