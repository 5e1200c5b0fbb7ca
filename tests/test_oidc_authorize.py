"""The authorization endpoint, login and consent, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from oidc_fixtures import ISSUER, REDIRECT_URI, hidden_fields, jwt_parts, pkce_pair, query_of


def _params(client_id: str, **extra: str | list[str] | None) -> dict[str, str | list[str]]:
    _, challenge = pkce_pair()
    params: dict[str, str | list[str] | None] = {
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(extra)
    return {key: value for key, value in params.items() if value is not None}


def test_code_flow_echoes_state_and_carries_nonce(op):
    op.add_user()
    client_id, secret = op.add_client()
    state = "a b/&?=é\"<>%25+"
    flow = op.code_flow(client_id, extra={"state": state, "unknown_parameter": "ignored"})
    assert flow["state"] == state  # byte for byte
    assert query_of(flow["location"])["iss"] == [ISSUER]  # RFC 9207
    body = op.redeem(client_id, secret, flow).json
    _, claims = jwt_parts(body["id_token"])
    assert claims["nonce"] == flow["nonce"]
    assert claims["iss"] == ISSUER and claims["aud"] == client_id
    assert {"sub", "exp", "iat", "auth_time", "sid", "at_hash"} <= set(claims)


@pytest.mark.parametrize("changes", [
    pytest.param({"client_id": "nope"}, id="unknown client"),
    pytest.param({"redirect_uri": "https://evil.example/callback"}, id="unregistered"),
    pytest.param({"redirect_uri": REDIRECT_URI + "/more"}, id="prefix"),
    pytest.param({"redirect_uri": REDIRECT_URI[:-1]}, id="suffix"),
    pytest.param({"client_id": None}, id="no client_id"),
    pytest.param({"redirect_uri": [REDIRECT_URI, "https://rp.example.test/other"]}, id="repeated redirect_uri"),
    pytest.param({"state": "x" * 20000}, id="oversized"),
])
def test_bad_client_or_redirect_uri_gets_an_error_page_never_a_redirect(op, changes):
    """RFC 6749 §4.1.2.1: with an unknown client or an unregistered redirect URI, never redirect."""
    client_id, _ = op.add_client(redirect_uris=[REDIRECT_URI, "https://rp.example.test/other"])
    params = {**_params(client_id), **changes}
    params = {name: value for name, value in params.items() if value is not None}
    response = op.get("/authorize", query_string=params)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert "Traceback" not in response.text


def test_missing_redirect_uri_uses_the_only_registered_one(op):
    """RFC 6749 §3.1.2.3: a plain OAuth request may omit it (an OpenID one may not, OIDC Core §3.1.2.1)."""
    op.add_user()
    client_id, _secret = op.add_client(scope="openid api")
    params = _params(client_id, redirect_uri=None, scope="api")
    response = op.authorize(params)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI + "?")


def test_an_openid_request_by_default_scope_needs_its_redirect_uri(op):
    """OIDC Core §3.1.2.1: redirect_uri is REQUIRED on OpenID requests, and a request without
    ``scope`` gets the client's default scope (RFC 6749 §3.3), openid included: it is one."""
    op.add_user()
    client_id, _ = op.add_client(scope="openid profile", first_party=True)
    op.login()
    params = _params(client_id, redirect_uri=None, scope=None)
    response = op.get("/authorize", query_string=params)
    assert response.status_code == 400 and "Location" not in response.headers  # an error page, no redirect
    assert response.mimetype == "text/html" and "redirect_uri" in response.text
    assert op.count("AuthorizationCode") == 0 and op.count("Interaction") == 0
    # With its redirect_uri, the same request is an OpenID one: a code, then an ID token.
    secret_client, secret = op.add_client(scope="openid profile", first_party=True)
    flow = op.code_flow(secret_client, scope=None)
    assert "id_token" in op.redeem(secret_client, secret, flow).json
    # A client whose default scope is not OpenID may still omit it (RFC 6749 §3.1.2.3).
    plain_client, _ = op.add_client(scope="api", first_party=True)
    plain = op.get("/authorize", query_string=_params(plain_client, redirect_uri=None, scope=None))
    assert plain.status_code == 302 and "code" in query_of(plain.headers["Location"])


