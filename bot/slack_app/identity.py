"""Who is calling: a Slack user (and the user groups they belong to) mapped to a role.

``[access]`` lists ``slack:U123`` user ids and ``slack-group:S123`` user-group ids.
Group membership needs ``usergroups.list`` (scope ``usergroups:read``); it is fetched
only when the config names a group, and cached for a minute so a burst of commands
costs one call. If Slack cannot answer, the user's own id still counts: a group
member may be refused for a minute, never granted a role they lack.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lanewarden.bot.slack_app.errors import slack_error_code
from lanewarden.core.access import Actor, resolve_grant
from lanewarden.core.config import AccessConfig
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("lanewarden.slack")

GROUP_PREFIX = "slack-group:"
GROUP_CACHE_SECONDS = 60.0


class SlackIdentity:
    def __init__(self, client: AsyncWebClient, access: AccessConfig) -> None:
        self.client = client
        self.access = access
        listed = [*access.admins, *access.operators, *access.viewers]
        self.uses_groups = any(entry.startswith(GROUP_PREFIX) for entry in listed)
        self._members: dict[str, set[str]] = {}  # user id -> group ids
        self._fetched_at = -GROUP_CACHE_SECONDS
        self._lock = asyncio.Lock()

    async def actor(self, user_id: str, channel_id: str | None, name: str | None = None) -> Actor:
        identities = [f"slack:{user_id}"]
        identities += [f"{GROUP_PREFIX}{group}" for group in await self.groups_of(user_id)]
        role, granted_by = resolve_grant(self.access, identities)
        return Actor(
            id=f"slack:{user_id}",
            role=role,
            channel=f"slack:{channel_id}" if channel_id else None,
            name=name,
            granted_by=granted_by,
        )

    async def groups_of(self, user_id: str) -> set[str]:
        if not self.uses_groups:
            return set()
        async with self._lock:
            if time.monotonic() - self._fetched_at >= GROUP_CACHE_SECONDS:
                await self._refresh()
        return self._members.get(user_id, set())

    async def _refresh(self) -> None:
        try:
            answer = await self.client.usergroups_list(include_users=True)
        except (SlackApiError, OSError, TimeoutError) as exc:
            # keep the last known membership; retry on the next command after a short pause
            reason = slack_error_code(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("slack: cannot read user groups (usergroups.list): %s", reason)
            self._fetched_at = time.monotonic() - GROUP_CACHE_SECONDS + 5
            return
        members: dict[str, set[str]] = {}
        for group in answer.get("usergroups") or []:
            for user in group.get("users") or []:
                members.setdefault(user, set()).add(group["id"])
        self._members = members
        self._fetched_at = time.monotonic()
