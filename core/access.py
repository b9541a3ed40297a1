"""Who may do what: chat identities mapped to viewer, operator or admin by ``[access]``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lanewarden.core.config import AccessConfig
from lanewarden.core.errors import UsageError
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


# a person, not a group or role: the first admin of a new install
PERSON_IDENTITY = re.compile(r"slack:[UW][A-Z0-9]{2,}|discord:[0-9]{15,20}")


def check_person(identity: str) -> str:
    """``slack:U0123ABCD`` or ``discord:<user id>``, or a UsageError saying what is expected."""
    value = identity.strip()
    if not PERSON_IDENTITY.fullmatch(value):
        raise UsageError(
            f"{identity!r} is not a chat user: use slack:U0123ABCD (Slack member id: profile > "
            "copy member ID) or discord:123456789012345678 (Discord user id: Copy User ID)"
        )
    return value
