"""Clients authenticated from memory (oidc/oauth2/client_cache.py): what a change costs to apply."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from oidc_fixtures import Provider, registered_client


def _cc(op: Provider, client_id: str, secret: str) -> int:
    return op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                   auth=(client_id, secret)).status_code


def _client(op: Provider) -> tuple[str, str]:
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="client_secret_basic")
    assert secret is not None
    return client_id, secret


def test_changes_through_the_client_store_apply_at_once(make_app, base_env):
    op = Provider(make_app({**base_env, "CLIENT_CACHE_SECONDS": "3600"}))
    from oidc.accounts.clients import delete_client, rotate_secret, set_disabled

    client_id, secret = _client(op)
    assert _cc(op, client_id, secret) == 200  # now in the cache
    with op.app.app_context():
        new_secret = rotate_secret(registered_client(client_id))
    assert _cc(op, client_id, secret) == 401
    assert _cc(op, client_id, new_secret) == 200

    with op.app.app_context():
        set_disabled(registered_client(client_id), True)
    assert _cc(op, client_id, new_secret) == 401
    with op.app.app_context():
        set_disabled(registered_client(client_id), False)
    assert _cc(op, client_id, new_secret) == 200

    with op.app.app_context():
        delete_client(registered_client(client_id))
    response = op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, new_secret))
    assert response.status_code == 401 and response.json["error"] == "invalid_client"


def _disable_from_elsewhere(database_url: str, client_id: str) -> None:
    """What another instance does: write to the database, behind this process's back."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE clients SET disabled = :yes WHERE client_id = :id"),
                           {"yes": True, "id": client_id})
    engine.dispose()


@pytest.mark.both_databases
def test_changes_made_elsewhere_apply_within_client_cache_seconds(make_app, base_env):
    op = Provider(make_app({**base_env, "CLIENT_CACHE_SECONDS": "1"}))
    client_id, secret = _client(op)
    assert _cc(op, client_id, secret) == 200
    _disable_from_elsewhere(base_env["DATABASE_URL"], client_id)
    deadline = time.monotonic() + 1.5
    status = _cc(op, client_id, secret)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _cc(op, client_id, secret)
    assert status == 401


def test_without_the_cache_changes_made_elsewhere_apply_at_once(make_app, base_env):
    op = Provider(make_app({**base_env, "CLIENT_CACHE_SECONDS": "0"}))
    client_id, secret = _client(op)
    assert _cc(op, client_id, secret) == 200
    _disable_from_elsewhere(base_env["DATABASE_URL"], client_id)
    assert _cc(op, client_id, secret) == 401


def test_unknown_clients_are_not_cached(make_app, base_env):
    op = Provider(make_app({**base_env, "CLIENT_CACHE_SECONDS": "3600"}))
    from oidc.oauth2.client_cache import current_client_cache

    for number in range(50):
        assert _cc(op, f"no-such-client-{number}", "x" * 43) == 401
    client_id, secret = _client(op)
    assert _cc(op, client_id, secret) == 200
    with op.app.app_context():
        assert list(current_client_cache()._entries) == [client_id]


def test_a_cached_client_reads_as_its_row_and_refuses_writes(make_app, base_env):
    op = Provider(make_app({**base_env, "CLIENT_CACHE_SECONDS": "3600"}))
    from sqlalchemy import inspect

    from oidc.models import Client
    from oidc.oauth2.client_cache import CachedClient, current_client_cache

    client_id, _ = op.add_client(grant_types=["authorization_code", "refresh_token"], scope="openid profile",
                                 auth_method="client_secret_basic", redirect_uris=["https://rp.example/cb"])
    with op.app.app_context():
        row = registered_client(client_id)
        cached = current_client_cache().get(client_id)
        assert isinstance(cached, CachedClient)
        for attribute in inspect(Client).column_attrs:
            assert getattr(cached, attribute.key) == getattr(row, attribute.key), attribute.key
        # Client's own methods and properties, the same answers.
        assert cached.as_dict() == row.as_dict()
        assert (cached.scopes, cached.is_public, cached.get_client_id()) == (row.scopes, row.is_public, client_id)
        assert cached.get_default_redirect_uri() == "https://rp.example/cb"
        assert cached.check_redirect_uri("https://rp.example/cb") and not cached.check_redirect_uri("https://rp.example/")
        assert cached.check_grant_type("refresh_token") and not cached.check_grant_type("client_credentials")
        assert cached.check_response_type("code")
        with pytest.raises(AttributeError):
            cached.disabled = True  # shared by every request until it expires: changes go to the row
