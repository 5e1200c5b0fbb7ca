"""Discovery, userinfo, introspection, revocation and logout."""

from __future__ import annotations

import pytest

from oidc_fixtures import ISSUER, REDIRECT_URI, hidden_fields, query_of, registered_client, registered_user


def test_discovery_document(op):
    doc = op.get("/.well-known/openid-configuration").json
    assert doc["issuer"] == ISSUER
    for name, path in [("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                       ("userinfo_endpoint", "/userinfo"), ("introspection_endpoint", "/introspect"),
                       ("revocation_endpoint", "/revoke"), ("end_session_endpoint", "/logout"),
                       ("jwks_uri", "/.well-known/jwks.json")]:
        assert doc[name] == ISSUER + path
        if name != "jwks_uri":
            assert op.get(path).status_code != 404
    assert doc["response_types_supported"] == ["code"]
    assert set(doc["response_modes_supported"]) == {"query", "form_post", "jwt", "query.jwt", "fragment.jwt", "form_post.jwt"}
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials",
                                                 "urn:ietf:params:oauth:grant-type:device_code"}
    assert doc["device_authorization_endpoint"] == ISSUER + "/device_authorization"
    assert doc["subject_types_supported"] == ["public"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} == set(
        doc["token_endpoint_auth_methods_supported"])
    assert {"openid", "profile", "email", "offline_access"} <= set(doc["scopes_supported"])
    assert {"sub", "email", "name"} <= set(doc["claims_supported"])
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]


# -- userinfo ---------------------------------------------------------------------------------


def test_userinfo_get_and_post(op):
    op.add_user(email_verified=True)
    client_id, secret = op.add_client()
    token = op.tokens(client_id, secret, scope="openid email")["access_token"]
    by_header = op.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert by_header.status_code == 200 and by_header.headers["Cache-Control"] == "no-store"
    assert by_header.json["email"] == "alice@example.test" and by_header.json["email_verified"] is True
    assert "name" not in by_header.json  # profile was not granted
    by_post_header = op.post("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert by_post_header.json == by_header.json
    by_body = op.post("/userinfo", data={"access_token": token})
    assert by_body.json == by_header.json


@pytest.mark.parametrize("case,status,error", [
    ("none", 401, None), ("garbage", 401, "invalid_token"), ("basic", 401, None),
    ("both", 400, "invalid_request"), ("no openid", 403, "insufficient_scope"), ("id token", 401, "invalid_token"),
])
def test_userinfo_errors(op, case, status, error):
    op.add_user()
    client_id, secret = op.add_client(scope="openid api offline_access")
    body = op.tokens(client_id, secret, scope="openid")
    token = body["access_token"]
    headers, data = {}, None
    if case == "garbage":
        headers = {"Authorization": "Bearer abc.def.ghi"}
    elif case == "basic":
        headers = {"Authorization": "Basic eDp5"}
    elif case == "both":
        headers, data = {"Authorization": f"Bearer {token}"}, {"access_token": token}
    elif case == "no openid":
        headers = {"Authorization": "Bearer " + op.tokens(client_id, secret, scope="api")["access_token"]}
    elif case == "id token":
        headers = {"Authorization": "Bearer " + body["id_token"]}  # typ is not at+jwt
    response = op.post("/userinfo", headers=headers, data=data) if data else op.get("/userinfo", headers=headers)
    assert response.status_code == status
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


def test_revoked_access_token_is_refused_by_userinfo(op):
    op.add_user()
    client_id, secret = op.add_client()
    token = op.tokens(client_id, secret)["access_token"]
    assert op.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    assert op.get("/userinfo", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# -- introspection and revocation ------------------------------------------------------------------


def test_introspection_of_own_tokens(op):
    op.add_user()
    client_id, secret = op.add_client()
    body = op.tokens(client_id, secret)
    access = op.post("/introspect", data={"token": body["access_token"]}, auth=(client_id, secret))
    assert access.status_code == 200 and access.headers["Cache-Control"] == "no-store"
    info = access.json
    assert info["active"] is True and info["client_id"] == client_id and info["username"] == "alice"
    assert info["scope"] == "openid profile email offline_access" and info["iss"] == ISSUER
    refresh = op.post("/introspect", data={"token": body["refresh_token"], "token_type_hint": "refresh_token"},
                      auth=(client_id, secret)).json
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    unknown = op.post("/introspect", data={"token": "nothing-like-a-token"}, auth=(client_id, secret))
    assert unknown.json == {"active": False}


def test_token_of_one_client_introspected_by_another(op):
    op.add_user()
    client_id, secret = op.add_client()
    other_id, other_secret = op.add_client(grant_types=["client_credentials"], scope="api")
    rs_id, rs_secret = op.add_client(grant_types=["client_credentials"], scope="api", resource_server=True,
                                     audiences=[ISSUER])  # the tokens' (default) audience
    token = op.tokens(client_id, secret)["access_token"]
    assert op.post("/introspect", data={"token": token}, auth=(other_id, other_secret)).json == {"active": False}
    assert op.post("/introspect", data={"token": token}, auth=(rs_id, rs_secret)).json["active"] is True


def test_introspection_needs_client_authentication(op):
    client_id, _ = op.add_client(auth_method="none")
    response = op.post("/introspect", data={"token": "x", "client_id": client_id})
    assert response.status_code == 401 and response.json["error"] == "invalid_client"
    response = op.post("/introspect", data={"token": "x"})
    assert response.status_code == 401
    confidential, secret = op.add_client()
    assert op.post("/introspect", data={}, auth=(confidential, secret)).json["error"] == "invalid_request"


@pytest.mark.both_databases
def test_revocation(op):
    op.add_user()
    client_id, secret = op.add_client()
    other_id, other_secret = op.add_client()
    body = op.tokens(client_id, secret)
    # Another client cannot revoke it.
    refused = op.post("/revoke", data={"token": body["access_token"]}, auth=(other_id, other_secret))
    assert refused.status_code == 400 and refused.json["error"] == "unauthorized_client"
    assert op.post("/introspect", data={"token": body["access_token"]}, auth=(client_id, secret)).json["active"]
    # Unknown tokens: 200.
    assert op.post("/revoke", data={"token": "unknown"}, auth=(client_id, secret)).status_code == 200
    # Revoking the refresh token ends the grant: refresh and access tokens.
    assert op.post("/revoke", data={"token": body["refresh_token"]}, auth=(client_id, secret)).status_code == 200
    for token in (body["access_token"], body["refresh_token"]):
        assert op.post("/introspect", data={"token": token}, auth=(client_id, secret)).json == {"active": False}
    refresh = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                      auth=(client_id, secret))
    assert refresh.json["error"] == "invalid_grant"


def test_public_client_revokes_its_own_token(op):
    op.add_user()
    client_id, _ = op.add_client(auth_method="none")
    body = op.tokens(client_id, None)
    assert op.post("/revoke", data={"token": body["refresh_token"], "client_id": client_id}).status_code == 200
    refresh = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                      "client_id": client_id})
    assert refresh.json["error"] == "invalid_grant"


