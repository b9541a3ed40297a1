"""``lanewarden serve`` with Slack tokens, as a real process against the fake Slack:
the adapter is wired in, commands arrive over Socket Mode, and the leader delivers
the task's card (edited to done as the noop worker finishes it) with its thread."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, slash_command
from tests.serve_helpers import ServeProcess, clean_env, write_config


async def test_serve_runs_slack_commands_and_delivers_cards(tmp_path: Path) -> None:
    fake = await FakeSlack().start()
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": f"sqlite:///{tmp_path / 'board.db'}"},
            "http": {"listen": "127.0.0.1:0"},
            "slack": {"mode": "socket", "api_base": fake.api_base},
            "access": {"operators": ["slack:UOPS"]},
            "profiles.default": {"runner": "noop"},
        },
    )
    env = {**clean_env(tmp_path / "home"), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
    serve = ServeProcess(config, env, tmp_path / "serve.log")
    try:
        envelope = await fake.send_envelope(
            "slash_commands",
            slash_command(
                "add Write the release notes",
                user="UOPS",
                channel="C0042",
                response_url=fake.response_url("a"),
            ),
        )
        assert await fake.ack_for(envelope, timeout=30) == {"envelope_id": envelope}
        [answer] = await fake.wait_for(lambda: [r for r in fake.responses if r["_key"] == "a"], timeout=30)
        assert answer["response_type"] == "in_channel"

        def thread_of_card() -> list[str]:
            cards = [m for m in fake.posts("C0042") if "thread_ts" not in m]
            return [m["text"] for m in fake.posts("C0042") if cards and m.get("thread_ts") == cards[0]["ts"]]

        # the noop worker finishes the task: its state changes arrive in the card's thread
        await fake.wait_for(lambda: any("done in" in text for text in thread_of_card()), timeout=30)
        [card] = [m for m in fake.posts("C0042") if "thread_ts" not in m]  # one card, edited in place
        assert ":white_check_mark: *done*" in json.dumps(card["blocks"])
        assert [text.split(" ", 1)[0] for text in thread_of_card()] == ["#1"] * len(thread_of_card())
    finally:
        code = await asyncio.to_thread(serve.terminate, 60)
        await fake.stop()
    assert code == 0, serve.output()[-3000:]
    log = serve.output()
    assert BOT_TOKEN not in log and APP_TOKEN not in log
    complaints = [
        line
        for line in log.splitlines()
        if (" WARNING " in line or " ERROR " in line) and ("slack" in line or "outbox" in line)
    ]
    assert not complaints, complaints
