"""Login page rules, the users/clients CLI and the admin API for clients and users."""

from __future__ import annotations

import json

import pytest

from oidc.web.login import GENERIC_LOGIN_ERROR

from oidc_fixtures import PASSWORD, REDIRECT_URI, registered_user

# -- login ----------------------------------------------------------------------------------------


def test_session_cookie_flags(op):
    op.add_user()
    response = op.login()
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-op_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_session_cookie_not_secure_on_an_http_issuer(make_app, base_env):
    from oidc_fixtures import Provider

    provider = Provider(make_app({**base_env, "OIDC_ISSUER": "http://localhost:8000"}))
    provider.add_user()
    cookie = provider.login().headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_one_generic_message_for_wrong_user_or_wrong_password(op):
    op.add_user()
    wrong_password = op.login(password="not the password")
    wrong_user = op.login(username="mallory")
    assert wrong_password.status_code == wrong_user.status_code == 401
    assert GENERIC_LOGIN_ERROR in wrong_password.text and GENERIC_LOGIN_ERROR in wrong_user.text
    assert "Set-Cookie" not in wrong_password.headers or "sid" not in wrong_password.headers.get("Set-Cookie", "")


def test_disabled_user_cannot_log_in(op):
    op.add_user()
    from oidc.accounts.users import set_disabled

    with op.app.app_context():
        set_disabled(registered_user("alice"), True)
    response = op.login()
    assert response.status_code == 401 and GENERIC_LOGIN_ERROR in response.text


def test_login_without_csrf_token_is_refused(op):
    op.add_user()
    response = op.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert op.count("LoginSession") == 0


def test_login_goes_nowhere_but_its_interaction(op):
    """A ``next`` is not read any more; an interaction id no row has is an error page, and no login is made."""
    from oidc_fixtures import hidden_fields

    op.add_user()
    page = op.get("/login?next=https://evil.example/authorize")
    fields = dict(hidden_fields(page.text))
    response = op.post("/login", data={**fields, "next": "https://evil.example/authorize?x=1", "username": "alice",
                                       "password": PASSWORD})
    assert response.status_code == 200 and "Location" not in response.headers and "Signed in" in response.text
    unknown = op.new_browser()
    assert unknown.get("/login?interaction=" + "x" * 43).status_code == 400
    refused = unknown.post("/login", data={**fields, "interaction": "x" * 43, "username": "alice",
                                           "password": PASSWORD})
    assert refused.status_code == 400 and "Location" not in refused.headers
    assert op.count("LoginSession") == 1


def test_failed_logins_are_rate_limited_per_account(make_app, base_env):
    from oidc_fixtures import Provider

    provider = Provider(make_app({**base_env, "LOGIN_RATE_LIMIT_PER_ACCOUNT": "3/minute",
                                  "LOGIN_RATE_LIMIT_PER_ADDRESS": "100/minute"}))
    provider.add_user()
    provider.add_user("bob")
    for _ in range(3):
        assert provider.login(password="wrong").status_code == 401
    locked = provider.login()  # even the right password: the account is locked for now
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    assert provider.login("bob").status_code == 200  # other accounts are not affected


def test_failed_logins_are_rate_limited_per_address(make_app, base_env):
    from oidc_fixtures import Provider

    provider = Provider(make_app({**base_env, "LOGIN_RATE_LIMIT_PER_ACCOUNT": "100/minute",
                                  "LOGIN_RATE_LIMIT_PER_ADDRESS": "3/minute"}))
    provider.add_user()
    for name in ("u1", "u2", "u3"):
        assert provider.login(name, "wrong").status_code == 401
    assert provider.login().status_code == 429


def test_successful_logins_are_not_counted(make_app, base_env):
    from oidc_fixtures import Provider

    provider = Provider(make_app({**base_env, "LOGIN_RATE_LIMIT_PER_ACCOUNT": "2/minute"}))
    provider.add_user()
    for _ in range(3):
        assert provider.login().status_code == 200


def test_pages_are_not_frameable(op):
    response = op.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# -- CLI ------------------------------------------------------------------------------------------


