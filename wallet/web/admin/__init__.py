"""Administration pages: overview and funding, people, grants, notes, keys, trust, prices.

This package holds the blueprint; the views are in its modules, which wallet/web/__init__.py
imports (each module's routes register on `bp`).
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/orgs/<slug>/admin")
