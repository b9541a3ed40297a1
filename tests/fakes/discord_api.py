"""A fake Discord on 127.0.0.1: the REST API (``/api/v10``) and a gateway websocket.

discord.py is pointed at it through ``[discord] api_base`` (``Route.BASE``) and
``gateway_url`` (``DiscordWebSocket.DEFAULT_GATEWAY``), so the real client logs in,
connects, registers commands, receives interactions and answers them over HTTP exactly
as it would against Discord. The fake records every call and keeps the state a test
wants to look at: messages per channel, threads, registered commands and, per
interaction, what the user ended up seeing.

What it models, from Discord's API documentation:

- login (``GET /users/@me``, ``GET /oauth2/applications/@me``) and the gateway
  handshake (HELLO, heartbeats and their ACKs, IDENTIFY -> READY, dispatches);
- bulk command registration, globally and per guild;
- messages with ``nonce`` + ``enforce_nonce`` (the same author re-using a nonce gets
  the existing message back, nothing new is created), edits, history, threads started
  from a message (the thread takes the message's id; a second start is error 160004);
- interaction callbacks (with_response), the ``@original`` message and follow-ups;
- Discord's documented limits (tests/fakes/discord_limits.py): a message, edit or
  interaction answer over them is refused with 400, code 50035 "Invalid Form Body" and
  the ``errors`` object, as Discord does, and nothing is stored or shown;
- errors as Discord words them (``{"message", "code"}``), and 429 with ``Retry-After``,
  ``X-RateLimit-*`` headers, ``Via`` (discord.py treats a 429 without it as a
  Cloudflare ban) and a JSON body with ``retry_after`` and ``global``.

Interactions are built from the commands the bot registered (option types, choices
and required options come from that registration, as Discord's client does) and sent
as INTERACTION_CREATE dispatches, so discord.py's own state parser runs them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_interactions import InteractionPayloads, user_payload
from tests.fakes.discord_limits import choices_refusal, message_refusal, thread_name_refusal

EPHEMERAL = 64  # message flag
LOADING = 128  # message flag of a "thinking" deferral


@dataclass
class Call:
    method: str
    path: str  # after /api/v10
    query: dict[str, str]
    body: Any
    files: list[tuple[str, bytes]]
    status: int = 0
    at: float = 0.0


@dataclass
class Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class InteractionLog:
    """What happened to one interaction, as its user would see it."""

    id: int
    callbacks: list[tuple[int, Any]] = field(default_factory=list)  # (callback type, data)
    original: dict[str, Any] | None = None  # the response message, after edits
    original_deleted: bool = False
    followups: list[dict[str, Any]] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None  # autocomplete results
    refusals: list[dict[str, Any]] = field(default_factory=list)  # 400 bodies of refused answers
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def types(self) -> list[int]:
        return [t for t, _ in self.callbacks]

    @property
    def deferred(self) -> bool:
        return any(t in (5, 6) for t in self.types)

    @property
    def answer(self) -> dict[str, Any]:
        """The message the user ends up with: the last follow-up, else the original."""
        if self.followups:
            return self.followups[-1]
        assert not self.refusals, f"Discord refused the answer to interaction {self.id}: {self.refusals}"
        assert self.original is not None, f"interaction {self.id} has no answer: {self.callbacks}"
        return self.original

    @property
    def ephemeral(self) -> bool:
        return bool(self.answer.get("flags", 0) & EPHEMERAL)

    @property
    def text(self) -> str:
        """Content, embed titles, descriptions and fields: what a test searches in."""
        message = self.answer
        parts = [message.get("content") or ""]
        for embed in message.get("embeds") or []:
            parts += [embed.get("title", ""), embed.get("description", "")]
            parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
            parts.append((embed.get("footer") or {}).get("text", ""))
        return "\n".join(p for p in parts if p)


class FakeDiscord(InteractionPayloads):
    APP_ID = 1_100_000_000_000_000_001
    BOT_ID = 1_100_000_000_000_000_002
    OWNER_ID = 1_100_000_000_000_000_003

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.refusals: list[tuple[Call, dict[str, Any]]] = []  # every 400 Invalid Form Body answered
        self.channels: set[int] = set()
        self.threads: dict[int, dict[str, Any]] = {}  # thread id (= starter message id) -> channel
        self.messages: dict[int, dict[str, Any]] = {}  # channel messages by id
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[int, InteractionLog] = {}
        self.identify: dict[str, Any] | None = None
        self.identifies = 0  # gateway sessions opened (one per IDENTIFY)
        self.gateway_queries: list[dict[str, str]] = []
        self.heartbeats = 0
        self.connected = asyncio.Event()
        self._nonces: dict[tuple[int, str], int] = {}  # (author, nonce) -> message id
        # POST /users/@me/channels: one DM channel per user, the same on every call; users
        # whose privacy settings refuse DMs from the bot (50007 on send) and unknown users
        self.dm_channels: dict[int, int] = {}
        self.dms_refused: set[int] = set()
        self.unknown_users: set[int] = set()
        self._failures: list[Failure] = []
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self._seq = itertools.count(1)
        self._ws: web.WebSocketResponse | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Condition()
        self._component_messages: dict[int, dict[str, Any]] = {}  # interaction id -> clicked message
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def add_channel(self, channel_id: int) -> int:
        self.channels.add(channel_id)
        return channel_id

    # -------------------------------------------------------- failure control

    def rate_limit(
        self, method: str, path: str, retry_after: float, *, times: int = 1, is_global: bool = False
    ) -> None:
        """The next ``times`` matching requests get a 429 the way Discord sends it."""
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket" + re.sub(r"\W", "", path)[:16],
            "X-RateLimit-Scope": "shared" if not is_global else "global",
            "Via": "1.1 google",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        self._failures.append(Failure(method, re.compile(path), 429, times, body, headers))

    def fail(self, method: str, path: str, status: int, code: int, message: str, *, times: int = 1) -> None:
        body = {"message": message, "code": code}
        self._failures.append(Failure(method, re.compile(path), status, times, body, {}))

    # ----------------------------------------------------------- inspection

    def requests(self, method: str | None = None, path: str | None = None) -> list[Call]:
        pattern = re.compile(path) if path else None
        return [
            c
            for c in self.calls
            if (method is None or c.method == method) and (pattern is None or pattern.fullmatch(c.path))
        ]

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wait() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(wait(), timeout)

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self.gateway_queries.append(dict(request.query))
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame["op"] == 1:
                    self.heartbeats += 1
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif frame["op"] == 2:
                    self.identify = frame["d"]
                    self.identifies += 1
                    self._ws = ws
                    await self._send_dispatch("READY", self._ready())
                    self.connected.set()
                    await self._touch()
        finally:
            self._sockets.discard(ws)
            if self._ws is ws:
                self._ws = None
                self.connected.clear()
        return ws

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.bot_user(),
            "guilds": [],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.APP_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    async def _send_dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._ws is not None, "no bot is connected to the fake gateway"
        await self._ws.send_json({"op": 0, "s": next(self._seq), "t": event, "d": data})

    async def send_interaction(self, payload: dict[str, Any]) -> InteractionLog:
        """Deliver an INTERACTION_CREATE to the connected bot; returns its log."""
        log = self.interactions[int(payload["id"])] = InteractionLog(int(payload["id"]))
        await self._send_dispatch("INTERACTION_CREATE", payload)
        return log

    async def join_guild(self, guild_id: int, system_channel_id: int, name: str = "a server") -> None:
        """The bot is added to a server: GUILD_CREATE (without ``unavailable``, as for a join)."""
        self.add_channel(system_channel_id)
        channel = {
            "id": str(system_channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        everyone = {
            "id": str(guild_id),
            "name": "@everyone",
            "permissions": "2248473465835073",
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        guild = {
            "id": str(guild_id),
            "name": name,
            "icon": None,
            "owner_id": str(self.OWNER_ID),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": str(system_channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": datetime.now(UTC).isoformat(),
            "large": False,
            "member_count": 2,
            "members": [],
            "channels": [channel],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
        await self._send_dispatch("GUILD_CREATE", guild)

    async def run(self, payload: dict[str, Any], timeout: float = 10.0) -> InteractionLog:
        """Send an interaction and wait until its user has a final answer."""
        log = await self.send_interaction(payload)
        await asyncio.wait_for(log.finished.wait(), timeout)
        return log

    # ---------------------------------------------------------------- REST

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body, files = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body, files, at=time.monotonic())
        self.calls.append(call)
        try:
            response = self._injected_failure(call) or await self._route(call, request)
        finally:
            await self._touch()
        call.status = response.status
        if response.status == 400 and isinstance(response.body, bytes):
            answered = json.loads(response.body)
            if answered.get("code") == 50035:
                self.refusals.append((call, answered))
        if 200 <= response.status < 300:
            # every route has its own bucket, as on Discord; plenty left so nothing waits
            bucket = re.sub(r"\d+", "id", f"{call.method}{call.path}")
            response.headers.update(
                {
                    "X-RateLimit-Limit": "50",
                    "X-RateLimit-Remaining": "49",
                    "X-RateLimit-Reset-After": "1.000",
                    "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
                    "X-RateLimit-Bucket": f"fake-{abs(hash(bucket)):x}",
                }
            )
        return response

    def _injected_failure(self, call: Call) -> web.Response | None:
        for failure in self._failures:
            if failure.times > 0 and failure.method == call.method and failure.pattern.fullmatch(call.path):
                failure.times -= 1
                return _json(failure.body, failure.status, failure.headers)
        return None

    async def _route(self, call: Call, request: web.Request) -> web.Response:
        p, m = call.path, call.method
        if m == "GET" and p == "/users/@me":
            return _ok(self.bot_user())
        if m == "GET" and p == "/oauth2/applications/@me":
            return _ok(self._app_info())
        if match := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p):
            if m == "PUT":
                return self._register(int(match[2]) if match[2] else None, call.body)
            if m == "GET":
                return _ok(self.commands.get(int(match[2]) if match[2] else None, []))
        if m == "POST" and p == "/users/@me/channels":
            return self._open_dm(call.body or {})
        if match := re.fullmatch(r"/channels/(\d+)/messages", p):
            if m == "POST":
                return self._create_message(int(match[1]), call.body or {}, call.files)
            if m == "GET":
                return self._history(int(match[1]), int(call.query.get("limit", 50)))
        if (match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p)) and m == "PATCH":
            return self._edit_message(int(match[1]), int(match[2]), call.body or {}, call.files)
        if (match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", p)) and m == "POST":
            return self._start_thread(int(match[1]), int(match[2]), call.body or {})
        if (match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p)) and m == "POST":
            return self._callback(int(match[1]), call.body or {}, call.files, call.query)
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)(/messages/@original)?", p):
            return self._webhook(m, match[2], bool(match[3]), call.body or {}, call.files)
        return _error(404, 0, f"404: Not Found ({m} {p} is not modelled by the fake)")

    # ------------------------------------------------------ users and apps

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": str(self.BOT_ID),
            "username": "lanewarden",
            "discriminator": "0",
            "global_name": "Lanewarden",
            "avatar": None,
            "bot": True,
            "verified": True,
            "flags": 0,
            "mfa_enabled": False,
        }

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": str(self.APP_ID),
            "name": "Lanewarden",
            "description": "",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "owner": user_payload(self.OWNER_ID, "owner"),
            "verify_key": "00" * 32,
            "flags": 0,
        }

    def _register(self, guild_id: int | None, commands: list[dict[str, Any]]) -> web.Response:
        registered = []
        for command in commands:
            stored = {
                "id": str(self.new_id()),
                "application_id": str(self.APP_ID),
                "version": str(self.new_id()),
                "default_member_permissions": None,
                "type": 1,
                **command,
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            registered.append(stored)
        self.commands[guild_id] = registered
        return _ok(registered)

    # ------------------------------------------------------------ messages

    def _message(
        self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]], *, flags: int = 0
    ) -> dict[str, Any]:
        attachments = [self._attachment(name, data) for name, data in files]
        return {
            "id": str(self.new_id()),
            "channel_id": str(channel_id),
            "author": self.bot_user(),
            "content": body.get("content") or "",
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": flags | int(body.get("flags") or 0),
            "nonce": body.get("nonce"),
            "allowed_mentions": body.get("allowed_mentions"),
            **({"message_reference": body["message_reference"]} if body.get("message_reference") else {}),
        }

    def _attachment(self, name: str, data: bytes) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/attachments/{name}"
        return {
            "id": str(self.new_id()),
            "filename": name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": "image/png" if name.endswith(".png") else "text/plain",
            "data": data,
        }

    def _open_dm(self, body: dict[str, Any]) -> web.Response:
        recipient = body.get("recipient_id")
        if not str(recipient or "").isdigit():
            return _error(400, 50035, "Invalid Form Body")
        user_id = int(str(recipient))
        if user_id in self.unknown_users:
            return _error(404, 10013, "Unknown User")
        channel_id = self.dm_channels.setdefault(user_id, self.new_id())
        self.channels.add(channel_id)
        dm = {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0}
        return _ok({**dm, "recipients": [user_payload(user_id, f"user{user_id % 1000}")]})

    def _create_message(
        self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> web.Response:
        if channel_id not in self.channels and channel_id not in self.threads:
            return _error(404, 10003, "Unknown Channel")
        if any(self.dm_channels.get(user) == channel_id for user in self.dms_refused):
            return _error(403, 50007, "Cannot send messages to this user")
        if refusal := message_refusal(body):
            return _json(refusal, 400)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            existing = self._nonces.get((self.BOT_ID, str(nonce)))
            if existing is not None:
                return _ok(self.messages[existing])
        message = self._message(channel_id, body, files)
        self.messages[int(message["id"])] = message
        if nonce is not None:
            self._nonces[(self.BOT_ID, str(nonce))] = int(message["id"])
        return _ok(message)

    def _edit_message(
        self, channel_id: int, message_id: int, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> web.Response:
        message = self.messages.get(message_id)
        if message is None or int(message["channel_id"]) != channel_id:
            return _error(404, 10008, "Unknown Message")
        if refusal := message_refusal(body):
            return _json(refusal, 400)
        _apply_edit(message, body, [self._attachment(n, d) for n, d in files])
        return _ok(message)

    def _history(self, channel_id: int, limit: int) -> web.Response:
        if channel_id not in self.channels and channel_id not in self.threads:
            return _error(404, 10003, "Unknown Channel")
        found = sorted(self.channel_messages(channel_id), key=lambda m: int(m["id"]), reverse=True)
        # Discord does not return a message's nonce once it is stored
        return _ok([{k: v for k, v in m.items() if k != "nonce"} for m in found[:limit]])

    def _start_thread(self, channel_id: int, message_id: int, body: dict[str, Any]) -> web.Response:
        message = self.messages.get(message_id)
        if message is None or int(message["channel_id"]) != channel_id:
            return _error(404, 10008, "Unknown Message")
        if message_id in self.threads:
            return _error(400, 160004, "A thread has already been created for this message")
        if channel_id in self.threads:
            return _error(400, 50024, "Cannot execute action on this channel type")
        if refusal := thread_name_refusal(body.get("name")):
            return _json(refusal, 400)
        thread = {
            "id": str(message_id),
            "type": 11,
            "parent_id": str(channel_id),
            "name": body.get("name"),
            "owner_id": str(self.BOT_ID),
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": datetime.now(UTC).isoformat(),
                "locked": False,
            },
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self.threads[message_id] = thread
        return _ok(thread)

    # -------------------------------------------------------- interactions

    def _log_for_token(self, token: str) -> InteractionLog:
        return self.interactions[int(token.removeprefix("tok-"))]

    def _callback(
        self, interaction_id: int, body: dict[str, Any], files: list[tuple[str, bytes]], query: dict[str, str]
    ) -> web.Response:
        log = self.interactions[interaction_id]
        if log.callbacks:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        kind, data = int(body["type"]), body.get("data") or {}
        refusal = (
            choices_refusal(data.get("choices") or []) if kind == 8 else message_refusal(data, ("data",))
        )
        if refusal:
            # the interaction stays unanswered: its user sees "The application did not respond"
            log.refusals.append(refusal)
            log.finished.set()
            return _json(refusal, 400)
        log.callbacks.append((kind, data))
        message = None
        if kind == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
            message = log.original = self._message(0, data, files)
            log.finished.set()
        elif kind == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking…"
            message = log.original = self._message(0, {}, [], flags=LOADING | int(data.get("flags") or 0))
        elif kind == 6:  # DEFERRED_UPDATE_MESSAGE: the component's message is edited later
            log.original = dict(self._component_message(interaction_id))
        elif kind == 7:  # UPDATE_MESSAGE
            message = log.original = dict(self._component_message(interaction_id))
            _apply_edit(message, data, [self._attachment(n, d) for n, d in files])
            log.finished.set()
        elif kind == 8:  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
            log.choices = data.get("choices", [])
            log.finished.set()
        if "with_response" not in query:
            return web.Response(status=204)
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction_id),
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
            }
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"] = {"type": kind, "message": message}
        return _ok(response)

    def _component_message(self, interaction_id: int) -> dict[str, Any]:
        return self._component_messages[interaction_id]

    def _webhook(
        self, method: str, token: str, original: bool, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> web.Response:
        log = self._log_for_token(token)
        if method in ("POST", "PATCH") and (refusal := message_refusal(body)):
            log.refusals.append(refusal)
            log.finished.set()
            return _json(refusal, 400)
        if original:
            if log.original is None or log.original_deleted:
                return _error(404, 10008, "Unknown Message")
            if method == "PATCH":
                log.original["flags"] = int(log.original.get("flags", 0)) & ~LOADING
                _apply_edit(log.original, body, [self._attachment(n, d) for n, d in files])
                log.finished.set()
                return _ok(log.original)
            if method == "DELETE":
                log.original_deleted = True
                return web.Response(status=204)
            return _ok(log.original)
        if method == "POST":
            message = self._message(0, body, files)
            log.followups.append(message)
            log.finished.set()
            return _ok(message)
        return _error(405, 0, "405: Method Not Allowed")


def _apply_edit(message: dict[str, Any], body: dict[str, Any], uploaded: list[dict[str, Any]]) -> None:
    for key in ("content", "embeds", "components", "flags"):
        if key in body:
            message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
    if "attachments" in body or uploaded:
        # kept: the listed attachments that already exist; added: the uploaded files
        kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
        kept = [a for a in message.get("attachments", []) if str(a["id"]) in kept_ids]
        message["attachments"] = kept + uploaded
    message["edited_timestamp"] = datetime.now(UTC).isoformat()


async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        payload: Any = None
        files: list[tuple[str, bytes]] = []
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            else:
                files.append((part.filename or "", bytes(await part.read())))  # type: ignore[union-attr]
        return payload, files
    if not request.can_read_body:
        return None, []
    text = await request.text()
    return (json.loads(text) if text else None), []


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # exactly "application/json": discord.py only decodes bodies with that content type
    return web.Response(
        body=json.dumps(data, default=_bytes).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _ok(data: Any) -> web.Response:
    return _json(data)


def _bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    raise TypeError(type(value))


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status)
