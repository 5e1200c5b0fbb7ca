"""Rotation safety for resource servers, and the JWKS endpoint's caching contract."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from keys.errors import NoSigningKey
from oidc.db import db

from support import start_key_service


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _kids(client):
    return {key["kid"] for key in client.get("/.well-known/jwks.json").json["keys"]}


def test_rotation_publishes_before_signing_and_retires_after_tokens_expire(make_app, base_env):
    env = {**base_env, "JWKS_MAX_AGE": "60", "KEY_PREPUBLICATION_SECONDS": "120",
           "ACCESS_TOKEN_LIFETIME": "600", "ID_TOKEN_LIFETIME": "300", "KEYS_REFRESH_SECONDS": "1"}
    app = make_app(env)
    service = start_key_service(app)
    clock = Clock(service.clock())
    service.clock = clock
    client = app.test_client()
    old = service.signer("jwt.access-token").kid

    new = service.generate("jwt.access-token").kid
    # Published at once, so caches that refresh within max-age learn it in time...
    assert {old, new} <= _kids(client)
    statuses = {s.record.kid: s.status for s in service.keys("jwt.access-token")}
    assert statuses == {old: "active", new: "next"}
    # ...but it does not sign before the pre-publication period has passed.
    clock.now += 119
    assert service.signer("jwt.access-token").kid == old
    clock.now += 1
    assert service.signer("jwt.access-token").kid == new

    # The old key stays published for the retention period (longest token + max-age = 660 s).
    clock.now += 659
    service.refresh()
    assert old in _kids(client)
    assert {s.record.kid: s.status for s in service.keys("jwt.access-token")}[old] == "previous"
    clock.now += 1
    service.refresh()
    assert old not in _kids(client) and new in _kids(client)

    # Retiring deletes the software row; the new key and the other set are untouched.
    retired = service.retire_expired()
    assert [record.kid for record in retired] == [old]
    assert [s.record.kid for s in service.keys("jwt.access-token")] == [new]
    assert service.signer("openid.id-token")


def test_first_key_of_a_new_set_signs_at_once(make_app, base_env):
    service = start_key_service(make_app(base_env))
    record = service.generate("custom.set", "ES384")
    assert service.signer("custom.set").kid == record.kid
    assert record.active_at == record.created_at


def test_unknown_set_has_no_signer(make_app, base_env):
    service = start_key_service(make_app(base_env))
    with pytest.raises(NoSigningKey):
        service.signer("no.such.set")


def test_jwks_caching_headers_and_conditional_get(make_app, base_env):
    app = make_app({**base_env, "JWKS_MAX_AGE": "123"})
    client = app.test_client()
    first = client.get("/.well-known/jwks.json")
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "public, max-age=123"
    assert first.content_type == "application/jwk-set+json"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    not_modified = client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.data == b""
    assert not_modified.headers["ETag"] == etag
    stale = client.get("/.well-known/jwks.json", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200

    # A change of keys changes the entity tag.
    start_key_service(app).generate("openid.id-token")
    changed = client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_jwks_does_no_database_work_per_request(make_app, base_env):
    app = make_app(base_env)
    client = app.test_client()
    client.get("/.well-known/jwks.json")  # starts the service
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(50):
            assert client.get("/.well-known/jwks.json").status_code == 200
            assert client.get("/.well-known/openid-configuration").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


@pytest.mark.both_databases
def test_other_processes_see_new_keys_after_the_refresh_interval(make_app, base_env):
    env = {**base_env, "KEYS_REFRESH_SECONDS": "5"}
    first = start_key_service(make_app(env))
    second = start_key_service(make_app(env))  # another worker on the same database
    clock = Clock(second.clock())
    second.clock = clock
    record = first.generate("jwt.access-token")
    assert second.public_key(record.kid) is None  # served from its snapshot
    clock.now += 5
    assert second.public_key(record.kid) == first.public_key(record.kid)


def test_discovery_document(make_app, base_env):
    app = make_app({**base_env, "ID_TOKEN_SIGNING_ALG": "PS256"})
    document = app.test_client().get("/.well-known/openid-configuration").json
    assert document["issuer"] == "https://op.example.test"
    assert document["jwks_uri"] == "https://op.example.test/.well-known/jwks.json"
    assert "PS256" in document["id_token_signing_alg_values_supported"]


def test_issuer_is_configuration_not_request_headers(make_app, base_env):
    app = make_app({**base_env, "TRUSTED_PROXY_HOPS": "1"})
    document = app.test_client().get(
        "/.well-known/openid-configuration",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"},
    ).json
    assert document["issuer"] == "https://op.example.test"
    assert "evil" not in document["jwks_uri"]
