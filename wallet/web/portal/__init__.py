"""The engineer's portal: wallet, transactions, notes, bringing credits in, API tokens.

This package holds the blueprint; the views are in its modules, which wallet/web/__init__.py
imports (each module's routes register on `bp`).
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("portal", __name__, url_prefix="/orgs/<slug>")
