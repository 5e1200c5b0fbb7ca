"""The audit trail in the database (oidc/observability/audit_chain.py): every audit event appended,
hash-chained, checkpointed with the audit key set; tampering found and named.

The rows are edited, deleted and reordered with plain SQL on SQLite and PostgreSQL, as someone with
write access to the database would; checkpoints are verified with ``cryptography`` from the published
audit JWKS (tests/jose_helpers.py), not with the provider's own code.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import logging
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from jose_helpers import b64decode, b64encode, verify
from oidc_fixtures import Provider

pytestmark = pytest.mark.both_databases

# Each request's entries committed before its response (AUDIT_WRITE_DELAY_SECONDS=0); the tests that
# queue them (the default's path: inserted sealed by the chainer) say so, with a delay that never ends
# in a test, so that only their explicit seal() writes the queue.
AUDIT_ENV = {"AUDIT_CHAIN": "true", "AUDIT_SEAL_SECONDS": "3600", "AUDIT_CHECKPOINT_ENTRIES": "4",
             "AUDIT_WRITE_DELAY_SECONDS": "0"}
QUEUED = {"AUDIT_WRITE_DELAY_SECONDS": "3600"}


def _provider(make_app: Any, base_env: dict[str, str], **env: str) -> Provider:
    return Provider(make_app({**base_env, **AUDIT_ENV, **env}))


def _trail(op: Provider) -> Any:
    from oidc.state import state_of

    trail = state_of(op.app).audit_trail
    assert trail is not None
    return trail


def _issue_tokens(op: Provider, count: int) -> None:
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="client_secret_basic")
    for _ in range(count):
        response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                           auth=(client_id, secret or ""))
        assert response.status_code == 200


def _sql(op: Provider, statement: str, **params: Any) -> None:
    """Change the database behind the provider's back."""
    engine = create_engine(op.app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), params)
    finally:
        engine.dispose()


def _chained(make_app: Any, base_env: dict[str, str], tokens: int = 6) -> tuple[Provider, Any]:
    """A provider whose requests queued their entries, then wrote them sealed (the default's path)."""
    op = _provider(make_app, base_env, **QUEUED)
    _issue_tokens(op, tokens)
    trail = _trail(op)
    trail.seal()
    assert trail.verify().ok
    return op, trail


def test_events_are_appended_chained_and_verify(make_app, base_env):
    _, trail = _chained(make_app, base_env)
    entries = list(trail.export())
    events = [entry["event"] for entry in entries]
    assert events.count("token.issued") == 6
    assert "key.generated" in events  # the key service's own events, through the same logger
    assert [entry["position"] for entry in entries] == list(range(1, len(entries) + 1))
    issued = next(entry for entry in entries if entry["event"] == "token.issued")
    assert issued["fields"]["grant_type"] == "client_credentials" and issued["fields"]["jti"]
    result = trail.verify()
    assert result.ok and result.entries == len(entries) and result.unsealed == 0
    assert result.checkpoints == len(entries) // 4  # one per AUDIT_CHECKPOINT_ENTRIES


def test_no_secret_is_stored(make_app, base_env):
    op = _provider(make_app, base_env)
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="client_secret_basic")
    response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                       auth=(client_id, secret or ""))
    token = response.json["access_token"]
    trail = _trail(op)
    trail.seal()
    stored = json.dumps(list(trail.export()))
    assert secret and secret not in stored and token not in stored and token.split(".")[2] not in stored


def test_an_edited_entry_is_named(make_app, base_env):
    op, trail = _chained(make_app, base_env)
    _sql(op, "UPDATE audit_log SET fields = replace(fields, 'client_credentials', 'authorization_code') "
             "WHERE position = 5")
    result = trail.verify()
    assert not result.ok and result.problem.position == 5 and "hash" in result.problem.what
    assert result.entries == 4


def test_a_deleted_entry_is_named(make_app, base_env):
    op, trail = _chained(make_app, base_env)
    _sql(op, "DELETE FROM audit_log WHERE position = 3")
    result = trail.verify()
    assert not result.ok and result.problem.position == 3 and "missing" in result.problem.what


def test_reordered_entries_are_named(make_app, base_env):
    op, trail = _chained(make_app, base_env)
    # Swap the places of entries 4 and 6 (through a free position: position is unique).
    _sql(op, "UPDATE audit_log SET position = -1 WHERE position = 4")
    _sql(op, "UPDATE audit_log SET position = 4 WHERE position = 6")
    _sql(op, "UPDATE audit_log SET position = 6 WHERE position = -1")
    result = trail.verify()
    assert not result.ok and result.problem.position == 4


def test_a_cut_off_end_is_named(make_app, base_env):
    op, trail = _chained(make_app, base_env)
    last = trail.verify().last_position
    _sql(op, "DELETE FROM audit_log WHERE position = :last", last=last)
    result = trail.verify()
    assert not result.ok and result.problem.position == last and "missing" in result.problem.what


