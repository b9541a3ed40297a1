"""Session cookies and CSRF tokens for the web board.

The cookie carries a random session id and its expiry, signed with HMAC-SHA256; the
database holds the session (hashed, core/signin.py), so signing out in one process ends
it everywhere. Every state-changing request must carry the session's CSRF token, which
is derived from the session id, so it needs no storage of its own.

The signing secret comes from ``LANEWARDEN_WEB_SECRET`` (set the same value on every
host behind one URL) or is generated once into ``$LANEWARDEN_HOME/web-secret`` with mode
0600. It is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from lanewarden.core.clock import utcnow
from lanewarden.core.config import lanewarden_home
from lanewarden.core.errors import ConfigError

log = logging.getLogger("lanewarden.web")

SECRET_ENV = "LANEWARDEN_WEB_SECRET"
SECRET_FILE = "web-secret"
MIN_SECRET_LENGTH = 32
COOKIE_NAME = "lw_session"


def load_secret(env: dict[str, str] | None = None, home: Path | None = None) -> bytes:
    environ = os.environ if env is None else env
    given = environ.get(SECRET_ENV)
    if given:
        if len(given) < MIN_SECRET_LENGTH:
            raise ConfigError(f"{SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters long")
        return given.encode("utf-8")
    path = (home or lanewarden_home()) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together must not each write a different secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    log.info("generated the web board's signing secret in %s (mode 600)", path)
    return secret.encode("utf-8")


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable secret; delete it to have a new one generated")
    return secret.encode("utf-8")


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"lanewarden-web|" + secret).digest()

    def _mac(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}|{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def cookie(self, session_id: str, expires_epoch: int) -> str:
        payload = f"{session_id}.{expires_epoch}"
        return f"{payload}.{self._mac('cookie', payload)}"

    def session_id(self, cookie: str | None) -> str | None:
        """The session id from a cookie whose signature holds and which has not expired."""
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires, mac = cookie.split(".")
        payload = f"{session_id}.{expires}"
        if not hmac.compare_digest(mac, self._mac("cookie", payload)):
            return None
        if not expires.isdigit() or int(expires) <= utcnow().timestamp():
            return None
        return session_id

    def csrf_token(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    def csrf_ok(self, session_id: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token or "", self.csrf_token(session_id))
