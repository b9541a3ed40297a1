"""/kanban through the real discord.py client, gateway and CommandTree, against a fake Discord.

The bot logs in over REST, connects to the fake gateway, registers its commands in
the test guild, and every interaction arrives as an INTERACTION_CREATE dispatch that
discord.py parses itself: the CommandTree, option conversion, autocomplete and the
interaction responses and follow-ups all run as they would against Discord.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from lanewarden.bot.chat import AdapterContext
from lanewarden.bot.discord_app.adapter import DiscordAdapter
from lanewarden.bot.discord_app.endpoints import DISCORD_API_BASE, DISCORD_GATEWAY, point_discord_at
from lanewarden.bot.discord_app.options import command_layout, discord_path
from lanewarden.core.board import open_board
from lanewarden.core.caps import describe_caps
from lanewarden.core.config import DiscordConfig
from lanewarden.core.grammar import REGISTRY, help_text
from lanewarden.core.schema import events, subscriptions
from lanewarden.core.windows import WindowStore
from sqlalchemy import select

from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_bot import (
    ADMIN,
    CHANNEL,
    GUILD,
    OPERATOR,
    TOKEN,
    VIEWER,
    RunningBot,
    discord_sections,
)
from tests.helpers import snapshot


@pytest.fixture
def board_url(tmp_path: Path) -> str:
    # the adapter does not depend on the database engine; the outbox tests run on both
    return f"sqlite:///{tmp_path / 'board.db'}"


@pytest.fixture
def bot(discord_bot: RunningBot) -> RunningBot:
    return discord_bot


def kanban_command(discord_fake: FakeDiscord) -> dict[str, Any]:
    return next(c for c in discord_fake.commands[GUILD] if c["name"] == "kanban")


def option_names(command: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    node = command
    for word in path.split():
        node = next(o for o in node["options"] if o["name"] == word)
    return {o["name"]: o for o in node.get("options", [])}


# ------------------------------------------------------------ registration


async def test_start_logs_in_connects_to_the_configured_gateway_and_registers_kanban(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    # REST went to [discord] api_base and the websocket to gateway_url, never to Discord
    assert [c.path for c in discord_fake.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert discord_fake.requests("GET", "/gateway.*") == []  # a plain Client never asks /gateway
    assert (
        discord_fake.gateway_queries[0]["v"] == "10" and discord_fake.gateway_queries[0]["encoding"] == "json"
    )
    assert discord_fake.identify is not None and discord_fake.identify["token"] == TOKEN
    assert discord_fake.identify["intents"] & 1  # guilds, and nothing privileged
    assert discord_fake.identify["intents"] & ~1 == 0
    # serve syncs the tree to [discord] guild_ids at start-up
    assert (
        len(discord_fake.requests("PUT", rf"/applications/{discord_fake.APP_ID}/guilds/{GUILD}/commands"))
        == 1
    )
    kanban = kanban_command(discord_fake)
    layout = command_layout()
    assert [o["name"] for o in kanban["options"]] == list(layout)
    assert len(layout) <= 25
    assert {o["name"] for o in option_names(kanban, "caps").values()} == {"show", "set", "reset", "tune"}
    assert set(option_names(kanban, "windows")) == {"list", "add", "remove"}


async def test_options_are_named_as_the_cli_flags_with_choices_and_autocomplete(
    discord_fake: FakeDiscord, bot: RunningBot
) -> None:
    kanban = kanban_command(discord_fake)
    add = option_names(kanban, "add")
    assert list(add) == [
        "title",
        "body",
        "profile",
        "priority",
        "column",
        "parent",
        "not-before",
        "max-attempts",
    ]
    assert add["title"]["required"] is True and add["title"]["type"] == 3
    assert add["priority"]["type"] == 4
    assert [c["value"] for c in add["column"]["choices"]] == ["backlog", "ready"]
    assert add["profile"]["autocomplete"] and add["parent"]["autocomplete"]
    batch = option_names(kanban, "promote-batch")
    assert set(batch) == {"max", "from", "to", "profile"}
    assert batch["max"]["required"] is True
    assert option_names(kanban, "show")["id"]["autocomplete"] is True
    assert option_names(kanban, "pause")["gateway"]["autocomplete"] is True
    caps_set = option_names(kanban, "caps set")
    assert [c["value"] for c in caps_set["scope"]["choices"]] == ["board", "profile", "gateway"]
    assert caps_set["name"]["autocomplete"] is True
    assert option_names(kanban, "list")["public"]["type"] == 5  # read commands may answer publicly
    assert "public" not in option_names(kanban, "add")
    # Discord refuses a command whose names, descriptions and choices exceed 8,000 characters
    assert _characters(kanban) <= 8000


def _characters(node: Any) -> int:
    if isinstance(node, list):
        return sum(_characters(n) for n in node)
    if not isinstance(node, dict):
        return 0
    total = 0
    for key, value in node.items():
        if key in ("name", "description", "value") and isinstance(value, str | int):
            total += len(str(value))
        else:
            total += _characters(value)
    return total


# ------------------------------------------------------------------ verbs


async def test_every_verb_runs_from_discord(bot: RunningBot) -> None:
    board = bot.board
    ran: set[str] = set()
    interactions = 0

    async def run(path: str, **values: Any) -> Any:
        nonlocal interactions
        interactions += 1
        # verbs by their grammar name; some sit in a Discord-only group (deps link, notify digest)
        log = await bot.slash(discord_path(path) if path in REGISTRY else path, **values)
        assert log.types == [4], (path, log.callbacks)
        assert not log.text.startswith("⚠️"), (path, log.text)
        name = path if path in REGISTRY else {"caps show": "caps", "caps tune": "tune"}[path]
        ran.add(name)
        return log

    await run("add", title="Ingest logs", profile="researcher", column="backlog")
    await run("add", title="Report", parent="#1", column="backlog", priority=5, **{"max-attempts": 2})
    assert board.get(2).max_attempts == 2 and board.get(2).priority == 5
    listed = await run("list", all=True)
    assert "#1" in listed.text and "#2" in listed.text
    shown = await run("show", id="#2")
    assert "Waits for: #1 (backlog)" in shown.text
    logs = await run("logs", id="#2", follow=True)
    assert "#2 has not run yet (backlog)" in logs.text
    await run("promote", id="1")
    assert board.get(1).status == "ready"
    await run("promote-batch", max=5, **{"from": "backlog", "to": "ready"})
    assert board.get(2).status == "ready"
    await run("move", id="2", column="backlog")
    assert board.get(2).status == "backlog"
    await run("block", id="1", reason="waiting for the vendor")
    assert board.get(1).status == "blocked"
    await run("unblock", id="1")
    assert board.get(1).status == "ready"
    await run("cancel", id="1", reason="wrong logs")
    assert board.get(1).status == "cancelled"
    await run("retry", id="1")
    assert board.get(1).status == "ready"
    await run("unlink", parent="1", child="2")
    assert board.show(2).parents == []
    await run("link", parent="1", child="2")
    assert [p.id for p in board.show(2).parents] == [1]
    await run("comment", id="2", text="the logs are in /srv/logs")
    assert any(e.kind == "commented" for e in board.show(2).events)
    await run("edit", id="2", priority=8)
    assert board.get(2).priority == 8
    purged = await run("purge", **{"older-than": "30d"})
    assert "would be deleted" in purged.text
    caps = await run("caps show")
    assert "board: 0/4 active" in caps.text
    await run("caps set", scope="board", value=6)
    await run("caps set", scope="gateway", name="gpu", value=1)
    assert describe_caps(*board.limits())["board"]["cap"] == 6
    assert describe_caps(*board.limits())["gateways"]["gpu"]["cap"] == 1
    await run("caps reset", scope="gateway", name="gpu")
    assert describe_caps(*board.limits())["gateways"]["gpu"]["cap"] == 2
    await run("pause", gateway="gpu")
    assert describe_caps(*board.limits())["gateways"]["gpu"]["paused"]
    await run("resume", gateway="gpu")
    assert not describe_caps(*board.limits())["gateways"]["gpu"]["paused"]
    status = await run("status")
    assert "queue:" in status.text
    tuned = await run("caps tune")  # Discord's 25 subcommands: tune sits beside the caps
    assert "no load in the last hour" in tuned.text
    me = await run("whoami")
    assert f"you are discord:{ADMIN}: admin ([access] admins lists discord-role:" in me.text and me.ephemeral
    await run(
        "windows add",
        name="night",
        cron="0 22 * * *",
        timezone="UTC",
        command="promote-batch --from ready --to active --max 2",
    )
    assert [w.name for w in WindowStore(board).list()] == ["night"]
    windows = await run("windows list")
    assert "night" in windows.text
    await run("windows remove", name="night")
    assert WindowStore(board).list() == []
    await run("subscribe", topic="alerts")
    with board.db.read() as conn:
        assert conn.execute(select(subscriptions.c.channel, subscriptions.c.topic)).all() == [
            (str(CHANNEL), "alerts")
        ]
    await run("unsubscribe", topic="alerts")
    with board.db.read() as conn:
        assert conn.execute(select(subscriptions)).all() == []
    digest = await run("digest")
    assert "Lanewarden digest, last 24h" in digest.text
    dm = await run("notify me", state="on")  # /kanban notify me: beside subscribe in the notify group
    assert "direct message when a task you created" in dm.text and dm.ephemeral
    link = await run("web")
    assert link.ephemeral and "http://127.0.0.1:8787/signin/" in link.text  # never in the channel
    helped = await run("help", topic="caps set")
    assert "usage: caps set" in helped.text and helped.ephemeral
    assert ran == set(REGISTRY), f"verbs never run from Discord: {set(REGISTRY) - ran}"

    # every command was audited with its Discord user and channel
    with board.db.read() as conn:
        audited = conn.execute(
            select(events.c.actor, events.c.message).where(events.c.kind == "command")
        ).all()
    assert len(audited) == interactions
    assert {a.actor for a in audited} == {f"discord:{ADMIN}"}
    assert "/kanban add --title=Report --priority=5 --column=backlog '--parent=#1' --max-attempts=2" in {
        a.message for a in audited
    }


async def test_answers_are_private_unless_asked_public(bot: RunningBot) -> None:
    await bot.slash("add", user=OPERATOR, title="Visible")
    private = await bot.slash("list", user=VIEWER)
    assert private.ephemeral and "Visible" in private.text
    public = await bot.slash("list", user=VIEWER, public=True)
    assert not public.ephemeral and "Visible" in public.text
    as_json = await bot.slash("show", id="1", json=True)
    assert '"title": "Visible"' in as_json.text


async def test_help_lists_every_verb_from_the_grammar(bot: RunningBot) -> None:
    log = await bot.slash("help", user=VIEWER)
    assert log.ephemeral
    assert log.answer["embeds"][0]["description"] == f"```\n{help_text()}\n```"
    assert "`caps` alone is `/kanban caps show`" in log.text


# ----------------------------------------------------------------- access


async def test_a_viewer_is_refused_an_operator_command_and_the_denial_is_audited(bot: RunningBot) -> None:
    before = snapshot(bot.board)
    log = await bot.slash("add", user=VIEWER, title="Sneaky")
    assert log.types == [4] and log.ephemeral
    assert "`add` needs the operator role; you are viewer" in log.text
    after = snapshot(bot.board)
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }
    with bot.board.db.read() as conn:
        denied = conn.execute(select(events.c.actor, events.c.data).where(events.c.kind == "denied")).one()
    assert denied.actor == f"discord:{VIEWER}"
    assert denied.data["verb"] == "add" and denied.data["channel"] == f"discord:{CHANNEL}"


async def test_admin_comes_from_a_discord_role_and_operators_cannot_change_caps(bot: RunningBot) -> None:
    refused = await bot.slash("caps set", user=OPERATOR, scope="board", value=1)
    assert refused.ephemeral and "needs the admin role; you are operator" in refused.text
    assert describe_caps(*bot.board.limits())["board"]["cap"] == 4
    allowed = await bot.slash("caps set", user=ADMIN, scope="board", value=1)  # via discord-role:<id>
    assert "board cap is now 1" in allowed.text
    assert describe_caps(*bot.board.limits())["board"]["cap"] == 1


# ------------------------------------------------------------- bad input


async def test_bad_input_gets_one_private_line_and_changes_nothing(bot: RunningBot) -> None:
    await bot.slash("add", title="Real task")
    before = snapshot(bot.board)
    unknown = await bot.slash("show", id="999")
    assert unknown.ephemeral and unknown.text == "⚠️ no task #999"
    not_an_id = await bot.slash("cancel", id="forty-two")
    assert not_an_id.ephemeral and "'forty-two' is not a task id" in not_an_id.text
    bad_cap = await bot.slash("caps set", scope="board", value=-1)
    assert bad_cap.ephemeral and "cap" in bad_cap.text and "-1" in bad_cap.text
    no_name = await bot.slash("caps set", scope="gateway", value=2)
    assert no_name.ephemeral and no_name.text.startswith("⚠️")
    bad_status = await bot.slash("list", status="doing")
    assert bad_status.ephemeral and "--status (or --column) must be among" in bad_status.text
    after = snapshot(bot.board)
    # only the audit trail grew: nothing else changed
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }
    assert describe_caps(*bot.board.limits())["board"]["cap"] == 4


async def test_a_stale_registration_is_answered_privately(bot: RunningBot, discord_fake: FakeDiscord) -> None:
    # Discord still shows a subcommand this version no longer has (sync not run after an upgrade)
    kanban = kanban_command(discord_fake)
    kanban["options"].append({"name": "frobnicate", "type": 1, "description": "gone", "options": []})
    log = await bot.slash("frobnicate", user=VIEWER)
    assert log.types == [4] and log.ephemeral
    assert "out of date" in log.text and "lanewarden discord sync" in log.text


# ------------------------------------------------------- defer and follow-up


async def test_slow_work_is_deferred_then_answered_by_editing_the_placeholder(
    bot: RunningBot, discord_fake: FakeDiscord, board_url: str
) -> None:
    bot.adapter.handler.defer_after = 0.05
    lock = sqlite3.connect(board_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the board: the command has to wait
    try:
        payload = discord_fake.slash(
            "add", user=OPERATOR, roles=(), channel_id=CHANNEL, guild_id=GUILD, title="Slow one"
        )
        log = await discord_fake.send_interaction(payload)
        await discord_fake.wait_until(lambda: log.types == [5])  # "Lanewarden is thinking…", privately
        assert not log.finished.is_set()
        assert log.original is not None and log.original["flags"] & 64
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await asyncio.wait_for(log.finished.wait(), 10)
    assert log.types == [5]
    assert (
        len(
            discord_fake.requests(
                "PATCH", rf"/webhooks/{discord_fake.APP_ID}/tok-{log.id}/messages/@original"
            )
        )
        == 1
    )
    assert "created #1 in ready" in log.text and log.ephemeral
    assert bot.board.get(1).title == "Slow one"


async def test_an_error_after_a_public_deferral_is_not_shown_to_the_channel(
    bot: RunningBot, discord_fake: FakeDiscord, board_url: str
) -> None:
    bot.adapter.handler.defer_after = 0.05
    lock = sqlite3.connect(board_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        payload = discord_fake.slash(
            "show", user=VIEWER, roles=(), channel_id=CHANNEL, guild_id=GUILD, id="404", public=True
        )
        log = await discord_fake.send_interaction(payload)
        await discord_fake.wait_until(lambda: log.types == [5])
        assert log.original is not None and not log.original["flags"] & 64  # a public placeholder
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await asyncio.wait_for(log.finished.wait(), 10)
    assert log.original_deleted
    assert log.ephemeral and log.text == "⚠️ no task #404"


async def test_status_chart_defers_at_once_and_attaches_a_png(
    bot: RunningBot, discord_fake: FakeDiscord
) -> None:
    log = await bot.slash("status", user=VIEWER, chart=True)
    assert log.types == [5]
    attachments = log.answer["attachments"]
    assert [a["filename"] for a in attachments] == ["status.png"]
    assert attachments[0]["data"].startswith(b"\x89PNG\r\n\x1a\n")
    assert "queue:" in log.text


# ------------------------------------------------------------ autocomplete


async def test_autocomplete_suggests_tasks_profiles_gateways_and_scope_names(bot: RunningBot) -> None:
    board = bot.board
    for title in ("Ingest logs", "Summarize logs", "Train model"):
        await bot.slash("add", title=title)
    await bot.slash("cancel", id="3")
    assert await bot.complete("show", "id", id="") == ["3", "2", "1"]
    assert await bot.complete("show", "id", id="#2") == ["2"]
    assert await bot.complete("show", "id", id="logs") == ["2", "1"]
    assert await bot.complete("retry", "id", id="") == ["3"]  # only what can be retried
    assert await bot.complete("cancel", "id", id="") == ["2", "1"]  # not the cancelled one
    # several parents: the ones already typed are kept
    assert await bot.complete("add", "parent", title="x", parent="1, 2") == ["1, 2"]
    assert await bot.complete("add", "parent", title="x", parent="1,") == ["1, 3", "1, 2"]
    assert await bot.complete("add", "profile", title="x", profile="re") == ["researcher"]
    assert await bot.complete("pause", "gateway", gateway="") == ["gpu"]
    assert await bot.complete("caps set", "name", scope="profile", name="", value=1) == [
        "default",
        "researcher",
    ]
    assert await bot.complete("caps set", "name", scope="gateway", name="g", value=1) == ["gpu"]
    assert await bot.complete("caps reset", "name", scope="board", name="") == []
    assert "caps set" in await bot.complete("help", "topic", topic="caps")
    assert board.get(3).status == "cancelled"  # suggesting never changes anything


async def test_autocomplete_labels_say_which_task_it_is(bot: RunningBot, discord_fake: FakeDiscord) -> None:
    await bot.slash("add", title="Summarize the April logs")
    payload = discord_fake.slash(
        "show", user=VIEWER, roles=(), channel_id=CHANNEL, guild_id=GUILD, focused="id", id=""
    )
    log = await discord_fake.run(payload)
    assert log.choices == [{"name": "#1 · Summarize the April logs · ready", "value": "1"}]


# ------------------------------------------------------------ the token


async def test_the_token_never_reaches_the_logs(
    board_url: str, discord_fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(board_url, **discord_sections(discord_fake))
    board = open_board(config)
    adapter = DiscordAdapter.from_env(config, {"DISCORD_TOKEN": TOKEN})
    try:
        await adapter.start(AdapterContext(config, board, None))
        await discord_fake.wait_until(lambda: discord_fake.connected.is_set())
        await discord_fake.run(discord_fake.slash("list", user=VIEWER, channel_id=CHANNEL, guild_id=GUILD))
        assert TOKEN not in repr(adapter)
    finally:
        await adapter.stop()
        board.db.dispose()
        point_discord_at(DiscordConfig())
    assert caplog.records  # discord.py did log at DEBUG
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_only_one_process_holds_the_gateway_and_another_takes_over(
    board_url: str, discord_fake: FakeDiscord
) -> None:
    # two serve processes share a board: Discord would send each interaction to both
    config = make_config(board_url, scheduler={"leader_lease_seconds": 1}, **discord_sections(discord_fake))
    board = open_board(config)
    first = DiscordAdapter.from_env(config, {"DISCORD_TOKEN": TOKEN})
    second = DiscordAdapter.from_env(config, {"DISCORD_TOKEN": TOKEN})
    try:
        await first.start(AdapterContext(config, board, None))
        await discord_fake.wait_until(lambda: discord_fake.connected.is_set())
        await second.start(AdapterContext(config, board, None))
        await asyncio.sleep(0.6)  # two lease attempts of the second process (every ttl/4)
        assert discord_fake.identifies == 1 and first.holds_gateway and not second.holds_gateway
        await first.stop()
        await discord_fake.wait_until(
            lambda: discord_fake.identifies == 2 and discord_fake.connected.is_set()
        )
        assert second.holds_gateway
        log = await discord_fake.run(
            discord_fake.slash("list", user=VIEWER, channel_id=CHANNEL, guild_id=GUILD)
        )
        assert log.types == [4]
    finally:
        await first.stop()
        await second.stop()
        board.db.dispose()
        point_discord_at(DiscordConfig())


def test_unset_endpoints_point_back_at_discord() -> None:
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    point_discord_at(DiscordConfig(api_base="http://127.0.0.1:1/api/v10", gateway_url="ws://127.0.0.1:1/gw"))
    assert Route.BASE == "http://127.0.0.1:1/api/v10"
    assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:1/gw"
    point_discord_at(DiscordConfig())
    assert Route.BASE == DISCORD_API_BASE == "https://discord.com/api/v10"
    assert DiscordWebSocket.DEFAULT_GATEWAY == DISCORD_GATEWAY


def test_a_bad_endpoint_is_refused_naming_the_key() -> None:
    from lanewarden.core.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"discord\.gateway_url = 'http://x': must be an absolute ws:// or wss://"
    ):
        point_discord_at(DiscordConfig(gateway_url="http://x"))
    with pytest.raises(ConfigError, match=r"discord\.api_base"):
        point_discord_at(DiscordConfig(api_base="discord.com/api"))
    point_discord_at(DiscordConfig())
