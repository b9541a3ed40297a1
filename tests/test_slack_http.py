"""Slack in HTTP mode, end to end through the real aiohttp endpoint and slack-bolt.

Slack's side is played by tests/fakes/slack_api.py: it signs requests like Slack,
serves the Web API the app calls back (auth.test, files.*, views.publish) and the
response_url the answers go to.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lanewarden.bot.chat import AdapterContext, build_adapters
from lanewarden.bot.http.server import HttpEndpoint
from lanewarden.bot.slack_app.adapter import SlackAdapter
from lanewarden.core.board import Board, NewTask, TaskFilter, open_board
from lanewarden.core.errors import ConfigError
from lanewarden.core.grammar import REGISTRY
from lanewarden.core.outbox import OutboxDeliverer
from lanewarden.core.schema import events, outbox, subscriptions
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.slack_api import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    button_click,
    direct_message,
    form_body,
    home_opened,
    interactive_body,
    post_signed,
    slash_command,
    view_submission,
)
from tests.helpers import snapshot

ACCESS = {
    "admins": ["slack:UADMIN", "slack-group:SADMINS"],
    "operators": ["slack:UOPS"],
    "viewers": ["slack:UVIEW"],
    "default_role": "none",
}


@dataclass
class HttpRig:
    fake: FakeSlack
    board: Board
    adapter: SlackAdapter
    url: str
    _keys: int = 0

    async def command(self, text: str, *, user: str = "UADMIN", channel: str = "C0001") -> dict[str, Any]:
        """Run ``/kanban text`` as Slack would; return the answer posted to response_url."""
        self._keys += 1
        key = f"cmd{self._keys}"
        fields = slash_command(text, user=user, channel=channel, response_url=self.fake.response_url(key))
        status, body = await post_signed(self.url, form_body(fields))
        assert status == 200, body
        if body:  # answered in the ack itself (a command that does not parse)
            return {"_key": key, "_in_ack": True, **json.loads(body)}
        return await self.answer(key)

    async def answer(self, key: str) -> dict[str, Any]:
        found = await self.fake.wait_for(lambda: [r for r in self.fake.responses if r["_key"] == key])
        return found[0]

    async def click(self, action: str, task_id: int, *, user: str = "UADMIN", **kw: Any) -> dict[str, Any]:
        self._keys += 1
        key = f"btn{self._keys}"
        payload = button_click(action, task_id, user=user, response_url=self.fake.response_url(key), **kw)
        status, body = await post_signed(self.url, interactive_body(payload))
        assert status == 200, body
        return await self.answer(key)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def rig(tmp_path: Path, fake_slack: FakeSlack) -> AsyncIterator[HttpRig]:
    config = make_config(
        f"sqlite:///{tmp_path / 'board.db'}",
        slack={"mode": "http", "api_base": fake_slack.api_base},
        access=ACCESS,
        http={"listen": "127.0.0.1:0"},
        web={"public_url": "https://board.example"},  # where `/kanban web` links point
    )
    board = open_board(config)
    http = HttpEndpoint("127.0.0.1:0", board.db)
    adapter = SlackAdapter.from_env(
        config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    )
    await adapter.start(AdapterContext(config, board, http))
    port = await http.start()
    yield HttpRig(fake_slack, board, adapter, f"http://127.0.0.1:{port}/slack/events")
    await adapter.stop()
    await http.stop()
    board.db.dispose()


def text_of(answer: dict[str, Any]) -> str:
    """Everything a person would read in a message: its text and every block's text."""
    parts = [answer.get("text", "")]
    for block in answer.get("blocks", []):
        if "text" in block and isinstance(block["text"], dict):
            parts.append(block["text"]["text"])
        for element in block.get("elements", []) + block.get("fields", []):
            if isinstance(element.get("text"), str):
                parts.append(element["text"])
            elif isinstance(element.get("text"), dict):
                parts.append(element["text"]["text"])
    return "\n".join(parts)


