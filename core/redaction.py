"""Lanewarden's own secrets: which they are, and keeping them out of what users read.

Secrets live in the environment of ``serve`` (chat tokens, the Slack signing secret,
the database password, each gateway's key) or in ``board.url``. Agents never receive
them (core/runners/agent_env.py builds a minimal environment), a profile that names one
in ``env`` or ``pass_env`` is refused at load (core/config.py), and whatever an agent
prints is redacted before it becomes a result, an error, an event or a chat reply.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from lanewarden.core.config import LanewardenConfig

CHAT_SECRETS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN")
DATABASE_SECRETS = ("DATABASE_URL", "PGPASSWORD", "PGPASSFILE")
# everything LANEWARDEN_* belongs to the server (future secrets included); agents get
# the few LANEWARDEN_* variables the runner sets itself
OWN_PREFIX = "LANEWARDEN_"
# which LANEWARDEN_* values are redacted too (not LANEWARDEN_HOME: paths stay readable)
SECRET_SUFFIXES = ("SECRET", "TOKEN", "PASSWORD", "KEY", "_URL")
REDACTED = "[redacted]"
# shorter values would redact ordinary words; real tokens and passwords are longer
MIN_REDACTED_LENGTH = 6


def secret_kind(
    name: str, config: LanewardenConfig | None = None, *, own_gateway: str | None = None
) -> str | None:
    """What the variable ``name`` holds if it is one of Lanewarden's secrets, else None.

    Gateways' keys are known from ``config``; ``own_gateway``'s key is not a secret from
    the agent that uses that gateway."""
    if name in CHAT_SECRETS:
        return "a chat token"
    if name in DATABASE_SECRETS:
        return "the database's credentials"
    if name.startswith(OWN_PREFIX):
        return "Lanewarden's own setting"
    for gateway_name, gateway in config.gateways.items() if config is not None else ():
        if gateway.api_key_env == name and gateway_name != own_gateway:
            return f"the key of gateway {gateway_name!r}"
    return None


def secret_values(config: LanewardenConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """The values to redact, longest first (so a password inside a URL goes with the URL)."""
    env = os.environ if environ is None else environ
    names = [*CHAT_SECRETS, *(n for n in DATABASE_SECRETS if n != "PGPASSFILE")]  # a path, not a secret
    names += [g.api_key_env for g in config.gateways.values() if g.api_key_env]
    names += [n for n in env if n.startswith(OWN_PREFIX) and n.endswith(SECRET_SUFFIXES)]
    values = {env.get(n, "") for n in names}
    try:
        url = make_url(config.board.url)
    except Exception:  # an unparsable URL was refused at load; nothing to hide here
        url = None
    if url is not None and url.password:
        values.update({config.board.url, str(url.password)})
    return sorted((v for v in values if len(v) >= MIN_REDACTED_LENGTH), key=len, reverse=True)


# user:password@ in a URL (a database URL in an error message, say)
URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def hide_url_password(text: str) -> str:
    """``postgresql://lw:secret@db/lw`` -> ``postgresql://lw:***@db/lw``, anywhere in ``text``."""
    return URL_PASSWORD.sub(r"\1:***@", text)


PR_SET_DUMPABLE = 4


def hide_process_environment() -> bool:
    """Make this process's /proc/<pid>/environ (and memory) unreadable to its own uid.

    Agents run as the same user as ``serve``: without this, one could read the secrets
    from /proc/$PPID/environ whatever environment it was given. A non-dumpable process's
    /proc files belong to root; children are dumpable again after their exec."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def redact(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with every secret value replaced by ``[redacted]``."""
    if not text:
        return text
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


# what tokens, keys, passwords and URLs are made of: a cut inside a run of these may have
# gone through a secret
TOKEN_CHARACTERS = frozenset("-_.:/+=~%@")


def tail(data: bytes, limit: int) -> str:
    """The last ``limit`` bytes of ``data`` as text. When that cuts the data, the token the
    cut went through is dropped: half a secret would not be recognised by ``redact``."""
    text = data[-limit:].decode("utf-8", "replace")
    if len(data) <= limit:
        return text
    for index, char in enumerate(text):
        if not (char.isalnum() or char in TOKEN_CHARACTERS):
            return text[index:]
    return ""
