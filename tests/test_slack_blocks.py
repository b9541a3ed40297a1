"""Block Kit rendering and Slack text handling, plus the app manifest's promises."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lanewarden.bot.slack_app.blocks import SECTION_LIMIT, long_text, notice_message, task_buttons, task_card
from lanewarden.bot.slack_app.mrkdwn import code_block, command_text, escape, mention
from lanewarden.core.tasks import Task

ROOT = Path(__file__).parent.parent
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TASK = Task(
    id=42,
    title="Summarize <the> logs & more",
    body="",
    profile="researcher",
    priority=0,
    status="ready",
    released=False,
    attempts=0,
    max_attempts=3,
    not_before=None,
    created_by="slack:U0ALICE",
    origin="slack:C0001",
    result=None,
    error=None,
    current_run_id=None,
    created_at=NOW,
    updated_at=NOW,
    started_at=None,
    finished_at=None,
)


def test_command_text_turns_slack_markup_into_grammar_words() -> None:
    raw = (
        "subscribe alerts --channel <#C0123ABC|ops> &amp; notes &lt;x&gt; "
        "<https://a.example/x|a link> <@U0BOB|bob>"
    )
    assert command_text(raw) == (
        "subscribe alerts --channel slack:C0123ABC & notes <x> https://a.example/x slack:U0BOB"
    )


def test_user_text_is_inert() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert code_block("a ``` b <!here>") == "```a `\u200b`` b &lt;!here&gt;```"
    assert mention("slack:U0ALICE") == "<@U0ALICE>"
    assert mention("cli:<!channel>") == "cli:&lt;!channel&gt;"


def test_long_output_is_split_within_slack_limits() -> None:
    blocks = long_text("\n".join(f"line {n} " + "x" * 80 for n in range(400)), code=True)
    assert 1 < len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    assert "line 0 " in blocks[0]["text"]["text"] and "line 399 " in blocks[-1]["text"]["text"]

    huge = long_text("y" * (SECTION_LIMIT * 60))  # one enormous line
    assert len(huge) <= 50 and "cut here" in json.dumps(huge[-1])


@pytest.mark.parametrize(
    ("status", "released", "buttons"),
    [
        ("backlog", False, ["promote", "cancel"]),
        ("ready", False, ["promote", "cancel"]),
        ("ready", True, ["cancel"]),
        ("active", False, ["cancel"]),
        ("blocked", False, ["cancel"]),
        ("failed", False, ["retry", "cancel"]),
        ("cancelled", False, ["retry"]),
        ("done", False, []),
    ],
)
def test_cards_offer_the_buttons_that_make_sense(status: str, released: bool, buttons: list[str]) -> None:
    task = replace(TASK, status=status, released=released)
    found = [b["action_id"].removeprefix("lanewarden.") for b in task_buttons(task)]
    assert found == buttons
    for button in task_buttons(task):
        assert button["value"] == "42"
        assert ("confirm" in button) == (button["action_id"] == "lanewarden.cancel")


def test_a_card_escapes_the_title_and_mentions_its_author() -> None:
    text, blocks = task_card(replace(TASK, status="failed", error="HTTP 500 from <gateway>"))
    assert text.startswith("#42 Summarize <the> logs")  # plain: escaped on the way out
    shown = json.dumps(blocks)
    assert "Summarize &lt;the&gt; logs &amp; more" in shown
    assert "<@U0ALICE>" in shown and "HTTP 500 from &lt;gateway&gt;" in shown


def test_alert_resolutions_are_marked() -> None:
    text, _ = notice_message("alert", {"text": "gateway gpu down", "key": "gw:gpu", "state": "fired"})
    assert text == "Alert: :rotating_light: gateway gpu down"
    text, _ = notice_message("alert", {"text": "gateway gpu down", "state": "resolved"})
    assert text.startswith("Resolved: :white_check_mark:")


def test_the_manifest_asks_for_what_the_adapter_uses() -> None:
    yaml = pytest.importorskip("yaml")  # comes with the dev dependencies (gguf)
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/kanban" and command["should_escape"] is True and command["usage_hint"]
    assert "url" not in command  # Socket Mode by default: no public URL
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened", "message.im"]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "commands",
        "chat:write",  # chat.postMessage, chat.update
        "chat:write.public",
        "files:write",  # files.getUploadURLExternal, files.completeUploadExternal
        "channels:history",  # conversations.history / replies: the idempotency check
        "groups:history",
        "im:history",
        "mpim:history",
        "im:write",  # conversations.open: the DM to a task's creator (notify me on)
        "usergroups:read",  # usergroups.list
    }


def test_a_title_cannot_open_a_code_block_over_the_rest_of_the_card() -> None:
    """Issue 12: a title with triple backticks turned everything after it into code."""
    _, blocks = task_card(replace(TASK, title="```rm -rf <!here>", status="failed", error="``` oops"))
    shown = json.dumps(blocks, ensure_ascii=False)
    assert "```" not in shown and "`\u200b``rm -rf &lt;!here&gt;" in shown
    assert all(len(b["text"]["text"]) <= 3000 for b in long_text("x```y" * 2000, code=True))
