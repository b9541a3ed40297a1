"""What the Slack app listens to: ``/kanban``, the card buttons and App Home.

Slack wants an acknowledgement within 3 seconds, so each listener acks first and does
the work after: parsing (pure and instant) happens before the ack so a typo is
answered in the ack itself; board calls (synchronous database work) run in a thread
and their answer goes to the command's response_url. Roles are checked, and every
command audited with its Slack user and channel, by the shared executor. App Home reads
the board through an executor too (``list --mine`` and ``status``), so its role check is
the same one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lanewarden.bot.slack_app.blocks import (
    ACTION_PREFIX,
    BUTTONS,
    Reply,
    error_reply,
    home_view,
    reply_for,
    section,
)
from lanewarden.bot.slack_app.direct import DirectMessages
from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.bot.slack_app.identity import SlackIdentity
from lanewarden.bot.slack_app.modal import CALLBACK_ID as MODAL_CALLBACK_ID
from lanewarden.bot.slack_app.modal import AddTaskModal
from lanewarden.bot.slack_app.mrkdwn import command_text, escape
from lanewarden.core.access import Actor
from lanewarden.core.board import Board
from lanewarden.core.commands import ListTasks, Status
from lanewarden.core.errors import AccessDenied, LanewardenError, UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import Command, parse, parse_task_id
from lanewarden.core.results import Result, StatusShown, TaskList
from lanewarden.core.status import StatusReport
from lanewarden.core.tasks import Task
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.slack")

BUTTON_ACTIONS = re.compile("^" + re.escape(ACTION_PREFIX) + "(" + "|".join(BUTTONS) + ")$")
# any slash command routed to this app: the manifest names it /kanban, a workspace may rename it
ANY_COMMAND = re.compile(r"^/")
INTERNAL_ERROR = "something went wrong inside Lanewarden (the details are in its log)"
NO_ROLE = "You have no Lanewarden role yet. Ask an admin to add you under [access]."
DATABASE_DOWN = "the board database is unavailable right now; try again in a moment"


@dataclass
class SlackListeners:
    board: Board
    executor: Executor
    identity: SlackIdentity
    client: AsyncWebClient

    def __post_init__(self) -> None:
        # App Home's reads: role-checked by an executor like every command, not audited
        self.reads = Executor(self.board)
        self.direct = DirectMessages(self)
        config = self.board.config
        self.modal = AddTaskModal(self, sorted({*config.profiles, config.default_profile}))

    def register(self, app: AsyncApp) -> None:
        app.command(ANY_COMMAND)(self.on_command)
        app.action(BUTTON_ACTIONS)(self.on_button)
        app.event("app_home_opened")(self.on_home_opened)
        app.event("message")(self.direct.on_message)
        app.view(MODAL_CALLBACK_ID)(self.modal.on_submit)
        app.error(self.on_error)

    # ------------------------------------------------------------------ /kanban

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        line = command_text(command.get("text") or "").strip() or "help"
        if line == "add" and command.get("trigger_id"):
            # `/kanban add` alone: the form asks for the title and the rest
            await ack()
            refused = await self.modal.open(command["trigger_id"], command.get("channel_id"))
            if refused is not None:
                await self._respond(respond, refused)
            return
        try:
            parsed = parse(line)
        except UsageError as exc:
            reply = error_reply(str(exc))
            await ack(text=reply.fallback, blocks=reply.blocks)
            return
        await ack()
        try:
            await self._command(parsed, line, command, respond)
        except Exception:  # after the ack nobody else would report it
            log.exception("slack: /kanban %s failed", parsed.VERB.name)
            await self._respond(respond, error_reply(INTERNAL_ERROR))

    async def _command(self, parsed: Command, line: str, command: dict[str, Any], respond: Any) -> None:
        channel_id = command.get("channel_id")
        actor = await self.identity.actor(command["user_id"], channel_id, command.get("user_name"))
        source = f"{command.get('command') or '/kanban'} {line}"
        result, reply = await self.run(parsed, actor, source)
        await self._respond(respond, reply)
        if isinstance(result, StatusShown) and result.chart and channel_id:
            await self._post_chart(channel_id, respond, result.chart_window)

    async def run(self, command: Command, actor: Actor, source: str) -> tuple[Result | None, Reply]:
        """Execute on a worker thread (the board is synchronous) and render the answer."""
        try:
            result = await asyncio.to_thread(self.executor.execute, command, actor, source_text=source)
        except LanewardenError as exc:
            return None, error_reply(str(exc))
        except DBAPIError as exc:
            log.warning("slack: %s: database unavailable: %s", command.VERB.name, exc.orig)
            return None, error_reply(DATABASE_DOWN)
        except Exception:
            log.exception("slack: %s failed", command.VERB.name)
            return None, error_reply(INTERNAL_ERROR)
        return result, reply_for(result, actor)

    async def _respond(self, respond: Any, reply: Reply, *, ephemeral: bool = False) -> None:
        args = reply.respond_args()
        if ephemeral:
            args["response_type"] = "ephemeral"
        try:
            answer = await respond(**args)
        except Exception as exc:  # the work is done; only the answer is lost, and it says so in the log
            log.warning("slack: cannot answer on response_url: %s", type(exc).__name__)
            return
        if answer.status_code != 200:
            log.warning("slack: response_url answered %s: %s", answer.status_code, answer.body)

    async def _post_chart(self, channel_id: str, respond: Any, window: timedelta) -> None:
        from lanewarden.bot.tools.chart import status_chart_png

        try:
            png = await asyncio.to_thread(status_chart_png, self.board, window=window)
            await self.client.files_upload_v2(
                channel=channel_id,
                file=png,
                filename="lanewarden-status.png",
                title="Lanewarden: requests, tokens/s, latency and node per gateway",
            )
        except SlackApiError as exc:
            error = (
                exc.response.get("error") if isinstance(exc.response.data, dict) else exc.response.status_code
            )
            hint = (
                " Invite the app to this channel (/invite @Lanewarden)." if error == "not_in_channel" else ""
            )
            await self._respond(respond, error_reply(f"could not post the chart: {error}.{hint}"))
        except Exception:
            log.exception("slack: status chart failed")
            await self._respond(respond, error_reply("could not draw the chart (the details are in the log)"))

    # ------------------------------------------------------------------ buttons

    async def on_button(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        try:
            await self._button(body, action, respond)
        except Exception:  # after the ack nobody else would report it
            log.exception("slack: button %s failed", action.get("action_id"))
            if body.get("response_url"):
                await self._respond(respond, error_reply(INTERNAL_ERROR), ephemeral=True)

    async def _button(self, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        verb = action["action_id"].removeprefix(ACTION_PREFIX)
        user_id = body["user"]["id"]
        channel_id = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        actor = await self.identity.actor(user_id, channel_id, body["user"].get("username"))
        try:
            command = parse([verb, f"#{parse_task_id(action.get('value') or '')}"])
        except UsageError as exc:
            result, reply = None, error_reply(str(exc))
        else:
            result, reply = await self.run(command, actor, f"button {verb} {action.get('value')}")
        if body.get("response_url"):
            # the card itself changes through the outbox; the clicker gets a private word now
            await self._respond(respond, reply, ephemeral=True)
        if (body.get("view") or {}).get("type") == "home":
            await self.publish_home(user_id, notice=None if result is not None else reply.text)

    # ------------------------------------------------------------------ App Home

    async def on_home_opened(self, event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            await self.publish_home(event["user"])
        elif event.get("tab") == "messages":
            await self.direct.on_messages_tab(event["user"], event.get("channel"))

    async def publish_home(self, user_id: str, notice: str | None = None) -> None:
        """(Re)draw the user's Home tab; ``notice`` is shown on top (a refused button)."""
        view = await self._home_view(user_id)
        if notice:
            view["blocks"].insert(0, section(f":warning: {escape(notice)}"))
        try:
            await self.client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:
            log.warning("slack: views.publish failed: %s", slack_error_code(exc))

    async def _home_view(self, user_id: str) -> dict[str, Any]:
        actor = await self.identity.actor(user_id, None)
        try:
            tasks, report = await asyncio.to_thread(self._home_data, actor)
        except AccessDenied:
            return {"type": "home", "blocks": [section(NO_ROLE)]}
        except DBAPIError as exc:
            log.warning("slack: App Home: database unavailable: %s", exc.orig)
            return {"type": "home", "blocks": [section(f":warning: {DATABASE_DOWN}")]}
        return home_view(tasks, report)

    def _home_data(self, actor: Actor) -> tuple[list[Task], StatusReport]:
        """The Home tab is ``list --mine`` and ``status``, run (and role-checked) by the
        executor like any command; opening the tab is not audited as a command."""
        listed = self.reads.execute(ListTasks(mine=True, limit=15), actor, source_text="App Home")
        shown = self.reads.execute(Status(), actor, source_text="App Home")
        assert isinstance(listed, TaskList) and isinstance(shown, StatusShown)
        return listed.tasks, shown.report

    # ------------------------------------------------------------------ errors

    async def on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack: unhandled error in a listener: %s", error, exc_info=error)