def test_disabled_user_tokens_become_inactive(op):
    op.add_user()
    client_id, secret = op.add_client()
    body = op.tokens(client_id, secret)
    from oidc.accounts.users import set_disabled

    with op.app.app_context():
        set_disabled(registered_user("alice"), True)
    assert op.post("/introspect", data={"token": body["access_token"]}, auth=(client_id, secret)).json == {
        "active": False}
    assert op.get("/userinfo", headers={"Authorization": "Bearer " + body["access_token"]}).status_code == 401
    refresh = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                      auth=(client_id, secret))
    assert refresh.status_code == 400


# -- logout ------------------------------------------------------------------------------------


LOGOUT_URI = "https://rp.example.test/logged-out"


def test_rp_initiated_logout_with_id_token_hint(op):
    op.add_user()
    client_id, secret = op.add_client(post_logout_redirect_uris=[LOGOUT_URI])
    body = op.tokens(client_id, secret)
    response = op.get("/logout", query_string={"id_token_hint": body["id_token"], "post_logout_redirect_uri":
                                               LOGOUT_URI, "state": "bye &x"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith(LOGOUT_URI + "?")
    assert query_of(response.headers["Location"])["state"] == ["bye &x"]
    # The session has ended: prompt=none now needs a login.
    again = op.get("/authorize", query_string={"response_type": "code", "client_id": client_id, "redirect_uri":
                                               REDIRECT_URI, "scope": "openid", "prompt": "none", "state": "s",
                                               "code_challenge": "a" * 43, "code_challenge_method": "S256"})
    assert query_of(again.headers["Location"])["error"] == ["login_required"]


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    # Four whole characters (24 bits) replaced by others: the signature's bytes change.
    return f"{header}.{payload}.{signature[:-8]}{'AAAA' if signature[-8:-4] != 'AAAA' else 'BBBB'}{signature[-4:]}"


@pytest.mark.parametrize("changes", [
    pytest.param(lambda body, other: {"post_logout_redirect_uri": "https://evil.example/"}, id="unregistered uri"),
    pytest.param(lambda body, other: {"post_logout_redirect_uri": LOGOUT_URI + "/x"}, id="prefix uri"),
    pytest.param(lambda body, other: {"id_token_hint": None}, id="uri without client"),
    pytest.param(lambda body, other: {"id_token_hint": _tampered(body["id_token"])}, id="bad hint"),
    pytest.param(lambda body, other: {"client_id": other}, id="client mismatch"),
    pytest.param(lambda body, other: {"id_token_hint": body["access_token"]}, id="access token as hint"),
])
def test_logout_refusals_are_error_pages(op, changes):
    """RP-Initiated Logout 1.0 §3-4: no redirection to an unregistered URI or on an error."""
    op.add_user()
    client_id, secret = op.add_client(post_logout_redirect_uris=[LOGOUT_URI])
    other_id, _ = op.add_client(post_logout_redirect_uris=[LOGOUT_URI])
    body = op.tokens(client_id, secret)
    params = {"id_token_hint": body["id_token"], "post_logout_redirect_uri": LOGOUT_URI, **changes(body, other_id)}
    params = {name: value for name, value in params.items() if value is not None}
    response = op.get("/logout", query_string=params)
    assert response.status_code == 400 and "Location" not in response.headers


def test_logout_without_hint_asks_for_confirmation(op):
    op.add_user()
    client_id, _ = op.add_client(post_logout_redirect_uris=[LOGOUT_URI])
    op.login()
    page = op.get("/logout", query_string={"client_id": client_id, "post_logout_redirect_uri": LOGOUT_URI})
    assert page.status_code == 200 and "Sign out?" in page.text
    data = dict(hidden_fields(page.text))
    no_csrf = op.post("/logout", data={k: v for k, v in data.items() if k != "csrf_token"} | {"confirm": "yes"})
    assert no_csrf.status_code == 200 and "Sign out?" in no_csrf.text  # asked again, still signed in
    done = op.post("/logout", data=data | {"confirm": "yes"})
    assert done.status_code == 303 and done.headers["Location"] == LOGOUT_URI
    assert "Sign out?" not in op.get("/logout").text


def test_logout_with_the_hint_of_an_ended_session_asks_for_confirmation(op):
    """RP-Initiated Logout 1.0 §2: a hint whose sid is not the current session is suspect. The user
    signed in since: a hint of an earlier login (same user, another sid) does not sign them out unasked."""
    op.add_user()
    client_id, secret = op.add_client(post_logout_redirect_uris=[LOGOUT_URI])
    old = op.tokens(client_id, secret)["id_token"]
    op.get("/logout", query_string={"id_token_hint": old})  # that session ends
    op.tokens(client_id, secret)  # a new login, a new sid
    params = {"id_token_hint": old, "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"}
    page = op.get("/logout", query_string=params)
    assert page.status_code == 200 and "Sign out?" in page.text and "Location" not in page.headers
    assert "Sign out?" in op.get("/logout").text  # still signed in
    done = op.post("/logout", data=dict(hidden_fields(page.text)) | {"confirm": "yes"})  # the user confirms
    assert done.status_code == 303 and done.headers["Location"].startswith(LOGOUT_URI + "?")


def test_logout_without_a_session_does_not_redirect_on_its_own(op):
    """RP-Initiated Logout 1.0 §2: with no current session, the hint's sid matches none and the
    request is suspect: no redirection is performed for it, the user is offered the way back."""
    op.add_user()
    client_id, secret = op.add_client(name="Photo Printer", post_logout_redirect_uris=[LOGOUT_URI])
    hint = op.tokens(client_id, secret)["id_token"]
    op.clock.advance(30 * 24 * 3600)  # an old token; the session expired long ago
    for params in ({"id_token_hint": hint, "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"},
                   {"client_id": client_id, "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"}):
        response = op.get("/logout", query_string=params)
        assert response.status_code == 200 and "Location" not in response.headers, params
        assert "You are signed out" in response.text
        assert f'href="{LOGOUT_URI}?state=bye"' in response.text and "Photo Printer" in response.text
    assert "Location" not in op.new_browser().get("/logout", query_string={"id_token_hint": hint}).headers


@pytest.mark.both_databases
def test_client_credentials_token_is_stateless_until_revoked(op):
    """Issuing a client_credentials token writes nothing; revoking it records its jti."""
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    rows = op.count("AccessToken")
    token = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                    auth=(client_id, secret)).json["access_token"]
    assert op.count("AccessToken") == rows
    introspected = op.post("/introspect", data={"token": token}, auth=(client_id, secret)).json
    assert introspected["active"] is True and introspected["client_id"] == client_id
    assert introspected["sub"] == client_id and introspected["scope"] == "api"
    # Userinfo: a valid token, but not for a user.
    refused = op.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403 and 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]

    assert op.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    assert op.count("AccessToken") == rows + 1
    assert op.post("/introspect", data={"token": token}, auth=(client_id, secret)).json == {"active": False}
    assert op.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    assert op.count("AccessToken") == rows + 1  # revoking twice records it once

    # A deleted client's tokens are inactive.
    other = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                    auth=(client_id, secret)).json["access_token"]
    rs_id, rs_secret = op.add_client(grant_types=["client_credentials"], scope="api", resource_server=True,
                                     audiences=[ISSUER])  # the tokens' (default) audience
    assert op.post("/introspect", data={"token": other}, auth=(rs_id, rs_secret)).json["active"] is True
    from oidc.accounts.clients import delete_client

    with op.app.app_context():
        delete_client(registered_client(client_id))
    assert op.post("/introspect", data={"token": other}, auth=(rs_id, rs_secret)).json == {"active": False}
