"""Every statement finds its rows through an index, never by scanning a table.

The statements are not listed here: :func:`oidc.queries.statements` enumerates
every statement of :mod:`oidc.queries` (where all of them live), so a new one is
checked the day it is written.  The few that may read a whole table are declared,
with a reason, in :data:`oidc.queries.SCANS`.

Each is explained by the database itself, with sample values for its bound
parameters: SQLite's ``EXPLAIN QUERY PLAN`` must say ``SEARCH ... USING
(COVERING|INTEGER PRIMARY KEY|) INDEX`` and never ``SCAN``; PostgreSQL's
``EXPLAIN`` with sequential scans disabled (so that a small test table does not
make a scan look cheaper) must show no ``Seq Scan``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import CompoundSelect, Insert, Select, bindparam, select
from sqlalchemy.sql.elements import BindParameter

pytestmark = pytest.mark.both_databases


def _orm_statements() -> dict[str, Any]:
    """What the ORM runs itself for the ``*_by_pk`` look-ups of :mod:`oidc.queries` (by primary key)."""
    from oidc.models import AuthorizationCode, Client, LoginSession, PushedAuthorizationRequest, User

    return {
        "user by id": select(User).where(User.id == 1),
        "client by id": select(Client).where(Client.id == 1),
        "login session by sid": select(LoginSession).where(LoginSession.sid == "s" * 32),
        "pushed request by id": select(PushedAuthorizationRequest).where(PushedAuthorizationRequest.id == 1),
        "code by id": select(AuthorizationCode).where(AuthorizationCode.id == 1),
    }


def _sample(bind: BindParameter[Any]) -> Any:
    """A value of the bound parameter's type (a list of two for an expanding ``IN``)."""
    try:
        python_type = bind.type.python_type
    except NotImplementedError:  # a type without one: the columns compared with such binds are integers
        python_type = int
    value: Any = 1 if python_type is int else "s" * 32
    return [value, value * 2] if bind.expanding else value


def _samples(statement: Any) -> dict[str, Any]:
    """A sample value for each bound parameter of ``statement`` that has none (typed as compiled)."""
    binds = statement.compile().binds
    return {name: _sample(bind) for name, bind in binds.items() if bind.required or bind.value is None}


def _checked() -> dict[str, Any]:
    """Every statement that reads rows: all of :mod:`oidc.queries` but its plain INSERTs, and the ORM's."""
    from oidc import queries

    statements = {name: statement for name, statement in queries.statements().items()
                  # An INSERT ... VALUES reads nothing (its unique constraints are checked by their own indexes).
                  if not isinstance(statement, Insert) or statement.select is not None}
    return {**statements, **_orm_statements()}


def _plan(connection: Any, statement: Any) -> str:
    """The database's own plan of ``statement``, run with sample values of its bound parameters."""
    prefix = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
    values = _samples(statement)
    if isinstance(statement, Select | CompoundSelect):  # values rendered in (an expanding IN, too)
        sql = str(statement.params(values).compile(dialect=connection.dialect,
                                                   compile_kwargs={"literal_binds": True}))
        rows = connection.exec_driver_sql(prefix + sql).fetchall()
    else:  # an UPDATE or DELETE (params() is for SELECTs): values passed as the driver's parameters
        compiled = statement.compile(dialect=connection.dialect)
        params = compiled.construct_params(values)
        if compiled.positiontup is not None:
            params = tuple(params[name] for name in compiled.positiontup)
        rows = connection.exec_driver_sql(prefix + compiled.string, params).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


def _plans(make_app: Any, base_env: dict[str, str], statements: dict[str, Any]) -> dict[str, str]:
    """The plan of each statement on the test database, sequential scans discouraged on PostgreSQL."""
    from oidc.db import db

    app = make_app(base_env)
    with app.app_context(), db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
        return {name: _plan(connection, statement) for name, statement in statements.items()
                if _for_dialect(name, connection.dialect.name)}


def _for_dialect(name: str, dialect: str) -> bool:
    """Whether this database runs the statement: ``_NAME[sqlite]`` and ``_NAME[postgresql]`` are one dialect's."""
    key = name.rpartition("[")[2].rstrip("]") if name.endswith("]") else ""
    return key not in {"sqlite", "postgresql"} or key == dialect


def _scans(plan: str) -> bool:
    return "Seq Scan" in plan or any(line.startswith("SCAN") for line in plan.splitlines())


def _unexpected_scans(plans: dict[str, str]) -> dict[str, str]:
    from oidc.queries import SCANS

    return {name: plan for name, plan in plans.items() if name not in SCANS and _scans(plan)}


def test_every_statement_uses_an_index(make_app, base_env):
    from oidc.queries import SCANS

    plans = _plans(make_app, base_env, _checked())
    assert all(plan.strip() for name, plan in plans.items() if name not in SCANS), plans
    assert not _unexpected_scans(plans)


def test_the_enumeration_sees_the_hot_paths():
    """The token, code, login and interaction statements are among those checked (a sanity check of the walk)."""
    names = set(_checked())
    assert {"_ENABLED_CLIENT_BY_ID", "_ACCESS_TOKEN_BY_JTI", "_CODE_GRANT_BY_HASH.one", "_CODE_GRANT_BY_HASH.any",
            "_REFRESH_GRANT_BY_HASH.one", "_REFRESH_GRANT_BY_HASH.any", "_LOGIN_BY_SID", "_CLAIM_CODE",
            "_CLAIM_REFRESH_TOKEN", "_REVOKE_FAMILY_REFRESH_TOKENS", "_REVOKE_FAMILY_ACCESS_TOKENS",
            "_REVOKE_ACCESS_TOKEN", "_USER_BY_USERNAME", "_CONSENTED_SCOPES", "_PUSHED_REQUEST_BY_HASH",
            "_CLAIM_PUSHED_REQUEST", "_INTERACTION_BY_HASH", "_CLAIM_INTERACTION", "_GRANTS_OF_SESSIONS",
            "_GRANTS_OF_USER"} <= names


def test_declared_scans_name_statements_that_exist():
    from oidc import queries

    assert set(queries.SCANS) <= set(queries.statements())
    assert all(reason.strip() for reason in queries.SCANS.values())


def test_the_check_sees_a_table_scan(make_app, base_env):
    """The test above would notice a scan: a look-up by an unindexed column is one."""
    from oidc.models import Client

    plan = _plans(make_app, base_env, {"client by name": select(Client).where(Client.name == "x")})["client by name"]
    assert _scans(plan), plan


def test_a_new_unindexed_statement_in_queries_is_caught(make_app, base_env, monkeypatch):
    """A statement added to oidc.queries is checked without being listed anywhere, and refused if it scans."""
    from oidc import queries
    from oidc.models import Client

    monkeypatch.setattr(queries, "_CLIENTS_BY_NAME", select(Client).where(Client.name == bindparam("name")),
                        raising=False)
    assert "_CLIENTS_BY_NAME" in _checked()
    assert set(_unexpected_scans(_plans(make_app, base_env, _checked()))) == {"_CLIENTS_BY_NAME"}
