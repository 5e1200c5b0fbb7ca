"""The key service knows nothing about OAuth or Flask (DESIGN.md, "Layering").

Read from the source, not by importing it: a test that imports ``oidc`` first
would hide an import that ``keys`` makes on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

KEYS = Path(__file__).resolve().parent.parent / "keys"
FORBIDDEN = ("oidc", "flask", "authlib", "werkzeug")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_keys_package_never_imports_the_provider_or_flask():
    modules = sorted(KEYS.glob("*.py"))
    assert len(modules) >= 10  # the package is really there
    offending = {
        f"{path.name}: {name}"
        for path in modules
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert offending == set()


def test_the_check_notices_a_forbidden_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import os\nfrom oidc.models import db\nif True:\n    import flask\n")
    assert {name.split(".")[0] for name in imported_modules(planted)} & set(FORBIDDEN) == {"oidc", "flask"}