def test_a_rewritten_chain_disagrees_with_its_signed_checkpoint(make_app, base_env):
    """Edit entry 2 and recompute every hash after it, as someone who knows the scheme would:
    the chain is consistent again, but not with the checkpoint the audit key signed."""
    from oidc.observability.audit_chain import GENESIS, entry_hash

    op, trail = _chained(make_app, base_env)
    engine = create_engine(op.app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET event = 'login.succeeded' WHERE position = 2"))
            previous = GENESIS
            for row in connection.execute(text("SELECT * FROM audit_log ORDER BY position")).mappings().all():
                previous = entry_hash(dict(row), previous)
                connection.execute(text("UPDATE audit_log SET hash = :h WHERE id = :id"), {"h": previous, "id": row["id"]})
            connection.execute(text("UPDATE audit_chain SET hash = :h"), {"h": previous})
    finally:
        engine.dispose()
    result = trail.verify()
    assert not result.ok and result.problem.position == 4 and "checkpoint" in result.problem.what


def test_a_forged_checkpoint_is_refused(make_app, base_env):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    op, trail = _chained(make_app, base_env)
    header, payload, _ = _checkpoint_tokens(op)[0].split(".")
    forger = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(forger.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    forged = f"{header}.{payload}.{b64encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    _sql(op, "UPDATE audit_checkpoints SET token = :token WHERE position = 4", token=forged)
    result = trail.verify()
    assert not result.ok and result.problem.position == 4 and "signature" in result.problem.what


def test_a_token_signed_by_a_token_key_is_no_checkpoint(make_app, base_env):
    """The same claims and checkpoint typ, signed by the access-token key: refused (not an audit key)."""
    from keys import compact_jws
    from oidc.state import state_of
    from oidc.vocabulary import ACCESS_TOKEN_SET, AUDIT_CHECKPOINT_TYP

    op, trail = _chained(make_app, base_env)
    _, payload, _ = _checkpoint_tokens(op)[0].split(".")
    claims = json.loads(b64decode(payload))
    impostor = compact_jws(state_of(op.app).key_service().signer(ACCESS_TOKEN_SET), claims, AUDIT_CHECKPOINT_TYP)
    _sql(op, "UPDATE audit_checkpoints SET token = :token WHERE position = 4", token=impostor)
    result = trail.verify()
    assert not result.ok and result.problem.position == 4


def _checkpoint_tokens(op: Provider) -> list[str]:
    engine = create_engine(op.app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT token FROM audit_checkpoints ORDER BY position"))]
    finally:
        engine.dispose()


def test_checkpoints_verify_with_the_audit_jwks_only(make_app, base_env):
    """A checkpoint verifies with its own published keys (checked with cryptography), and its key is
    not in the token JWKS: no relying party can take a checkpoint for a token, nor the reverse."""
    op, trail = _chained(make_app, base_env)
    audit_keys = op.get("/.well-known/audit-jwks.json").get_json()["keys"]
    token_kids = {key["kid"] for key in op.get("/.well-known/jwks.json").get_json()["keys"]}
    assert audit_keys and not {key["kid"] for key in audit_keys} & token_kids
    for token in _checkpoint_tokens(op):
        header_b64, payload_b64, signature = token.split(".")
        header = json.loads(b64decode(header_b64))
        assert header["typ"] == "audit-checkpoint+jwt"
        (jwk,) = [key for key in audit_keys if key["kid"] == header["kid"]]
        verify(jwk, header["alg"], f"{header_b64}.{payload_b64}".encode(), b64decode(signature))
        claims = json.loads(b64decode(payload_b64))
        assert claims["iss"] == "https://op.example.test" and len(claims["hash"]) == 64
        stored = {entry["position"]: entry["hash"] for entry in trail.export()}
        assert stored[claims["position"]] == claims["hash"]
        assert hashlib.sha256(b"").hexdigest() != claims["hash"]


@pytest.mark.parametrize(("delay", "write"), [("0", "seal"), ("3600", "seal"), ("3600", "write_queued")],
                         ids=["inserted", "queued", "queue-written-alone"])
def test_concurrent_appends_and_chainers_keep_one_chain(make_app, base_env, delay, write):
    """Two apps on one database (two workers), each appending from two threads while both seal: each
    entry inserted at once (sealed later), or queued and inserted sealed by seal() (holding the head's
    lock), or by write_queued() (on PostgreSQL a compare-and-swap on the head, which four writers at
    once make each other repeat)."""
    first = _provider(make_app, base_env, AUDIT_WRITE_DELAY_SECONDS=delay)
    second = Provider(make_app({**base_env, **AUDIT_ENV, "AUDIT_WRITE_DELAY_SECONDS": delay}))
    trails = [_trail(first), _trail(second)]
    errors: list[BaseException] = []

    def append(trail: Any, name: str) -> None:
        try:
            for number in range(40):
                trail.append([{"at": 0, "event": "test.concurrent", "fields": json.dumps({"n": number, "by": name})}])
                if number % 10 == 0:
                    getattr(trail, write)()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(trail, f"{index}.{thread}"))
               for index, trail in enumerate(trails) for thread in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for trail in trails:
        trail.seal()
    result = trails[1].verify()
    assert result.ok, result.problem
    concurrent = [entry for entry in trails[0].export() if entry["event"] == "test.concurrent"]
    assert len(concurrent) == 160 and result.unsealed == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # (SQLite writes holding its write lock)
def test_an_append_after_the_head_moved_writes_nothing(make_app, base_env):
    """PostgreSQL's unlocked append (a chainer writing its queue alone) moves the head and inserts its rows
    only from the position it read: a writer that read the head before another moved it waits for the
    other's commit, then writes nothing (and seals its entries again after the new head)."""
    from oidc import queries
    from oidc.observability.audit_chain import GENESIS, entry_hash

    op = _provider(make_app, base_env, **QUEUED)
    engine = _trail(op).engine()
    assert queries.appends_unlocked(engine.dialect)
    _trail(op).seal()  # what the start queued (the key sets' events): the head moves no more meanwhile

    def sealed(entry_id: int, position: int, event: str, previous: str) -> tuple[str, tuple[Any, ...]]:
        digest = entry_hash({"id": entry_id, "position": position, "at": 0, "event": event, "fields": "{}"}, previous)
        return digest, queries.sealed_values(entry_id, position, 0, event, "{}", digest)

    with engine.connect() as connection, engine.connect() as other:
        with connection.begin():
            head, ids = queries.read_audit_head_taking_ids(connection, 2)
        start, previous = int(head.position), str(head.hash)
        digest, row = sealed(ids[0], start + 1, "test.first", previous)
        late_digest, late_row = sealed(ids[1], start + 1, "test.late", previous)
        late: list[bool] = []

        def append_late() -> None:
            with other.begin():
                late.append(queries.append_sealed_entries(other, [late_row], start, start + 1, late_digest))

        with connection.begin():
            assert queries.append_sealed_entries(connection, [row], start, start + 1, digest)
            waiting = threading.Thread(target=append_late)
            waiting.start()
            waiting.join(timeout=0.5)
            assert waiting.is_alive() and not late  # on the head's row lock, until this commits
        waiting.join(timeout=30)
        assert late == [False]
        with connection.begin():
            head, _ = queries.read_audit_head_taking_ids(connection, 0)
        assert (int(head.position), head.hash) == (start + 1, digest) and digest != GENESIS
    assert [entry["event"] for entry in _trail(op).export() if entry["event"].startswith("test.")] == ["test.first"]
    assert _trail(op).verify().ok


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # only a server drops a connection
@pytest.mark.parametrize("write", ["seal", "write_queued"])  # under the head's lock; by compare-and-swap
def test_a_connection_dropped_during_the_copy_loses_no_entry(make_app, base_env, monkeypatch, write):
    """The database ends the chainer's connection in the middle of its COPY: the write fails as a failed
    insert does (SQLAlchemy's OperationalError, which the chainer catches to try again later; nothing of
    the batch stored, the head not moved), the entries stay queued in their order, and the next write
    stores them all, chained."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    op = _provider(make_app, base_env, **QUEUED)
    trail = _trail(op)
    trail.seal()
    before = trail.verify()
    _issue_tokens(op, 3)
    queued = list(trail._queue)
    assert len(queued) == 3
    write_row = psycopg.Copy.write_row

    def dropped(copy: Any, row: Any) -> None:
        monkeypatch.setattr(psycopg.Copy, "write_row", write_row)  # the first row's only
        _sql(op, "SELECT pg_terminate_backend(:pid)", pid=copy.connection.info.backend_pid)
        write_row(copy, row)

    monkeypatch.setattr(psycopg.Copy, "write_row", dropped)
    with pytest.raises(OperationalError) as raised:
        getattr(trail, write)()
    assert raised.value.connection_invalidated  # the pool replaces it
    assert list(trail._queue) == queued
    after = trail.verify()
    assert after.ok and after.last_position == before.last_position
    assert getattr(trail, write)() == 3  # on a new connection
    result = trail.verify()
    assert result.ok and result.last_position == before.last_position + 3, result.problem
    assert [entry["event"] for entry in trail.export(since=before.last_position + 1)] == ["token.issued"] * 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_through_a_driver_without_copy_a_batch_is_inserted_by_multi_row_inserts(make_app, base_env, monkeypatch):
    """PostgreSQL through a driver other than psycopg has no COPY: the chainer's batches, under the head's
    lock and by compare-and-swap, are inserted by the multi-row inserts SQLite's are."""
    from oidc import queries

    monkeypatch.setattr(queries, "copies_rows", lambda dialect: False)
    op, trail = _chained(make_app, base_env, tokens=3)  # seal(): under the lock
    _issue_tokens(op, 3)
    assert trail.write_queued() == 3  # alone: by compare-and-swap
    result = trail.verify()
    assert result.ok and result.unsealed == 0, result.problem
    assert [entry["event"] for entry in trail.export()].count("token.issued") == 6


def test_cli_verify_names_the_first_bad_entry_and_export_writes_json_lines(make_app, base_env):
    op, _ = _chained(make_app, base_env)
    runner = op.app.test_cli_runner()
    good = runner.invoke(args=["audit", "verify", "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["ok"] is True
    exported = runner.invoke(args=["audit", "export", "--since", "2"])
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert exported.exit_code == 0 and lines[0]["position"] == 2 and all("hash" in line for line in lines)
    _sql(op, "UPDATE audit_log SET at = at + 1 WHERE position = 3")
    bad = runner.invoke(args=["audit", "verify"])
    assert bad.exit_code == 1 and "entry 3" in bad.output and "TAMPERED" in bad.output
    since = runner.invoke(args=["audit", "verify", "--since", "4", "--json"])
    assert since.exit_code == 0, since.output  # entries from 4 on are intact (anchored on 3's stored hash)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_admin_changes_and_hsm_outages_are_audited(make_app, base_env, admin_key):
    from oidc.state import hsm_event, hsm_token_event

    op = _provider(make_app, base_env)
    response = op.post("/admin/keys/jwt.access-token", json={"alg": "ES256"},
                       headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 201
    hsm_event("lost", "DeviceError")  # what the HSM manager reports, from its recovery thread (no app context)
    hsm_event("available")
    hsm_token_event("east", "lost", "DeviceError")  # one token of several (HSM_TOKENS): named in the entry
    hsm_token_event("east", "available")
    trail = _trail(op)
    trail.seal()
    entries = list(trail.export())
    change = next(entry for entry in entries if entry["event"] == "admin.request")
    assert change["fields"]["route"] == "/admin/keys/<key_set>" and change["fields"]["status"] == 201
    assert change["fields"]["arg_key_set"] == "jwt.access-token" and change["fields"]["credential"] == "admin_api_key"
    assert admin_key not in json.dumps(entries)
    events = [entry["event"] for entry in entries]
    assert events.index("key.generated", 3) < events.index("admin.request")  # in the order they happened
    assert events[-4:] == ["hsm.lost", "hsm.available", "hsm.lost", "hsm.available"]
    assert "hsm_token" not in entries[-4]["fields"]
    # The token's name is kept (a field named "token" would be dropped: the trail never stores one).
    assert [entry["fields"].get("hsm_token") for entry in entries[-2:]] == ["east", "east"]
    assert trail.verify().ok


@pytest.mark.hsm
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_checkpoints_are_signed_on_the_hsm(make_app, hsm_env):
    from oidc.state import state_of
    from oidc.vocabulary import AUDIT_CHECKPOINT_SET

    op = Provider(make_app({**hsm_env, **AUDIT_ENV, "HSM_ONLY_KEY_SETS": AUDIT_CHECKPOINT_SET}))
    service = state_of(op.app).key_service()
    assert service.backend_of(AUDIT_CHECKPOINT_SET) == "hsm"
    _issue_tokens(op, 4)
    trail = _trail(op)
    trail.seal()
    result = trail.verify()
    assert result.ok and result.checkpoints >= 1
    (jwk,) = op.get("/.well-known/audit-jwks.json").get_json()["keys"]
    header_b64, payload_b64, signature = _checkpoint_tokens(op)[0].split(".")
    assert json.loads(b64decode(header_b64))["kid"] == jwk["kid"]
    verify(jwk, jwk["alg"], f"{header_b64}.{payload_b64}".encode(), b64decode(signature))


def test_with_a_write_delay_entries_are_queued_then_written_in_order(make_app, base_env):
    """AUDIT_WRITE_DELAY_SECONDS: the request only queues its entries; the chainer writes the queue."""
    op = _provider(make_app, base_env, AUDIT_WRITE_DELAY_SECONDS="3600")
    trail = _trail(op)
    trail.write_queued()  # the key service's start-up events
    _issue_tokens(op, 5)
    assert len(trail._queue) == 5 and not [e for e in trail.export() if e["event"] == "token.issued"]
    trail.seal()  # writes the queue first
    issued = [entry for entry in trail.export() if entry["event"] == "token.issued"]
    assert len(issued) == 5 and trail.verify().ok
    _issue_tokens(op, 2)
    trail.stop()  # a graceful exit writes what is queued
    trail.seal()
    assert len([entry for entry in trail.export() if entry["event"] == "token.issued"]) == 7


def test_a_full_queue_counts_events_records_the_count_in_the_chain_and_is_not_ready(make_app, base_env, caplog):
    """AUDIT_QUEUE_LIMIT: while its queue is full (the database not written), a worker counts events instead of
    queueing them (memory stays bounded), logs it once, is not ready (``audit_queue_full``), and counts them in
    oidc_audit_events_dropped_total; its next write records the count in the chain as an ``audit.dropped`` entry,
    after the entries queued before them, and the chain verifies."""
    from prometheus_client import REGISTRY

    op = _provider(make_app, base_env, **QUEUED, AUDIT_QUEUE_LIMIT="3")
    trail = _trail(op)
    trail.seal()  # the start's events (and any the limit dropped): the queue is the test's alone
    assert not trail.queue_full() and op.get("/health/ready").get_json()["checks"]["audit"] == {"ok": True}
    dropped_before = REGISTRY.get_sample_value("oidc_audit_events_dropped_total") or 0.0
    with caplog.at_level(logging.ERROR, logger="oidc.observability.audit_chain"):
        _issue_tokens(op, 5)  # every token is still issued
    assert len(trail._queue) == 3 and trail.queue_full()
    assert sum("AUDIT_QUEUE_LIMIT" in record.getMessage() for record in caplog.records) == 1  # once per run
    assert REGISTRY.get_sample_value("oidc_audit_events_dropped_total") == dropped_before + 2
    ready = op.get("/health/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"]["audit"] == {"ok": False, "reason": "audit_queue_full"}

    # The database refuses the write (a trigger, as a full disk would): nothing is stored, the queue is put back
    # with the count's entry, and the worker is still full (not ready); one more event is counted anew.
    refuse, allow = {
        "sqlite": ("CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'refused'); END",
                   "DROP TRIGGER refuse"),
        "postgresql": ("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'refused'; END $$;"
                       " CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse()",
                       "DROP TRIGGER refuse ON audit_log; DROP FUNCTION refuse()")}[trail.engine().dialect.name]
    _sql(op, refuse)
    with pytest.raises(SQLAlchemyError):
        trail.write_queued()
    assert len(trail._queue) == 4 and trail.queue_full()
    assert op.get("/health/ready").get_json()["checks"]["audit"]["reason"] == "audit_queue_full"
    _issue_tokens(op, 1)
    _sql(op, allow)

    assert trail.write_queued() == 5
    written = [entry for entry in trail.export() if entry["event"] in ("token.issued", "audit.dropped")]
    assert [entry["event"] for entry in written] == ["token.issued"] * 3 + ["audit.dropped"] * 2
    assert [entry["fields"]["count"] for entry in written[3:]] == [2, 1]
    assert written[-1]["fields"]["queue_limit"] == 3 and written[-1]["fields"]["level"] == "ERROR"
    assert REGISTRY.get_sample_value("oidc_audit_events_dropped_total") == dropped_before + 3
    assert trail.verify().ok and not trail.queue_full()
    assert op.get("/health/ready").get_json()["checks"]["audit"] == {"ok": True}


@pytest.fixture
def audited(make_app, base_env):
    return _provider(make_app, base_env)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.one_of(
    st.text(max_size=200),
    st.builds(lambda header, rest: f"{b64encode(header.encode())}.{rest}",
              st.one_of(st.just('{"typ":"audit-checkpoint+jwt","kid":"x","alg":"ES256"}'), st.text(max_size=60)),
              st.text(alphabet="ABCDEFabcdef0123456789-_.", max_size=120))))
def test_any_stored_checkpoint_text_is_refused_not_raised(audited, token):
    """A checkpoint row is database content: whatever it holds, verification refuses it without an exception."""
    assert _trail(audited).checkpoint_claims(token) is None


@pytest.mark.e2e
def test_two_gunicorn_workers_write_one_chain(make_app, base_env, tmp_path):
    """Served as deployed (gunicorn, 2 workers, each with its chainer): tokens issued in parallel end up
    in one chain that verifies, with checkpoints, and none is missing."""
    import concurrent.futures

    import requests

    from oidc_fixtures import serve_with_gunicorn

    env = {**base_env, "AUDIT_CHAIN": "true", "AUDIT_SEAL_SECONDS": "0.2", "AUDIT_CHECKPOINT_ENTRIES": "10"}
    with serve_with_gunicorn(make_app, env, tmp_path, grant_types=["client_credentials"], scope="api",
                             auth_method="client_secret_basic") as served:
        token_url = served["issuer"] + "/token"

        def issue(_: int) -> int:
            return requests.post(token_url, data={"grant_type": "client_credentials", "scope": "api"},
                                 auth=(served["client_id"], served["client_secret"]), timeout=10).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(issue, range(60))) == {200}
        trail = _trail(Provider(make_app(served["env"])))

        def issued_count() -> int:
            return len([entry for entry in trail.export() if entry["event"] == "token.issued"])

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (trail.verify().unsealed or issued_count() < 60):
            time.sleep(0.2)  # written (queued: AUDIT_WRITE_DELAY_SECONDS) and sealed by the workers' chainers
        result = trail.verify()
    assert result.ok and result.unsealed == 0, result.problem
    issued = [entry for entry in trail.export() if entry["event"] == "token.issued"]
    assert len(issued) == 60 and len({entry["fields"]["jti"] for entry in issued}) == 60
    # Each chainer signs a checkpoint at the multiple of 10 it sealed up to, outside the chain's lock; of
    # two signed at once, a later one stored first stands for both.  So: at least one, and all verified.
    assert result.checkpoints >= 1


#: Any code point, and more often than chance those where orjson and json.dumps(ensure_ascii=True) would part
#: ways (non-ASCII, DEL, a lone surrogate, beyond the BMP) or that both escape (quote, backslash, controls).
_ANY_CHARACTER = (st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
                  | st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\x80", "\xe9", "\u2028", "\ud800", "\udfff",
                                     "\U0001f600"]))
#: ASCII (DEL and control characters included): text that can take orjson's path.
_ASCII = st.characters(max_codepoint=0x7F)


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_ASCII, max_size=max_size) | st.text(_ANY_CHARACTER, max_size=max_size)


