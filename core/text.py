"""What user text may contain: no C0/C1 control characters except newline and tab.

Titles, bodies, comments and reasons are printed raw by ``list`` and ``show`` and
posted to chats; an ESC or OSC sequence in a title would retitle or recolour the
operator's terminal, and PostgreSQL rejects NUL in text columns outright. The grammar
refuses such text on every entry point (CLI, console, chat, windows); the board checks
again so that a caller who builds commands without the grammar is held to the same rule.
"""

from __future__ import annotations

import re

from lanewarden.core.errors import UsageError

# C0 except tab (\x09) and newline (\x0a), DEL, and C1
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def check_text(label: str, value: str) -> str:
    """``value`` unchanged (CRLF read as LF), or a UsageError naming ``label`` and the character."""
    value = value.replace("\r\n", "\n")
    found = CONTROL_CHARACTER.search(value)
    if found is not None:
        raise UsageError(
            f"{label} contains the control character U+{ord(found.group()):04X}; "
            "only newline and tab are allowed"
        )
    return value
