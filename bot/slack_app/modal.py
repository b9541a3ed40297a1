"""The "add task" modal: ``/kanban add`` with nothing after it opens a form.

Typing a title, a body and a priority on one line is awkward in Slack; the modal asks for
them in fields. Its answers are turned into the same ``add`` command line as typing it
(``--title=…``, ``--body=…``), parsed by the grammar and run by the executor with the
submitter's role, so checks and errors are the ones every front end gets. A missing
title, or a line the grammar refuses, is shown on the form and nothing is created; what
the board refuses later (an unknown profile, a role) comes back as a private message.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from lanewarden.bot.slack_app.blocks import Reply
from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.core.commands import ADD_COLUMNS
from lanewarden.core.errors import UsageError
from lanewarden.core.grammar import parse
from slack_sdk.errors import SlackApiError

if TYPE_CHECKING:
    from lanewarden.bot.slack_app.listeners import SlackListeners

log = logging.getLogger("lanewarden.slack")

CALLBACK_ID = "lanewarden.add"
TITLE_MAX = 200  # the grammar's limit for a title


def _input(block_id: str, label: str, element: dict[str, Any], *, optional: bool = False) -> dict[str, Any]:
    element = {**element, "action_id": block_id}
    return {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": label},
        "element": element,
        "optional": optional,
    }


def _option(value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": value}, "value": value}


def add_task_view(profiles: list[str], channel_id: str | None) -> dict[str, Any]:
    """The form; ``private_metadata`` remembers the channel the command came from."""
    blocks = [
        _input("title", "Title", {"type": "plain_text_input", "max_length": TITLE_MAX}),
        _input(
            "body", "Details for the agent", {"type": "plain_text_input", "multiline": True}, optional=True
        ),
        _input(
            "profile",
            "Profile",
            {"type": "static_select", "options": [_option(p) for p in profiles[:100]]},
            optional=True,
        ),
        _input(
            "priority",
            "Priority (higher runs first)",
            {"type": "number_input", "is_decimal_allowed": False},
            optional=True,
        ),
        _input(
            "column",
            "Starts in",
            {
                "type": "static_select",
                "options": [_option(c) for c in ADD_COLUMNS],
                "initial_option": _option("ready"),
            },
        ),
    ]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": "New Lanewarden task"},
        "submit": {"type": "plain_text", "text": "Add"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel": channel_id}),
        "blocks": blocks,
    }


def add_argv(values: dict[str, dict[str, Any]]) -> list[str]:
    """The submitted fields as the ``add`` command line the grammar reads."""

    def value(block: str) -> str | None:
        field = next(iter((values.get(block) or {}).values()), {}) or {}
        selected = field.get("selected_option") or {}
        found = selected.get("value") if selected else field.get("value")
        return str(found) if found not in (None, "") else None

    argv = ["add", f"--title={value('title') or ''}"]
    for flag in ("body", "profile", "priority", "column"):
        if (given := value(flag)) is not None:
            argv.append(f"--{flag}={given}")
    return argv


class AddTaskModal:
    def __init__(self, listeners: SlackListeners, profiles: list[str]) -> None:
        self.listeners = listeners
        self.profiles = profiles

    async def open(self, trigger_id: str, channel_id: str | None) -> Reply | None:
        """Opens the form; a Reply (the reason) if Slack would not."""
        try:
            await self.listeners.client.views_open(
                trigger_id=trigger_id, view=add_task_view(self.profiles, channel_id)
            )
        except SlackApiError as exc:
            code = slack_error_code(exc)
            log.warning("slack: cannot open the add-task form: %s", code)
            return Reply(f"could not open the form ({code}); type /kanban add TITLE instead")
        return None

    async def on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        argv = add_argv(view["state"]["values"])
        try:
            if not argv[1].removeprefix("--title=").strip():
                raise UsageError("a task needs a title")
            command = parse(argv)
        except UsageError as exc:
            # shown under the title field: the form stays open, nothing is created
            await ack(response_action="errors", errors={"title": str(exc)[:150]})
            return
        await ack()
        channel = (json.loads(view.get("private_metadata") or "{}") or {}).get("channel")
        user = body["user"]["id"]
        actor = await self.listeners.identity.actor(user, channel, body["user"].get("username"))
        _, reply = await self.listeners.run(command, actor, "add (form)")
        try:
            if channel:
                await self.listeners.client.chat_postEphemeral(
                    channel=channel, user=user, text=reply.fallback, blocks=reply.blocks
                )
            else:
                await self.listeners.client.chat_postMessage(
                    channel=user, text=reply.fallback, blocks=reply.blocks
                )
        except SlackApiError as exc:
            log.warning("slack: cannot confirm a task added with the form: %s", slack_error_code(exc))