#: Ints of any size, and the edges of orjson's (64 bits, signed or not).
_ANY_INT = st.integers() | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
_HEX_DIGEST = st.text("0123456789abcdef", min_size=64, max_size=64)
_ENTRIES = {"entry_id": _ANY_INT, "position": _ANY_INT, "at": _ANY_INT, "event": _text(64), "fields": _text(200),
            "previous": _HEX_DIGEST | _text(64)}


def _canonical_json(value: Any, default: Any = None) -> str:
    """What the trail stores and hashes, as the standard library writes it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=default)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(**_ENTRIES)
def test_canonical_is_json_dumps_of_the_entry(entry_id, position, at, event, fields, previous):
    """An entry's canonical bytes (orjson's where they are provably the same) are exactly what json.dumps
    writes (any text, escapes and non-ASCII included, ints of any size): a hash computed either way, or
    stored before orjson wrote them, is the same hash."""
    from oidc.observability.audit_chain import canonical

    entry = {"id": entry_id, "position": position, "at": at, "event": event, "fields": fields}
    assert canonical(entry, previous) == _canonical_json({**entry, "previous": previous}).encode("ascii")
    # Values of other types (what a tampered SQLite row may hold) take json.dumps itself.
    for changed in ({"at": str(at)}, {"position": float(position % 1000)}, {"event": None}, {"fields": True}):
        assert canonical({**entry, **changed}, previous) == _canonical_json(
            {**entry, **changed, "previous": previous}).encode("ascii")


def test_a_forked_child_knows_its_own_process_id():
    """A request compares the process id the chainer was started in with this process's, kept without a
    system call per event: a forked child (a gunicorn worker of a preloaded app) must see its own, else it
    would queue events no chainer of its writes."""
    import os

    from oidc.observability.audit_chain import _Process

    assert _Process.pid == os.getpid()
    child = os.fork()
    if child == 0:  # the child: nothing but the comparison, then out (no lock, no thread of the parent's)
        os._exit(0 if _Process.pid == os.getpid() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _Process.pid == os.getpid()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(**_ENTRIES)
def test_queued_entries_are_sealed_in_a_chain_of_entry_hashes(entry_id, position, at, event, fields, previous):
    """The chainer's rows for queued entries are their values with the next positions, each hash
    entry_hash's after the one before (what verification recomputes): SHA-256 of json.dumps's bytes."""
    from oidc import queries
    from oidc.observability.audit_chain import _seal_queued, entry_hash

    # The second as AuditHandler.sink queues an event: its fields themselves and its log level.
    queued = [(at, event, fields, None), (0, "next", {"n": 1}, logging.INFO)]
    rows, last, last_hash = _seal_queued(queued, [entry_id, 7], position, previous)
    first = {"id": entry_id, "position": position + 1, "at": at, "event": event, "fields": fields}
    digest = hashlib.sha256(_canonical_json({**first, "previous": previous}).encode("ascii")).hexdigest()
    second = {"id": 7, "position": position + 2, "at": 0, "event": "next", "fields": '{"level":"INFO","n":1}'}
    assert digest == entry_hash(first, previous)
    assert rows == [queries.sealed_values(entry_id, position + 1, at, event, fields, digest),
                    queries.sealed_values(7, position + 2, 0, "next", second["fields"], entry_hash(second, digest))]
    assert (last, last_hash) == (position + 2, rows[1][-1])


class _Colour(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 2


class _Text(str):
    pass


class _Backwards(str):
    """A key that sorts the other way round (json.dumps sorts keys by their own comparison)."""

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other)  # type: ignore[operator]


#: Fields as callers pass them: identifiers (str, int, bool, None) under ASCII names.
_IDENTIFIERS = st.dictionaries(st.sampled_from(["client_id", "sub", "jti", "Password", "token"]) | st.text(_ASCII, max_size=12),
                               st.text(_ASCII, max_size=24) | _ANY_INT | st.booleans() | st.none(), max_size=8)
#: A value orjson writes otherwise than json.dumps(default=str) does, or refuses, or any other.
_ANY_VALUE = (_text(24) | _ANY_INT | st.floats() | st.datetimes() | st.dates() | st.uuids()
              | st.sampled_from([_Colour.RED, _Level.HIGH, _Text("sub"), [1, "a"], {"b": 1, "a": None}]))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(identifiers=_IDENTIFIERS, other=st.dictionaries(_text(12), _ANY_VALUE, max_size=1))
def test_fields_text_is_json_dumps_of_the_fields(identifiers, other):
    """An event's stored fields (orjson's text where it is provably the same) are exactly what json.dumps
    writes of the fields NEVER_STORED does not drop, whatever one more key and value are."""
    from oidc.observability.audit_chain import NEVER_STORED, fields_text

    fields = {**identifiers, **other}
    kept = {name: value for name, value in fields.items() if name.lower() not in NEVER_STORED}
    assert fields_text(fields) == _canonical_json(kept, default=str)


def test_identifiers_take_orjson_and_anything_else_json():
    """A token's fields (identifiers in ASCII) are written by orjson; a value or key whose JSON orjson would
    write otherwise, or refuse, by json.dumps (and the text is json.dumps's either way)."""
    import uuid
    from datetime import UTC, datetime

    from oidc.observability.audit_chain import _plain_json, fields_text

    identifiers = {"grant_type": "client_credentials", "client_id": "c-1", "sub": None, "kid": "k", "jti": "j",
                   "scope": "api", "refresh_token": False, "expires_at": 2**63 - 1, "level": "INFO"}
    assert _plain_json(identifiers) == _canonical_json(identifiers).encode("ascii")
    assert _plain_json(collections.OrderedDict(identifiers)) is None  # a dict exactly: a subclass may iterate otherwise
    for other in (1e-7, float("nan"), datetime(2024, 1, 1, tzinfo=UTC), uuid.UUID(int=1), _Colour.RED, _Level.HIGH, _Text("x"),
                  2**64, -(2**63) - 1, "\x7f", "\xe9", "\ud800", "\U0001f600", {"nested": 1}):
        fields = {**identifiers, "value": other}
        assert _plain_json(fields) is None, other
        assert fields_text(fields) == _canonical_json(fields, default=str)
    for key in (_Backwards("b"), "\xe9", "\x7f"):
        fields = {"a": 1, key: 2, "c": 3}
        assert _plain_json(fields) is None, key
        assert fields_text(fields) == _canonical_json(fields, default=str)


_FIELD_NAMES = st.sampled_from(["client_id", "sub", "jti", "Password", "PIN", "client_secret", "Code", "token",
                                "id_token", "Access_Token", "assertion", "scope"]) | st.text(max_size=12)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(fields=st.dictionaries(_FIELD_NAMES, st.text(max_size=20) | st.none() | st.integers() | st.booleans() | st.dates(),
                              max_size=8))
def test_fields_never_hold_a_secret_name_whatever_its_case(fields):
    """An event's stored fields are the canonical JSON of the fields given without any NEVER_STORED name
    (in any case); the same names recorded again (their check remembered) are dropped the same way."""
    from oidc.observability.audit_chain import NEVER_STORED, fields_text

    kept = {name: value for name, value in fields.items() if name.lower() not in NEVER_STORED}
    for _ in range(2):
        text = fields_text(fields)
        # Canonical JSON; a value JSON has no type for (a date) as its text.
        assert text == json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
        stored = json.loads(text)
        assert stored == json.loads(json.dumps(kept, default=str))
        assert not {name.lower() for name in stored} & NEVER_STORED


@pytest.mark.e2e
def test_a_graceful_stop_writes_the_queued_entries(base_env, make_app, tmp_path):
    """With a write delay no run of the chainer reaches (an hour), gunicorn's graceful stop (SIGTERM) still
    writes every queued entry, sealed: each worker writes its queue on its way out."""
    # base_env first: its database is set up before make_app's apps and dropped after they close, so the
    # apps of this process (their keys' events queued for an hour) write their queues on close.
    import requests

    from oidc_fixtures import serve_with_gunicorn

    env = {**base_env, "AUDIT_CHAIN": "true", "AUDIT_WRITE_DELAY_SECONDS": "3600", "AUDIT_SEAL_SECONDS": "3600"}
    with serve_with_gunicorn(make_app, env, tmp_path, grant_types=["client_credentials"], scope="api",
                             auth_method="client_secret_basic") as served:
        for _ in range(20):
            response = requests.post(served["issuer"] + "/token", data={"grant_type": "client_credentials",
                                                                        "scope": "api"},
                                     auth=(served["client_id"], served["client_secret"]), timeout=10)
            assert response.status_code == 200
        served_env = served["env"]
    trail = _trail(Provider(make_app(served_env)))
    assert trail.verify().unsealed == 0  # written sealed by the workers, not left for a chainer
    trail.seal()
    result = trail.verify()
    assert result.ok, result.problem
    assert len([entry for entry in trail.export() if entry["event"] == "token.issued"]) == 20


@pytest.mark.parametrize("write", ["seal", "write_queued"])  # under the head's lock; alone (PostgreSQL: by compare-and-swap)
def test_queued_entries_are_stored_as_given(make_app, base_env, write):
    """The chainer writes a batch in one go: text with quotes, backslashes, tabs, line breaks (COPY's
    separators), non-ASCII and ``\\N`` (COPY's NULL), and large numbers, come back from the database as
    they were queued, and the chain verifies."""
    op = _provider(make_app, base_env, **QUEUED)
    trail = _trail(op)
    trail.seal()  # the start's events: the queue is the test's alone
    fields = {"by": "ünï \"quoted\" \\ 🙂"}
    odd: dict[str, Any] = {"at": 2**40, "event": 'test.odd "\\ é 漢\t\n\r\\N', "fields": json.dumps(fields)}
    # As the handler queues an event: its fields themselves, made text (secret names dropped) by the chainer.
    mapping = {"at": 2, "event": "test.fields", "fields": {"client_id": "c", "Password": "x", "level": "INFO"}}
    circular: dict[str, Any] = {"level": "INFO"}
    circular["self"] = circular  # never encodable: stored by its names, the entry kept
    trail.append([odd, {"at": 1, "event": "test.plain", "fields": "{}"}, mapping,
                  {"at": 3, "event": "test.circular", "fields": circular}, {"at": 4, "event": "\\N", "fields": "\\N"}])
    assert getattr(trail, write)() == 5
    stored = [entry for entry in trail.export() if entry["event"].startswith(("test.", "\\"))]
    assert [(entry["at"], entry["event"], entry["fields"]) for entry in stored] == [
        (odd["at"], odd["event"], fields), (1, "test.plain", {}), (2, "test.fields", {"client_id": "c", "level": "INFO"}),
        (3, "test.circular", {"unencodable_fields": ["level", "self"]}), (4, "\\N", "\\N")]
    result = trail.verify()
    assert result.ok and result.unsealed == 0, result.problem


@pytest.mark.hsm
@pytest.mark.e2e
def test_an_outage_of_the_audit_sets_token_delays_checkpoints_and_loses_no_entry(make_app, remote_hsm_env, remote_token,
                                                                                 admin_key, caplog):
    """The audit set's only token is a SoftHSM2 token behind ``p11-kit server``, killed and restarted.

    While it is away, entries are still appended and sealed (the chain goes on) but no checkpoint is
    signed; ``hsm.lost`` and ``hsm.available`` are entries; once it is back, the checkpoint that was
    due is signed and the whole trail verifies, with every event of the outage in it.
    """
    from oidc.state import state_of
    from oidc.vocabulary import AUDIT_CHECKPOINT_SET

    op = Provider(make_app({**remote_hsm_env, **AUDIT_ENV, "HSM_ONLY_KEY_SETS": "*", "HSM_RETRY_INITIAL_SECONDS": "0.1",
                            "HSM_RETRY_MAX_SECONDS": "0.5", "HSM_READINESS_CACHE_SECONDS": "0"}))
    service = state_of(op.app).key_service()
    assert service.backend_of(AUDIT_CHECKPOINT_SET) == "hsm"
    service.start_recovery()
    trail = _trail(op)
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api", auth_method="client_secret_basic")
    _issue_tokens(op, 4)
    trail.seal()
    before = trail.verify()
    assert before.ok and before.checkpoints >= 1

    def add_users(first: int, count: int) -> None:  # admin changes: audited, and no key needed
        for number in range(first, first + count):
            response = op.post("/admin/users", json={"username": f"outage{number}", "password": "pw-" + "x" * 20},
                               headers={"Authorization": f"Bearer {admin_key}"})
            assert response.status_code == 201, response.json

    add_users(0, 5)  # a checkpoint is due (AUDIT_CHECKPOINT_ENTRIES=4) ...
    remote_token.kill()  # ... when the token goes
    trail.seal()  # as the chainer does: the checkpoint cannot be signed now, the entries are sealed anyway
    refused = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=(client_id, secret or ""))
    assert refused.status_code == 503  # HSM-only: no token is issued, and none is audited as issued
    add_users(5, 5)
    trail.seal()
    during = trail.verify()
    assert during.ok and during.unsealed == 0, during.problem
    assert during.checkpoints == before.checkpoints  # waiting for the token
    remote_token.start()
    deadline = time.monotonic() + 10
    while not service.health().ok and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.health().ok
    trail.seal()
    after = trail.verify()
    assert after.ok and after.unsealed == 0 and after.checkpoints == before.checkpoints + 1, after.problem
    entries = list(trail.export())
    events = [entry["event"] for entry in entries]
    assert events.count("hsm.lost") == 1 and events.count("hsm.available") == 1
    assert events.index("hsm.lost") < events.index("hsm.available")
    assert events.count("token.issued") == 4
    # The operator is told how often the token is probed (HSM_RETRY_MAX_SECONDS=0.5, not "0 s").
    assert any("probed with backoff up to every 0.5 s" in record.getMessage() for record in caplog.records)
    assert len([entry for entry in entries if entry["event"] == "admin.request"]) == 10  # none lost
    last_checkpoint = _checkpoint_tokens(op)[-1]
    claims = json.loads(b64decode(last_checkpoint.split(".")[1]))
    assert claims["position"] == after.last_position  # the one that waited covers the whole outage
    trail.stop()


