"""The platforms' limits: the fakes refuse what Discord and Slack refuse, and our answers fit.

Discord's numbers are checked against its OpenAPI spec (tests/fixtures, a verbatim subset)
and its documentation; Slack's against slack_sdk's own Block Kit validators. The fakes'
refusals are read back through the real clients: discord.py's HTTPException (code 50035,
the flattened ``errors``) and slack-sdk's SlackApiError (``invalid_blocks``).
"""

from __future__ import annotations

import html
import json
import random
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import discord
import pytest
from discord.http import Route
from lanewarden.bot.discord_app.replies import reply_for
from lanewarden.bot.slack_app.blocks import long_text
from lanewarden.bot.slack_app.sink import SlackSink
from lanewarden.core.access import Actor
from lanewarden.core.board import NewTask
from lanewarden.core.clock import utcnow
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.outbox import OutboxDeliverer
from lanewarden.core.schema import outbox, runs, tasks
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    SectionBlock,
)
from slack_sdk.models.blocks.block_elements import InteractiveElement
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import insert, select, update

from tests.fakes import discord_limits, slack_limits
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import CHANNEL, RunningBot
from tests.fakes.slack_api import BOT_TOKEN, Failure, FakeSlack

VIEWER = Actor(id="cli:viewer", role="viewer")

# ------------------------------------------------------------------ the fakes refuse


def test_the_fakes_limits_are_the_documented_ones() -> None:
    d = discord_limits
    assert (d.CONTENT, d.EMBED_TITLE, d.EMBED_DESCRIPTION, d.EMBED_FIELDS) == (2000, 256, 4096, 25)
    assert (d.FIELD_NAME, d.FIELD_VALUE, d.FOOTER_TEXT, d.EMBEDS_TOTAL) == (256, 1024, 2048, 6000)
    assert (d.ACTION_ROWS, d.ROW_ITEMS, d.CUSTOM_ID["maxLength"], d.BUTTON_LABEL) == (5, 5, 100, 80)
    # Slack: the same numbers as slack_sdk's validators
    s = slack_limits
    assert SectionBlock.text_max_length == s.SECTION_TEXT == 3000
    assert SectionBlock.fields_max_length == s.SECTION_FIELDS
    assert HeaderBlock.text_max_length == s.HEADER_TEXT
    assert ContextBlock.elements_max_length == s.CONTEXT_ELEMENTS
    assert ActionsBlock.elements_max_length == s.ACTIONS_ELEMENTS
    assert ButtonElement.text_max_length == s.BUTTON_TEXT == 75
    assert ButtonElement.value_max_length == s.BUTTON_VALUE == 2000
    assert ButtonElement.url_max_length == s.BUTTON_URL
    assert InteractiveElement.action_id_max_length == Block.block_id_max_length == s.ID_LENGTH == 255
    assert ConfirmObject.title_max_length == s.CONFIRM_TITLE
    assert ConfirmObject.text_max_length == s.CONFIRM_TEXT
    assert ConfirmObject.confirm_max_length == ConfirmObject.deny_max_length == s.CONFIRM_BUTTON


def _embed(**fields: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", **fields}


def _row(n: int, custom_id: str = "b", label: str = "L") -> dict[str, Any]:
    buttons = [{"type": 2, "style": 1, "custom_id": f"{custom_id}{i}", "label": label} for i in range(n)]
    return {"type": 1, "components": buttons}


DISCORD_REFUSALS = [
    ("content", {"content": "x" * 2001}, "In content: Must be 2000 or fewer in length."),
    ("title", {"embeds": [_embed(title="x" * 257)]}, "In embeds.0.title: Must be 256 or fewer"),
    ("description", {"embeds": [_embed(description="x" * 4097)]}, "In embeds.0.description: Must be 4096"),
    (
        "26 fields",
        {"embeds": [_embed(fields=[{"name": "n", "value": "v"}] * 26)]},
        "In embeds.0.fields: Must be 25 or fewer",
    ),
    (
        "field name",
        {"embeds": [_embed(fields=[{"name": "n" * 257, "value": "v"}])]},
        "In embeds.0.fields.0.name: Must be between 1 and 256",
    ),
    (
        "field value",
        {"embeds": [_embed(fields=[{"name": "n", "value": "v" * 1025}])]},
        "In embeds.0.fields.0.value: Must be between 1 and 1024",
    ),
    (
        "6,000 in all",
        {"embeds": [_embed(description="x" * 3500), _embed(description="y" * 3500)]},
        "In embeds: Embed size exceeds maximum size of 6000",
    ),
    ("6 rows", {"content": "c", "components": [_row(1)] * 6}, "In components: Must be 5 or fewer"),
    ("6 buttons", {"content": "c", "components": [_row(6)]}, "In components.0.components: Must be between 1"),
    (
        "custom_id",
        {"content": "c", "components": [_row(1, custom_id="c" * 101)]},
        "In components.0.components.0.custom_id: Must be between 1 and 100",
    ),
    (
        "label",
        {"content": "c", "components": [_row(1, label="l" * 81)]},
        "In components.0.components.0.label: Must be 80 or fewer",
    ),
]


@pytest.fixture
def board_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'board.db'}"


