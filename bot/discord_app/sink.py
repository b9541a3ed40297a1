"""Outbox delivery to Discord: cards edited in place, state changes in the card's thread.

The deliverer (core/outbox.py) calls ``deliver`` for one row at a time per channel and
handles retries; this module only speaks Discord and says which failures are worth a
retry:

- Every new message carries the outbox row id as its ``nonce`` with ``enforce_nonce``,
  so Discord returns the existing message instead of posting a second one when a row
  is sent again (after a timeout, or after a crash between posting and recording).
- A card is posted once per task and channel, then edited (a card someone deleted is
  posted afresh, and the outbox records the new message). Its thread has the card
  message's id (Discord gives a thread started from a message that message's id); it
  is created on the first state change, so quiet tasks leave no empty threads.
- A 429 that discord.py does not absorb itself (a wait above ``max_ratelimit_timeout``,
  or five in a row) becomes ``RateLimited`` with Discord's ``retry_after``; 5xx and
  network errors are transient; 403/404/400 are permanent (missing access, unknown
  channel), kept on the dead row with Discord's reason.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import aiohttp
import discord
from lanewarden.bot.discord_app.cards import card_marker, card_view, task_embed
from lanewarden.bot.discord_app.options import shorten
from lanewarden.bot.discord_app.replies import CONTENT_LIMIT, NO_MENTIONS
from lanewarden.bot.discord_app.text import inert, plain
from lanewarden.core.notifications import who
from lanewarden.core.outbox import Card, Delivery, OutboxItem, PermanentError, RateLimited, TransientError
from lanewarden.core.tasks import Task

log = logging.getLogger("lanewarden.discord.outbox")

UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
THREAD_ALREADY_CREATED = 160004
THREAD_ARCHIVE_MINUTES = 10080  # a week: a card's thread stays open while its task lives
THREAD_NAME_LIMIT = 100
HISTORY_SCAN = 50  # recent messages searched for a card posted just before a crash


def nonce_for(item: OutboxItem) -> str:
    return f"lw{item.id}"  # Discord allows 25 characters


class DiscordSink:
    adapter = "discord"

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    async def deliver(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        channel_id(item)  # a malformed channel can never be delivered: fail it at once
        try:
            if item.kind == "card":
                return await self._card(item, task, card)
            if item.kind == "update":
                return await self._update(item, task, card)
            if item.kind == "chart":
                return await self._chart(channel_id(item), item)
            if item.kind == "dm":
                return await self._dm(item, task)
            return await self._post(channel_id(item), _text(item), item)
        except discord.HTTPException as exc:
            raise _translate(exc) from exc
        except discord.RateLimited as exc:
            raise RateLimited(
                exc.retry_after, f"Discord rate limit: retry after {exc.retry_after:.1f}s"
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc

    async def find_delivered(self, item: OutboxItem, card: Card | None) -> Delivery | None:
        """A card posted just before a crash is found in the channel's recent history.

        Other rows need no search: sending them again re-uses their nonce, which
        Discord answers with the message already created, and edits are idempotent.
        """
        if item.kind != "card" or card is not None or item.task_id is None:
            return None
        me = self.client.user
        marker = card_marker(item.task_id)
        channel = self.client.get_partial_messageable(channel_id(item))
        try:
            async for message in channel.history(limit=HISTORY_SCAN):
                if me is not None and message.author.id != me.id:
                    continue
                if any((e.footer.text or "").startswith(marker) for e in message.embeds):
                    return Delivery(str(message.id), str(message.id))
        except discord.Forbidden:
            # no Read Message History permission: the search is only a safety net, so
            # post (the nonce still covers a retry within Discord's nonce window)
            log.warning("outbox %d: cannot read the history of %s to check for a card", item.id, item.channel)
            return None
        except discord.HTTPException as exc:
            raise _translate(exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return None

    # ------------------------------------------------------------------ kinds

    async def _card(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        if task is None:
            raise PermanentError(f"task #{item.task_id} no longer exists")
        channel = self.client.get_partial_messageable(channel_id(item))
        view = card_view(task)
        if card is not None:
            try:
                await channel.get_partial_message(int(card.message_ref)).edit(
                    embed=task_embed(task), view=view, allowed_mentions=NO_MENTIONS
                )
                return Delivery(card.message_ref, card.thread_ref)
            except discord.NotFound as exc:
                if exc.code != UNKNOWN_MESSAGE:
                    raise
                # someone deleted the card: post a fresh one (the outbox records its new id)
                log.info("outbox %d: the card of #%s was deleted; posting a new one", item.id, task.id)
        message = await channel.send(
            embed=task_embed(task),
            view=view if view is not None else discord.utils.MISSING,
            nonce=nonce_for(item),
            allowed_mentions=NO_MENTIONS,
        )
        return Delivery(str(message.id), str(message.id))

    async def _update(self, item: OutboxItem, task: Task | None, card: Card | None) -> Delivery:
        text = _text(item)
        if card is None:
            # the card could not be posted (or was dropped): say which task, in the channel
            title = f" {inert(task.title)}" if task is not None else ""
            return await self._post(
                channel_id(item), shorten(f"#{item.task_id}{title}: {text}", CONTENT_LIMIT), item
            )
        thread_id = int(card.thread_ref or card.message_ref)
        try:
            return await self._post(thread_id, text, item)
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_CHANNEL:
                raise
        # first state change of this card: open its thread, then post there
        if await self._open_thread(channel_id(item), int(card.message_ref), task, item):
            return await self._post(thread_id, text, item)
        # no thread possible here (the card sits in a thread itself): reply to the card
        return await self._post(channel_id(item), text, item, reply_to=int(card.message_ref))

    async def _dm(self, item: OutboxItem, task: Task | None) -> Delivery:
        """A ``dm`` row's channel is the user id: open (or get back) the DM channel with
        them, then post there; the nonce makes a repeated send return the same message."""
        dm = await self.client.http.start_private_message(channel_id(item))
        title = f" {inert(task.title)}" if task is not None else ""
        return await self._post(
            int(dm["id"]), shorten(f"#{item.task_id}{title}: {_text(item)}", CONTENT_LIMIT), item
        )

    async def _open_thread(
        self, channel_id: int, message_id: int, task: Task | None, item: OutboxItem
    ) -> bool:
        name = shorten(f"#{item.task_id} {plain(task.title) if task else ''}".strip(), THREAD_NAME_LIMIT)
        try:
            await self.client.http.start_thread_with_message(
                channel_id, message_id, name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except discord.HTTPException as exc:
            if exc.code == THREAD_ALREADY_CREATED:
                return True
            if exc.status == 400:
                log.info(
                    "no thread for the card in %s (%s); replying to the card instead", channel_id, exc.text
                )
                return False
            raise
        return True

    async def _post(
        self, channel_id: int, text: str, item: OutboxItem, *, reply_to: int | None = None
    ) -> Delivery:
        channel = self.client.get_partial_messageable(channel_id)
        extra: dict[str, Any] = {}
        if reply_to is not None:
            extra["reference"] = discord.MessageReference(
                message_id=reply_to, channel_id=channel_id, fail_if_not_exists=False
            )
        message = await channel.send(
            content=text, nonce=nonce_for(item), allowed_mentions=NO_MENTIONS, **extra
        )
        return Delivery(str(message.id))

    async def _chart(self, channel_id: int, item: OutboxItem) -> Delivery:
        """The digest's status chart, as an attachment."""
        png = base64.b64decode(str(item.payload.get("png_b64") or ""))
        if not png:
            raise PermanentError(f"chart row {item.id} has no image")
        channel = self.client.get_partial_messageable(channel_id)
        message = await channel.send(
            content=_text(item),
            file=discord.File(io.BytesIO(png), filename="lanewarden-status.png"),
            nonce=nonce_for(item),
            allowed_mentions=NO_MENTIONS,
        )
        return Delivery(str(message.id))


def channel_id(item: OutboxItem) -> int:
    try:
        return int(item.channel)
    except ValueError:
        raise PermanentError(f"{item.channel!r} is not a Discord channel id (use discord:<number>)") from None


def _text(item: OutboxItem) -> str:
    text = str(item.payload.get("text") or item.payload.get("event") or item.kind)
    if item.kind == "update":
        text += who(item.payload.get("actor"))
    return shorten(inert(text), CONTENT_LIMIT)


def _translate(exc: discord.HTTPException) -> Exception:
    reason = f"Discord {exc.status}" + (f" (code {exc.code})" if exc.code else "") + f": {exc.text}"
    if exc.status == 429:
        return RateLimited(_retry_after(exc), reason)
    if exc.status >= 500 or exc.status in (401, 408):
        # a 401 is a revoked or rotated token: the operator fixes it, the rows wait
        return TransientError(reason)
    return PermanentError(reason)


def _retry_after(exc: discord.HTTPException) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for key in ("Retry-After", "X-RateLimit-Reset-After"):
        try:
            return float(headers[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None
