"""What Discord refuses in a message, an interaction answer or a thread name, and how it says so.

The numbers come from Discord's own OpenAPI spec (tests/fixtures/discord_openapi_subset.json,
a verbatim subset of discord/discord-api-spec) where it has them, and from Discord's
documentation where the schema cannot say it or disagrees (the docs win there):

- message content: 2,000 characters (resources/message.mdx; the spec's channel-message
  schema says 4,000, its interaction and webhook schemas say 2,000);
- all embeds of a message together: 6,000 characters of title, description, field names
  and values, footer text and author name (resources/message.mdx, "Embed Limits");
- a string autocomplete choice's value: 100 characters (interactions docs; the spec says 6,000).

A refusal is answered as Discord answers it: HTTP 400, ``{"code": 50035, "message":
"Invalid Form Body", "errors": {...}}`` with the offending field's path as nested keys
down to ``_errors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC = json.loads((Path(__file__).parent.parent / "fixtures" / "discord_openapi_subset.json").read_text())
SCHEMAS: dict[str, Any] = SPEC["schemas"]

INVALID_FORM_BODY = 50035


def _prop(schema: str, name: str) -> dict[str, Any]:
    return SCHEMAS[schema]["properties"][name]  # type: ignore[no-any-return]


CONTENT = 2000  # documented; the spec's interaction answers agree:
assert _prop("IncomingWebhookInteractionRequest", "content")["maxLength"] == CONTENT
EMBEDS = _prop("IncomingWebhookInteractionRequest", "embeds")["maxItems"]  # 10
EMBED_TITLE = _prop("RichEmbed", "title")["maxLength"]  # 256
EMBED_DESCRIPTION = _prop("RichEmbed", "description")["maxLength"]  # 4096
EMBED_FIELDS = _prop("RichEmbed", "fields")["maxItems"]  # 25
FIELD_NAME = _prop("RichEmbedField", "name")["maxLength"]  # 256
FIELD_VALUE = _prop("RichEmbedField", "value")["maxLength"]  # 1024
FOOTER_TEXT = _prop("RichEmbedFooter", "text")["maxLength"]  # 2048
AUTHOR_NAME = _prop("RichEmbedAuthor", "name")["maxLength"]  # 256
EMBEDS_TOTAL = 6000  # documented only
ACTION_ROWS = 5  # documented for messages built of action rows (the spec allows 40 top-level components)
ROW_ITEMS = _prop("ActionRowComponentForMessageRequest", "components")["maxItems"]  # 5
CUSTOM_ID = _prop("ButtonComponentForMessageRequest", "custom_id")  # 1..100
BUTTON_LABEL = _prop("ButtonComponentForMessageRequest", "label")["maxLength"]  # 80
CHOICES = _prop("InteractionApplicationCommandAutocompleteCallbackStringData", "choices")["maxItems"]  # 25
CHOICE_NAME = _prop("ApplicationCommandOptionStringChoice", "name")  # 1..100
CHOICE_VALUE = 100  # documented for strings
THREAD_NAME = _prop("CreateTextThreadWithMessageRequest", "name")  # 1..100
NONCE = 25  # the spec's string nonce: maxLength 25


class Errors:
    """Discord's nested ``errors`` object, built up field by field."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: tuple[str | int, ...], code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def too_long(self, path: tuple[str | int, ...], value: Any, limit: int) -> None:
        if value is not None and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def between(self, path: tuple[str | int, ...], value: Any, low: int, high: int) -> None:
        if value is None or not low <= len(value) <= high:
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")

    def body(self) -> dict[str, Any] | None:
        if not self.tree:
            return None
        return {"code": INVALID_FORM_BODY, "message": "Invalid Form Body", "errors": self.tree}


def message_refusal(body: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Discord's 400 body for a message (create, edit, interaction answer), or None if accepted."""
    errors = Errors()
    check_message(errors, body, prefix)
    return errors.body()


def check_message(errors: Errors, body: dict[str, Any], prefix: tuple[str, ...] = ()) -> None:
    errors.too_long((*prefix, "content"), body.get("content"), CONTENT)
    nonce = body.get("nonce")
    if isinstance(nonce, str):
        errors.too_long((*prefix, "nonce"), nonce, NONCE)
    embeds = body.get("embeds") or []
    errors.too_long((*prefix, "embeds"), embeds, EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        total += _check_embed(errors, (*prefix, "embeds", i), embed)
    if total > EMBEDS_TOTAL:
        errors.add(
            (*prefix, "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {EMBEDS_TOTAL}",
        )
    rows = body.get("components") or []
    errors.too_long((*prefix, "components"), rows, ACTION_ROWS)
    for r, row in enumerate(rows):
        items = row.get("components") or []
        errors.between((*prefix, "components", r, "components"), items, 1, ROW_ITEMS)
        for c, item in enumerate(items):
            path = (*prefix, "components", r, "components", c)
            if item.get("type") == 2 and item.get("custom_id") is not None:
                errors.between(
                    (*path, "custom_id"), item["custom_id"], CUSTOM_ID["minLength"], CUSTOM_ID["maxLength"]
                )
            errors.too_long((*path, "label"), item.get("label"), BUTTON_LABEL)


def _check_embed(errors: Errors, path: tuple[str | int, ...], embed: dict[str, Any]) -> int:
    """Checks one embed; returns the characters it counts towards the 6,000 of a message."""
    title, description = embed.get("title") or "", embed.get("description") or ""
    errors.too_long((*path, "title"), title, EMBED_TITLE)
    errors.too_long((*path, "description"), description, EMBED_DESCRIPTION)
    fields = embed.get("fields") or []
    errors.too_long((*path, "fields"), fields, EMBED_FIELDS)
    size = len(title) + len(description)
    for f, entry in enumerate(fields):
        name, value = str(entry.get("name") or ""), str(entry.get("value") or "")
        errors.between((*path, "fields", f, "name"), name, 1, FIELD_NAME)
        errors.between((*path, "fields", f, "value"), value, 1, FIELD_VALUE)
        size += len(name) + len(value)
    footer = (embed.get("footer") or {}).get("text") or ""
    author = (embed.get("author") or {}).get("name") or ""
    errors.too_long((*path, "footer", "text"), footer, FOOTER_TEXT)
    errors.too_long((*path, "author", "name"), author, AUTHOR_NAME)
    return size + len(footer) + len(author)


def choices_refusal(choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    errors = Errors()
    errors.too_long(("data", "choices"), choices, CHOICES)
    for i, choice in enumerate(choices):
        errors.between(
            ("data", "choices", i, "name"),
            choice.get("name"),
            CHOICE_NAME["minLength"],
            CHOICE_NAME["maxLength"],
        )
        value = choice.get("value")
        if isinstance(value, str):
            errors.too_long(("data", "choices", i, "value"), value, CHOICE_VALUE)
    return errors.body()


def thread_name_refusal(name: Any) -> dict[str, Any] | None:
    errors = Errors()
    errors.between(("name",), name, THREAD_NAME["minLength"], THREAD_NAME["maxLength"])
    return errors.body()
