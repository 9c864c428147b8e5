"""Administration pages: overview and funding, people, grants, notes, keys, trust, prices.

This package holds the blueprint and what its views share; the views are in its modules,
which wallet/web/__init__.py imports (each module's routes register on `bp`).
"""

from __future__ import annotations

from flask import Blueprint, render_template

from wallet import db
from wallet.actions import orgs as org_actions
from wallet.models import Membership, Person
from wallet.web import guard
from wallet.web.forms import PersonForm

bp = Blueprint("admin", __name__, url_prefix="/orgs/<slug>/admin")


def member(access: guard.Access, person_id: int) -> tuple[Membership, Person] | None:
    """A member of the administered organisation, by person id; None if there is none."""
    return org_actions.member(db.session(), org=access.org, person_id=person_id)


def members_page(access: guard.Access, form: PersonForm, **shown: str | None) -> str:
    """The members page with `form`, and what else it shows once (an invitation link...)."""
    rows = org_actions.members(db.session(), org=access.org)
    return render_template("admin/people.html", access=access, form=form, rows=rows, **shown)
