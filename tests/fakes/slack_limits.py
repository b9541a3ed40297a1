"""What Slack refuses in Block Kit and message text, worded as Slack words it.

The limits are Slack's Block Kit reference, the same numbers slack_sdk's own block
validators carry (tests/test_chat_limits.py checks that they agree): 50 blocks in a
message, 100 in a Home tab; section text 3,000 characters and at most 10 fields of
2,000; header 150; context at most 10 elements; actions at most 25 elements; a button's
text 75, value 2,000, url 3,000; action_id and block_id 255; a confirm dialog's title
100, text 300, buttons 30. A message's ``text`` over 40,000 characters is ``msg_too_long``.

Slack answers a refused body with ``invalid_blocks`` and one line per problem, each
ending in the JSON pointer of the offending field.
"""

from __future__ import annotations

from typing import Any

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000
SECTION_TEXT = 3000
SECTION_FIELDS = 10
FIELD_TEXT = 2000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
BUTTON_URL = 3000
ID_LENGTH = 255  # action_id, block_id
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30


def block_errors(blocks: Any, *, max_blocks: int = MESSAGE_BLOCKS) -> list[str]:
    """Slack's error lines for ``blocks`` (empty when Slack would accept them)."""
    found: list[str] = []

    def too_long(value: Any, limit: int, pointer: str) -> None:
        if isinstance(value, str | list) and len(value) > limit:
            unit = "items" if isinstance(value, list) else "characters"
            found.append(f"must be less than {limit + 1} {unit} [json-pointer:{pointer}]")

    if not isinstance(blocks, list):
        return ["must provide an array [json-pointer:/blocks]"]
    if len(blocks) > max_blocks:
        found.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        kind = block.get("type")
        too_long(block.get("block_id"), ID_LENGTH, f"{at}/block_id")
        if kind == "section":
            too_long((block.get("text") or {}).get("text"), SECTION_TEXT, f"{at}/text/text")
            fields = block.get("fields") or []
            too_long(fields, SECTION_FIELDS, f"{at}/fields")
            for f, entry in enumerate(fields):
                too_long(entry.get("text"), FIELD_TEXT, f"{at}/fields/{f}/text")
            if block.get("accessory"):
                _element(block["accessory"], f"{at}/accessory", too_long)
        elif kind == "header":
            too_long((block.get("text") or {}).get("text"), HEADER_TEXT, f"{at}/text/text")
        elif kind == "context":
            elements = block.get("elements") or []
            too_long(elements, CONTEXT_ELEMENTS, f"{at}/elements")
            for e, element in enumerate(elements):
                too_long(element.get("text"), SECTION_TEXT, f"{at}/elements/{e}/text")
        elif kind == "actions":
            elements = block.get("elements") or []
            too_long(elements, ACTIONS_ELEMENTS, f"{at}/elements")
            for e, element in enumerate(elements):
                _element(element, f"{at}/elements/{e}", too_long)
        elif kind not in ("divider", "image", "input", "rich_text", "file", "video"):
            found.append(f"unsupported type: {kind} [json-pointer:{at}/type]")
    return found


def _element(element: dict[str, Any], at: str, too_long: Any) -> None:
    too_long(element.get("action_id"), ID_LENGTH, f"{at}/action_id")
    if element.get("type") == "button":
        too_long((element.get("text") or {}).get("text"), BUTTON_TEXT, f"{at}/text/text")
        too_long(element.get("value"), BUTTON_VALUE, f"{at}/value")
        too_long(element.get("url"), BUTTON_URL, f"{at}/url")
    confirm = element.get("confirm")
    if confirm:
        too_long((confirm.get("title") or {}).get("text"), CONFIRM_TITLE, f"{at}/confirm/title/text")
        too_long((confirm.get("text") or {}).get("text"), CONFIRM_TEXT, f"{at}/confirm/text/text")
        too_long((confirm.get("confirm") or {}).get("text"), CONFIRM_BUTTON, f"{at}/confirm/confirm/text")
        too_long((confirm.get("deny") or {}).get("text"), CONFIRM_BUTTON, f"{at}/confirm/deny/text")


def message_refusal(args: dict[str, Any], blocks: Any) -> dict[str, Any] | None:
    """The Web API's answer to a message Slack would refuse (chat.postMessage, chat.update)."""
    if len(str(args.get("text") or "")) > MESSAGE_TEXT:
        return {"ok": False, "error": "msg_too_long"}
    if blocks is None or blocks == []:
        return None
    errors = block_errors(blocks)
    if not errors:
        return None
    return {
        "ok": False,
        "error": "invalid_blocks",
        "errors": errors,
        "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
    }
