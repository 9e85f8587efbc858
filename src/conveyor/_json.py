"""One JSON encoder for payloads and results: strict (no NaN), compact, unicode kept.

``json.dumps`` with options builds a new encoder on every call; this one is reused.
"""

from __future__ import annotations

import json

__all__ = ["ENCODER"]

ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
