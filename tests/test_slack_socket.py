"""Slack in Socket Mode: slack-bolt's AsyncSocketModeHandler and slack-sdk's aiohttp
client, connected to the fake Slack's WebSocket (handed out by apps.connections.open)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lanewarden.bot.chat import AdapterContext
from lanewarden.bot.slack_app.adapter import SlackAdapter
from lanewarden.core.board import Board, NewTask, TaskFilter, open_board

from tests.conftest import make_config
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, button_click, home_opened, slash_command


@dataclass
class SocketRig:
    fake: FakeSlack
    board: Board
    adapter: SlackAdapter
    db_path: Path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[SocketRig]:
    fake = await FakeSlack().start()
    db_path = tmp_path / "board.db"
    config = make_config(
        f"sqlite:///{db_path}",
        slack={"mode": "socket", "api_base": fake.api_base},
        access={"admins": ["slack:UADMIN"], "operators": ["slack:UOPS"]},
    )
    board = open_board(config)
    # socket mode needs no signing secret and no HTTP endpoint
    adapter = SlackAdapter.from_env(config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN})
    await adapter.start(AdapterContext(config, board, None))
    yield SocketRig(fake, board, adapter, db_path)
    await adapter.stop()
    await fake.stop()
    board.db.dispose()


async def test_commands_arrive_over_the_socket_and_are_acked(rig: SocketRig) -> None:
    fake = rig.fake
    envelope = await fake.send_envelope(
        "slash_commands",
        slash_command("add Index the wiki --profile researcher", response_url=fake.response_url("a")),
    )
    ack = await fake.ack_for(envelope)
    assert ack == {"envelope_id": envelope}  # an empty ack: the answer follows on response_url
    [answer] = await fake.wait_for(lambda: [r for r in fake.responses if r["_key"] == "a"])
    assert answer["response_type"] == "in_channel" and "Index the wiki" in answer["text"]
    [task] = rig.board.list_tasks(TaskFilter())
    assert (task.profile, task.created_by, task.origin) == ("researcher", "slack:UADMIN", "slack:C0001")
    # the connection was opened with the app-level token, the Web API used the bot token
    assert fake.calls_to("apps.connections.open") and fake.socket_connections == 1


async def test_a_typo_is_answered_in_the_ack_itself(rig: SocketRig) -> None:
    envelope = await rig.fake.send_envelope(
        "slash_commands", slash_command("lsit", response_url=rig.fake.response_url("typo"))
    )
    ack = await rig.fake.ack_for(envelope)
    assert "Did you mean `list`?" in ack["payload"]["text"]
    assert not [r for r in rig.fake.responses if r["_key"] == "typo"]


async def test_the_ack_does_not_wait_for_the_work(rig: SocketRig) -> None:
    """With the board's database locked by someone else, the command is still acked at
    once; its answer comes when the work can be done."""
    blocker = sqlite3.connect(rig.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        envelope = await rig.fake.send_envelope(
            "slash_commands",
            slash_command("add Waits for the lock", response_url=rig.fake.response_url("slow")),
        )
        await rig.fake.ack_for(envelope)
        assert not [r for r in rig.fake.responses if r["_key"] == "slow"]  # the work is still waiting
        assert rig.board.counts()["ready"] == 0
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    [answer] = await rig.fake.wait_for(lambda: [r for r in rig.fake.responses if r["_key"] == "slow"])
    assert "Waits for the lock" in answer["text"]
    assert rig.board.counts()["ready"] == 1


async def test_buttons_and_app_home_over_the_socket(rig: SocketRig) -> None:
    task = rig.board.add(NewTask(title="Retrain", origin="slack:C0001"), "slack:UOPS")
    envelope = await rig.fake.send_envelope(
        "interactive", button_click("cancel", task.id, user="UOPS", response_url=rig.fake.response_url("b"))
    )
    assert await rig.fake.ack_for(envelope) == {"envelope_id": envelope}
    await rig.fake.wait_for(lambda: [r for r in rig.fake.responses if r["_key"] == "b"])
    assert rig.board.get(task.id).status == "cancelled"

    # the same button in App Home: no response_url, the Home view is published again
    envelope = await rig.fake.send_envelope(
        "interactive", button_click("retry", task.id, user="UOPS", response_url=None, home=True)
    )
    await rig.fake.ack_for(envelope)
    [publish] = await rig.fake.wait_for(lambda: rig.fake.calls_to("views.publish", user_id="UOPS"))
    assert rig.board.get(task.id).status == "ready"
    assert "Retrain" in str(publish.args["view"])

    envelope = await rig.fake.send_envelope("events_api", home_opened("UADMIN"))
    await rig.fake.ack_for(envelope)
    await rig.fake.wait_for(lambda: rig.fake.calls_to("views.publish", user_id="UADMIN"))