def _cli(op, *args: str, input: str | None = None):
    runner = op.app.test_cli_runner()
    return runner.invoke(args=list(args), input=input)


def test_users_cli(op):
    result = _cli(op, "users", "create", "Carol", "--password-stdin", "--email", "carol@example.test",
                  "--name", "Carol C", "--json", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["username"] == "carol" and created["sub"] and "password" not in result.output
    assert _cli(op, "users", "create", "carol", "--password-stdin", input=PASSWORD + "\n").exit_code != 0
    assert _cli(op, "users", "create", "dave", "--password-stdin", input="short\n").exit_code != 0
    listed = json.loads(_cli(op, "users", "list", "--json").output)
    assert [user["username"] for user in listed] == ["carol"]
    assert json.loads(_cli(op, "users", "show", "carol", "--json").output)["email"] == "carol@example.test"
    assert op.login("carol").status_code == 200
    assert _cli(op, "users", "set-password", "carol", "--password-stdin", input="a new password\n").exit_code == 0
    assert op.new_browser().login("carol").status_code == 401
    assert op.new_browser().login("carol", "a new password").status_code == 200
    assert _cli(op, "users", "disable", "carol").exit_code == 0
    assert op.new_browser().login("carol", "a new password").status_code == 401
    assert _cli(op, "users", "enable", "carol").exit_code == 0
    assert _cli(op, "users", "delete", "carol").exit_code == 0
    assert _cli(op, "users", "show", "carol").exit_code != 0


def test_clients_cli(op):
    result = _cli(op, "clients", "create", "--name", "CLI app", "--redirect-uri", REDIRECT_URI,
                  "--redirect-uri", "http://127.0.0.1:9999/cb", "--post-logout-redirect-uri",
                  "https://rp.example.test/bye", "--grant-type", "authorization_code", "--grant-type",
                  "refresh_token", "--scope", "openid email", "--auth-method", "client_secret_post",
                  "--first-party", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["client_id"] and len(created["client_secret"]) >= 43
    assert created["redirect_uris"] == [REDIRECT_URI, "http://127.0.0.1:9999/cb"]
    assert created["first_party"] is True and created["auth_method"] == "client_secret_post"
    public = json.loads(_cli(op, "clients", "create", "--name", "SPA", "--redirect-uri", REDIRECT_URI,
                             "--auth-method", "none", "--json").output)
    assert "client_secret" not in public
    shown = json.loads(_cli(op, "clients", "show", created["client_id"], "--json").output)
    assert "client_secret" not in shown and "secret_hash" not in json.dumps(shown)
    assert len(json.loads(_cli(op, "clients", "list", "--json").output)) == 2
    rotated = json.loads(_cli(op, "clients", "rotate-secret", created["client_id"], "--json").output)
    assert rotated["client_secret"] != created["client_secret"]
    assert _cli(op, "clients", "rotate-secret", public["client_id"]).exit_code != 0
    assert _cli(op, "clients", "disable", created["client_id"]).exit_code == 0
    assert json.loads(_cli(op, "clients", "show", created["client_id"], "--json").output)["disabled"] is True
    assert _cli(op, "clients", "enable", created["client_id"]).exit_code == 0
    assert _cli(op, "clients", "delete", created["client_id"]).exit_code == 0
    assert _cli(op, "clients", "show", created["client_id"]).exit_code != 0


@pytest.mark.parametrize("args", [
    ["--redirect-uri", "http://example.com/cb"],             # http off loopback
    ["--redirect-uri", "https://rp.example/cb#frag"],        # fragment
    ["--redirect-uri", "not a uri"],
    [],                                                      # code grant without redirect URI
    ["--redirect-uri", REDIRECT_URI, "--auth-method", "private_key_jwt"],  # no JWKS
    ["--grant-type", "client_credentials", "--auth-method", "none"],
])
def test_clients_cli_refuses_bad_registrations(op, args):
    result = _cli(op, "clients", "create", "--name", "x", *args)
    assert result.exit_code != 0
    assert op.count("Client") == 0


def test_rotated_secret_replaces_the_old_one(op):
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    rotated = json.loads(_cli(op, "clients", "rotate-secret", client_id, "--json").output)["client_secret"]
    data = {"grant_type": "client_credentials"}
    assert op.post("/token", data=data, auth=(client_id, secret)).status_code == 401
    assert op.post("/token", data=data, auth=(client_id, rotated)).status_code == 200


@pytest.mark.both_databases
def test_deleting_a_client_deletes_what_was_issued_to_it(op):
    op.add_user()
    client_id, secret = op.add_client()
    op.tokens(client_id, secret)
    assert _cli(op, "clients", "delete", client_id).exit_code == 0
    for model in ("AccessToken", "RefreshToken", "AuthorizationCode", "Consent"):
        assert op.count(model) == 0
    assert _cli(op, "users", "delete", "alice").exit_code == 0
    assert op.count("LoginSession") == 0


# -- admin API ------------------------------------------------------------------------------------


def test_admin_api_for_clients_and_users(op, admin_key):
    auth = {"Authorization": f"Bearer {admin_key}"}
    assert op.get("/admin/clients").status_code == 401
    assert op.get("/admin/clients", headers={"Authorization": "Bearer wrong"}).status_code == 401
    created = op.post("/admin/clients", headers=auth, json={"name": "API app", "redirect_uris": [REDIRECT_URI]})
    assert created.status_code == 201 and created.json["client_secret"]
    client_id = created.json["client_id"]
    assert op.get(f"/admin/clients/{client_id}", headers=auth).json["name"] == "API app"
    assert "client_secret" not in op.get(f"/admin/clients/{client_id}", headers=auth).json
    assert op.post("/admin/clients", headers=auth, json={"name": "x", "redirect_uris": ["ftp://x"]}).status_code == 400
    assert op.post("/admin/clients", headers=auth, json={"name": "x", "bogus": 1}).status_code == 400
    assert op.post("/admin/clients", headers=auth, data="not json").status_code == 400
    assert op.post(f"/admin/clients/{client_id}/secret", headers=auth).json["client_secret"]
    assert op.post(f"/admin/clients/{client_id}/disable", headers=auth).json["disabled"] is True
    assert op.delete(f"/admin/clients/{client_id}", headers=auth).status_code == 204

    user = op.post("/admin/users", headers=auth, json={"username": "erin", "password": PASSWORD,
                                                       "email": "erin@example.test"})
    assert user.status_code == 201 and "password" not in json.dumps(user.json)
    assert op.post("/admin/users", headers=auth, json={"username": "erin", "password": PASSWORD}).status_code == 400
    assert op.post("/admin/users", headers=auth, json={"username": "x", "password": 5}).status_code == 400
    assert op.get("/admin/users", headers=auth).json["users"][0]["username"] == "erin"
    assert op.post("/admin/users/erin/password", headers=auth, json={"password": "another password"}
                   ).status_code == 204
    assert op.login("erin", "another password").status_code == 200
    assert op.post("/admin/users/erin/disable", headers=auth).json["disabled"] is True
    assert op.get("/admin/users/nobody", headers=auth).status_code == 404


def test_admin_api_accepts_our_access_tokens_with_the_admin_scope(op):
    admin_id, admin_secret = op.add_client(grant_types=["client_credentials"], scope="admin", admin_api=True)
    plain_id, plain_secret = op.add_client(grant_types=["client_credentials"], scope="api")
    admin_token = op.post("/token", data={"grant_type": "client_credentials", "scope": "admin",
                                          "resource": "https://op.example.test/admin"},
                          auth=(admin_id, admin_secret)).json["access_token"]
    plain_token = op.post("/token", data={"grant_type": "client_credentials"},
                          auth=(plain_id, plain_secret)).json["access_token"]
    assert op.get("/admin/users", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    assert op.get("/admin/keys", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    assert op.get("/admin/users", headers={"Authorization": f"Bearer {plain_token}"}).status_code == 401
    op.post("/revoke", data={"token": admin_token}, auth=(admin_id, admin_secret))
    assert op.get("/admin/users", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 401
