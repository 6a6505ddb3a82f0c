"""Text from the server made safe for a terminal: no escape sequences, no bidi tricks."""

from __future__ import annotations

import re

# C0 and C1 controls (ESC, CSI, BEL, backspace, carriage return...), DEL, and the invisible
# format characters that reorder or hide text (bidi overrides and isolates, zero widths).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_UNSAFE_ON_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)


def printable(text: str, *, one_line: bool = False) -> str:
    r"""``text`` with every control and format character shown as ``\uXXXX``.

    ``one_line`` also escapes newlines and tabs (error lines, table cells).
    """
    pattern = _UNSAFE_ON_ONE_LINE if one_line else _UNSAFE
    return pattern.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def escape_json_text(text: str) -> str:
    """JSON text with the characters :func:`printable` escapes written as JSON escapes.

    Valid in JSON because such characters can only occur inside strings (json.dumps writes
    C0 controls escaped already); the decoded value is unchanged.
    """
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
