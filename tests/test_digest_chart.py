"""The daily digest goes out with the status chart: an upload in Slack, an attachment in
Discord, through the real outbox and sinks against the platform fakes."""

from __future__ import annotations

from lanewarden.bot.slack_app.adapter import SlackAdapter
from lanewarden.bot.tools.chart import status_chart_png
from lanewarden.core.access import Actor
from lanewarden.core.board import open_board
from lanewarden.core.commands import Digest
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.outbox import OutboxDeliverer

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import ALERTS, NOTIFY, discord_sections, running_bot
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack

PNG = b"\x89PNG\r\n\x1a\n"


async def test_slack_digest_channel_gets_the_chart(board_url: str) -> None:
    fake = await FakeSlack().start()
    board = open_board(make_config(board_url, slack={"api_base": fake.api_base, "alert_channel": "CALERTS"}))
    try:
        Executor(board, chart=status_chart_png).execute(
            parse("digest --post"), Actor(id="slack:UOPS", role="admin", channel="slack:COPS")
        )
        adapter = SlackAdapter.from_env(
            board.config, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
        )
        engine = OutboxDeliverer(board, {"slack": adapter.sink}, "leader", per_channel_interval=0.0)
        for _ in range(20):
            if await engine.deliver_due() >= 1.0:
                break
        assert fake.posts("CALERTS")[0]["text"].startswith("Lanewarden digest, last 24h")
        [upload] = fake.uploads.values()
        assert upload.startswith(PNG) and len(upload) > 20_000
        [done] = fake.calls_to("files.completeUploadExternal")
        assert done.args["channel_id"] == "CALERTS" and "Lanewarden, the last hour" in done.args["files"]
    finally:
        board.db.dispose()
        await fake.stop()


async def test_discord_digest_channels_get_the_chart(board_url: str, discord_fake: FakeDiscord) -> None:
    sections = discord_sections(discord_fake, notify_channel_id=NOTIFY, alert_channel_id=ALERTS)
    async with running_bot(make_config(board_url, **sections), discord_fake) as bot:
        Executor(bot.board, chart=status_chart_png).execute(
            Digest(post=True), Actor(id="discord:7", role="admin", channel=f"discord:{NOTIFY}")
        )
        engine = OutboxDeliverer(bot.board, {"discord": bot.adapter.sink}, "leader", per_channel_interval=0.0)
        for _ in range(20):
            if await engine.deliver_due() >= 1.0:
                break
        for channel in (NOTIFY, ALERTS):
            digest, chart = discord_fake.channel_messages(channel)
            assert digest["content"].startswith("Lanewarden digest, last 24h")
            assert chart["content"].startswith("Lanewarden, the last hour")
            [attachment] = chart["attachments"]
            assert attachment["filename"] == "lanewarden-status.png" and attachment["data"].startswith(PNG)
