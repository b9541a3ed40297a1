"""`lanewarden serve` with DISCORD_TOKEN, end to end: the real process, its leader outbox and
its dispatcher, driven from a /kanban command through the fake Discord."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import CHANNEL, GUILD, OPERATOR, TOKEN, discord_sections
from tests.serve_helpers import ServeProcess, write_config


def field(message: dict, name: str) -> str | None:
    for embed in message.get("embeds", []):
        for f in embed.get("fields", []):
            if f["name"] == name:
                return f["value"]
    return None


async def test_a_task_added_in_discord_runs_and_its_card_follows_it(
    discord_fake: FakeDiscord, tmp_path: Path, lw_env: dict[str, str]
) -> None:
    sections = discord_sections(discord_fake)
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "http": {"listen": ""},
            "kanban.workers": {"profile": "quick"},
            "profiles.quick": {"runner": "noop"},
            "scheduler": {"leader_lease_seconds": 2},
            "discord": sections["discord"],
            "access": sections["access"],
        },
    )
    serve = ServeProcess(config, {**lw_env, "DISCORD_TOKEN": TOKEN}, tmp_path / "serve.log")
    try:
        await discord_fake.wait_until(
            lambda: discord_fake.connected.is_set() and GUILD in discord_fake.commands, timeout=60
        )
        log = await discord_fake.run(
            discord_fake.slash("add", user=OPERATOR, channel_id=CHANNEL, guild_id=GUILD, title="Say hello"),
            timeout=30,
        )
        assert "created #1 in ready" in log.text

        # the dispatcher runs it (noop runner), the leader's outbox keeps its card current
        def finished_card() -> dict | None:
            cards = [m for m in discord_fake.channel_messages(CHANNEL) if m["embeds"]]
            return cards[0] if cards and field(cards[0], "Status") == "done" else None

        card = await discord_fake.wait_until(finished_card, timeout=60)
        assert len([m for m in discord_fake.channel_messages(CHANNEL) if m["embeds"]]) == 1
        assert card["components"] == []  # a done task has no buttons left
        thread = await discord_fake.wait_until(
            lambda: discord_fake.channel_messages(int(card["id"])), timeout=30
        )
        assert thread[0]["content"]  # state changes went to the card's thread
    finally:
        status = await asyncio.to_thread(serve.terminate)
    output = serve.output()
    assert status == 0, output
    assert TOKEN not in output
