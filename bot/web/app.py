"""The web board's routes on the [http] endpoint: pages, actions, sign-in, the live stream.

Only ``/healthz``, ``/metrics``, the sign-in pages and the static files answer without
a session. Pages are plain HTML (they read fine without JavaScript); every
state-changing request is a POST with the session's CSRF token, and every action is a
command of the grammar run by the shared executor (bot/web/actions.py).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from lanewarden.bot.render import render_text
from lanewarden.bot.web.actions import command_line
from lanewarden.bot.web.columns import BY_KEY, Card, Filters, gateway_of, load_board, load_cards
from lanewarden.bot.web.live import KEEPALIVE_SECONDS, LiveHub, sse
from lanewarden.bot.web.security import COOKIE_NAME, Signer
from lanewarden.bot.web.strip import Strip, load_strip
from lanewarden.core.access import Actor
from lanewarden.core.board import MOVES, Board
from lanewarden.core.clock import age, utcnow
from lanewarden.core.errors import AccessDenied, Conflict, LanewardenError, NotFound
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.results import Result, TaskChanged, TaskShown
from lanewarden.core.schema import events
from lanewarden.core.signin import SignIn, end_session, load_session, peek_link, redeem_link
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.web")
STATIC = Path(__file__).parent / "static"
Handler = Callable[..., Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # sign-in links carry their token in the path: never hand it to another site
    # ("no-referrer" would also make browsers send ``Origin: null`` on our own forms)
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class WebUser:
    session_id: str
    sign_in: SignIn
    csrf: str

    @property
    def actor(self) -> Actor:
        return Actor(id=self.sign_in.actor_id, role=self.sign_in.role, channel=None, name=self.sign_in.name)

    @property
    def actor_id(self) -> str:
        return self.sign_in.actor_id

    @property
    def role(self) -> str:
        return self.sign_in.role

    @property
    def display(self) -> str:
        return self.sign_in.name or self.sign_in.actor_id

    @property
    def can_operate(self) -> bool:
        return self.actor.allows("operator")

    @property
    def is_admin(self) -> bool:
        return self.actor.allows("admin")


def _clock(value: Any) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


class WebBoard:
    def __init__(self, board: Board, *, secret: bytes) -> None:
        self.board = board
        self.config = board.config
        self.signer = Signer(secret)
        self.reader = Executor(board)
        self.writer = Executor(board, audit_commands=True)
        self.env = Environment(
            loader=PackageLoader("lanewarden.bot.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["age"] = age
        self.env.filters["clock"] = _clock
        self.hub = LiveHub(board, self.render_card, self.render_strip)
        self._hub_task: asyncio.Task[None] | None = None
        self.secure_cookies = (self.config.web.public_url or "").startswith("https://")

    # ------------------------------------------------------------ wiring

    def install(self, app: web.Application) -> None:
        """Add the routes to the [http] endpoint's application (before it starts)."""
        r = app.router
        r.add_get("/", self.board_page)
        r.add_get("/board/columns", self.columns_fragment)
        r.add_get("/columns/{key}", self.column_page)
        r.add_get(r"/tasks/{id:\d+}", self.task_page)
        r.add_get(r"/tasks/{id:\d+}/cancel", self.cancel_page)
        r.add_post("/act", self.act)
        r.add_get("/events", self.stream)
        r.add_get("/signin", self.signin_help)
        r.add_get("/signin/{token}", self.signin_page)
        r.add_post("/signin/{token}", self.signin)
        r.add_post("/signout", self.signout)
        r.add_static("/static", STATIC, append_version=False)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)
        app.middlewares.append(self._headers)
        self.board.subscribe(self.hub.wake)

    async def _start(self, app: web.Application) -> None:
        self._hub_task = asyncio.create_task(self.hub.run(), name="web-live")

    async def _stop(self, app: web.Application) -> None:
        self.hub.close()
        if self._hub_task is not None:
            self._hub_task.cancel()
            await asyncio.gather(self._hub_task, return_exceptions=True)

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not request.path.startswith(("/healthz", "/readyz", "/metrics", "/slack/")):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if not request.path.startswith("/static/"):
                response.headers.setdefault("Cache-Control", "no-store")
        return response

    # ------------------------------------------------------------ rendering

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = self.env.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html")

    def render_card(self, card: Card) -> str:
        return self.env.get_template("_card.html").render(card=card)

    def render_strip(self, strip: Strip) -> str:
        return self.env.get_template("_strip.html").render(strip=strip)

    # ------------------------------------------------------------ sessions

    async def user(self, request: web.Request) -> WebUser | None:
        session_id = self.signer.session_id(request.cookies.get(COOKIE_NAME))
        if session_id is None:
            return None
        sign_in = await asyncio.to_thread(load_session, self.board, session_id)
        if sign_in is None:
            return None
        return WebUser(session_id, sign_in, self.signer.csrf_token(session_id))

    async def _page_user(self, request: web.Request) -> WebUser:
        """The signed-in user of a page, or a redirect to the sign-in help."""
        user = await self.user(request)
        if user is None:
            raise web.HTTPSeeOther("/signin")
        return user

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # older browsers omit it on same-origin posts; the CSRF token still guards
        return urlsplit(origin).netloc == request.host

    async def _post_user(self, request: web.Request, form: dict[str, str]) -> WebUser:
        user = await self.user(request)
        if user is None:
            raise web.HTTPUnauthorized(text="sign in first\n")
        token = form.get("csrf") or request.headers.get("X-CSRF-Token")
        if not self._same_origin(request) or not self.signer.csrf_ok(user.session_id, token):
            raise web.HTTPForbidden(
                text="this request did not come from the board page (CSRF check failed)\n"
            )
        return user

    # ------------------------------------------------------------ pages

    def _filters(self, request: web.Request) -> Filters:
        q = request.query
        profile = q.get("profile") or None
        gateway = q.get("gateway") or None
        return Filters(
            profile=profile if profile in self.config.profiles else None,
            gateway=gateway if gateway in self.config.gateways else None,
            query=(q.get("q") or "").strip()[:200] or None,
        )

    @staticmethod
    def _filter_query(filters: Filters) -> str:
        pairs = [
            (k, v)
            for k, v in (("q", filters.query), ("profile", filters.profile), ("gateway", filters.gateway))
            if v
        ]
        return ("&" + urlencode(pairs)) if pairs else ""

    def _board_data(self, filters: Filters, only: str | None = None, offset: int = 0) -> dict[str, Any]:
        page_size = self.config.web.page_size
        with self.board.db.read() as conn:
            view = load_board(conn, self.config, filters, page_size=page_size, only=only, offset=offset)
            cursor = conn.execute(select(func.max(events.c.id))).scalar() or 0
        return {
            "view": view,
            "cursor": cursor,
            "filters": filters,
            "filter_query": self._filter_query(filters),
            "page_size": page_size,
        }

    async def board_page(self, request: web.Request) -> web.StreamResponse:
        user = await self._page_user(request)
        filters = self._filters(request)
        data = await asyncio.to_thread(self._board_data, filters)
        strip = await asyncio.to_thread(load_strip, self.board.db, self.config)
        return self.render(
            "board.html",
            user=user,
            strip=strip,
            profiles=sorted(self.config.profiles),
            gateways=sorted(self.config.gateways),
            **self._notice(request),
            **data,
        )

    async def columns_fragment(self, request: web.Request) -> web.StreamResponse:
        user = await self.user(request)
        if user is None:
            raise web.HTTPUnauthorized(text="sign in first\n")
        data = await asyncio.to_thread(self._board_data, self._filters(request))
        return self.render("_columns.html", user=user, **data)

    async def column_page(self, request: web.Request) -> web.StreamResponse:
        user = await self._page_user(request)
        key = request.match_info["key"]
        if key not in BY_KEY:
            raise web.HTTPNotFound(text=f"no column {key!r}\n")
        try:
            offset = max(0, int(request.query.get("offset", "0")))
        except ValueError:
            offset = 0
        data = await asyncio.to_thread(self._board_data, self._filters(request), key, offset)
        page = data["view"].columns[0]
        template = "_more.html" if request.query.get("fragment") else "column.html"
        return self.render(template, user=user, page=page, **data)

    async def task_page(self, request: web.Request) -> web.StreamResponse:
        user = await self._page_user(request)
        task_id = int(request.match_info["id"])
        try:
            result = await asyncio.to_thread(
                self.reader.execute, parse(["show", f"--id={task_id}"]), user.actor
            )
        except NotFound as exc:
            return self.render(
                "message.html", 404, user=user, heading="Not found", lines=[str(exc)], back="/"
            )
        assert isinstance(result, TaskShown)
        detail = result.detail
        cards = await asyncio.to_thread(self._cards, [task_id])
        task = detail.task
        moves = sorted(MOVES.get(task.status, frozenset()))
        return self.render(
            "task.html",
            user=user,
            detail=detail,
            column=cards[0].column if cards else None,
            gateway=gateway_of(self.config, task.profile),
            moves=moves,
            can_edit_priority=True,
            **self._notice(request),
        )

    def _cards(self, ids: list[int]) -> list[Card]:
        with self.board.db.read() as conn:
            return load_cards(conn, self.config, ids)

    async def cancel_page(self, request: web.Request) -> web.StreamResponse:
        user = await self._page_user(request)
        try:
            task = await asyncio.to_thread(self.board.get, int(request.match_info["id"]))
        except NotFound as exc:
            return self.render(
                "message.html", 404, user=user, heading="Not found", lines=[str(exc)], back="/"
            )
        return self.render("confirm_cancel.html", user=user, task=task)

    @staticmethod
    def _notice(request: web.Request) -> dict[str, Any]:
        notice = request.query.get("notice")
        return {"notice": notice[:500] if notice else None, "failed": request.query.get("failed") == "1"}

    # ------------------------------------------------------------ actions

    async def act(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        user = await self._post_user(request, form)
        wants_json = "application/json" in request.headers.get("Accept", "")
        action = form.get("action", "")
        try:
            if action == "cancel" and form.get("confirm") != "yes":
                raise Conflict("cancelling needs a confirmation (the Cancel… button asks for it)")
            argv = command_line(action, form)
            command = parse(argv)
            result = await asyncio.to_thread(
                self.writer.execute, command, user.actor, source_text="web: " + shlex.join(argv)
            )
            message, ok, status = _message(result), True, 200
        except LanewardenError as exc:
            message, ok, status = str(exc), False, _status_for(exc)
        except DBAPIError as exc:
            log.warning("web: %s: database unavailable: %s", action, type(exc.orig).__name__)
            message, ok, status = "the board database is unavailable right now; try again", False, 503
        if wants_json:
            return web.json_response({"ok": ok, "message": message}, status=status)
        query = {"notice": message} | ({} if ok else {"failed": "1"})
        raise web.HTTPSeeOther(_local(form.get("next"), request) + "?" + urlencode(query))

    # ------------------------------------------------------------ live stream

    async def stream(self, request: web.Request) -> web.StreamResponse:
        user = await self.user(request)
        if user is None:
            raise web.HTTPUnauthorized(text="sign in first\n")
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            since = 0
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        listener = self.hub.add()
        try:
            await response.write(b"retry: 2000\n\n")
            head = await asyncio.to_thread(self._head)
            if head > since:  # something changed between the page and this stream
                await response.write(sse("resync", {"cursor": head}))
            while not listener.closed:
                try:
                    message = await asyncio.wait_for(listener.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    # a signed-out or expired session loses its stream here
                    if await asyncio.to_thread(load_session, self.board, user.session_id) is None:
                        break
                    await response.write(b": keepalive\n\n")
                    continue
                if message is None:
                    break
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.remove(listener)
        return response

    def _head(self) -> int:
        with self.board.db.read() as conn:
            return conn.execute(select(func.max(events.c.id))).scalar() or 0

    # ------------------------------------------------------------ sign-in

    async def signin_help(self, request: web.Request) -> web.StreamResponse:
        if await self.user(request) is not None:
            raise web.HTTPSeeOther("/")
        return self.render(
            "message.html",
            401,
            user=None,
            heading="Sign in to the board",
            lines=[
                "The board signs people in with one-time links.",
                "In Slack or Discord, type /kanban web: the answer, only for you, holds your link.",
                "On the server: lanewarden web link --user NAME --role viewer|operator|admin",
                *([self._notice(request)["notice"]] if request.query.get("notice") else []),
            ],
            # the session cookie is SameSite=Strict: a link followed from chat arrives without
            # it, and one click from here (same site) brings it back
            back="/",
            back_label="Signed in already? Open the board",
        )

    async def signin_page(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        sign_in = await asyncio.to_thread(peek_link, self.board, token)
        if sign_in is None:
            return self._link_gone()
        return self.render(
            "message.html",
            user=None,
            heading="Sign in to the board",
            lines=["This link works once and only for a few minutes."],
            sign_in=sign_in,
            action=f"/signin/{token}",
        )

    def _link_gone(self) -> web.Response:
        return self.render(
            "message.html",
            410,
            user=None,
            heading="This sign-in link no longer works",
            lines=["Links expire after a few minutes and work once. Ask for a new one with /kanban web."],
        )

    async def signin(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            raise web.HTTPForbidden(text="sign in from the link's own page\n")
        redeemed = await asyncio.to_thread(
            redeem_link, self.board, request.match_info["token"], session_hours=self.config.web.session_hours
        )
        if redeemed is None:
            return self._link_gone()
        session_id, sign_in = redeemed
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE_NAME,
            self.signer.cookie(session_id, int(sign_in.expires_at.timestamp())),
            max_age=int((sign_in.expires_at - utcnow()).total_seconds()),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies or request.secure,
        )
        raise response

    async def signout(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        user = await self._post_user(request, form)
        await asyncio.to_thread(end_session, self.board, user.session_id)
        response = web.HTTPSeeOther("/signin?" + urlencode({"notice": "You are signed out."}))
        response.del_cookie(COOKIE_NAME, path="/")
        raise response


def _message(result: Result) -> str:
    if isinstance(result, TaskChanged):
        return result.message
    return render_text(result)


def _status_for(exc: LanewardenError) -> int:
    if isinstance(exc, AccessDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    return 400


def _local(target: str | None, request: web.Request) -> str:
    """Only paths on this site: a redirect must never leave for another host."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target.split("?", 1)[0]
    referer = urlsplit(request.headers.get("Referer", ""))
    if referer.netloc == request.host and referer.path.startswith("/"):
        return referer.path
    return "/"
