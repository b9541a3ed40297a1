"""Sign-in to the web board: one-time links and the sessions they open.

A link is minted for an identity (``slack:U123`` from ``/kanban web``, ``web:alice`` from
``lanewarden web link``) with the role it has in chat or the one the CLI gave. It
expires within minutes and works once: redeeming marks it used in the same statement
that checks it, so two browsers racing for one link cannot both get in, in any number
of processes. Only SHA-256 hashes of link tokens and session ids are stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from lanewarden.core.board import Board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.errors import Conflict, UsageError
from lanewarden.core.schema import web_links, web_sessions
from sqlalchemy import select, update

ROLES = ("viewer", "operator", "admin")
LINK_MINUTES_RANGE = (1, 60)
TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class SignIn:
    """Who a link or a session signs in, and until when."""

    actor_id: str
    role: str
    name: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MintedLink:
    token: str  # the secret: shown once to the person it is for, never stored or logged
    sign_in: SignIn


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def mint_link(
    board: Board, *, actor_id: str, role: str, name: str | None, created_by: str, minutes: int
) -> MintedLink:
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    low, high = LINK_MINUTES_RANGE
    if not low <= minutes <= high:
        raise UsageError(f"a sign-in link lasts between {low} and {high} minutes, got {minutes}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    expires = now + timedelta(minutes=minutes)
    with board.db.write() as conn:
        conn.execute(
            web_links.insert().values(
                token_hash=digest(token),
                actor_id=actor_id,
                role=role,
                name=name,
                created_by=created_by,
                created_at=now,
                expires_at=expires,
            )
        )
        board.record(
            conn,
            created_by,
            "web_link",
            f"web sign-in link for {actor_id} as {role}, valid {minutes} min",
            data={"for": actor_id, "role": role},
            now=now,
        )
    return MintedLink(token, SignIn(actor_id, role, name, expires))


def peek_link(board: Board, token: str) -> SignIn | None:
    """The link's identity if it is still usable; reading it does not use it up (link
    previews and prefetchers follow URLs without anyone clicking)."""
    with board.db.read() as conn:
        row = conn.execute(select(web_links).where(web_links.c.token_hash == digest(token))).first()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return SignIn(row.actor_id, row.role, row.name, row.expires_at)


def redeem_link(board: Board, token: str, *, session_hours: float) -> tuple[str, SignIn] | None:
    """Use a link once: returns a new session id (secret) and who it signs in, or None
    when the link is unknown, used or expired."""
    now = utcnow()
    with board.db.write() as conn:
        used = conn.execute(
            update(web_links)
            .where(
                web_links.c.token_hash == digest(token),
                web_links.c.used_at.is_(None),
                web_links.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(web_links.c.actor_id, web_links.c.role, web_links.c.name)
        ).first()
        if used is None:
            return None
        session_id = secrets.token_urlsafe(TOKEN_BYTES)
        sign_in = SignIn(used.actor_id, used.role, used.name, now + timedelta(hours=session_hours))
        conn.execute(
            web_sessions.insert().values(
                id_hash=digest(session_id),
                actor_id=sign_in.actor_id,
                role=sign_in.role,
                name=sign_in.name,
                created_at=now,
                expires_at=sign_in.expires_at,
            )
        )
        board.record(conn, sign_in.actor_id, "web_signin", f"signed in to the web board as {sign_in.role}")
    return session_id, sign_in


def load_session(board: Board, session_id: str) -> SignIn | None:
    with board.db.read() as conn:
        row = conn.execute(select(web_sessions).where(web_sessions.c.id_hash == digest(session_id))).first()
    if row is None or row.ended_at is not None or row.expires_at <= utcnow():
        return None
    return SignIn(row.actor_id, row.role, row.name, row.expires_at)


def end_session(board: Board, session_id: str) -> bool:
    now = utcnow()
    with board.db.write() as conn:
        ended = conn.execute(
            update(web_sessions)
            .where(web_sessions.c.id_hash == digest(session_id), web_sessions.c.ended_at.is_(None))
            .values(ended_at=now)
            .returning(web_sessions.c.actor_id)
        ).first()
        if ended is not None:
            board.record(conn, ended.actor_id, "web_signout", "signed out of the web board")
    return ended is not None


def sign_in_url(config: LanewardenConfig, token: str) -> str:
    return f"{web_base_url(config)}/signin/{token}"


def web_base_url(config: LanewardenConfig) -> str:
    """Where people reach the board: ``[web] public_url`` (behind a proxy), else ``[http] listen``."""
    if not config.web.enabled or not config.http.listen:
        raise Conflict("the web board is off: set [http] listen and [web] enabled = true in the config")
    base = config.web.public_url
    if base is None:
        host, _, port = config.http.listen.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        base = f"http://{host}:{port}"
    return base
