"""Who may do what: chat identities mapped to viewer, operator or admin by ``[access]``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lanewarden.core.config import AccessConfig
from lanewarden.core.grammar import ROLE_RANK


@dataclass(frozen=True, slots=True)
class Actor:
    """Who runs a command, as recorded in events: ``slack:U123``, ``discord:42``, ``cli:alice``."""

    id: str
    role: str
    channel: str | None = None  # where to answer and where cards go: ``slack:C123``
    name: str | None = None

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def resolve_role(access: AccessConfig, identities: Iterable[str]) -> str:
    """The highest role any of the identities (user id, group or role ids) is granted."""
    wanted = set(identities)
    for role, members in (
        ("admin", access.admins),
        ("operator", access.operators),
        ("viewer", access.viewers),
    ):
        if wanted.intersection(members):
            return role
    return access.default_role