async def _send(bot: RunningBot, payload: dict[str, Any]) -> Any:
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=CHANNEL)
    return await bot.adapter.client.http.request(route, json=payload)


@pytest.mark.parametrize(
    ("what", "payload", "reason"), DISCORD_REFUSALS, ids=[c[0] for c in DISCORD_REFUSALS]
)
async def test_fake_discord_refuses_what_discord_refuses_as_discord_does(
    discord_bot: RunningBot, discord_fake: FakeDiscord, what: str, payload: dict[str, Any], reason: str
) -> None:
    with pytest.raises(discord.HTTPException) as refused:
        await _send(discord_bot, payload)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert reason in refused.value.text  # discord.py flattened Discord's "errors" object
    assert discord_fake.channel_messages(CHANNEL) == []
    [(_call, body)] = discord_fake.refusals
    assert body["message"] == "Invalid Form Body" and body["errors"]


async def test_fake_discord_accepts_everything_at_the_limits(
    discord_bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    at_limits = {
        "content": "x" * 2000,
        "embeds": [
            _embed(
                title="t" * 256, description="d" * 4096, fields=[{"name": "n" * 10, "value": "v" * 50}] * 25
            )
        ],
        "components": [_row(5, custom_id="c" * 98 + str(r), label="l" * 80) for r in range(5)],
    }
    assert len(discord.Embed.from_dict(at_limits["embeds"][0])) == 256 + 4096 + 25 * 60 <= 6000
    await _send(discord_bot, at_limits)
    assert len(discord_fake.channel_messages(CHANNEL)) == 1 and not discord_fake.refusals


SLACK_REFUSALS = [
    ("51 blocks", [{"type": "divider"}] * 51, "/blocks]"),
    ("section", [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "/blocks/0/text/text"),
    ("block_id", [{"type": "divider", "block_id": "b" * 256}], "/blocks/0/block_id"),
    ("button text", "text", "/blocks/0/elements/0/text/text"),
    ("action_id", "action_id", "/blocks/0/elements/0/action_id"),
    ("value", "value", "/blocks/0/elements/0/value"),
]


def _button(**over: str) -> list[dict[str, Any]]:
    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "ok"}, "value": "1"}
    if "text" in over:
        button["text"] = {"type": "plain_text", "text": over["text"]}
    button.update({k: v for k, v in over.items() if k != "text"})
    return [{"type": "actions", "elements": [button]}]


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, AsyncWebClient]]:
    fake = await FakeSlack().start()
    yield fake, AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_base, retry_handlers=[])
    await fake.stop()


@pytest.mark.parametrize(("what", "blocks", "pointer"), SLACK_REFUSALS, ids=[c[0] for c in SLACK_REFUSALS])
async def test_fake_slack_refuses_invalid_blocks_as_slack_does(
    slack: tuple[FakeSlack, AsyncWebClient], what: str, blocks: Any, pointer: str
) -> None:
    fake, client = slack
    if isinstance(blocks, str):  # a button field over its limit
        blocks = _button(**{blocks: {"text": "t" * 76, "action_id": "a" * 256, "value": "v" * 2001}[blocks]})
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="C1", text="t", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"
    assert any(pointer in e for e in refused.value.response["errors"])
    assert fake.posts() == []


async def test_fake_slack_refuses_a_message_too_long_and_accepts_the_limits(
    slack: tuple[FakeSlack, AsyncWebClient],
) -> None:
    fake, client = slack
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="C1", text="x" * 40_001)
    assert refused.value.response["error"] == "msg_too_long"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}}] * 49
    blocks += _button(text="t" * 75, action_id="a" * 255, value="v" * 2000)
    await client.chat_postMessage(channel="C1", text="x" * 40_000, blocks=blocks)
    assert len(fake.posts("C1")) == 1


# ------------------------------------------------------------------ our answers fit


async def test_discord_list_leaves_room_for_its_more_note(discord_bot: RunningBot) -> None:
    """Each round adds a task at the top of the list, shifting where the 4,096 fill ends;
    the note "… and N more" once pushed the description over (Discord: 400)."""
    rng = random.Random(13)
    for i in range(90):
        title = "w" * rng.randint(10, 80)
        discord_bot.board.add(NewTask(title=title, priority=i), "cli:t")
        if i < 50:
            continue
        log = await discord_bot.slash("list", limit=100)
        [embed] = log.answer["embeds"]
        assert len(embed["description"]) <= 4096
        assert "more (narrow with" in embed["description"]
    assert not discord_bot.fake.refusals


