"""A fake Slack, served on 127.0.0.1 (port 0): the Web API, response_url webhooks,
the files.uploadV2 upload URL and a Socket Mode WebSocket.

Lanewarden talks to it through the real slack-sdk ``AsyncWebClient`` (``[slack]
api_base``) and slack-bolt's ``AsyncSocketModeHandler``, so everything between our
code and the wire is the libraries' own. It keeps messages per channel (with their
metadata and threads) so ``conversations.history`` answers like Slack, records every
call with the monotonic time it arrived, and fails on demand: 429 with Retry-After,
500, a 500 *after* storing the message (Slack did the work but the answer was lost),
or a held answer (the caller dies while waiting). Like Slack it refuses what Block Kit
does not allow (tests/fakes/slack_limits.py): ``invalid_blocks`` and ``msg_too_long``
from the Web API, HTTP 400 ``invalid_blocks`` from a response_url, and a Socket Mode ack
Slack would not show is recorded in ``refusals``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack_limits import VIEW_BLOCKS, block_errors, message_refusal

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret"
BOT_USER_ID = "UBOT"
TEAM_ID = "T0001"

# methods that create a message (and so may be stored before a failure is answered)
POSTING_METHODS = ("chat.postMessage",)


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Failure:
    status: int  # 429, 500, or 200 with ok=false
    retry_after: float | None = None
    error: str = "internal_error"
    store_first: bool = False  # do the work, then answer with the failure
    channel: str | None = None  # only for calls to this channel


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.responses: list[dict[str, Any]] = []  # bodies posted to response_url
        self.uploads: dict[str, bytes] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}  # channel -> messages, oldest first
        self.usergroups: list[dict[str, Any]] = []
        self.closed_channels: set[str] = set()  # answer not_in_channel
        # public channels the bot has not joined: chat:write.public lets it post there, but
        # reading the channel (conversations.history / replies) answers not_in_channel
        self.unjoined_channels: set[str] = set()
        self.acks: dict[str, dict[str, Any]] = {}  # socket mode envelope id -> ack message
        self.refusals: list[tuple[str, Any]] = []  # (where, Slack's answer) for every refused body
        self.views: list[dict[str, Any]] = []  # modals opened (views.open)
        self.ephemerals: list[dict[str, Any]] = []  # chat.postEphemeral: seen by one user only
        # conversations.open: the app's DM channel with each user (the same one every time),
        # users Slack does not know (user_not_found) and deactivated ones (user_disabled)
        self.dm_channels: dict[str, str] = {}
        self.unknown_users: set[str] = set()
        self.disabled_users: set[str] = set()
        self.socket_connections = 0
        self._failures: dict[str, list[Failure]] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._last_ts = 0.0
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        for hold in self._holds.values():
            hold.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, key: str = "r1") -> str:
        return f"{self.url}/response/{key}"

    # ------------------------------------------------------------ test controls

    def fail(self, method: str, failure: Failure, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (to ``failure.channel``, if set) fail."""
        self._failures.setdefault(method, []).extend([failure] * times)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of ``method`` do their work, then wait for the returned event before answering."""
        self._holds[method] = asyncio.Event()
        return self._holds[method]

    def release(self, method: str) -> None:
        """Answer the held calls of ``method`` (to whoever still listens) and stop holding."""
        hold = self._holds.pop(method, None)
        if hold is not None:
            hold.set()

    def calls_to(self, method: str, **where: Any) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and c.answer.get("ok") and all(c.args.get(k) == v for k, v in where.items())
        ]

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Every message posted (top level and thread replies), oldest first."""
        channels = [channel] if channel else list(self.messages)
        return [m for ch in channels for m in self.messages.get(ch, [])]

    def posts_for_outbox(self, outbox_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.posts()
            if (m.get("metadata") or {}).get("event_payload", {}).get("outbox_id") == outbox_id
        ]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Until ``predicate()`` is truthy; it is checked after every call the fake serves."""
        async with self._changed:
            try:
                return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"fake Slack: condition not met in {timeout}s; calls: "
                    f"{[(c.method, c.status) for c in self.calls][-20:]}; responses: {self.responses[-5:]}"
                ) from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ socket mode

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Send a Socket Mode envelope (``slash_commands``, ``interactive``, ``events_api``)."""
        await self.wait_for(lambda: self._sockets, timeout=15)
        envelope_id = f"env-{next(self._ids)}"
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        await self._sockets[-1].send_str(json.dumps(message))
        return envelope_id

    async def ack_for(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        await self.wait_for(lambda: envelope_id in self.acks, timeout)
        return self.acks[envelope_id]

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "connection_info": {"app_id": "A0001"},
                    "debug_info": {"host": "fake"},
                }
            )
        )
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = data
                        errors = block_errors((data.get("payload") or {}).get("blocks") or [])
                        if errors:
                            self.refusals.append(("ack", errors))
                        await self._notify()
        finally:
            self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------ HTTP handlers

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["_key"] = request.match_info["key"]
        errors = block_errors(body.get("blocks") or [])
        if errors or len(str(body.get("text") or "")) > 40_000:
            self.refusals.append(("response_url", errors or "msg_too_long"))
            await self._notify()
            # what Slack's webhooks answer: 400 with the error as plain text; nothing is shown
            return web.Response(status=400, text="invalid_blocks" if errors else "msg_too_long")
        self.responses.append(body)
        await self._notify()
        return web.Response(text="ok", content_type="text/plain")

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"]}, time.monotonic()))
        await self._notify()
        return web.Response(text="OK - 1", content_type="text/plain")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        call = Call(method, args, time.monotonic())
        self.calls.append(call)
        try:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            token = token or args.get("token", "")
            wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
            if token != wanted:
                return self._answer(call, {"ok": False, "error": "invalid_auth"})
            failure = self._take_failure(method, args)
            if failure is not None and not failure.store_first:
                return self._fail(call, failure)
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return self._answer(call, {"ok": False, "error": "unknown_method"})
            body = handler(args, request)
            if body.get("ok") is False and body.get("error") in (
                "invalid_blocks",
                "msg_too_long",
                "invalid_arguments",
            ):
                self.refusals.append((method, body))
            hold = self._holds.get(method)
            if hold is not None:
                await self._notify()
                await hold.wait()
            if failure is not None:
                return self._fail(call, failure)
            return self._answer(call, body)
        finally:
            await self._notify()

    def _take_failure(self, method: str, args: dict[str, Any]) -> Failure | None:
        queue = self._failures.get(method) or []
        for i, failure in enumerate(queue):
            if failure.channel is None or failure.channel == args.get("channel"):
                return queue.pop(i)
        return None

    @staticmethod
    def _answer(call: Call, body: dict[str, Any]) -> web.Response:
        call.answer = body
        return web.json_response(body)

    @staticmethod
    def _fail(call: Call, failure: Failure) -> web.Response:
        call.status = failure.status
        body = {"ok": False, "error": "ratelimited" if failure.status == 429 else failure.error}
        call.answer = body
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        return web.json_response(body, status=failure.status, headers=headers)

    # ------------------------------------------------------------ Web API methods

    def _m_auth_test(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "lanewarden",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "B0001",
        }

    def _m_apps_connections_open(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        ws_url = self.url.replace("http://", "ws://")
        return {"ok": True, "url": f"{ws_url}/link/?ticket=t{next(self._ids)}"}

    def _m_chat_postMessage(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel = args.get("channel", "")
        if channel in self.closed_channels:
            return {"ok": False, "error": "not_in_channel"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if refusal := message_refusal(args, _json_arg(args.get("blocks"))):
            return refusal
        ts = self._next_ts()
        message = {
            "type": "message",
            "ts": ts,
            "user": BOT_USER_ID,
            "bot_id": "B0001",
            "text": args.get("text", ""),
            "blocks": _json_arg(args.get("blocks")) or [],
            "metadata": _json_arg(args.get("metadata")),
        }
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _next_ts(self) -> str:
        """Slack's ts: the posting time in seconds with microseconds, unique per channel."""
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    def _m_chat_update(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel = args.get("channel", "")
        if refusal := message_refusal(args, _json_arg(args.get("blocks"))):
            return refusal
        for message in self.messages.get(channel, []):
            if message["ts"] == args.get("ts"):
                message["text"] = args.get("text", message["text"])
                message["blocks"] = _json_arg(args.get("blocks")) or message["blocks"]
                message["edited"] = message.get("edited", 0) + 1
                return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]}
        return {"ok": False, "error": "message_not_found"}

    def _m_conversations_history(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel = args.get("channel", "")
        if channel in self.closed_channels | self.unjoined_channels:
            return {"ok": False, "error": "not_in_channel"}
        top = [m for m in self.messages.get(channel, []) if m.get("thread_ts") in (None, m["ts"])]
        return self._page(top, args)

    def _m_conversations_replies(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel, ts = args.get("channel", ""), args.get("ts")
        if channel in self.closed_channels | self.unjoined_channels:
            return {"ok": False, "error": "not_in_channel"}
        thread = [m for m in self.messages.get(channel, []) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        return self._page(thread, args, newest_first=False)

    def _page(self, found: list[dict[str, Any]], args: dict[str, Any], newest_first: bool = True):
        oldest = float(args.get("oldest") or 0)
        found = [m for m in found if float(m["ts"]) >= oldest]
        if newest_first:
            found = found[::-1]
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 100)
        page = found[start : start + limit]
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        shown = [m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in page]
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": shown,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_files_getUploadURLExternal(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        file_id = f"F{next(self._ids):04d}"
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        files = _json_arg(args.get("files")) or []
        if any(f.get("id") not in self.uploads for f in files):
            return {"ok": False, "error": "file_not_found"}
        if args.get("channel_id") in self.closed_channels:
            return {"ok": False, "error": "not_in_channel"}
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}

    def _m_views_publish(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        view = _json_arg(args.get("view"))
        errors = block_errors((view or {}).get("blocks") or [], max_blocks=VIEW_BLOCKS)
        if errors:
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": errors}}
        return {"ok": True, "view": {"id": "V0001", **(view or {})}}

    def _m_views_open(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        view = _json_arg(args.get("view")) or {}
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        errors = block_errors(view.get("blocks") or [], max_blocks=VIEW_BLOCKS)
        if errors:
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": errors}}
        self.views.append(view)
        return {"ok": True, "view": {"id": f"V{next(self._ids):04d}", **view}}

    def _m_chat_postEphemeral(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        if refusal := message_refusal(args, _json_arg(args.get("blocks"))):
            return refusal
        message = {"channel": args.get("channel"), "user": args.get("user"), "text": args.get("text", "")}
        message["blocks"] = _json_arg(args.get("blocks")) or []
        self.ephemerals.append(message)
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_conversations_open(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        """One user: their DM with the app (im:write). Slack answers the existing channel
        again on every call; several users would open a group DM, which Lanewarden never does."""
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if not users and not args.get("channel"):
            return {"ok": False, "error": "users_list_not_supplied"}
        if len(users) != 1:
            return {"ok": False, "error": "not_implemented_by_the_fake"}
        (user,) = users
        if user == BOT_USER_ID:
            return {"ok": False, "error": "cannot_dm_bot"}
        if user in self.unknown_users or not user.startswith(("U", "W")):
            return {"ok": False, "error": "user_not_found"}
        if user in self.disabled_users:
            return {"ok": False, "error": "user_disabled"}
        channel = self.dm_channels.setdefault(user, f"D{len(self.dm_channels) + 1:04d}{user[1:]}"[:11])
        return {"ok": True, "channel": {"id": channel}}

    def _m_usergroups_list(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {"ok": True, "usergroups": self.usergroups}


# ---------------------------------------------------------------- Slack -> the app


def slash_command(
    text: str,
    *,
    user: str = "UADMIN",
    channel: str = "C0001",
    response_url: str,
    command: str = "/kanban",
) -> dict[str, str]:
    """The fields Slack sends for a slash command (form fields in HTTP mode)."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "fake",
        "channel_id": channel,
        "channel_name": "ops",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A0001",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }


def button_click(
    action: str,
    task_id: int,
    *,
    user: str = "UADMIN",
    channel: str | None = "C0001",
    response_url: str | None,
    message_ts: str = "1700000000.000100",
    home: bool = False,
) -> dict[str, Any]:
    """A block_actions payload for a card button (or the same button in App Home)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0001",
        "token": "legacy-verification-token",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "actions": [
            {
                "type": "button",
                "action_id": f"lanewarden.{action}",
                "block_id": f"task-{task_id}",
                "value": str(task_id),
                "action_ts": f"{time.time():.6f}",
                "text": {"type": "plain_text", "text": action.title()},
            }
        ],
    }
    if home:
        payload["container"] = {"type": "view", "view_id": "V0001"}
        payload["view"] = {"id": "V0001", "type": "home", "blocks": []}
    else:
        payload["container"] = {"type": "message", "message_ts": message_ts, "channel_id": channel}
        payload["channel"] = {"id": channel, "name": "ops"}
        payload["message"] = {"type": "message", "ts": message_ts, "text": "card"}
    if response_url:
        payload["response_url"] = response_url
    return payload


def home_opened(user: str = "UADMIN", tab: str = "home", channel: str = "D0001") -> dict[str, Any]:
    """An events_api payload: the user opened the app's Home (or Messages) tab."""
    return _event({"type": "app_home_opened", "user": user, "channel": channel, "tab": tab})


def view_submission(view: dict[str, Any], values: dict[str, Any], *, user: str = "UADMIN") -> dict[str, Any]:
    """The interactive payload of a modal submitted with ``values`` ({block_id: value})."""
    state: dict[str, Any] = {}
    for block in view["blocks"]:
        if block.get("type") != "input" or block["block_id"] not in values:
            continue
        element, value = block["element"], values[block["block_id"]]
        if element["type"] == "static_select":
            field = {
                "type": "static_select",
                "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value},
            }
        else:
            field = {"type": element["type"], "value": value}
        state[block["block_id"]] = {element["action_id"]: field}
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0001",
        "token": "legacy-verification-token",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {**view, "id": "V0009", "team_id": TEAM_ID, "state": {"values": state}},
        "response_urls": [],
    }


def direct_message(text: str, *, user: str = "UADMIN", channel: str = "D0001") -> dict[str, Any]:
    """An events_api payload for message.im: someone wrote to the bot in its DM."""
    ts = f"{time.time():.6f}"
    return _event(
        {
            "type": "message",
            "channel_type": "im",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": TEAM_ID,
        }
    )


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": "A0001",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{next(_EVENT_IDS)}",
        "event_time": int(time.time()),
    }


_EVENT_IDS = itertools.count(int(time.time() * 1000))


async def post_signed(
    url: str,
    body: str,
    *,
    content_type: str = "application/x-www-form-urlencoded",
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
) -> tuple[int, str]:
    """POST as Slack does in HTTP mode: X-Slack-Request-Timestamp and an HMAC signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = signature or SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
    }
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


def form_body(fields: dict[str, str]) -> str:
    return urlencode(fields)


def interactive_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


async def _read_args(request: web.Request) -> dict[str, Any]:
    """slack-sdk sends JSON for some methods and form fields (or a query string) for others."""
    args: dict[str, Any] = dict(parse_qsl(request.query_string))
    if request.content_type == "application/json":
        args.update(await request.json())
    elif request.can_read_body:
        args.update(dict(parse_qsl(await request.text())))
    return args


def _json_arg(value: Any) -> Any:
    """Form-encoded calls carry nested values (blocks, metadata, view) as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
