"""Tokens end with the login that made them (outside review item 11)."""

from __future__ import annotations

from oidc_fixtures import PASSWORD, jwt_parts


def _refresh(op, client, refresh_token):
    return op.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=client)


def _active(op, client, token):
    return op.post("/introspect", data={"token": token}, auth=client).json["active"]


def _logout(op, id_token):
    response = op.get("/logout", query_string={"id_token_hint": id_token})
    assert response.status_code == 200 and "You are signed out" in response.text


def test_logout_ends_the_grants_of_its_session_but_not_offline_ones(op):
    """OIDC Core §11 and RP-Initiated Logout 1.0 §2: a refresh token without offline_access ends with
    the login session (its family's access tokens too); an offline_access one survives logout, and
    rotation does not carry the ended session's sid into the new tokens."""
    op.add_user()
    client = op.add_client(refresh_always=True)
    online = op.tokens(*client, scope="openid profile")
    offline = op.tokens(*client, scope="openid offline_access")
    assert "refresh_token" in online and jwt_parts(offline["id_token"])[1]["sid"]
    _logout(op, online["id_token"])

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
    from oidc.accounts.users import get_user, set_disabled

    op.add_user()
    client = op.add_client()
    offline = op.tokens(*client, scope="openid offline_access")
    with op.app.app_context():
        set_disabled(get_user("alice"), True)
        set_disabled(get_user("alice"), False)
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
