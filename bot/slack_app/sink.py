"""Delivering outbox rows to Slack (``core.outbox.OutboxSink``).

Every message Lanewarden posts carries the outbox row id in its message metadata
(``event_type: lanewarden_outbox``). That is the idempotency key: before posting a
row again after an attempt whose outcome is unknown (a crash mid-send, a timeout, a
5xx that Slack may have acted on), the channel's history (or the card's thread) is
searched for a message with that id, and found means delivered.

Slack's answers map onto the outbox's retry policy: 429 -> ``RateLimited`` with the
Retry-After header; 5xx, timeouts and auth problems -> ``TransientError`` (retried
with backoff, so a revoked token loses nothing while an operator fixes it); any other
refusal (unknown channel, app not in the channel, invalid blocks) -> ``PermanentError``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from lanewarden.bot.slack_app.blocks import notice_message, task_card, update_message
from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.bot.slack_app.mrkdwn import escape, truncate
from lanewarden.core.outbox import Card, Delivery, OutboxItem, PermanentError, RateLimited, TransientError
from lanewarden.core.tasks import Task
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger("lanewarden.slack")

METADATA_EVENT = "lanewarden_outbox"
# how far before a row was written its message may carry a Slack timestamp (clock skew)
HISTORY_SLACK_SECONDS = 300
HISTORY_PAGE = 200
HISTORY_PAGES = 5

TRANSIENT_ERRORS = frozenset(
    {
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "ratelimited",
        # the operator has to fix the token; until then keep every notification
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
    }
)
# the card was deleted in Slack: post a fresh one instead of editing
GONE_ERRORS = frozenset({"message_not_found", "cant_update_message"})
# reading history is only a safety check: without the scope, post rather than lose. A
# public channel the app posts to through chat:write.public without having joined it
# answers not_in_channel to a read: that is "cannot check" too, never a reason to drop.
UNCHECKABLE_ERRORS = frozenset(
    {"missing_scope", "not_allowed_token_type", "thread_not_found", "not_in_channel"}
)


class MessageGone(Exception):
    pass


class SlackSink:
    adapter = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    # ------------------------------------------------------------------ deliver

    async def deliver(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        if item.attempts > 0 and item.state != "sending":
            # an earlier attempt failed in a way Slack may still have acted on
            found = await self.find_delivered(item, card)
            if found is not None:
                log.info("outbox %d: already in Slack as %s; not posting again", item.id, found.message_ref)
                return found
        if item.kind == "card":
            return await self._card(item, task, card)
        if item.kind == "update":
            return await self._update(item, task, card)
        if item.kind == "chart":
            return await self._chart(item)
        if item.kind == "dm":
            text, blocks = update_message(task, item.payload, with_title=True)
            return Delivery(await self._post(item, text, blocks, channel=await self._dm_channel(item)))
        text, blocks = notice_message(item.kind, item.payload)
        if not text:
            raise PermanentError(f"{item.kind} row {item.id} has no text to post")
        ts = await self._post(item, text, blocks)
        return Delivery(ts)

    async def _card(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        if task is None:
            raise PermanentError(f"task #{item.task_id} no longer exists")
        text, blocks = task_card(task)
        if card is not None:
            try:
                await _call(
                    self.client.chat_update,
                    channel=item.channel,
                    ts=card.message_ref,
                    text=escape(truncate(text, 3000)),
                    blocks=blocks,
                )
                return Delivery(card.message_ref, card.thread_ref or card.message_ref)
            except MessageGone:
                log.info(
                    "outbox %d: card of #%s was deleted in Slack; posting a new one", item.id, item.task_id
                )
        ts = await self._post(item, text, blocks)
        return Delivery(ts, ts)

    async def _update(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        if card is None:
            # no card in this channel (it could not be posted): say which task it is about
            text, blocks = update_message(task, item.payload, with_title=True)
            ts = await self._post(item, text, blocks)
            return Delivery(ts)
        text, blocks = update_message(task, item.payload)
        thread = card.thread_ref or card.message_ref
        ts = await self._post(item, text, blocks, thread_ts=thread)
        return Delivery(ts, thread)

    async def _chart(self, item: OutboxItem) -> Delivery:
        """The digest's status chart, uploaded as a file (files.uploadV2)."""
        png = base64.b64decode(str(item.payload.get("png_b64") or ""))
        if not png:
            raise PermanentError(f"chart row {item.id} has no image")
        answer = await _call(
            self.client.files_upload_v2,
            channel=item.channel,
            file=png,
            filename="lanewarden-status.png",
            title=truncate(str(item.payload.get("text") or "Lanewarden status"), 200),
        )
        uploaded = answer.get("file") or {}
        return Delivery(str(uploaded.get("id") or "file"))

    async def _dm_channel(self, item: OutboxItem) -> str:
        """The app's DM channel with the user a ``dm`` row is for (its channel is the user id).
        conversations.open returns the same channel every time, so a retry is harmless."""
        answer = await _call(self.client.conversations_open, users=item.channel)
        return str(answer["channel"]["id"])

    async def _post(
        self,
        item: OutboxItem,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None = None,
        channel: str | None = None,
    ) -> str:
        payload: dict[str, Any] = {"outbox_id": item.id, "kind": item.kind}
        if item.task_id is not None:
            payload["task_id"] = item.task_id
        args: dict[str, Any] = {
            "channel": channel or item.channel,
            "text": escape(truncate(text, 3000)),  # plain text in, mrkdwn-safe out
            "blocks": blocks,
            "metadata": {"event_type": METADATA_EVENT, "event_payload": payload},
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts:
            args["thread_ts"] = thread_ts
        answer = await _call(self.client.chat_postMessage, **args)
        return str(answer["ts"])

    # ------------------------------------------------------------------ find_delivered

    async def find_delivered(self, item: OutboxItem, card: Card | None) -> Delivery | None:
        # A card row that edits finds nothing here and simply edits again (an edit is safe to
        # repeat and shows the newest state); one that replaced a deleted card finds the new one.
        thread = (card.thread_ref or card.message_ref) if (item.kind == "update" and card) else None
        try:
            channel = await self._dm_channel(item) if item.kind == "dm" else item.channel
            ts = await self._search(item, channel, thread)
        except PermanentError as exc:
            if any(code in str(exc) for code in UNCHECKABLE_ERRORS):
                log.warning(
                    "outbox %d: cannot check Slack for an earlier copy (%s; the app needs the "
                    "*:history scopes and to be in the channel); posting it",
                    item.id,
                    exc,
                )
                return None
            raise
        if ts is None:
            return None
        if item.kind == "card":
            return Delivery(ts, ts)
        return Delivery(ts, thread)

    async def _search(self, item: OutboxItem, channel: str, thread: str | None) -> str | None:
        oldest = _slack_ts(item.created_at - timedelta(seconds=HISTORY_SLACK_SECONDS))
        cursor: str | None = None
        for _page in range(HISTORY_PAGES):
            args: dict[str, Any] = {
                "channel": channel,
                "oldest": oldest,
                "limit": HISTORY_PAGE,
                "include_all_metadata": True,
            }
            if cursor:
                args["cursor"] = cursor
            if thread:
                answer = await _call(self.client.conversations_replies, ts=thread, **args)
            else:
                answer = await _call(self.client.conversations_history, **args)
            for message in answer.get("messages") or []:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") != METADATA_EVENT:
                    continue
                if (metadata.get("event_payload") or {}).get("outbox_id") == item.id:
                    return str(message["ts"])
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
            if not answer.get("has_more") or not cursor:
                return None
        return None


async def _call(method: Callable[..., Awaitable[AsyncSlackResponse]], **args: Any) -> AsyncSlackResponse:
    """One Web API call, with Slack's failures translated to the outbox's vocabulary."""
    try:
        return await method(**args)
    except SlackApiError as exc:
        response = exc.response
        status = response.status_code
        error = slack_error_code(exc)
        if status == 429 or error == "ratelimited":
            raise RateLimited(_retry_after(response.headers), f"Slack rate limit ({error})") from None
        if error in GONE_ERRORS:
            raise MessageGone(error) from None
        if status >= 500 or error in TRANSIENT_ERRORS:
            raise TransientError(f"Slack answered {status} {error}") from None
        hint = " (invite the app to the channel: /invite @Lanewarden)" if error == "not_in_channel" else ""
        raise PermanentError(f"Slack refused: {error}{hint}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TransientError(f"cannot reach Slack: {type(exc).__name__}: {exc}") from None


def _retry_after(headers: Any) -> float | None:
    raw = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _slack_ts(at: datetime) -> str:
    return f"{at.timestamp():.6f}"
