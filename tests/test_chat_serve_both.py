"""One ``lanewarden serve`` with both Slack and Discord tokens: both adapters start, a task
added from either platform gets its card on both (each channel subscribed to tasks), and
a button pressed in Discord moves the card in Slack too. Issue 17 item 19 asked whether
the two can run in one process; this is the answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import CHANNEL, GUILD, OPERATOR, TOKEN, discord_sections
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, slash_command
from tests.serve_helpers import ServeProcess, write_config


async def test_slack_and_discord_in_one_serve(
    discord_fake: FakeDiscord, tmp_path: Path, lw_env: dict[str, str]
) -> None:
    slack = await FakeSlack().start()
    sections = discord_sections(discord_fake, notify_channel_id=CHANNEL)
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "http": {"listen": ""},
            "scheduler": {"leader_lease_seconds": 2},
            "slack": {"mode": "socket", "api_base": slack.api_base, "notify_channel": "C0042"},
            "discord": sections["discord"],
            "access": {**sections["access"], "operators": [f"discord:{OPERATOR}", "slack:UOPS"]},
        },
    )
    env = {**lw_env, "DISCORD_TOKEN": TOKEN, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
    serve = ServeProcess(config, env, tmp_path / "serve.log")
    try:
        await discord_fake.wait_until(
            lambda: discord_fake.connected.is_set() and GUILD in discord_fake.commands, timeout=60
        )
        added = await discord_fake.run(
            discord_fake.slash(
                "add", user=OPERATOR, channel_id=CHANNEL, guild_id=GUILD, title="From Discord"
            ),
            timeout=30,
        )
        assert "created #1" in added.text
        envelope = await slack.send_envelope(
            "slash_commands",
            slash_command(
                "add From Slack", user="UOPS", channel="C0042", response_url=slack.response_url("s")
            ),
        )
        assert await slack.ack_for(envelope, timeout=30) == {"envelope_id": envelope}

        def slack_cards() -> list[str]:
            return [m["text"] for m in slack.posts("C0042") if "thread_ts" not in m]

        def discord_cards() -> list[str]:
            return [m["embeds"][0]["title"] for m in discord_fake.channel_messages(CHANNEL) if m["embeds"]]

        await slack.wait_for(lambda: len(slack_cards()) == 2, timeout=60)
        await discord_fake.wait_until(lambda: len(discord_cards()) == 2, timeout=60)
        assert sorted(t.split(" — ")[0] for t in slack_cards()) == ["#1 From Discord", "#2 From Slack"]
        assert sorted(discord_cards()) == ["#1 From Discord", "#2 From Slack"]

        # a Discord button moves the task, and the Slack card follows
        [card] = [
            m
            for m in discord_fake.channel_messages(CHANNEL)
            if m["embeds"] and "#2" in m["embeds"][0]["title"]
        ]
        cancel = await discord_fake.run(
            discord_fake.click(card, "lw:cancel:2", user=OPERATOR, guild_id=GUILD), timeout=30
        )
        confirm = cancel.answer
        done = await discord_fake.run(
            discord_fake.click(
                {**confirm, "channel_id": str(CHANNEL)}, "lw:cancel-yes:2", user=OPERATOR, guild_id=GUILD
            ),
            timeout=30,
        )
        assert "cancelled" in done.text
        await slack.wait_for(
            lambda: any(
                "cancelled" in json.dumps(m["blocks"])
                for m in slack.posts("C0042")
                if "From Slack" in m["text"]
            ),
            timeout=60,
        )
    finally:
        status = await asyncio.to_thread(serve.terminate)
        await slack.stop()
    output = serve.output()
    assert status == 0, output[-3000:]
    assert TOKEN not in output and BOT_TOKEN not in output and APP_TOKEN not in output
    assert not discord_fake.refusals and not slack.refusals