def test_discord_list_fits_whatever_the_titles(board: Any) -> None:
    rng = random.Random(8)
    for _ in range(120):
        board.add(NewTask(title="t" * rng.randint(5, 90), priority=rng.randint(0, 9)), "cli:t")
    result = Executor(board).execute(parse("list --limit 120"), VIEWER)
    for start in range(60):
        reply = reply_for(replace(result, tasks=result.tasks[start:]))
        body = {"embeds": [e.to_dict() for e in reply.embeds]}
        assert discord_limits.message_refusal(body) is None, (start, len(body["embeds"][0]["description"]))


async def test_discord_show_keeps_the_whole_embed_within_6000(discord_bot: RunningBot) -> None:
    """Every field at its own cap (title, body, last error, parents, children, reasons,
    history) once added up to more than 6,000: Discord refused the answer."""
    board = discord_bot.board
    parents = [board.add(NewTask(title=f"parent {i}"), "cli:t").id for i in range(120)]
    task = board.add(NewTask(title="T" * 200, body="B" * 3000, parents=parents), "cli:t")
    for i in range(80):
        board.add(NewTask(title=f"child {i}", parents=[task.id]), "cli:t")
    for i in range(12):
        board.comment(task.id, "c" * 300 + str(i), "cli:t")
    with board.db.write() as conn:  # earlier attempts that failed, as the dispatcher records them
        conn.execute(update(tasks).where(tasks.c.id == task.id).values(error="E" * 2000))
        now = utcnow()
        for attempt in range(1, 6):
            conn.execute(
                insert(runs).values(
                    task_id=task.id,
                    attempt=attempt,
                    dispatcher="dispatcher-1",
                    profile="default",
                    gateway="gpu",
                    claimed_at=now,
                    lease_expires_at=now,
                    finished_at=now,
                    outcome="failed",
                    latency_ms=12_345.0,
                    error="E" * 500,
                )
            )
    log = await discord_bot.slash("show", id=str(task.id))
    [embed] = log.answer["embeds"]
    assert len(discord.Embed.from_dict(embed)) <= 6000, len(discord.Embed.from_dict(embed))
    assert {f["name"] for f in embed["fields"]} >= {"Last error", "Waits for", "Needed by"}
    assert log.answer["attachments"], "what the embed had no room for is attached"
    assert not discord_bot.fake.refusals


def test_slack_code_blocks_escape_first_then_split_and_lose_nothing() -> None:
    data = [{"q": "<a & b>" * 40, "n": i, "tags": ["<&>"] * 30} for i in range(60)]
    text = json.dumps(data, indent=2)
    blocks = long_text(text, code=True)
    shown = [b["text"]["text"] for b in blocks]
    assert all(len(s) <= 3000 for s in shown)
    assert all(s.startswith("```") and s.endswith("```") and len(s) > 6 for s in shown)
    for s in shown:  # no entity cut in half
        assert not re.search(r"&(?!amp;|lt;|gt;)", s), s[:80]
    joined = "\n".join(s[3:-3] for s in shown)
    assert json.loads(html.unescape(joined)) == data


async def test_a_retried_post_to_a_channel_the_app_has_not_joined_is_posted(
    slack: tuple[FakeSlack, AsyncWebClient], board: Any
) -> None:
    """chat:write.public posts there; conversations.history answers not_in_channel."""
    fake, client = slack
    fake.unjoined_channels.add("CPUBLIC")
    fake.fail("chat.postMessage", Failure(500, error="internal_error"))
    Executor(board).execute(parse("subscribe tasks --channel slack:CPUBLIC"), Actor(id="cli:a", role="admin"))
    board.add(NewTask(title="Notify me"), "cli:t")
    deliverer = OutboxDeliverer(board, {"slack": SlackSink(client)}, "leader", per_channel_interval=0.0)
    for _ in range(10):
        await deliverer.deliver_due()
        with board.db.read() as conn:
            states = conn.execute(select(outbox.c.state)).scalars().all()
        if states and all(s == "delivered" for s in states):
            break
        with board.db.write() as conn:  # skip the backoff
            conn.execute(outbox.update().values(next_attempt_at=utcnow()))
    assert states == ["delivered"]
    assert len(fake.posts("CPUBLIC")) == 1
    assert fake.calls_to("conversations.history") == []  # it answered not_in_channel
    assert [c.answer.get("error") for c in fake.calls if c.method == "conversations.history"] == [
        "not_in_channel"
    ]