def test_missing_redirect_uri_with_several_registered_is_an_error_page(op):
    client_id, _ = op.add_client(redirect_uris=[REDIRECT_URI, "https://rp.example.test/two"])
    response = op.get("/authorize", query_string=_params(client_id, redirect_uri=None))
    assert response.status_code == 400 and "Location" not in response.headers


@pytest.mark.parametrize("extra,error", [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "openid not-registered"}, "invalid_scope"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"resource": "https://not-registered.example"}, "invalid_target"),
])
def test_invalid_requests_redirect_with_the_rfc_error_and_state(op, extra, error):
    op.add_user()
    client_id, _ = op.add_client()
    response = op.authorize(_params(client_id, **extra))
    assert response.status_code == 302
    query = query_of(response.headers["Location"])
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query["error"] == [error]
    assert query["state"] == ["s"]


def test_public_client_must_use_pkce(op):
    op.add_user()
    client_id, _ = op.add_client(auth_method="none")
    response = op.authorize(_params(client_id, code_challenge=None, code_challenge_method=None))
    assert query_of(response.headers["Location"])["error"] == ["invalid_request"]


def test_confidential_client_without_pkce_is_allowed(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id, pkce=False)
    flow["verifier"] = None
    assert op.redeem(client_id, secret, flow).status_code == 200


def test_prompt_none_without_session_redirects_login_required(op):
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, prompt="none"))
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == ["login_required"]
    assert query_of(response.headers["Location"])["state"] == ["s"]


def test_prompt_none_with_session_and_consent_issues_a_code(op):
    op.add_user()
    client_id, _ = op.add_client()
    op.code_flow(client_id)  # logs in and consents
    response = op.get("/authorize", query_string=_params(client_id, prompt="none", scope="openid profile email"))
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])


def test_prompt_none_without_consent_redirects_consent_required(op):
    op.add_user()
    client_id, _ = op.add_client()
    op.login()
    response = op.get("/authorize", query_string=_params(client_id, prompt="none"))
    assert query_of(response.headers["Location"])["error"] == ["consent_required"]


def test_prompt_login_forces_a_new_login(op):
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    op.code_flow(client_id)
    response = op.get("/authorize", query_string=_params(client_id, prompt="login"))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    final = op.authorize(_params(client_id, prompt="login"))
    assert final.status_code == 302 and "code" in query_of(final.headers["Location"])


def test_max_age_reauthenticates_when_the_login_is_older(op):
    op.add_user()
    client_id, _secret = op.add_client(first_party=True)
    op.code_flow(client_id)
    op.clock.advance(120)
    response = op.get("/authorize", query_string=_params(client_id, max_age="60"))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    response = op.get("/authorize", query_string=_params(client_id, max_age="600"))
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI)


def test_auth_time_in_the_id_token_is_the_login_time(op):
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    before = int(time.time())
    body = op.tokens(client_id, secret, extra={"max_age": "300"})
    _, claims = jwt_parts(body["id_token"])
    assert before - 1 <= claims["auth_time"] <= int(time.time())


def test_login_hint_prefills_the_username(op):
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, login_hint="bob@example.test"))
    page = op.get(response.headers["Location"])
    assert 'value="bob@example.test"' in page.text


def test_form_post_response_mode(op):
    op.add_user()
    client_id, _secret = op.add_client(first_party=True)
    params = _params(client_id, response_mode="form_post", state='"><script>x</script>')
    response = op.authorize(params)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert f'action="{REDIRECT_URI}"' in response.text
    fields = dict(hidden_fields(response.text))
    assert fields["state"] == '"><script>x</script>' and fields["code"]
    assert "<script>x" not in response.text


def test_form_post_errors_are_posted_too(op):
    client_id, _ = op.add_client()
    response = op.get("/authorize", query_string=_params(client_id, response_mode="form_post", prompt="none"))
    assert response.status_code == 200
    assert dict(hidden_fields(response.text))["error"] == "login_required"


