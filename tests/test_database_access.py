"""One way to reach the database: every statement of ``oidc`` is in :mod:`oidc.queries`.

Read from the source: outside ``oidc/queries.py`` no module builds a statement
(SQLAlchemy's ``select``, ``insert``, ``update``, ``delete``, ``union_all``,
``text``), uses a model's ``.query``, or runs anything on the session or a
connection (``execute``, ``get``, ``add``, ``delete``, ...).  Services still own
their transactions (``db.session.commit()`` and ``rollback()``).  Not checked:
:mod:`oidc.statements` (the mechanism that runs prepared statements on the DB-API
connection), :mod:`oidc.db` (the SQLite pragmas of each new connection), the
migrations, and ``keys/`` (the key service's own table: it never imports ``oidc``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"oidc/queries.py", "oidc/statements.py", "oidc/db.py"}
STATEMENT_BUILDERS = {"select", "insert", "update", "delete", "union_all", "union", "text", "exists"}
SESSION_CALLS = {"execute", "exec_driver_sql", "get", "add", "add_all", "delete", "merge", "scalar", "scalars",
                 "connection", "query"}


def sql_in(source: str) -> list[str]:
    """What in ``source`` reaches the database other than through oidc.queries, one line each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"{node.lineno}: imports {alias.name}" for alias in node.names if alias.name in STATEMENT_BUILDERS]
        elif isinstance(node, ast.Attribute) and node.attr == "query" and isinstance(node.value, ast.Name) \
                and node.value.id[:1].isupper():
            found.append(f"{node.lineno}: {node.value.id}.query")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SESSION_CALLS:
            target = ast.unparse(node.func.value)
            if target.startswith("db.session") or target.endswith("connection") or target == "db":
                found.append(f"{node.lineno}: {target}.{node.func.attr}()")
    return found


def sql_places(root: Path = ROOT) -> dict[str, list[str]]:
    """Each module of ``oidc`` (migrations aside) holding SQL of its own, with where."""
    places = {}
    for path in sorted((root / "oidc").rglob("*.py")):
        name = str(path.relative_to(root))
        if "migrations" in path.parts or name in ALLOWED:
            continue
        found = sql_in(path.read_text())
        if found:
            places[name] = found
    return places


def test_only_queries_reaches_the_database():
    assert sql_places() == {}


def test_the_check_sees_a_statement_outside_queries():
    source = "from sqlalchemy import select\nfrom oidc.db import db\n" \
             "def f(User):\n    db.session.execute(select(User))\n    return User.query.all()\n"
    assert sql_in(source) == ["1: imports select", "4: db.session.execute()", "5: User.query"]
