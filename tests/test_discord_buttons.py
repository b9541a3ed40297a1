"""Card buttons: Promote, Cancel with its confirmation, Retry; role checks; and persistence
across a restart of the bot (the buttons are dispatched by custom_id pattern)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lanewarden.core.board import open_board
from lanewarden.core.outbox import OutboxDeliverer
from lanewarden.core.schema import events
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import CHANNEL, OPERATOR, VIEWER, RunningBot, discord_sections, running_bot


@pytest.fixture
def board_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'board.db'}"


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """custom_id -> label of the message's buttons."""
    return {c["custom_id"]: c["label"] for row in message["components"] for c in row["components"]}


async def post_cards(bot: RunningBot) -> None:
    engine = OutboxDeliverer(
        bot.board, {"discord": bot.adapter.sink}, "test-leader", per_channel_interval=0.0
    )
    while await engine.deliver_due() < 1.0:
        pass


def the_card(discord_fake: FakeDiscord) -> dict[str, Any]:
    [card] = [m for m in discord_fake.channel_messages(CHANNEL) if m["embeds"]]
    return card


async def test_buttons_promote_cancel_with_confirmation_and_retry_across_a_restart(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    config = make_config(board_url, **discord_sections(discord_fake))
    board = open_board(config)
    try:
        async with running_bot(config, discord_fake, board) as bot:
            created = await bot.slash("add", user=OPERATOR, title="Train the model", column="backlog")
            assert "created #1 in backlog" in created.text
            await post_cards(bot)
            card = the_card(discord_fake)
            assert buttons(card) == {"lw:promote:1": "Promote", "lw:cancel:1": "Cancel"}

            promoted = await bot.click(card, "lw:promote:1", user=OPERATOR)
            assert promoted.types == [4] and promoted.ephemeral
            assert "#1 promoted to ready" in promoted.text
            assert board.get(1).status == "ready"

            # Cancel asks first, privately, and changes nothing yet
            prompt = await bot.click(card, "lw:cancel:1", user=OPERATOR)
            assert prompt.ephemeral and "Cancel #1?" in prompt.text
            assert buttons(prompt.answer) == {
                "lw:cancel-yes:1": "Yes, cancel #1",
                "lw:cancel-no:1": "Keep it",
            }
            assert board.get(1).status == "ready"
            kept = await bot.click(prompt.answer, "lw:cancel-no:1", user=OPERATOR)
            assert kept.types == [7] and kept.answer["content"] == "#1 stays as it is."
            assert kept.answer["components"] == []
            assert board.get(1).status == "ready"

            prompt = await bot.click(card, "lw:cancel:1", user=OPERATOR)
            confirmed = await bot.click(prompt.answer, "lw:cancel-yes:1", user=OPERATOR)
            assert confirmed.types == [7] and confirmed.answer["content"] == "#1 cancelled"
            assert confirmed.answer["components"] == []  # the prompt cannot be pressed twice
            assert board.get(1).status == "cancelled"
            assert board.show(1).events[-1].actor == f"discord:{OPERATOR}"

            await post_cards(bot)
            card = the_card(discord_fake)
            assert buttons(card) == {"lw:retry:1": "Retry"}  # the card follows the task's state

        # a new process, a new client: the old card's button still works
        async with running_bot(config, discord_fake, board) as bot:
            retried = await bot.click(card, "lw:retry:1", user=OPERATOR)
            assert retried.ephemeral and "#1 is ready for another try" in retried.text
            assert board.get(1).status == "ready"
    finally:
        board.db.dispose()


async def test_a_viewer_pressing_a_button_is_refused_audited_and_never_asked_to_confirm(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    async with running_bot(make_config(board_url, **discord_sections(discord_fake)), discord_fake) as bot:
        await bot.slash("add", user=OPERATOR, title="Keep me")
        await post_cards(bot)
        card = the_card(discord_fake)
        for custom_id in ("lw:cancel:1", "lw:promote:1"):
            refused = await bot.click(card, custom_id, user=VIEWER)
            assert refused.types == [4] and refused.ephemeral
            assert "needs the operator role; you are viewer" in refused.text
            assert "components" not in refused.answer or refused.answer["components"] == []
        task = bot.board.get(1)
        assert (task.status, task.released) == ("ready", False)
        with bot.board.db.read() as conn:
            denied = conn.execute(
                select(events.c.actor, events.c.data).where(events.c.kind == "denied").order_by(events.c.id)
            ).all()
        assert [(d.actor, d.data["verb"]) for d in denied] == [
            (f"discord:{VIEWER}", "cancel"),
            (f"discord:{VIEWER}", "promote"),
        ]


async def test_a_button_for_a_task_in_the_wrong_state_answers_privately(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    async with running_bot(make_config(board_url, **discord_sections(discord_fake)), discord_fake) as bot:
        await bot.slash("add", user=OPERATOR, title="Moves on")
        await post_cards(bot)
        stale = the_card(discord_fake)  # shows Promote; meanwhile the task is released from elsewhere
        bot.board.promote(1, "active", "cli:alice")
        again = await bot.click(stale, "lw:promote:1", user=OPERATOR)
        assert again.ephemeral and "already released" in again.text
