"""The door of Slack's HTTP mode: the signature is checked on the raw bytes, before parsing.

Slack signs ``v0:<timestamp>:<body>`` with the app's signing secret (HMAC-SHA256, header
``X-Slack-Signature``) and sends the timestamp in ``X-Slack-Request-Timestamp``. Anyone
can reach a public events URL, so nothing is decoded, parsed or dispatched before that
signature holds: a request without one, with a wrong one, or older than five minutes
(a replay) gets 401; a signed body that is not UTF-8 gets 400. Refusals are logged as one
line at most per minute, with a count, so a scan cannot fill the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from aiohttp import web

log = logging.getLogger("lanewarden.slack")

MAX_AGE_SECONDS = 300  # Slack's own advice: refuse older requests as replays
LOG_EVERY_SECONDS = 60.0


class RequestGuard:
    def __init__(self, signing_secret: str) -> None:
        self._secret = signing_secret.encode()
        self._refused = 0
        self._logged_at = -LOG_EVERY_SECONDS

    async def check(self, request: web.Request) -> web.Response | None:
        """None when the request is Slack's and readable; else the refusal to send."""
        body = await request.read()  # aiohttp caches it: bolt reads the same bytes again
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
            return self.refuse(401, "unsigned request")
        if abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
            return self.refuse(401, "stale timestamp (a replay?)")
        signed = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(self._secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return self.refuse(401, "bad signature")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return self.refuse(400, "a signed body that is not UTF-8")
        return None

    def refuse(self, status: int, reason: str) -> web.Response:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning(
                "slack: refused %d request(s) to the events URL in the last minute (latest: %s)",
                self._refused,
                reason,
            )
            self._refused, self._logged_at = 0, now
        return web.Response(status=status, text="invalid request" if status == 400 else "unauthorized")
