"""Bad requests found by the outside review and the bad-input sweep: each gets the error its RFC names.

Every test here failed on the code before the fix it belongs to.
"""

from __future__ import annotations

import base64

from oidc_fixtures import ISSUER, REDIRECT_URI, pkce_pair, query_of


def _assert_json_error(response, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    assert response.json["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    assert "Traceback" not in response.get_data(as_text=True)


def _params(client_id: str, **extra: str | None) -> dict[str, str]:
    _, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
              "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(extra)  # type: ignore[arg-type]
    return {key: value for key, value in params.items() if value is not None}


def _client_credentials_client(op):
    return op.add_client(grant_types=["client_credentials"], scope="api")


# -- /token ---------------------------------------------------------------------------------


def test_oversized_form_parameter_at_token_is_413_json_not_500(op):
    """RFC 6749 §5.2: a request the server cannot parse is invalid_request (here 413, JSON,
    Cache-Control: no-store per §5.1), even though an after-request hook reads the form."""
    client_id, secret = _client_credentials_client(op)
    for name in ("scope", "grant_type", "client_id"):
        response = op.post("/token", data={"grant_type": "client_credentials", name: "x" * 100_000},
                           auth=(client_id, secret))
        _assert_json_error(response, 413, "invalid_request")


def test_a_form_body_that_is_not_utf8_is_a_400_not_a_500(op):
    """RFC 6749 Appendix B: form parameters are UTF-8.  Raw octets that are not (unlike a
    percent-encoded %FF, which is read as werkzeug reads it) are invalid_request at the OAuth
    endpoints and /userinfo (with its Bearer challenge) and the error page at the login form,
    never an unhandled UnicodeDecodeError."""
    client_id, secret = _client_credentials_client(op)
    body = b"grant_type=client_credentials&scope=\xff\xfe"
    for path in ("/token", "/introspect", "/revoke", "/par"):
        response = op.post(path, data=body, content_type="application/x-www-form-urlencoded",
                           auth=(client_id, secret))
        _assert_json_error(response, 400, "invalid_request")
    page = op.post("/login", data=b"username=\xff", content_type="application/x-www-form-urlencoded")
    assert page.status_code == 400 and "Traceback" not in page.get_data(as_text=True)
    userinfo = op.post("/userinfo", data=b"access_token=\xff", content_type="application/x-www-form-urlencoded")
    assert userinfo.status_code == 400 and userinfo.json["error"] == "invalid_request"  # RFC 6750 §3.1
    assert userinfo.headers["WWW-Authenticate"].startswith("Bearer ")


def test_token_request_without_grant_type_is_invalid_request(op):
    """RFC 6749 §5.2: a missing required parameter is invalid_request, not unsupported_grant_type."""
    client_id, secret = _client_credentials_client(op)
    _assert_json_error(op.post("/token", data={"scope": "api"}, auth=(client_id, secret)), 400, "invalid_request")


def test_unsupported_grant_type_with_forbidden_characters_is_not_a_500(op):
    """RFC 6749 §5.2 unsupported_grant_type, whose description (§5.2: %x20-21 / %x23-5B / %x5D-7E)
    never echoes the caller's value."""
    client_id, secret = _client_credentials_client(op)
    response = op.post("/token", data={"grant_type": 'x"\\é'}, auth=(client_id, secret))
    _assert_json_error(response, 400, "unsupported_grant_type")


def test_parameter_in_both_query_and_body_at_token_is_invalid_request(op):
    """RFC 6749 §3.2: token request parameters are sent in the body; one sent in the URL too
    cannot be told apart from an attacker's addition: invalid_request, never one of them winning."""
    client_id, secret = _client_credentials_client(op)
    response = op.post("/token?scope=openid", data={"grant_type": "client_credentials", "scope": "api"},
                       auth=(client_id, secret))
    _assert_json_error(response, 400, "invalid_request")
    response = op.post("/token?grant_type=client_credentials", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret))
    _assert_json_error(response, 400, "invalid_request")


def test_query_string_parameters_are_not_token_request_parameters(op):
    """RFC 6749 §3.2: the POST body carries the parameters; a scope only in the URL is not read."""
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api other")
    response = op.post("/token?scope=other", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.json
    assert set(response.json["scope"].split()) == {"api", "other"}  # the default, not the URL's


def test_nul_byte_in_token_request_is_invalid_request(op):
    """RFC 6749 Appendix A: parameters are printable characters; a NUL is invalid_request (§5.2)."""
    client_id, secret = _client_credentials_client(op)
    response = op.post("/token", data={"grant_type": "client_credentials", "client_id": "a\x00b"})
    _assert_json_error(response, 400, "invalid_request")
    response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api\x00"},
                       auth=(client_id, secret))
    _assert_json_error(response, 400, "invalid_request")


def test_basic_credentials_after_a_tab_are_checked_too(op):
    """RFC 7617 §2 / RFC 7235 §2.1: the scheme is followed by whitespace; malformed credentials
    after a tab are invalid_client (RFC 6749 §5.2, 401), never a UnicodeDecodeError."""
    token = base64.b64encode(b"\xff\xfe:\xff").decode()
    response = op.post("/token", data={"grant_type": "client_credentials"},
                       headers={"Authorization": f"Basic\t{token} x"})
    _assert_json_error(response, 401, "invalid_client")


def test_client_secret_and_client_assertion_together_are_invalid_request(op):
    """RFC 6749 §2.3: a client MUST NOT use more than one authentication method per request."""
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="client_secret_post")
    response = op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                       "client_secret": secret, "client_assertion": "a.b.c",
                                       "client_assertion_type":
                                           "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    _assert_json_error(response, 400, "invalid_request")


