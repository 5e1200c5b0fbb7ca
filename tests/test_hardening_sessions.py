"""Tokens end with the login that made them (outside review item 11)."""

from __future__ import annotations

import pytest

from oidc_fixtures import PASSWORD, jwt_parts, registered_user


def _refresh(op, client, refresh_token):
    return op.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=client)


def _active(op, client, token):
    return op.post("/introspect", data={"token": token}, auth=client).json["active"]


def _logout(op, id_token):
    response = op.get("/logout", query_string={"id_token_hint": id_token})
    assert response.status_code == 200 and "You are signed out" in response.text


def test_logout_ends_the_grants_of_its_session_but_not_offline_ones(op):
    """OIDC Core §11 and RP-Initiated Logout 1.0 §2: a refresh token without offline_access ends with
    the login session (its family's access tokens too, and those of a grant without refresh token);
    an offline_access one survives logout, and rotation does not carry the ended session's sid into
    the new tokens."""
    op.add_user()
    client = op.add_client(refresh_always=True)
    online = op.tokens(*client, scope="openid profile")
    offline = op.tokens(*client, scope="openid offline_access")
    without_refresh = op.add_client(grant_types=["authorization_code"])
    online_without_refresh = op.tokens(*without_refresh, scope="openid")
    assert "refresh_token" in online and jwt_parts(offline["id_token"])[1]["sid"]
    _logout(op, online["id_token"])
    assert _active(op, without_refresh, online_without_refresh["access_token"]) is False

    response = _refresh(op, client, online["refresh_token"])
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"
    assert _active(op, client, online["access_token"]) is False

    response = _refresh(op, client, offline["refresh_token"])
    assert response.status_code == 200, response.json
    assert "sid" not in jwt_parts(response.json["id_token"])[1]
    from oidc.models import RefreshToken

    with op.app.app_context():
        newest = RefreshToken.query.order_by(RefreshToken.id.desc()).first()
        assert newest.sid is None


def test_an_unredeemed_code_of_an_ended_session_is_refused(op):
    """OIDC Core §11: a code issued before logout does not start a grant after it."""
    op.add_user()
    client = op.add_client(refresh_always=True)
    earlier = op.tokens(*client, scope="openid")
    flow = op.code_flow(client[0], scope="openid")
    _logout(op, earlier["id_token"])
    response = op.redeem(*client, flow)
    assert response.status_code == 400 and response.json["error"] == "invalid_grant"


