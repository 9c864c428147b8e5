"""Refuse hostile input once, before any view runs: NUL bytes and JSON nested too deep.

PostgreSQL cannot store a NUL in text (psycopg raises `DataError`), SQLite stores it and
every later comparison goes wrong, and no identifier, amount or name here ever holds
one: a NUL in the path, the query string, a header, a form field or a JSON string is
refused with `malformed` (problem+json for machines, the error page for people). JSON
bodies are parsed here, once (Flask caches the result for the views), and refused when
nested deeper than `MAX_JSON_DEPTH` or holding a lone surrogate (`"\\ud800"`, which no
UTF-8 database can store). Python's C decoder itself stops at the interpreter's
recursion limit, long before a 50,000-level body costs anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from flask import Flask, request

from wallet.core.errors import Malformed

MAX_JSON_DEPTH = 64
"""Deepest JSON nesting accepted in a request body (documented in docs/protocol.md)."""

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def init_app(app: Flask) -> None:
    """Screen every request before the other hooks (CSRF, session) read it."""
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: screen())


def screen() -> None:
    """Raise `Malformed` when the current request holds input no view may see."""
    if "\x00" in request.path:
        raise Malformed("the address holds a NUL character")
    _strings("query parameter", request.args.items(multi=True))
    for name, value in request.headers.items():
        if "\x00" in value:
            raise Malformed(f"the {name} header holds a NUL character")
    if request.mimetype in FORM_TYPES:
        _strings("field", request.form.items(multi=True))
        for name, upload in request.files.items(multi=True):
            if upload.filename and "\x00" in upload.filename:
                raise Malformed(f"the name of the file in field {name!r} holds a NUL"
                                " character")
    if request.is_json:
        json_value()


def json_value() -> Any:
    """The request's JSON value (None when there is none or it does not parse).

    Parsed once and cached by Flask; refused when deeper than `MAX_JSON_DEPTH` or
    holding a NUL or a lone surrogate in any string or member name.
    """
    try:
        value = request.get_json(silent=True)
    except RecursionError:
        raise Malformed(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
                        ) from None
    check_json(value)
    return value


def check_json(value: Any) -> None:
    """Raise `Malformed` for nesting over `MAX_JSON_DEPTH`, an unstorable string, or a
    number that is not finite (`NaN` and `Infinity` are not JSON, though Python's parser
    takes them, and it reads `1e400` as infinity)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _unstorable(item, "a JSON string")
        elif isinstance(item, float) and not math.isfinite(item):
            raise Malformed("the JSON body holds a number that is not finite (NaN, Infinity"
                            " or beyond 1.8e308)")
        elif isinstance(item, dict | list):
            if depth == MAX_JSON_DEPTH:
                raise Malformed(f"the JSON body is nested deeper than {MAX_JSON_DEPTH}"
                                " levels")
            if isinstance(item, dict):
                for key, member in item.items():
                    _unstorable(key, "a JSON member name")
                    stack.append((member, depth + 1))
            else:
                stack.extend((member, depth + 1) for member in item)


def _strings(kind: str, pairs: Iterable[tuple[str, str]]) -> None:
    for name, value in pairs:
        if "\x00" in name:
            raise Malformed(f"a {kind} name holds a NUL character")
        if "\x00" in value:
            raise Malformed(f"the {kind} {name!r} holds a NUL character; remove it and"
                            " send again")


def _unstorable(text: str, where: str) -> None:
    found = _UNSTORABLE.search(text)
    if found is not None:
        what = "a NUL character" if found.group() == "\x00" else "a lone UTF-16 surrogate"
        raise Malformed(f"{where} holds {what}")
