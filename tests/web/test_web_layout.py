"""The web layer's layout holds: routes registered from one place, forms in one module.

These read the source (`ast`) and the app's URL map; they need no database.
"""

from __future__ import annotations

import ast
from pathlib import Path

from flask import Flask

import wallet.web
from wallet.web import blueprints

WEB = Path(wallet.web.__file__).parent
ROUTE_DECORATORS = {"route", "get", "post", "put", "patch", "delete"}


def _modules() -> dict[str, ast.Module]:
    """Every module of wallet.web by dotted name, parsed."""
    found = {}
    for path in sorted(WEB.rglob("*.py")):
        parts = path.relative_to(WEB.parent.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _views(tree: ast.Module) -> list[str]:
    """The functions of a module decorated as routes of a blueprint (`@bp.get(...)`)."""
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                    and d.func.attr in ROUTE_DECORATORS for d in node.decorator_list)]


def test_every_module_with_views_is_registered_in_web_init() -> None:
    listed = {m.__name__ for _bp, modules in blueprints() for m in modules}
    with_views = {name for name, tree in _modules().items() if _views(tree)}
    assert with_views == listed


def test_each_module_serves_the_blueprint_it_is_listed_under(app: Flask) -> None:
    owner = {m.__name__: bp.name for bp, modules in blueprints() for m in modules}
    for endpoint, view in app.view_functions.items():
        if endpoint == "static":
            continue
        assert owner[view.__module__] == endpoint.split(".", 1)[0], endpoint


def test_blueprint_packages_hold_no_views() -> None:
    packages = {name: tree for name, tree in _modules().items()
                if (WEB.parent.parent / name.replace(".", "/") / "__init__.py").exists()}
    assert packages
    assert {name: _views(tree) for name, tree in packages.items() if _views(tree)} == {}


def test_every_form_class_is_in_forms_py() -> None:
    outside = {}
    for name, tree in _modules().items():
        classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                   and (node.name.endswith("Form") or any(
                       getattr(b, "id", getattr(b, "attr", "")).endswith("Form")
                       for b in node.bases))]
        if classes and name != "wallet.web.forms":
            outside[name] = classes
    assert outside == {}


def _imported(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_views_read_through_actions_never_the_store() -> None:
    """Reads go through wallet/actions, as changes do (docs/architecture.md, thin shells)."""
    reads = {name: sorted(m for m in _imported(tree) if m.split(".")[:2] == ["wallet", "store"])
             for name, tree in _modules().items()}
    assert {name: found for name, found in reads.items() if found} == {}


def test_views_are_short_and_route_no_refusal_through_an_exception_of_their_own() -> None:
    long_views, exceptions = {}, {}
    for name, tree in _modules().items():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in _views(tree):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > 20:
                    long_views[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", "").endswith(("Exception", "Error")) for b in node.bases):
                exceptions[name] = node.name
    assert long_views == {}
    assert exceptions == {}  # a helper returns a field error or a result (wallet/web/fields.py)
