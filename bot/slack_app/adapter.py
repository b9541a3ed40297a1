"""The Slack adapter: one slack-bolt ``AsyncApp`` behind either transport.

- Socket Mode (``[slack] mode = "socket"``, the default): SLACK_APP_TOKEN opens a
  WebSocket to Slack (``apps.connections.open``); no public URL is needed. The SDK
  reconnects by itself; the first connection is made in the background so a Slack
  outage at boot does not stop the board.
- HTTP mode (``mode = "http"``): Slack posts to ``[slack] events_path`` (default
  /slack/events) on the [http] endpoint. The signature (SLACK_SIGNING_SECRET) and the
  timestamp (at most 5 minutes old: no replays) are checked on the raw bytes before
  anything is parsed (http_guard.py); only then does slack-bolt see the request.

Tokens come from the environment only and are never logged. ``[slack] api_base``
points the Web API client elsewhere (a proxy, or the tests' fake Slack).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web
from lanewarden.bot.chat import AdapterContext
from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.bot.slack_app.http_guard import RequestGuard
from lanewarden.bot.slack_app.identity import SlackIdentity
from lanewarden.bot.slack_app.listeners import SlackListeners
from lanewarden.bot.slack_app.sink import SlackSink
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import ConfigError
from lanewarden.core.executor import Executor
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("lanewarden.slack")

DEFAULT_API_BASE = "https://slack.com/api/"
WEB_API_TIMEOUT_SECONDS = 15
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})


class SlackAdapter:
    name = "slack"

    def __init__(
        self,
        config: LanewardenConfig,
        *,
        bot_token: str,
        app_token: str | None = None,
        signing_secret: str | None = None,
    ) -> None:
        self.config = config
        self.mode = config.slack.mode
        self._app_token = app_token
        self._signing_secret = signing_secret
        # no SDK-level retries: a retried post could duplicate a message; the outbox
        # retries instead, with the idempotency check (sink.py)
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=config.slack.api_base or DEFAULT_API_BASE,
            retry_handlers=[],
            # well inside the outbox's 60 s claim, so a hung call cannot outlive its claim
            timeout=WEB_API_TIMEOUT_SECONDS,
            logger=logging.getLogger("lanewarden.slack.api"),
        )
        self._sink = SlackSink(self.client)
        self.app: AsyncApp | None = None
        self.listeners: SlackListeners | None = None
        self.bot_user_id: str | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._guard = RequestGuard(signing_secret or "")

    @classmethod
    def from_env(cls, config: LanewardenConfig, env: Mapping[str, str]) -> SlackAdapter:
        bot_token = env.get("SLACK_BOT_TOKEN", "")
        if not bot_token:
            raise ConfigError("the Slack adapter needs SLACK_BOT_TOKEN (xoxb-...) in the environment")
        if config.slack.mode == "socket" and not env.get("SLACK_APP_TOKEN"):
            raise ConfigError(
                "slack.mode = 'socket' needs SLACK_APP_TOKEN (xapp-..., scope connections:write) in the "
                "environment; or set slack.mode = 'http' with SLACK_SIGNING_SECRET"
            )
        if config.slack.mode == "http" and not env.get("SLACK_SIGNING_SECRET"):
            raise ConfigError("slack.mode = 'http' needs SLACK_SIGNING_SECRET in the environment")
        return cls(
            config,
            bot_token=bot_token,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        )

    @property
    def sink(self) -> SlackSink:
        return self._sink

    async def start(self, ctx: AdapterContext) -> None:
        if self.mode == "http" and ctx.http is None:
            raise ConfigError(
                "slack.mode = 'http' needs the HTTP endpoint: set [http] listen (e.g. 0.0.0.0:8787) "
                f"and point the app's Request URLs at {self.config.slack.events_path}"
            )
        await self._check_token()
        bolt_log = logging.getLogger("lanewarden.slack.bolt")
        if not any(isinstance(f, _ExpectedBoltNotice) for f in bolt_log.filters):
            bolt_log.addFilter(_ExpectedBoltNotice())
        self.app = AsyncApp(
            client=self.client,
            signing_secret=self._signing_secret or "",
            logger=bolt_log,
            # ack first, work after: listeners run as tasks once they have acked
            process_before_response=False,
            # only HTTP requests carry signatures; Socket Mode is authenticated by its token
            request_verification_enabled=self.mode == "http",
            ssl_check_enabled=self.mode == "http",
            url_verification_enabled=self.mode == "http",
        )
        self.listeners = SlackListeners(
            board=ctx.board,
            executor=Executor(ctx.board, audit_commands=True),
            identity=SlackIdentity(self.client, self.config.access),
            client=self.client,
        )
        self.listeners.register(self.app)
        if self.mode == "http":
            assert ctx.http is not None
            ctx.http.add_route("POST", self.config.slack.events_path, self.handle_http)
            log.info("slack: HTTP mode, Slack posts to %s", self.config.slack.events_path)
        else:
            self._socket = AsyncSocketModeHandler(
                self.app, app_token=self._app_token, logger=logging.getLogger("lanewarden.slack.socket")
            )
            # connect() retries until Slack answers; do not hold up the rest of serve meanwhile
            self._connecting = asyncio.create_task(self._socket.connect_async(), name="slack-socket-connect")
            log.info("slack: Socket Mode, connecting")

    async def _check_token(self) -> None:
        """Fail at start on a refused token (a config problem); a Slack outage only warns."""
        try:
            answer = await self.client.auth_test()
        except SlackApiError as exc:
            error = slack_error_code(exc)
            if error in AUTH_ERRORS:
                raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({error}): check the token") from None
            log.warning("slack: auth.test failed (%s); carrying on", error)
            return
        except (OSError, TimeoutError) as exc:
            log.warning("slack: cannot reach Slack yet (%s); carrying on", type(exc).__name__)
            return
        self.bot_user_id = answer.get("user_id")
        log.info("slack: connected as %s in team %s", answer.get("user"), answer.get("team"))

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /slack/events: verified on the raw bytes first, then slack-bolt dispatches."""
        assert self.app is not None
        refused = await self._guard.check(request)
        if refused is not None:
            return refused
        try:
            bolt_request = await to_bolt_request(request)
            bolt_response = await self.app.async_dispatch(bolt_request)
        except Exception as exc:  # signed by Slack, but not something bolt can read
            return self._guard.refuse(400, f"a signed request bolt could not read ({type(exc).__name__})")
        return await to_aiohttp_response(bolt_response)

    async def stop(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None


class _ExpectedBoltNotice(logging.Filter):
    """AsyncApp also reads SLACK_BOT_TOKEN from the environment and warns that the
    client we give it (the one with ``api_base`` and no SDK retries) wins. That is the
    intent; the warning would only puzzle operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("As you gave `client` as well")
