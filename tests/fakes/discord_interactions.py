"""Interactions as Discord builds them: slash commands (and their autocomplete) from the
commands the bot registered, and button presses on a message. A mixin of FakeDiscord.

Options the registration does not know, missing required options and values outside the
choices are refused here (an AssertionError in the test), as Discord's client would
refuse to send them.
"""

from __future__ import annotations

import itertools
from typing import Any

# option types of Discord's application command schema
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN = 1, 2, 3, 4, 5


class InteractionPayloads:
    APP_ID: int
    channels: set[int]
    commands: dict[int | None, list[dict[str, Any]]]
    _component_messages: dict[int, dict[str, Any]]
    _ids: itertools.count[int]

    def new_id(self) -> int:
        return next(self._ids)

    def slash(
        self,
        path: str,
        *,
        user: int,
        roles: tuple[int, ...] = (),
        channel_id: int,
        guild_id: int | None,
        focused: str | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        """A /kanban interaction as Discord builds it from the registered command.

        ``path`` is the subcommand path ("add", "caps set"); option names are the
        registered ones (use ``values={"not-before": ...}`` style via ``**{...}``).
        With ``focused`` it is the autocomplete request for that option instead.
        Options the registration does not know, missing required options and values
        outside the choices are refused here, as Discord's client would.
        """
        root = self._registered(guild_id, "kanban")
        words = path.split()
        node: dict[str, Any] = root
        chain: list[dict[str, Any]] = []
        for word in words:
            node = next(o for o in node.get("options", []) if o["name"] == word)
            chain.append(node)
        options = []
        for name, value in values.items():
            schema = next((o for o in node.get("options", []) if o["name"] == name), None)
            assert schema is not None, f"/kanban {path} has no option {name!r}"
            _check_value(path, schema, value)
            option: dict[str, Any] = {"name": name, "type": schema["type"], "value": value}
            if name == focused:
                option["focused"] = True
            options.append(option)
        if focused is None:
            missing = [
                o["name"] for o in node.get("options", []) if o.get("required") and o["name"] not in values
            ]
            assert not missing, f"/kanban {path}: Discord would not send without {missing}"
        else:
            assert focused in values, "the focused option must be given (with what was typed so far)"
        for level in reversed(chain):
            options = [{"name": level["name"], "type": level["type"], "options": options}]
        data = {"id": root["id"], "name": "kanban", "type": 1, "options": options, "guild_id": str(guild_id)}
        return self._interaction(
            4 if focused else 2, data, user=user, roles=roles, channel_id=channel_id, guild_id=guild_id
        )

    def click(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        user: int,
        roles: tuple[int, ...] = (),
        guild_id: int | None,
    ) -> dict[str, Any]:
        """A button press on ``message`` (which must carry that button)."""
        ids = [c.get("custom_id") for row in message.get("components", []) for c in row.get("components", [])]
        assert custom_id in ids, f"the message has no button {custom_id!r} (it has {ids})"
        channel_id = int(message["channel_id"]) or next(iter(self.channels))
        shown = {**message, "channel_id": str(channel_id)}
        payload = self._interaction(
            3,
            {"custom_id": custom_id, "component_type": 2},
            user=user,
            roles=roles,
            channel_id=channel_id,
            guild_id=guild_id,
        )
        payload["message"] = shown
        self._component_messages[int(payload["id"])] = shown
        return payload

    def _registered(self, guild_id: int | None, name: str) -> dict[str, Any]:
        for scope in (guild_id, None) if guild_id is not None else (None,):
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        raise AssertionError(f"/{name} is not registered for guild {guild_id} nor globally")

    def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user: int,
        roles: tuple[int, ...],
        channel_id: int,
        guild_id: int | None,
    ) -> dict[str, Any]:
        """An interaction in a guild channel, or (``guild_id=None``) in a DM with the bot."""
        interaction_id = self.new_id()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.APP_ID),
            "type": kind,
            "data": data,
            "channel_id": str(channel_id),
            "token": f"tok-{interaction_id}",
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if guild_id is None:
            payload["channel"] = {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0}
            payload["user"] = user_payload(user, f"user{user}")
            payload["authorizing_integration_owners"] = {"1": str(user)}
            payload["context"] = 1  # BOT_DM
            data.pop("guild_id", None)
            return payload
        payload["guild_id"] = str(guild_id)
        payload["guild_locale"] = "en-US"
        payload["channel"] = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": f"channel-{channel_id}",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        payload["member"] = {
            "user": user_payload(user, f"user{user}"),
            "roles": [str(r) for r in roles],
            "joined_at": "2025-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": "2248473465835073",
        }
        payload["authorizing_integration_owners"] = {"0": str(guild_id)}
        payload["context"] = 0
        return payload


def user_payload(user_id: int, name: str) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
        "public_flags": 0,
    }


def _check_value(path: str, schema: dict[str, Any], value: Any) -> None:
    kind = schema["type"]
    expected = {STRING: str, INTEGER: int, BOOLEAN: bool}[kind]
    ok = isinstance(value, expected) and not (kind == INTEGER and isinstance(value, bool))
    assert ok, f"/kanban {path} {schema['name']}: Discord sends a {expected.__name__}, not {value!r}"
    if schema.get("choices"):
        allowed = [c["value"] for c in schema["choices"]]
        assert value in allowed, f"/kanban {path} {schema['name']}: {value!r} is not among {allowed}"