@pytest.mark.hsm
@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_hung_audit_token_holds_no_lock_on_the_chain(make_app, base_env, remote_tokens):
    """HSM_TOKENS=A,B and A stopped (SIGSTOP): a checkpoint sent to A is given up after
    HSM_TOKEN_TIMEOUT_SECONDS, and all that time entries are appended at once (the signature is made
    outside the sealing transaction, so SQLite's write lock is not held while the token hangs)."""
    op = Provider(make_app({**base_env, **remote_tokens.env(), **AUDIT_ENV, "AUDIT_CHECKPOINT_ENTRIES": "1",
                            "HSM_ONLY_KEY_SETS": "*", "HSM_TOKEN_TIMEOUT_SECONDS": "1",
                            "HSM_RETRY_INITIAL_SECONDS": "0.1", "HSM_RETRY_MAX_SECONDS": "0.5"}))
    from oidc.state import state_of

    service = state_of(op.app).key_service()
    service.start_recovery()
    trail = _trail(op)
    trail.seal()
    entry = {"at": 0, "event": "test.during", "fields": "{}"}
    slow_seals: list[float] = []
    sealer_appends: list[int] = []

    def seal_until_one_hangs() -> None:
        for _ in range(6):  # the audit set's tokens take turns: A's turn comes within two
            trail.append([entry])
            sealer_appends.append(1)
            started = time.monotonic()
            trail.seal()
            if time.monotonic() - started > 0.8:
                slow_seals.append(time.monotonic() - started)
                return

    remote_tokens.servers["A"].pause()
    try:
        sealing = threading.Thread(target=seal_until_one_hangs, daemon=True)
        sealing.start()
        appends: list[float] = []
        while sealing.is_alive() and len(appends) < 2000:
            started = time.monotonic()
            trail.append([entry])
            appends.append(time.monotonic() - started)
            time.sleep(0.01)
        sealing.join(timeout=10)
        assert slow_seals and slow_seals[0] < 3, slow_seals  # the hang was met, and given up in time
        assert max(appends) < 0.5, max(appends)  # never waited for the chain while A hung
    finally:
        remote_tokens.servers["A"].resume()
    trail.seal()
    result = trail.verify()
    assert result.ok and result.unsealed == 0, result.problem
    assert len([e for e in trail.export() if e["event"] == "test.during"]) == len(appends) + len(sealer_appends)
    trail.stop()
    service.close()
