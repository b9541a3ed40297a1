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
    granted_by: str | None = None  # why this role: "[access] operators lists discord-role:7"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def resolve_role(access: AccessConfig, identities: Iterable[str]) -> str:
    """The highest role any of the identities (user id, group or role ids) is granted."""
    return resolve_grant(access, identities)[0]


def resolve_grant(access: AccessConfig, identities: Iterable[str]) -> tuple[str, str]:
    """The highest role, and which ``[access]`` entry grants it (what ``whoami`` says)."""
    wanted = list(identities)
    for role, key, members in (
        ("admin", "admins", access.admins),
        ("operator", "operators", access.operators),
        ("viewer", "viewers", access.viewers),
    ):
        for identity in wanted:
            if identity in members:
                return role, f"[access] {key} lists {identity}"
    return access.default_role, f"nobody in [access] lists you: default_role is {access.default_role!r}"


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