def test_password_change_ends_online_grants_and_revoke_grants_ends_every_grant(op, admin_key):
    """OIDC Core §11 and RFC 9700 §4.14.2 (refresh tokens revoked on a security event): a new password
    ends the user's sessions and their grants; offline_access grants survive unless the change asks
    (flask users set-password --revoke-grants, or "revoke_grants" in the admin API)."""
    op.add_user()
    client = op.add_client(refresh_always=True)
    online = op.tokens(*client, scope="openid")
    offline = op.tokens(*client, scope="openid offline_access")
    result = op.app.test_cli_runner().invoke(args=["users", "set-password", "alice", "--password-stdin"],
                                             input="another password 1\n")
    assert result.exit_code == 0, result.output
    assert _refresh(op, client, online["refresh_token"]).json["error"] == "invalid_grant"
    offline_body = _refresh(op, client, offline["refresh_token"]).json
    assert "refresh_token" in offline_body

    result = op.app.test_cli_runner().invoke(
        args=["users", "set-password", "alice", "--password-stdin", "--revoke-grants"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert _refresh(op, client, offline_body["refresh_token"]).json["error"] == "invalid_grant"
    assert _active(op, client, offline_body["access_token"]) is False

    again = op.new_browser().tokens(*client, scope="openid offline_access")
    response = op.post("/admin/users/alice/password", json={"password": "a third password", "revoke_grants": True},
                       headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 204
    assert _refresh(op, client, again["refresh_token"]).json["error"] == "invalid_grant"


def test_disabling_a_user_ends_every_grant_for_good(op):
    """OIDC Core §11: offline access ends with the account; enabling it again revives nothing."""
    from oidc.accounts.users import set_disabled

    op.add_user()
    client = op.add_client()
    offline = op.tokens(*client, scope="openid offline_access")
    with op.app.app_context():
        set_disabled(registered_user("alice"), True)
        set_disabled(registered_user("alice"), False)
    assert _refresh(op, client, offline["refresh_token"]).json["error"] == "invalid_grant"
    assert _active(op, client, offline["access_token"]) is False


def test_refresh_families_have_an_absolute_lifetime(make_app, base_env):
    """RFC 9700 §4.14.2: refresh tokens may expire after a lifetime regardless of use
    (REFRESH_TOKEN_MAX_LIFETIME), besides their idle lifetime (REFRESH_TOKEN_LIFETIME)."""
    from oidc_fixtures import Provider

    op = Provider(make_app({**base_env, "REFRESH_TOKEN_LIFETIME": "100", "REFRESH_TOKEN_MAX_LIFETIME": "250"}))
    op.add_user()
    client = op.add_client()
    token = op.tokens(*client, scope="openid offline_access")["refresh_token"]
    for _ in range(2):
        op.clock.advance(90)
        response = _refresh(op, client, token)
        assert response.status_code == 200, response.json
        token = response.json["refresh_token"]
    op.clock.advance(80)  # 260 s into the family, 80 s after the last use
    assert _refresh(op, client, token).json["error"] == "invalid_grant"


def _userinfo(op, access_token):
    return op.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def _cut_off(op, client, access_token):
    """The access token is inactive at introspection and refused by /userinfo (RFC 7662 §2.2, RFC 6750 §3.1)."""
    response = _userinfo(op, access_token)
    return (_active(op, client, access_token) is False and response.status_code == 401
            and 'error="invalid_token"' in response.headers["WWW-Authenticate"])


@pytest.mark.both_databases
def test_revoke_grants_cuts_off_every_access_token_of_the_user_at_once(op, admin_key):
    """The compromised-account runbook (README): set-password --revoke-grants, or the admin API's
    "revoke_grants", makes every access token of the user inactive at once: those of grants with a
    refresh token, and those of grants without one (no refresh_token grant, or no offline_access on a
    client without refresh_always).  A client's own client_credentials token has no user and stays."""
    op.add_user()
    op.add_user("bob")
    with_refresh = op.add_client(refresh_always=True)
    without_refresh = op.add_client(grant_types=["authorization_code"])
    machine = op.add_client(grant_types=["client_credentials"], scope="api")

    def alice_tokens(browser, password):
        """(client, access token) of an offline grant, an online one, and an offline one without refresh token."""
        grants = [(with_refresh, "openid offline_access"), (with_refresh, "openid profile"),
                  (without_refresh, "openid offline_access")]
        bodies = [browser.tokens(*client, scope=scope, password=password) for client, scope in grants]
        assert "refresh_token" not in bodies[2]
        return [(client, body["access_token"]) for (client, _), body in zip(grants, bodies, strict=True)]

    bob = op.new_browser().tokens(*without_refresh, scope="openid", username="bob")["access_token"]
    response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"}, auth=machine)
    machine_token = response.json["access_token"]

    issued = alice_tokens(op, PASSWORD)
    for client, access_token in issued:
        assert _active(op, client, access_token) is True and _userinfo(op, access_token).status_code == 200
    result = op.app.test_cli_runner().invoke(
        args=["users", "set-password", "alice", "--password-stdin", "--revoke-grants"], input="another password 1\n")
    assert result.exit_code == 0, result.output
    for client, access_token in issued:
        assert _cut_off(op, client, access_token), access_token

    issued = alice_tokens(op.new_browser(), "another password 1")
    response = op.post("/admin/users/alice/password", json={"password": PASSWORD, "revoke_grants": True},
                       headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 204
    for client, access_token in issued:
        assert _cut_off(op, client, access_token), access_token

    assert _active(op, without_refresh, bob) is True and _userinfo(op, bob).status_code == 200
    assert _active(op, machine, machine_token) is True


def test_a_password_change_ends_online_grants_without_refresh_tokens_and_keeps_offline_ones(op):
    """OIDC Core §11: without --revoke-grants a new password ends the grants that end with a login,
    refresh token or not; an offline_access grant's access tokens stay active, a narrowed one too
    (its family is offline whatever scope one of its access tokens was narrowed to)."""
    op.add_user()
    with_refresh = op.add_client(refresh_always=True)
    without_refresh = op.add_client(grant_types=["authorization_code"])
    online = op.tokens(*without_refresh, scope="openid")["access_token"]
    offline = op.tokens(*with_refresh, scope="openid offline_access")
    narrowed = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": offline["refresh_token"],
                                       "scope": "openid"}, auth=with_refresh).json
    assert narrowed["scope"] == "openid", narrowed
    result = op.app.test_cli_runner().invoke(args=["users", "set-password", "alice", "--password-stdin"],
                                             input="another password 1\n")
    assert result.exit_code == 0, result.output
    assert _cut_off(op, without_refresh, online)
    assert _active(op, with_refresh, narrowed["access_token"]) is True
    assert _refresh(op, with_refresh, narrowed["refresh_token"]).status_code == 200


def _introspection_and_grant_agree(op, client, refresh_token):
    """Introspect the refresh token, then use it: whether both said it is usable (RFC 7662 §2.2)."""
    active = _active(op, client, refresh_token)
    response = _refresh(op, client, refresh_token)
    assert active is (response.status_code == 200), (active, response.json)
    if response.status_code != 200:
        assert response.json["error"] == "invalid_grant"
    return active


def test_introspection_and_the_refresh_grant_agree_when_the_login_ends(op):
    """OIDC Core §11: a refresh token without offline_access ends with its login session, whether the
    session expired (LOGIN_SESSION_LIFETIME) or was logged out of; /introspect says so too (RFC 7662
    §2.2: active only while it can be used).  An offline_access one stays usable, and stays active."""
    op.add_user()
    client = op.add_client(refresh_always=True)
    expiring = op.tokens(*client, scope="openid")
    kept = op.tokens(*client, scope="openid offline_access")
    op.clock.advance(8 * 3600 + 1)  # the login session's lifetime, not the refresh tokens' (30 days)
    assert _introspection_and_grant_agree(op, client, expiring["refresh_token"]) is False
    assert _introspection_and_grant_agree(op, client, kept["refresh_token"]) is True

    browser = op.new_browser()
    online = browser.tokens(*client, scope="openid")
    offline = browser.tokens(*client, scope="openid offline_access")
    _logout(browser, online["id_token"])
    assert _introspection_and_grant_agree(op, client, online["refresh_token"]) is False
    assert _introspection_and_grant_agree(op, client, offline["refresh_token"]) is True
