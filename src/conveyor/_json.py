"""One JSON encoder for payloads and results: strict (no NaN), compact, unicode kept; and
the text clean-up that keeps what a handler produced storable.

``json.dumps`` with options builds a new encoder on every call; this one is reused.
"""

from __future__ import annotations

import json
import re

__all__ = ["ENCODER", "REPLACEMENT", "clean_text", "has_surrogate"]

ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

#: What a lone surrogate becomes in stored text: U+FFFD, the visible replacement mark.
REPLACEMENT = "\ufffd"

# A Python str can hold lone surrogates (``os.fsdecode`` makes them from undecodable bytes),
# which no store accepts as UTF-8 text.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (not valid Unicode text)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that it can be stored
    and read back; any other text is returned as it is (cheap for ASCII)."""
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text)