def test_consent_names_client_and_scopes_and_is_remembered(op):
    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer")
    params = _params(client_id, scope="openid email")
    response = op.authorize(params, consent=None)
    assert response.status_code == 200
    assert "Photo Printer" in response.text and "email" in response.text and "openid" in response.text
    op.authorize(params)  # approve
    again = op.get("/authorize", query_string=params)
    assert again.status_code == 302 and "code" in query_of(again.headers["Location"])
    # A smaller scope set is covered; a larger one asks again.
    smaller = op.get("/authorize", query_string=_params(client_id, scope="openid"))
    assert smaller.status_code == 302
    larger = op.get("/authorize", query_string=_params(client_id, scope="openid email profile"))
    assert larger.status_code == 200 and "Photo Printer" in larger.text
    # prompt=consent always asks.
    forced = op.get("/authorize", query_string=_params(client_id, scope="openid", prompt="consent"))
    assert forced.status_code == 200 and 'action="/authorize/consent"' in forced.text


def test_denied_consent_redirects_access_denied(op):
    op.add_user()
    client_id, _ = op.add_client()
    response = op.authorize(_params(client_id), consent="deny")
    assert query_of(response.headers["Location"])["error"] == ["access_denied"]
    assert op.count("AuthorizationCode") == 0


def test_first_party_client_skips_consent(op):
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    response = op.authorize(_params(client_id), consent=None)
    assert response.status_code == 302


def test_consent_post_without_csrf_token_is_refused(op):
    op.add_user()
    client_id, _ = op.add_client()
    page = op.authorize(_params(client_id), consent=None)
    data = [(name, value) for name, value in hidden_fields(page.text) if name != "csrf_token"]
    from werkzeug.datastructures import MultiDict

    response = op.post("/authorize/consent", data=MultiDict(data + [("decision", "approve")]))
    assert response.status_code == 400
    assert op.count("AuthorizationCode") == 0 and op.count("Consent") == 0


def test_consent_post_answers_the_interaction_whatever_parameters_are_posted_with_it(op):
    """The consent form carries the interaction id only: a redirect_uri or scope added to it is not read."""
    op.add_user()
    client_id, _ = op.add_client(redirect_uris=[REDIRECT_URI, "https://rp.example.test/other"])
    page = op.authorize(_params(client_id, scope="openid"), consent=None)
    from werkzeug.datastructures import MultiDict

    data = MultiDict(hidden_fields(page.text) + [("redirect_uri", "https://rp.example.test/other"),
                                                 ("scope", "openid email"), ("decision", "approve")])
    response = op.post("/authorize/consent?redirect_uri=https://evil.example/cb", data=data)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI + "?")
    with op.app.app_context():
        from oidc.models import Consent

        assert [row.scope for row in Consent.query.all()] == ["openid"]


def test_authorization_request_by_post(op):
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    op.login()
    response = op.post("/authorize", data=_params(client_id))
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])


def test_repeated_parameter_is_invalid_request(op):
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    op.login()
    params = _params(client_id)
    params["scope"] = ["openid", "openid email"]
    response = op.get("/authorize", query_string=params)
    assert query_of(response.headers["Location"])["error"] == ["invalid_request"]


@pytest.mark.both_databases
def test_consent_given_in_two_tabs_at_once_records_one_consent_and_both_get_a_code(op, monkeypatch):
    """Two consent pages of the same request open at once (two tabs), both approved: each
    passes the "not yet consented" check before the other commits, and one consent is kept."""
    from werkzeug.datastructures import MultiDict

    from oidc.oauth2 import consents

    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer")
    params = _params(client_id, scope="openid email")
    first_page = op.authorize(params, consent=None)
    second_page = op.get("/authorize", query_string=params)
    assert 'action="/authorize/consent"' in second_page.text
    first = op.post("/authorize/consent", data=MultiDict(hidden_fields(first_page.text) + [("decision", "approve")]))
    assert first.status_code == 302 and "code" in query_of(first.headers["Location"])
    # The second submission saw no consent yet (the race), so it inserts the same row again.
    monkeypatch.setattr(consents, "has_consented", lambda *args: False)
    second = op.post("/authorize/consent", data=MultiDict(hidden_fields(second_page.text) + [("decision", "approve")]))
    assert second.status_code == 302 and "code" in query_of(second.headers["Location"])
    assert op.count("Consent") == 1


