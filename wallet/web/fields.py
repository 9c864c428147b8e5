"""Refusals shown next to a form field: a value a view's helper returns, not an exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wallet.core import jose
from wallet.core.errors import WalletError


def add_error(field: Any, message: str) -> None:
    """Show `message` under `field`, after the errors it has."""
    field.errors = [*field.errors, message]


@dataclass(frozen=True)
class FieldError:
    """A refusal to show under one field of a form, and the status of the answer."""

    field: Any
    message: str
    status: int = 400

    def show(self) -> int:
        """Put the message under the field; the status the page answers with."""
        add_error(self.field, self.message)
        return self.status


def json_of(field: Any, hint: str) -> Any:
    """The field's text as JSON, or a `FieldError` with `hint` when it is not JSON.

    Strict and bounded (the core parser): no RecursionError, no NUL on its way to the
    database.
    """
    try:
        return jose.json_value((field.data or "").encode())
    except WalletError:
        return FieldError(field, hint)
