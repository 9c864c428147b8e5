"""Strings a peer supplies, made safe to store, print to a terminal or show on a page."""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls (escape sequences, carriage returns that rewrite a terminal line) and
# format characters (bidirectional overrides that make a name read as another).
_UNSAFE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_SPACES = re.compile(r"\s+")
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def clean(value: object, limit: int = 200) -> str:
    """Return `value` as one line of at most `limit` printable characters ("" if not a str)."""
    if not isinstance(value, str):
        return ""
    text = value[: limit * 4]  # bound the work before looking at each character
    if not text.isprintable():
        text = "".join(c if unicodedata.category(c) not in _UNSAFE else " " for c in text)
    return _SPACES.sub(" ", text).strip()[:limit]


def clean_code(value: object, default: str = "malformed") -> str:
    """A peer's error code if it looks like one of ours (snake_case, at most 40), else `default`."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else default