def command_events(board: Board) -> list[Any]:
    with board.db.read() as conn:
        return conn.execute(
            select(events).where(events.c.kind.in_(("command", "denied"))).order_by(events.c.id)
        ).all()


def without_events(snap: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {table: rows for table, rows in snap.items() if table != "events"}


async def test_add_answers_in_channel_and_records_origin(rig: HttpRig) -> None:
    answer = await rig.command("add Summarize the April logs --priority 5", channel="C0042")
    assert answer["response_type"] == "in_channel"
    assert "Summarize the April logs" in text_of(answer)
    assert "<@UADMIN>" in text_of(answer)  # who did it: response_url messages have no author
    [task] = rig.board.list_tasks(TaskFilter())
    assert (task.title, task.priority, task.created_by, task.origin) == (
        "Summarize the April logs",
        5,
        "slack:UADMIN",
        "slack:C0042",
    )


# (verb, command text, words the answer must contain, answered in channel?)
EVERY_VERB = [
    ("add", "add First task --priority 3", "Created *#1", True),
    ("add", "add --title 'Second task' --column backlog --parent 1", "Created *#2", True),
    ("list", "list --all", "Second task", False),
    ("show", "show 2", "Waits for", False),
    ("logs", "logs 2 --follow", "#2 has not run yet (backlog)", False),
    ("promote", "promote 2", "promoted to ready", False),
    ("promote-batch", "promote-batch --from ready --to active --max 1", "released: #1", True),
    ("move", "move 2 backlog", "moved to backlog", False),
    ("block", "block 2 waiting for data", "#2 blocked", False),
    ("unblock", "unblock 2", "unblocked to backlog", False),
    ("cancel", "cancel 2 not needed", "#2 cancelled", False),
    ("retry", "retry 2", "ready for another try", False),
    ("unlink", "unlink 1 2", "#2 no longer waits for #1", False),
    ("link", "link --parent 1 --child 2", "#2 now waits for #1", False),
    ("comment", "comment 1 the logs are in /srv/logs", "comment added to #1", False),
    ("edit", "edit 1 --priority 4", "#1 edited", False),
    ("purge", "purge --older-than 30d", "would be deleted", False),
    ("caps", "caps", "gateway gpu", False),
    ("caps set", "caps set gateway gpu 1", "gateway gpu cap is now 1", True),
    ("caps reset", "caps reset gateway gpu", "gateway gpu cap follows the config", True),
    ("pause", "pause --profile researcher", "profile researcher paused", True),
    ("resume", "resume --profile researcher", "profile researcher resumed", True),
    ("status", "status", "Queue:", True),
    ("tune", "tune", "no load in the last hour", False),
    ("whoami", "whoami", "you are slack:UADMIN: admin ([access] admins lists slack:UADMIN)", False),
    (
        "windows add",
        'windows add night --cron "0 22 * * *" --timezone UTC '
        '--command "promote-batch --from ready --to active --max 2"',
        "window night",
        True,
    ),
    ("windows list", "windows list", "night", False),
    ("windows remove", "windows remove night", "window night removed", True),
    ("subscribe", "subscribe alerts", "this channel now gets alerts", True),
    ("unsubscribe", "unsubscribe alerts", "this channel no longer gets alerts", True),
    ("digest", "digest --hours 2", "digest, last 2h", False),
    ("notify me", "notify me on", "direct message when a task you created finishes", False),
    ("help", "help add", "usage: add", False),
    ("web", "web", "<https://board.example/signin/", False),  # a sign-in link: only for the caller
]


async def test_every_verb_as_a_signed_slash_command(rig: HttpRig) -> None:
    assert {verb for verb, *_ in EVERY_VERB} == set(REGISTRY), "a verb has no Slack test"
    for verb, text, expected, in_channel in EVERY_VERB:
        answer = await rig.command(text)
        shown = text_of(answer)
        assert ":warning:" not in shown, f"{text!r} failed: {shown}"
        assert expected in shown, f"{text!r} answered {shown!r}"
        visibility = answer["response_type"]
        assert visibility == ("in_channel" if in_channel else "ephemeral"), f"{verb}: {visibility}"

    # the board really changed, and every command was audited with its Slack user and channel
    first, second = rig.board.get(1), rig.board.get(2)
    assert first.released and first.status == "ready"
    assert second.status == "ready" and second.attempts == 0
    assert rig.board.show(2).parents[0].id == 1
    audited = command_events(rig.board)
    assert len(audited) == len(EVERY_VERB)
    assert {(e.kind, e.actor, e.data["channel"]) for e in audited} == {
        ("command", "slack:UADMIN", "slack:C0001")
    }
    assert [e.data["verb"] for e in audited] == [verb for verb, *_ in EVERY_VERB]
    assert audited[0].message == "/kanban add First task --priority 3"


async def test_a_typo_is_answered_in_the_ack_and_changes_nothing(rig: HttpRig) -> None:
    before = snapshot(rig.board)
    answer = await rig.command("ad Summarize the logs")
    assert answer["_in_ack"]
    assert "Did you mean `add`?" in text_of(answer)
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert snapshot(rig.board) == before


async def test_errors_and_json_are_ephemeral(rig: HttpRig) -> None:
    answer = await rig.command("show 99")
    assert answer["response_type"] == "ephemeral"
    assert "no task #99" in text_of(answer)

    await rig.command("add Something")
    answer = await rig.command("list --json")
    assert answer["response_type"] == "ephemeral"
    [section] = answer["blocks"]
    body = section["text"]["text"]
    assert body.startswith("```") and json.loads(body.strip("`"))[0]["title"] == "Something"


async def test_user_text_cannot_ping_the_channel(rig: HttpRig) -> None:
    answer = await rig.command("add <!channel> look at <https://evil.example|this>")
    shown = text_of(answer)
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown
    [task] = rig.board.list_tasks(TaskFilter())
    assert task.title == "<!channel> look at https://evil.example"


async def test_bad_signature_and_replayed_request_get_401_and_change_nothing(rig: HttpRig) -> None:
    await rig.command("add Baseline")  # the app is up and answering
    before = snapshot(rig.board)
    calls_before = len(rig.fake.calls)
    fields = slash_command("add Forged", response_url=rig.fake.response_url("forged"))
    status, _ = await post_signed(rig.url, form_body(fields), secret="not-the-signing-secret")
    assert status == 401
    six_minutes_ago = int(time.time()) - 360
    status, _ = await post_signed(rig.url, form_body(fields), timestamp=six_minutes_ago)
    assert status == 401
    status, _ = await post_signed(rig.url, form_body(fields), signature="v0=" + "0" * 64)
    assert status == 401
    assert snapshot(rig.board) == before
    assert len(rig.fake.calls) == calls_before
    assert not [r for r in rig.fake.responses if r["_key"] == "forged"]


async def test_buttons_cancel_and_retry_a_task(rig: HttpRig) -> None:
    task = rig.board.add(NewTask(title="Nightly ETL", origin="slack:C0001"), "slack:UOPS")

    answer = await rig.click("cancel", task.id, user="UOPS")
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert f"#{task.id} cancelled" in text_of(answer)
    assert rig.board.get(task.id).status == "cancelled"

    answer = await rig.click("retry", task.id, user="UOPS")
    assert "ready for another try" in text_of(answer)
    assert rig.board.get(task.id).status == "ready"

    answer = await rig.click("promote", task.id, user="UOPS")
    assert rig.board.get(task.id).released

    answer = await rig.click("retry", task.id, user="UOPS")  # not failed: refused, said clearly
    assert "only failed or cancelled tasks can be retried" in text_of(answer)

    audited = [(e.kind, e.actor, e.message) for e in command_events(rig.board)]
    assert audited[:2] == [
        ("command", "slack:UOPS", f"button cancel {task.id}"),
        ("command", "slack:UOPS", f"button retry {task.id}"),
    ]


async def test_a_viewer_cannot_click_cancel(rig: HttpRig) -> None:
    task = rig.board.add(NewTask(title="Keep me", origin="slack:C0001"), "slack:UOPS")
    before = snapshot(rig.board)
    answer = await rig.click("cancel", task.id, user="UVIEW")
    assert "needs the operator role" in text_of(answer)
    assert rig.board.get(task.id).status == "ready"
    assert without_events(snapshot(rig.board)) == without_events(before)


async def test_a_viewer_cannot_change_caps_and_an_admin_can(rig: HttpRig) -> None:
    rig.fake.usergroups = [{"id": "SADMINS", "handle": "gpu-admins", "users": ["UGROUPIE"]}]
    before = snapshot(rig.board)
    answer = await rig.command("caps set board 1", user="UVIEW", channel="C0009")
    assert answer["response_type"] == "ephemeral"
    assert "`caps set` needs the admin role; you are viewer" in text_of(answer)
    assert without_events(snapshot(rig.board)) == without_events(before)
    [denied] = command_events(rig.board)
    assert (denied.kind, denied.actor, denied.data["channel"]) == ("denied", "slack:UVIEW", "slack:C0009")
    assert denied.data["text"] == "/kanban caps set board 1"

    # an operator is not enough either
    answer = await rig.command("caps set board 1", user="UOPS")
    assert "needs the admin role; you are operator" in text_of(answer)

    # an admin by user id, and one by membership of an admin user group
    answer = await rig.command("caps set board 1", user="UADMIN")
    assert "board cap is now 1" in text_of(answer)
    answer = await rig.command("caps set board 2", user="UGROUPIE")
    assert "board cap is now 2" in text_of(answer)
    limits, _ = rig.board.limits()
    assert limits.board_cap == 2


async def test_unknown_users_get_no_role_by_default_here(rig: HttpRig) -> None:
    answer = await rig.command("list", user="USTRANGER")
    assert "`list` needs the viewer role; you are none" in text_of(answer)


async def test_status_chart_is_uploaded_to_the_channel(rig: HttpRig) -> None:
    answer = await rig.command("status --chart", channel="C0007")
    assert answer["response_type"] == "in_channel"
    complete = await rig.fake.wait_for(lambda: rig.fake.calls_to("files.completeUploadExternal"))
    assert complete[0].args["channel_id"] == "C0007"
    [file_id] = rig.fake.uploads
    assert rig.fake.uploads[file_id].startswith(b"\x89PNG\r\n\x1a\n")

    rig.fake.closed_channels.add("C0008")  # the app was never invited there
    await rig.command("status --chart", channel="C0008")
    refused = await rig.fake.wait_for(
        lambda: [r for r in rig.fake.responses if "could not post the chart" in r.get("text", "")]
    )
    assert "not_in_channel" in refused[0]["text"] and refused[0]["response_type"] == "ephemeral"


async def test_app_home_shows_the_callers_tasks_and_the_queue(rig: HttpRig) -> None:
    rig.board.add(NewTask(title="Mine to do"), "slack:UOPS")
    rig.board.add(NewTask(title="Someone else's"), "slack:UADMIN")
    status, _ = await post_signed(rig.url, json.dumps(home_opened("UOPS")), content_type="application/json")
    assert status == 200
    [publish] = await rig.fake.wait_for(lambda: rig.fake.calls_to("views.publish"))
    assert publish.args["user_id"] == "UOPS"
    home = text_of(publish.args["view"])
    assert "Mine to do" in home and "Someone else" not in home
    assert "*ready* 2" in home  # the queue shape counts everyone's tasks

    await post_signed(rig.url, json.dumps(home_opened("USTRANGER")), content_type="application/json")
    [stranger] = await rig.fake.wait_for(lambda: rig.fake.calls_to("views.publish", user_id="USTRANGER"))
    assert "no Lanewarden role" in text_of(stranger.args["view"]) and "Mine to do" not in str(stranger.args)
    # the executor refused it, as it refuses a command: the one place that checks roles audits it
    with rig.board.db.read() as conn:
        denied = conn.execute(select(events.c.actor, events.c.data).where(events.c.kind == "denied")).all()
    assert [(d.actor, d.data["verb"]) for d in denied] == [("slack:USTRANGER", "list")]


async def test_start_refuses_missing_tokens_and_a_refused_token(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    url = f"sqlite:///{tmp_path / 'board.db'}"
    socket = make_config(url, slack={"api_base": fake_slack.api_base})
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        SlackAdapter.from_env(socket, {"SLACK_BOT_TOKEN": BOT_TOKEN})
    http_mode = make_config(url, slack={"mode": "http", "api_base": fake_slack.api_base})
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        SlackAdapter.from_env(http_mode, {"SLACK_BOT_TOKEN": BOT_TOKEN})

    board = open_board(http_mode)
    try:
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
        with pytest.raises(ConfigError, match=r"\[http\] listen"):
            await SlackAdapter.from_env(http_mode, env).start(AdapterContext(http_mode, board, None))
        env["SLACK_BOT_TOKEN"] = "xoxb-revoked"
        with pytest.raises(ConfigError, match="invalid_auth"):
            await SlackAdapter.from_env(http_mode, env).start(
                AdapterContext(http_mode, board, HttpEndpoint("127.0.0.1:0", board.db))
            )
    finally:
        board.db.dispose()


async def test_the_whole_story_command_card_button_card(rig: HttpRig) -> None:
    """/kanban add in a channel -> its card appears there -> Cancel on the card -> the card
    shows cancelled and its thread says so."""
    await rig.command("add Rebuild the index", user="UOPS", channel="C0042")
    leader = OutboxDeliverer(rig.board, {"slack": rig.adapter.sink}, "leader", per_channel_interval=0)

    async def drain() -> None:
        for _round in range(500):
            if not [r for r in outbox_rows(rig.board) if r.state in ("pending", "sending")]:
                return
            await leader.deliver_due()
            await asyncio.sleep(0.01)
        raise AssertionError("the outbox did not drain")

    await drain()
    [card] = rig.fake.posts("C0042")
    assert "Rebuild the index" in json.dumps(card["blocks"])
    cancel = next(
        e
        for b in card["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"].endswith("cancel")
    )
    await rig.click("cancel", int(cancel["value"]), user="UOPS", message_ts=card["ts"], channel="C0042")
    await drain()
    [edited] = [m for m in rig.fake.posts("C0042") if "thread_ts" not in m]
    assert edited["ts"] == card["ts"] and ":heavy_multiplication_x: *cancelled*" in json.dumps(
        edited["blocks"]
    )
    [reply] = [m for m in rig.fake.posts("C0042") if m.get("thread_ts") == card["ts"]]
    assert reply["text"] == "#1 cancelled (by slack:UOPS)"


def test_serve_builds_this_adapter_from_the_environment(tmp_path: Path) -> None:
    config = make_config(f"sqlite:///{tmp_path / 'board.db'}")
    [adapter] = build_adapters(config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-1"})
    assert isinstance(adapter, SlackAdapter) and adapter.name == "slack" and adapter.sink.adapter == "slack"


def outbox_rows(board: Board) -> list[Any]:
    with board.db.read() as conn:
        return conn.execute(select(outbox)).all()


async def test_unsigned_or_malformed_requests_are_refused_before_parsing_with_one_log_line(
    rig: HttpRig, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: unsigned invalid JSON, non-UTF-8 bodies and a non-numeric timestamp got 500
    with a traceback each. Now: 401 (unsigned) or 400 (signed but unreadable), at most one
    rate-limited line, no traceback, nothing run."""
    await rig.command("add Baseline")
    before = snapshot(rig.board)
    caplog.clear()
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(rig.url, data=body, headers=headers) as resp:
                return resp.status

        json_type = {"Content-Type": "application/json"}
        assert await post(b"{not json", json_type) == 401
        assert (
            await post(b"\xff\xfe\x00garbage", {"Content-Type": "application/x-www-form-urlencoded"}) == 401
        )
        assert (
            await post(b"{}", {**json_type, "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=1"})
            == 401
        )
        for _ in range(20):
            assert (
                await post(b"{}", {**json_type, "X-Slack-Request-Timestamp": "12", "X-Slack-Signature": "x"})
                == 401
            )
    # signed by Slack's secret, but not readable: 400, still no traceback
    status, _ = await post_signed(rig.url, "{not json", content_type="application/json")
    assert status in (400, 401)
    bad_utf8 = await _post_signed_bytes(rig.url, b"payload=\xff\xfe")
    assert bad_utf8 == 400
    assert snapshot(rig.board) == before
    records = [r for r in caplog.records if r.name.startswith("lanewarden.slack")]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert len([r for r in records if "refused" in r.getMessage()]) <= 1


async def _post_signed_bytes(url: str, body: bytes) -> int:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
    }
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        return resp.status


async def test_subscribe_channel_is_checked_and_routing_elsewhere_needs_an_admin(rig: HttpRig) -> None:
    """Issue 12: ``slack:C1; DROP`` was stored, and an operator routed cards to any channel."""
    before = snapshot(rig.board)
    odd = await rig.command("subscribe tasks --channel 'slack:C1; DROP'", user="UADMIN")
    assert "is not a Slack channel id" in text_of(odd)
    elsewhere = await rig.command("subscribe tasks --channel <#C0999PRIV|private>", user="UOPS")
    assert "needs the admin role" in text_of(elsewhere)
    assert without_events(snapshot(rig.board)) == without_events(before)
    with rig.board.db.read() as conn:
        denied = conn.execute(select(events.c.actor, events.c.message).where(events.c.kind == "denied")).all()
    assert [d.actor for d in denied] == ["slack:UOPS"]
    here = await rig.command("subscribe tasks", user="UOPS", channel="C0042")  # its own channel: fine
    assert "now gets tasks" in text_of(here)
    routed = await rig.command("subscribe alerts --channel <#C0999PRIV|private>", user="UADMIN")
    assert "now gets alerts" in text_of(routed)
    with rig.board.db.read() as conn:
        stored = conn.execute(select(subscriptions.c.channel, subscriptions.c.topic)).all()
    assert sorted(stored) == [("C0042", "tasks"), ("C0999PRIV", "alerts")]


async def test_whoami_tells_a_newcomer_the_id_an_admin_has_to_add(rig: HttpRig) -> None:
    answer = await rig.command("whoami", user="UNEWBIE")
    shown = text_of(answer)
    assert "you are slack:UNEWBIE: none" in shown and "default_role is 'none'" in shown
    assert "an admin adds &quot;slack:UNEWBIE&quot;" in shown or 'an admin adds "slack:UNEWBIE"' in shown
    assert answer["response_type"] == "ephemeral"
    operator = text_of(await rig.command("whoami", user="UOPS"))
    assert "you are slack:UOPS: operator ([access] operators lists slack:UOPS)" in operator


async def test_a_direct_message_is_a_command_and_the_messages_tab_says_welcome(rig: HttpRig) -> None:
    """Issue 17: the Messages tab was enabled but nothing listened to message.im."""

    async def event(payload: dict[str, Any]) -> None:
        status, _ = await post_signed(rig.url, json.dumps(payload), content_type="application/json")
        assert status == 200

    await event(home_opened("UOPS", tab="messages", channel="D0OPS"))
    [welcome] = await rig.fake.wait_for(lambda: rig.fake.posts("D0OPS"))
    assert "whoami" in json.dumps(welcome["blocks"])
    await event(home_opened("UOPS", tab="messages", channel="D0OPS"))  # not twice
    await event(direct_message("add Summarize the logs --priority 2", user="UOPS", channel="D0OPS"))
    await rig.fake.wait_for(lambda: len(rig.fake.posts("D0OPS")) >= 2)
    [task] = rig.board.list_tasks(TaskFilter())
    assert (task.title, task.priority, task.created_by) == ("Summarize the logs", 2, "slack:UOPS")
    await event(direct_message("/kanban whoami", user="UVIEW", channel="D0VIEW"))
    [me] = await rig.fake.wait_for(lambda: rig.fake.posts("D0VIEW"))
    assert "you are slack:UVIEW: viewer" in json.dumps(me["blocks"])
    await event(direct_message("cancel 1", user="UVIEW", channel="D0VIEW"))  # roles hold in DMs
    await rig.fake.wait_for(lambda: len(rig.fake.posts("D0VIEW")) >= 2)
    assert "needs the operator role" in json.dumps(rig.fake.posts("D0VIEW")[-1]["blocks"])
    assert rig.board.get(1).status == "ready"
    echo = direct_message("add Loop", user="UBOT", channel="D0OPS")
    echo["event"]["bot_id"] = "B0001"  # the bot's own answer, as Slack echoes it
    await event(echo)
    await asyncio.sleep(0.3)
    assert len(rig.fake.posts("D0OPS")) == 2 and not rig.fake.refusals
    assert len(rig.board.list_tasks(TaskFilter())) == 1


async def test_kanban_add_alone_opens_a_form_and_its_answers_run_as_add(rig: HttpRig) -> None:
    """Issue 17: a Slack "add task" modal. Its fields become the add command line, parsed
    by the grammar and run with the submitter's role."""
    fields = slash_command("add", user="UOPS", channel="C0042", response_url=rig.fake.response_url("form"))
    status, _ = await post_signed(rig.url, form_body(fields))
    assert status == 200
    [view] = await rig.fake.wait_for(lambda: rig.fake.views)
    assert view["callback_id"] == "lanewarden.add" and not rig.board.list_tasks(TaskFilter())

    # a title the grammar refuses: the error is shown on the form and nothing is created
    status, body = await post_signed(
        rig.url, interactive_body(view_submission(view, {"title": "   "}, user="UOPS"))
    )
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    assert "title" in json.loads(body)["errors"]

    values = {"title": "Summarize <the> logs", "body": "all of April", "priority": "4", "column": "backlog"}
    values["profile"] = "researcher"
    status, body = await post_signed(rig.url, interactive_body(view_submission(view, values, user="UOPS")))
    assert status == 200 and not body
    [confirmation] = await rig.fake.wait_for(lambda: rig.fake.ephemerals)
    assert (confirmation["channel"], confirmation["user"]) == ("C0042", "UOPS")
    [task] = rig.board.list_tasks(TaskFilter(include_closed=True))
    assert (task.title, task.body, task.priority, task.status, task.profile) == (
        "Summarize <the> logs",
        "all of April",
        4,
        "backlog",
        "researcher",
    )
    assert (task.created_by, task.origin) == ("slack:UOPS", "slack:C0042")

    # a viewer's form is refused by the executor like the command would be
    status, _ = await post_signed(
        rig.url, interactive_body(view_submission(view, {"title": "Nope"}, user="UVIEW"))
    )
    await rig.fake.wait_for(lambda: len(rig.fake.ephemerals) == 2)
    assert "needs the operator role" in json.dumps(rig.fake.ephemerals[-1]["blocks"])
    assert len(rig.board.list_tasks(TaskFilter(include_closed=True))) == 1 and not rig.fake.refusals
