"""Pure: turning a model's text into an answer, strictly."""

from __future__ import annotations

_TRUE = frozenset({"true", "yes"})
_FALSE = frozenset({"false", "no"})
_STRIP = " \t\r\n.!,;:\"'`*"


def parse_boolean(text: str | None) -> bool | None:
    """true/false/yes/no in any case, with trailing punctuation; anything else is None."""
    if text is None:
        return None
    word = text.strip(_STRIP).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None