def test_basic_credentials_beside_a_secret_or_an_assertion_in_the_body_are_invalid_request(op):
    """RFC 6749 §2.3: HTTP Basic and a client_secret or client_assertion in the body are two methods."""
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    for extra in ({"client_secret": secret}, {"client_assertion": "a.b.c"}):
        response = op.post("/token", data={"grant_type": "client_credentials", **extra}, auth=(client_id, secret))
        _assert_json_error(response, 400, "invalid_request")
        assert response.json["error_description"] == "Use one client authentication method, not several."
    for empty in ({"client_secret": ""}, {"client_assertion": ""}):  # an empty value is no second method
        response = op.post("/token", data={"grant_type": "client_credentials", **empty}, auth=(client_id, secret))
        assert response.status_code == 200, response.json


def test_a_token_request_parameter_is_refused_only_past_the_longest_length(op):
    from oidc.oauth2.token_request import MAX_FORM_PARAMETER_LENGTH

    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    for length, status in ((MAX_FORM_PARAMETER_LENGTH, 200), (MAX_FORM_PARAMETER_LENGTH + 1, 400)):
        # The longest value anywhere in the form counts, whatever its name (an unknown one is ignored).
        response = op.post("/token", data={"grant_type": "client_credentials", "x": "a" * length},
                           auth=(client_id, secret))
        assert response.status_code == status, response.json
    _assert_json_error(response, 400, "invalid_request")
    assert response.json["error_description"] == "A parameter is too long."


# -- /authorize -----------------------------------------------------------------------------


def test_nul_byte_in_authorization_request_is_the_error_page(op):
    """RFC 6749 §4.1.2.1: an invalid request before the redirect URI is trusted is shown, not redirected."""
    client_id, _ = op.add_client()
    for params in (_params("a\x00b"), _params(client_id, redirect_uri=REDIRECT_URI + "\x00"),
                   _params(client_id, scope="openid\x00")):
        response = op.get("/authorize", query_string=params)
        assert response.status_code == 400, response.text[:300]
        assert "Location" not in response.headers and "Traceback" not in response.text


def test_unsupported_response_type_with_forbidden_characters_redirects_the_error(op):
    """RFC 6749 §4.1.2.1: unsupported_response_type goes back to the validated redirect URI."""
    client_id, _ = op.add_client()
    for value in ('code"', "code\\", "codé"):
        response = op.get("/authorize", query_string=_params(client_id, response_type=value))
        assert response.status_code == 302, response.text[:300]
        query = query_of(response.headers["Location"])
        assert query["error"] == ["unsupported_response_type"] and query["state"] == ["s"]


def test_error_redirects_carry_iss(op):
    """RFC 9207 §2: iss is in every authorization response, error responses included."""
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, prompt="none"))
    assert query_of(response.headers["Location"])["iss"] == [ISSUER]
    response = op.get("/authorize", query_string=_params(client_id, code_challenge_method="plain"))
    assert query_of(response.headers["Location"])["iss"] == [ISSUER]


def test_max_age_with_a_unicode_digit_is_invalid_request(op):
    """OIDC Core §3.1.2.1: max_age is a number of seconds (ASCII digits); "²" is invalid_request."""
    op.add_user()
    client_id, _ = op.add_client()
    op.login()
    response = op.get("/authorize", query_string=_params(client_id, max_age="²"))
    assert response.status_code == 302, response.text[:300]
    assert query_of(response.headers["Location"])["error"] == ["invalid_request"]


def test_openid_request_without_redirect_uri_is_the_error_page(op):
    """OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an OpenID request, even with one registered."""
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, redirect_uri=None))
    assert response.status_code == 400 and "Location" not in response.headers


def test_request_and_request_uri_are_refused_not_ignored(op):
    """RFC 9101 §6.3: an unsigned request object from a client not registered for one is
    invalid_request_object, on the error page (nothing in it is trusted); a request_uri that is
    not one of ours from /par is refused on the error page (RFC 9126 §4), never ignored."""
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, request="eyJhbGciOiJub25lIn0.e30."))
    assert response.status_code == 400 and "Location" not in response.headers
    assert "invalid_request_object" in response.text
    response = op.get("/authorize", query_string=_params(client_id, request_uri="https://rp.example.test/request.jwt"))
    assert response.status_code == 400 and "Location" not in response.headers