@pytest.mark.both_databases
def test_authorize_commits_its_code_and_returns_its_connections_whatever_the_answer(op):
    """A signed-in /authorize reads the login and writes the code in a Core transaction of its own
    (oidc.queries.CoreTransaction): the code is committed with the redirect, and every answer (a code,
    an error to the client, the error page, the login page) gives its connections back to the pool, all
    but the one the thread keeps (oidc.statements.transaction_connection)."""
    op.add_user()
    client_id, secret = op.add_client(scope="openid profile", first_party=True)
    signed_out = op.get("/authorize", query_string=_params(client_id))  # no login yet: the login page
    assert signed_out.status_code == 302 and signed_out.headers["Location"].startswith("/login")
    idle = op.checked_out_connections()
    flow = op.code_flow(client_id, scope="openid")
    assert op.checked_out_connections() == idle
    assert op.count("AuthorizationCode") == 1  # committed: read on another connection
    assert op.redeem(client_id, secret, flow).status_code == 200
    idle += 1  # the connection the thread keeps from its first Core transaction on
    refused = op.get("/authorize", query_string=_params(client_id, scope="openid admin"))
    assert query_of(refused.headers["Location"])["error"] == ["invalid_scope"] and op.checked_out_connections() == idle
    page = op.get("/authorize", query_string=_params(client_id, redirect_uri="https://evil.example/cb"))
    assert page.status_code == 400 and op.checked_out_connections() == idle
    again = op.get("/authorize", query_string=_params(client_id, prompt="login"))
    assert again.headers["Location"].startswith("/login") and op.checked_out_connections() == idle
    assert op.count("AuthorizationCode") == 1  # nothing written by the refusals


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("name", ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce"])
def test_each_repeated_parameter_is_refused_by_our_check(op, name, method):
    """RFC 6749 §3.1: a repeated parameter is invalid_request, named in our description (Authlib's own
    check of five of them never runs: the validation's refuses them first), on the error page while
    the client or redirect URI is in question, at the redirect URI after, with its state."""
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    op.login()
    params: dict[str, Any] = _params(client_id, nonce="n")
    params[name] = [params[name], params[name]]
    if method == "GET":
        response = op.get("/authorize", query_string=params)
    else:
        response = op.post("/authorize", data=params)
    if name in ("client_id", "redirect_uri"):
        assert response.status_code == 400 and "Location" not in response.headers
        assert f"The {name} parameter is repeated." in response.text
        return
    query = query_of(response.headers["Location"])
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query["error"] == ["invalid_request"]
    assert query["error_description"] == [f"The {name} parameter is repeated."]
    assert query["state"] == ["s"]  # the first state sent (both are "s" when state is the one repeated)
    assert op.count("AuthorizationCode") == 0


@pytest.mark.both_databases
def test_remembered_consent_is_read_in_the_requests_transaction_and_the_code_committed(op):
    """A client that is not first-party, consented to before: /authorize reads the consent in its Core
    transaction (queries.consented_scopes) and commits the code with the redirect; a scope beyond the
    consent asks again, and the consent form records the new set, after which it is remembered too."""
    op.add_user()
    client_id, secret = op.add_client(scope="openid profile email", name="Photo Printer")
    first = op.code_flow(client_id, scope="openid profile")  # the consent page, approved
    assert op.redeem(client_id, secret, first).status_code == 200
    again = op.get("/authorize", query_string=_params(client_id, scope="openid profile"))
    assert again.status_code == 302 and "code" in query_of(again.headers["Location"])  # remembered
    assert op.count("AuthorizationCode") == 2 and op.count("Consent") == 1
    wider = op.get("/authorize", query_string=_params(client_id, scope="openid email"))
    assert wider.status_code == 200 and 'action="/authorize/consent"' in wider.text
    op.code_flow(client_id, scope="openid email")
    assert op.count("Consent") == 2
    remembered = op.get("/authorize", query_string=_params(client_id, scope="openid email"))
    assert remembered.status_code == 302 and "code" in query_of(remembered.headers["Location"])
    assert op.count("AuthorizationCode") == 4
