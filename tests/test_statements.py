"""Prepared statements (oidc.statements) behave as SQLAlchemy's execution of the same statement does.

They bypass SQLAlchemy's execution layer, so what that layer would have done is
checked here on both databases: values pass through the columns' types, the
row reads by column name, a write is part of the Session's transaction, a
database error is SQLAlchemy's exception class, and a connection the database
dropped is invalidated so the next request gets a new one.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import QueuePool, bindparam, insert, literal, select
from sqlalchemy.exc import IntegrityError, OperationalError

from oidc import statements
from oidc.statements import Prepared, insert_all, release_held_connection

pytestmark = pytest.mark.both_databases


def _code_row(code_hash: str, user_pk: int, client_pk: int) -> dict[str, Any]:
    return {"code_hash": code_hash, "grant_id": "g-" + code_hash, "client_pk": client_pk, "user_pk": user_pk,
            "redirect_uri": "https://rp.example/cb", "redirect_uri_given": False, "scope": "openid",
            "audience": ["https://api.example", "urn:other"], "nonce": None, "code_challenge": None,
            "code_challenge_method": None, "dpop_jkt": None, "auth_time": 100, "sid": None, "created_at": 100,
            "expires_at": 160, "used_at": None}


def _insert_code(app: Any, code_hash: str) -> None:
    """Insert a code row of the fixture's user and client, prepared, in the Session's transaction."""
    from oidc.db import db
    from oidc.models import AuthorizationCode

    user_pk, client_pk = app.config["TEST_IDS"]
    insert_all(insert(AuthorizationCode.__table__)).rowcount(db.session.connection(),
                                                            _code_row(code_hash, user_pk, client_pk))


@pytest.fixture
def app_with_rows(make_app: Any, base_env: dict[str, str]) -> Any:
    from oidc.db import db
    from oidc.models import Client, User

    app = make_app(base_env)
    with app.app_context():
        user = User(subject="s-1", username="alice", password_hash="x", created_at=1, updated_at=1)
        client = Client(client_id="c-1", name="rp", auth_method="none", redirect_uris=["https://rp.example/cb"],
                        grant_types=["authorization_code"], scope="openid", created_at=1)
        db.session.add_all([user, client])
        db.session.commit()
        app.config["TEST_IDS"] = (user.id, client.id)
    return app


def test_a_row_written_and_read_matches_what_sqlalchemy_reads(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    by_hash = Prepared(select(*table.c).where(table.c.code_hash == bindparam("h")).limit(1))
    with app_with_rows.app_context():
        user_pk, client_pk = app_with_rows.config["TEST_IDS"]
        assert insert_all(insert(table)).rowcount(db.session.connection(), _code_row("h1", user_pk, client_pk)) == 1
        db.session.commit()
        row = by_hash.first(db.session.connection(), {"h": "h1"})
        assert row is not None
        expected = db.session.execute(select(*table.c).where(table.c.code_hash == "h1")).one()
        assert tuple(row) == tuple(expected)
        # Through the columns' types: a JSON list, a boolean (an integer on SQLite), by name.
        assert row.audience == ["https://api.example", "urn:other"]
        assert row.redirect_uri_given is False
        assert by_hash.first(db.session.connection(), {"h": "unknown"}) is None
        db.session.rollback()


def test_a_statement_without_bind_processors_fills_held_values_unless_the_caller_gives_them(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    # No bind processor (strings and integers): the parameters go to the driver as given, the statement's
    # own values (LIMIT's, and a bindparam's default) filled in; a value the caller gives wins.
    unexpired = Prepared(select(table.c.code_hash, table.c.audience)
                         .where(table.c.code_hash == bindparam("h"), table.c.expires_at > bindparam("now", value=0))
                         .limit(1))
    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h3")
        connection = db.session.connection()
        assert unexpired.compiled(connection.dialect).plain is not None
        row = unexpired.first(connection, {"h": "h3"})
        assert row is not None and row.code_hash == "h3"
        assert row.audience == ["https://api.example", "urn:other"]  # a result processor still runs
        assert unexpired.first(connection, {"h": "h3", "now": 160}) is None
        assert unexpired.first(connection, {"h": "h3", "now": 159}) is not None
        with pytest.raises(KeyError):
            unexpired.first(connection, {})  # a parameter without a value is never sent as NULL
        db.session.rollback()


def test_values_with_bind_processors_reach_the_driver_in_the_placeholders_order(app_with_rows: Any) -> None:
    from oidc.db import JSONList, db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    # Each parameter through its column's processor (the audience's JSON), one parameter or several.
    by_audience = Prepared(select(table.c.code_hash).where(table.c.audience == bindparam("a", type_=JSONList)))
    by_both = Prepared(select(table.c.code_hash).where(table.c.expires_at > bindparam("now"),
                                                       table.c.audience == bindparam("a", type_=JSONList),
                                                       table.c.code_hash == bindparam("h")))
    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h6")
        connection = db.session.connection()
        assert by_audience.compiled(connection.dialect).plain is None
        audience = ["https://api.example", "urn:other"]
        assert by_audience.first(connection, {"a": audience}) == ("h6",)
        assert by_audience.first(connection, {"a": audience[:1]}) is None
        assert by_both.first(connection, {"now": 159, "a": audience, "h": "h6"}) == ("h6",)
        assert by_both.first(connection, {"now": 160, "a": audience, "h": "h6"}) is None
        assert by_both.first(connection, {"now": 159, "a": audience, "h": "h7"}) is None
        db.session.rollback()


def test_writes_are_the_sessions_transaction_and_undone_with_it(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h2")
        db.session.rollback()
        assert db.session.execute(select(AuthorizationCode).where(AuthorizationCode.code_hash == "h2")).first() is None


def test_a_constraint_violation_is_sqlalchemys_integrity_error_and_the_session_recovers(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h3")
        db.session.commit()
        with pytest.raises(IntegrityError) as raised:
            _insert_code(app_with_rows, "h3")
        assert "[parameters:" not in str(raised.value)  # never logged: they hold secrets' hashes
        db.session.rollback()
        count = db.session.execute(select(AuthorizationCode).where(AuthorizationCode.code_hash == "h3")).all()
        assert len(count) == 1


def test_an_insert_that_would_need_a_column_default_is_refused_when_compiled(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    with app_with_rows.app_context():
        partial = Prepared(insert(AuthorizationCode.__table__).values(code_hash=bindparam("h")).inline())
        with pytest.raises(ValueError, match="column defaults"):
            partial.compiled(db.engine.dialect)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
def test_a_connection_the_database_dropped_is_an_operational_error_then_replaced(app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        assert db.engine.dialect.name == "postgresql"
        connection = db.session.connection()
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with db.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
        with pytest.raises(OperationalError) as raised:
            queries.find_login("s" * 32)
        assert raised.value.connection_invalidated
        db.session.rollback()
        assert queries.find_login("s" * 32) is None  # a new connection, the same statement
        assert db.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
def test_a_lone_read_on_a_dropped_connection_is_an_operational_error_then_replaced(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    by_hash = Prepared(select(table.c.code_hash).where(table.c.code_hash == bindparam("h")))
    with app_with_rows.app_context():
        db.session.remove()  # the pool's connections are all idle in it
        assert by_hash.read(db.engine, {"h": "none"}) is None  # one connection, back in the pool
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as outside:
            outside.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(OperationalError) as raised:
            by_hash.read(db.engine, {"h": "none"})
        assert raised.value.connection_invalidated
        assert by_hash.read(db.engine, {"h": "none"}) is None  # a new connection

def test_a_lone_read_needs_no_transaction_and_leaves_the_pool_transactional(app_with_rows: Any) -> None:
    from oidc.db import db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    by_hash = Prepared(select(table.c.code_hash, table.c.audience).where(table.c.code_hash == bindparam("h")))
    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h4")
        assert by_hash.read(db.engine, {"h": "h4"}) is None  # not committed yet: another connection sees nothing
        db.session.commit()
        assert by_hash.read(db.engine, {"h": "h4"}) == ("h4", ["https://api.example", "urn:other"])
        # The pool's connections are transactional again for the next request (autocommit was per read).
        for _ in range(cast(QueuePool, db.engine.pool).size() + 1):
            with db.engine.connect() as connection:
                assert connection.get_isolation_level() != "AUTOCOMMIT"


def test_a_core_transaction_commits_on_its_pooled_connection_and_undoes_what_it_did_not_commit(
        app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    by_hash = Prepared(select(table.c.code_hash).where(table.c.code_hash == bindparam("h")))
    user_pk, client_pk = app_with_rows.config["TEST_IDS"]
    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            queries.insert_code(_code_row("kept", user_pk, client_pk))
            assert by_hash.read(db.engine, {"h": "kept"}) is None  # not committed yet
            transaction.commit()
        with queries.core_transaction():
            queries.insert_code(_code_row("dropped", user_pk, client_pk))
        with queries.core_transaction() as transaction:
            queries.insert_code(_code_row("undone", user_pk, client_pk))
            transaction.rollback()
            transaction.commit()  # after a rollback: nothing left to commit
        assert by_hash.read(db.engine, {"h": "kept"}) == ("kept",)
        assert by_hash.read(db.engine, {"h": "dropped"}) is None  # closed without a commit: rolled back
        assert by_hash.read(db.engine, {"h": "undone"}) is None
        # Only this thread's kept connection is out of the pool (QueuePool's count), until it is given back.
        assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        release_held_connection()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_hash_lookup_by_several_hashes_finds_the_row_by_any_of_them(app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        _insert_code(app_with_rows, "h5")
        db.session.commit()
        db.session.remove()
        for hashes in (["h5"], ["other", "h5"], ["h5", "other", "third"], ["other", "third"]):
            with queries.core_transaction():
                row = queries.find_code_grant(hashes)
            assert (row.code_hash if row is not None else None) == ("h5" if "h5" in hashes else None), hashes
        # Read through the Session's connection too (a request without a Core transaction).
        row = queries.find_code_grant(["other", "h5"])
        assert row is not None and row.audience == ["https://api.example", "urn:other"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
def test_a_core_transaction_on_a_dropped_connection_is_an_operational_error_then_replaced(
        app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        db.session.remove()  # the pool's connections are all idle in it
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as outside:
            outside.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with queries.core_transaction() as transaction, pytest.raises(OperationalError) as raised:
            queries.find_login("s" * 32)
        assert raised.value.connection_invalidated
        transaction.commit()  # on the invalidated connection: nothing to do, no error
        with queries.core_transaction():
            assert queries.find_login("s" * 32) is None  # a new connection


def _by_hash() -> Prepared:
    from oidc.models import AuthorizationCode

    table = AuthorizationCode.__table__
    return Prepared(select(table.c.code_hash).where(table.c.code_hash == bindparam("h")))


def test_a_thread_keeps_its_read_connection_until_the_pool_is_replaced(app_with_rows: Any) -> None:
    from oidc.db import db

    by_hash = _by_hash()
    with app_with_rows.app_context():
        db.session.remove()
        assert by_hash.read(db.engine, {"h": "none"}) is None
        kept = statements.read_connection(db.engine)
        assert kept.kept and by_hash.read(db.engine, {"h": "none"}) is None
        assert statements.read_connection(db.engine) is kept  # no checkout per read
        assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        db.engine.dispose()  # a new pool: the kept connection goes back to the old one at the next read
        assert by_hash.read(db.engine, {"h": "none"}) is None
        assert statements.read_connection(db.engine) is not kept
        kept.release_now()  # given back once only
        release_held_connection()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_threads_keep_at_most_half_the_pool_and_give_it_back_when_they_end(app_with_rows: Any) -> None:
    from oidc.db import db

    by_hash = _by_hash()
    with app_with_rows.app_context():
        db.session.remove()
        engine = db.engine
        pool = cast(QueuePool, engine.pool)
        ready, done = threading.Barrier(pool.size() + 1), threading.Event()

        def reader() -> None:
            assert by_hash.read(engine, {"h": "none"}) is None
            ready.wait(timeout=10)
            done.wait(timeout=10)

        threads = [threading.Thread(target=reader) for _ in range(pool.size())]
        for thread in threads:
            thread.start()
        ready.wait(timeout=10)
        assert pool.checkedout() == pool.size() // 2  # the others read on a connection checked out per read
        done.set()
        for thread in threads:
            thread.join(timeout=10)
        gc.collect()
        assert pool.checkedout() == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
def test_a_kept_read_connection_idle_is_pinged_and_replaced_when_it_died(
        app_with_rows: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from oidc.db import db

    by_hash = _by_hash()
    with app_with_rows.app_context():
        db.session.remove()
        assert by_hash.read(db.engine, {"h": "none"}) is None
        kept = statements.read_connection(db.engine)
        # The connection and the pool's others die while they sit idle (a restart, a proxy's timeout).
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as outside:
            outside.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        monkeypatch.setattr(statements, "PING_AFTER_IDLE_SECONDS", 0.0)  # idle long enough
        assert by_hash.read(db.engine, {"h": "none"}) is None  # its ping failed: another one, no error
        assert statements.read_connection(db.engine) is not kept
        release_held_connection()
        with db.engine.connect() as connection:  # the pool's connections are transactional again
            assert connection.get_isolation_level() != "AUTOCOMMIT"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # a server connection's socket is shared
def test_a_forked_child_leaves_the_parents_kept_read_connection_alone(app_with_rows: Any) -> None:
    from oidc.db import db

    by_hash = _by_hash()
    with app_with_rows.app_context():
        db.session.remove()
        assert by_hash.read(db.engine, {"h": "none"}) is None
        kept = statements.read_connection(db.engine)
        child = os.fork()
        if child == 0:  # the child: its pool dropped as a server worker's is, then a read of its own
            status = 1
            try:
                db.engine.dispose(close=False)
                if by_hash.read(db.engine, {"h": "none"}) is None and statements.read_connection(db.engine) is not kept:
                    status = 0
                gc.collect()  # what the child dropped is collected: the parent's connection must not be closed
            finally:
                os._exit(status)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's connection was neither closed nor reset by the child: it reads as before.
        assert statements.read_connection(db.engine) is kept
        assert by_hash.read(db.engine, {"h": "none"}) is None
        release_held_connection()


def test_a_core_transaction_runs_on_the_kept_connection_and_leaves_nothing_to_the_next(app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    by_hash = _by_hash()
    user_pk, client_pk = app_with_rows.config["TEST_IDS"]
    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            queries.insert_code(_code_row("open", user_pk, client_pk))
            held = transaction.connection()
            assert held.kept and held.in_transaction and not held.autocommit
            assert by_hash.read(db.engine, {"h": "open"}) is None  # read on another connection: not committed
        assert not held.in_transaction
        assert by_hash.read(db.engine, {"h": "open"}) is None  # rolled back when the transaction ended
        assert statements.read_connection(db.engine) is held  # kept for the next read, no checkout
        assert held.autocommit == (db.engine.dialect.name == "postgresql")
        with queries.core_transaction() as transaction:
            assert transaction.connection() is held and not held.autocommit  # transactional again
            assert queries.find_code_grant(["open"]) is None  # nothing of the last one left
            queries.insert_code(_code_row("committed", user_pk, client_pk))
            transaction.commit()
        assert by_hash.read(db.engine, {"h": "committed"}) == ("committed",)
        assert db.engine.pool.checkedout() == 1
        release_held_connection()
        assert db.engine.pool.checkedout() == 0
        with db.engine.connect() as connection:  # the pool's connections are transactional again
            assert connection.get_isolation_level() != "AUTOCOMMIT"


class _FailingRollback:
    """A DB-API connection whose rollback fails (a connection broken in a way the driver does not report)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def rollback(self) -> None:
        raise RuntimeError("rollback failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_a_kept_connection_whose_rollback_fails_is_invalidated_never_kept(app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            assert queries.find_login("s" * 32) is None
            held = transaction.connection()
            held.dbapi_connection = _FailingRollback(held.dbapi_connection)
        assert held.invalidated  # not given back to the pool as it is, nor kept
        with queries.core_transaction() as transaction:
            assert queries.find_login("s" * 32) is None
            assert transaction.connection() is not held and transaction.connection().kept
        release_held_connection()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
def test_a_kept_connection_the_database_dropped_fails_one_transaction_then_is_replaced(app_with_rows: Any) -> None:
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            assert queries.find_login("s" * 32) is None
            held = transaction.connection()
        assert held.kept
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as outside:
            outside.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with queries.core_transaction(), pytest.raises(OperationalError) as raised:
            queries.find_login("s" * 32)
        assert raised.value.connection_invalidated
        with queries.core_transaction() as transaction:
            assert queries.find_login("s" * 32) is None  # a new connection, kept in its place
            assert transaction.connection() is not held and transaction.connection().kept
        release_held_connection()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only psycopg switches autocommit
def test_a_kept_connection_closed_under_it_is_an_operational_error_when_it_switches_to_autocommit(
        app_with_rows: Any) -> None:
    """A kept connection goes from a transaction to a lone read by switching to autocommit: a connection
    closed meanwhile fails that switch with SQLAlchemy's OperationalError (the 503), not psycopg's own
    error (a 500), and is replaced."""
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            assert queries.find_login("s" * 32) is None
            held = transaction.connection()
        assert held.kept and not held.autocommit
        held.dbapi_connection.close()
        with pytest.raises(OperationalError):
            queries.find_access_token_row("j" * 24)
        assert queries.find_access_token_row("j" * 24) is None  # on a new connection
        release_held_connection()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_transaction_on_a_connection_not_kept_goes_back_to_the_pool_open(app_with_rows: Any) -> None:
    """A thread beyond those that keep a connection checks one out per transaction: ended, it goes back to
    the pool as it is (the pool's reset rolls it back), not closed as unfit."""
    from oidc import queries
    from oidc.db import db

    with app_with_rows.app_context():
        db.session.remove()
        with queries.core_transaction() as transaction:
            kept = transaction.connection()
            # While the kept connection is in a transaction, another one is checked out, and not kept.
            other = statements.transaction_connection(db.engine)
            assert other is not kept and not other.kept
            queries.find_login("s" * 32)  # on the kept one
            statements.Prepared(select(literal(1).label("one"))).execute(other, {}).close()  # now in a transaction
            dbapi_connection = other.dbapi_connection
            other.end_transaction()
            assert other.connection.dbapi_connection is None  # given back
        pool = db.engine.pool
        assert pool.checkedin() >= 1  # type: ignore[attr-defined]
        if db.engine.dialect.name == "postgresql":
            assert not dbapi_connection.closed  # back in the pool open, not invalidated
        release_held_connection()
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
