"""Text that a model, agent code or a far side shaped, made safe to show: every character that
would act rather than print is shown as its escape instead.

Acting characters are the control characters (ESC starts sequences that clear a terminal,
retitle it or write its clipboard; newline and tab are kept, as text's own layout), the
format characters (Unicode category Cf: bidirectional overrides and isolates reorder what a
reader sees, "Trojan Source"; zero-width characters hide text), lone surrogates (no stream
can encode them) and the line and paragraph separators. One function does it for the
terminal, the notebook and the errors agex raises, so all show the same text the same way.
"""

from __future__ import annotations

import re

#: Characters never acting: newline, tab and printable ASCII. Only the rest are looked at,
#: so plain text passes through at the speed of one regular-expression scan.
_SUSPECT = re.compile(r"[^\n\t\x20-\x7e]")

#: Unicode categories shown as escapes: control, format, surrogate, line and paragraph
#: separators.
_ACTING = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def visible(text: object) -> str:
    """``text`` as a string with every acting character shown as its escape (``\\x1b``,
    ``\\u202e``, ``\\U000e0041``): what it says, never what it would do. Applying it twice
    changes nothing more."""
    return _SUSPECT.sub(_shown, str.__str__(str(text)))


def _shown(match: re.Match[str]) -> str:
    import unicodedata  # only when text holds more than printable ASCII

    char = match.group()
    if unicodedata.category(char) not in _ACTING:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
