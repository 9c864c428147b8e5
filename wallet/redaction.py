"""Keep secrets out of log lines: request targets, referers and database rows.

Invitation and password-reset links carry their token in the path (`/invite/<token>`,
`/reset/<token>`); any query value may carry one too. Request logs (gunicorn's access
log under `wallet serve`, werkzeug's under a development server) and our own warnings
name request paths, so every such line goes through `redact()` first: the segment after
`invite` or `reset` (however percent-encoded) and every query value become `[redacted]`.

SQLAlchemy logs the rows it reads when its logger is at DEBUG (password hashes, token
hashes, encrypted keys): those records are dropped whatever the level; its parameters
are hidden by the engine itself (`hide_parameters=True`, see `wallet.db`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

MARK = "[redacted]"
SECRET_SEGMENTS = ("invite", "reset")  # the next path segment is a bearer secret


def _spelled(word: str) -> str:
    """A pattern for `word` with any letter percent-encoded (`/%69nvite/` is `/invite/`)."""
    return "".join(f"(?:{re.escape(c)}|%{ord(c.lower()):02x}|%{ord(c.upper()):02x})"
                   for c in word)


# A path segment named like a secret-bearing route, then the secret up to the next
# separator (a slash, query, fragment, quote, space or terminal escape).
_NAMES = "|".join(_spelled(w) for w in SECRET_SEGMENTS)
_SEGMENT = re.compile(rf"(/(?:{_NAMES})/)[^/?#\s\"'<>\x1b]+", re.IGNORECASE)
# A query parameter's value: after `?name=` or `&name=` up to the next separator.
_QUERY_VALUE = re.compile(r"([?&][^=&?#\s\"'<>\x1b]*=)[^&#\s\"'<>\x1b]*")


def redact(text: str) -> str:
    """Redact secret path segments and query values wherever they occur in `text`."""
    if "/" not in text and "?" not in text:
        return text
    text = _SEGMENT.sub(lambda m: m.group(1) + MARK, text)
    return _QUERY_VALUE.sub(lambda m: m.group(1) + MARK, text)


class Redact(logging.Filter):
    """Rewrite a record's message (and its traceback) through `redact()`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class NoRows(logging.Filter):
    """Drop SQLAlchemy's DEBUG records of result rows (they hold hashes and keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Row "))


# Loggers whose lines name request paths: the servers', the app's own.
REQUEST_LOGGERS = ("werkzeug", "gunicorn.error", "gunicorn.access", "wallet", "wallet.web",
                   "wallet.federation", "wallet.notes")
ROW_LOGGERS = ("sqlalchemy.engine.Engine",)


def install() -> None:
    """Attach the filters (once per process) to the loggers that need them."""
    names = {*REQUEST_LOGGERS,
             *(n for n in logging.root.manager.loggerDict if n.startswith("wallet."))}
    for name in names:
        attach(logging.getLogger(name), Redact)
    for name in ROW_LOGGERS:
        attach(logging.getLogger(name), NoRows)


def attach(logger: logging.Logger, kind: Any) -> None:
    """Add a filter of `kind` to `logger` unless it has one."""
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())
