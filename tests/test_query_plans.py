"""The hot paths find their rows through an index, never by scanning a table.

Each statement a token, introspection, userinfo, authorize or login request
runs is explained by the database itself: SQLite's ``EXPLAIN QUERY PLAN`` must
say ``SEARCH ... USING (COVERING|INTEGER PRIMARY KEY|) INDEX`` and never ``SCAN``;
PostgreSQL's ``EXPLAIN`` with sequential scans disabled (so that a small test
table does not make a scan look cheaper) must show no ``Seq Scan``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

pytestmark = pytest.mark.both_databases


def _hot_statements() -> dict[str, Any]:
    from oidc import queries
    from oidc.models import AuthorizationCode, Consent, LoginSession, RefreshToken, User
    from oidc.oauth2 import interactions

    hashes = ["a" * 43, "b" * 43]
    return {
        "client by client_id": queries._ENABLED_CLIENT_BY_ID.params(client_id="c" * 32),
        "access token by jti": queries._ACCESS_TOKEN_BY_JTI.statement.params(jti="j" * 24),
        "code grant by hash (with user and login session)": queries._CODE_GRANT_BY_HASH.one.statement.params(hash=hashes[0]),
        "code grant by any hash": queries._CODE_GRANT_BY_HASH.any.params(hashes=hashes),
        "refresh grant by hash (with user and login session)": queries._REFRESH_GRANT_BY_HASH.one.statement.params(
            hash=hashes[0]),
        "refresh grant by any hash": queries._REFRESH_GRANT_BY_HASH.any.params(hashes=hashes),
        "login with its user by sid": queries._LOGIN_BY_SID.statement.params(sid="s" * 32),
        "claim code": (queries._CLAIM_CODE.statement, {"row_id": 1, "moment": 0}),
        "claim refresh token": (queries._CLAIM_REFRESH_TOKEN.statement, {"row_id": 1, "moment": 0}),
        "revoke refresh family": (queries._REVOKE_FAMILY_REFRESH_TOKENS, {"family": "g", "moment": 0}),
        "revoke access family": (queries._REVOKE_FAMILY_ACCESS_TOKENS, {"family": "g", "moment": 0}),
        "revoke access token": (queries._REVOKE_ACCESS_TOKEN, {"row_id": 1, "moment": 0}),
        "user by id": select(User).where(User.id == 1),
        "user by username": select(User).where(User.username == "alice"),
        "login session by sid": select(LoginSession).where(LoginSession.sid == "s" * 32),
        "consents of user and client": select(Consent).where(Consent.user_pk == 1, Consent.client_pk == 1),
        "code by id": select(AuthorizationCode).where(AuthorizationCode.id == 1),
        "pushed request by hash": queries._PUSHED_REQUEST_BY_HASH.params(hashes=hashes),
        "claim pushed request": (queries._CLAIM_PUSHED_REQUEST, {"row_id": 1, "moment": 0}),
        "interaction by hash": interactions._BY_HASH.params(hashes=hashes),
        "claim interaction": (interactions._CLAIM, {"row_id": 1, "moment": 0}),
        # Not a token path, but one per logout: the grants a login session made.
        "codes of a login session": select(AuthorizationCode.grant_id).where(AuthorizationCode.sid.in_(["s" * 32])),
        "refresh tokens of a login session": select(RefreshToken.grant_id).where(RefreshToken.sid.in_(["s" * 32])),
    }


def _plan(connection: Any, statement: Any) -> str:
    """The database's own plan of ``statement`` (or of ``(statement, values of its bind parameters)``)."""
    prefix = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
    if isinstance(statement, tuple):  # an UPDATE built once with bind parameters
        statement, values = statement
        compiled = statement.compile(dialect=connection.dialect)
        params = compiled.construct_params(values)
        if compiled.positiontup is not None:
            params = tuple(params[name] for name in compiled.positiontup)
        rows = connection.exec_driver_sql(prefix + compiled.string, params).fetchall()
    else:
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        rows = connection.exec_driver_sql(prefix + sql).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


def _plans(make_app: Any, base_env: dict[str, str], statements: dict[str, Any]) -> dict[str, str]:
    """The plan of each statement on the test database, sequential scans discouraged on PostgreSQL."""
    from oidc.db import db

    app = make_app(base_env)
    with app.app_context(), db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
        return {name: _plan(connection, statement) for name, statement in statements.items()}


def _scans(plan: str) -> bool:
    return "Seq Scan" in plan or any(line.startswith("SCAN") for line in plan.splitlines())


def test_hot_path_statements_use_an_index(make_app, base_env):
    plans = _plans(make_app, base_env, _hot_statements())
    assert all(plan.strip() for plan in plans.values()), plans
    scans = {name: plan for name, plan in plans.items() if _scans(plan)}
    assert not scans, scans


def test_the_check_sees_a_table_scan(make_app, base_env):
    """The test above would notice a scan: a look-up by an unindexed column is one."""
    from oidc.models import Client

    plan = _plans(make_app, base_env, {"client by name": select(Client).where(Client.name == "x")})["client by name"]
    assert _scans(plan), plan