def test_id_token_hint_of_another_user_with_prompt_none_is_login_required(op):
    """OIDC Core §3.1.2.1: with prompt=none, an id_token_hint naming someone other than the
    signed-in user is login_required; a hint that is not our ID token is invalid_request."""
    op.add_user("alice")
    op.add_user("bob")
    client_id, secret = op.add_client(first_party=True)
    bob_id_token = op.new_browser().tokens(client_id, secret, scope="openid", username="bob")["id_token"]
    op.code_flow(client_id, scope="openid")  # alice signed in
    response = op.get("/authorize", query_string=_params(client_id, prompt="none", id_token_hint=bob_id_token))
    assert query_of(response.headers["Location"])["error"] == ["login_required"]
    response = op.get("/authorize", query_string=_params(client_id, prompt="none", id_token_hint="a.b.c"))
    assert query_of(response.headers["Location"])["error"] == ["invalid_request"]
    alice_id_token = op.tokens(client_id, secret, scope="openid")["id_token"]
    response = op.get("/authorize", query_string=_params(client_id, prompt="none", id_token_hint=alice_id_token))
    assert "code" in query_of(response.headers["Location"])


def test_offline_access_always_asks_for_consent(op):
    """OIDC Core §11: the OP MUST always obtain consent to a refresh token for offline access:
    a first-party client or a remembered consent does not skip it, and prompt=none cannot get it."""
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    op.login()
    params = _params(client_id, scope="openid offline_access")
    response = op.get("/authorize", query_string=params)
    assert response.status_code == 200 and 'action="/authorize/consent"' in response.text
    op.authorize(params)  # consents once
    response = op.get("/authorize", query_string=params)
    assert response.status_code == 200 and 'action="/authorize/consent"' in response.text
    response = op.get("/authorize", query_string={**params, "prompt": "none"})
    assert query_of(response.headers["Location"])["error"] == ["consent_required"]


def test_consent_post_reads_its_form_only(op):
    """The consent form answers an interaction: a redirect_uri in its URL, or a second
    interaction id in its body, cannot point the answer anywhere else."""
    from werkzeug.datastructures import MultiDict

    from oidc_fixtures import hidden_fields

    op.add_user()
    client_id, _ = op.add_client(redirect_uris=[REDIRECT_URI, "https://rp.example.test/other"])
    op.login()
    page = op.get("/authorize", query_string=_params(client_id))
    fields = hidden_fields(page.text) + [("decision", "approve")]
    forged = op.post("/authorize/consent", data=MultiDict(fields + [("interaction", "x" * 43)]))
    assert forged.status_code == 302 and forged.headers["Location"].startswith(REDIRECT_URI + "?")
    page = op.get("/authorize", query_string=_params(client_id, prompt="consent"))  # consented: ask again
    fields = hidden_fields(page.text) + [("decision", "approve")]
    response = op.post("/authorize/consent?redirect_uri=https://rp.example.test/other", data=MultiDict(fields))
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI + "?")


def test_nul_in_basic_credentials_or_username_is_refused_not_a_database_error(op):
    """RFC 6749 §5.2 invalid_client (401 with Basic) for credentials no client has; a NUL would
    otherwise reach PostgreSQL, which refuses it in a text parameter (a 500)."""
    token = base64.b64encode(b"a\x00:b").decode()
    for path in ("/token", "/introspect", "/revoke"):
        response = op.post(path, data={"grant_type": "client_credentials", "token": "x"},
                           headers={"Authorization": f"Basic {token}"})
        _assert_json_error(response, 401, "invalid_client")
    op.add_user()
    response = op.login(username="al\x00ice", password="whatever password")
    assert response.status_code == 401 and "Traceback" not in response.text


def test_other_authorization_schemes_at_the_token_endpoint_are_invalid_client(op):
    """RFC 6749 §2.3.1 and §5.2: the token endpoint authenticates clients with HTTP Basic (or the
    body); another scheme, or one with no credentials, is an unsupported method: invalid_client."""
    for header in ("Bearer ", "Bearer", "Digest x", "Basic"):
        response = op.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": header})
        _assert_json_error(response, 401, "invalid_client")


def test_logout_parameter_in_both_query_and_body_is_the_error_page(op):
    """RP-Initiated Logout 1.0 §2 (GET or POST, parameters in the query or the form body) with
    RFC 6749 §3.1's rule: one place per parameter; a post_logout_redirect_uri in both is refused."""
    client_id, _ = op.add_client(post_logout_redirect_uris=["https://rp.example.test/bye"])
    response = op.post("/logout?post_logout_redirect_uri=https://rp.example.test/bye",
                       data={"client_id": client_id, "post_logout_redirect_uri": "https://rp.example.test/bye"})
    assert response.status_code == 400 and "Location" not in response.headers
    response = op.post("/logout", data={"client_id": client_id, "post_logout_redirect_uri": "https://rp.example.test/bye"})
    # In one place it is accepted (with no session to end, the way back is offered, not taken: §2).
    assert response.status_code == 200 and 'href="https://rp.example.test/bye"' in response.text
