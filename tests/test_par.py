"""Pushed Authorization Requests (RFC 9126), and iss in every authorization response (RFC 9207)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from dpop_proofs import new_key, proof, public_jwk, thumbprint
from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, hidden_fields, jwt_parts, pkce_pair, query_of

PREFIX = "urn:ietf:params:oauth:request_uri:"


def _params(client_id, **extra):
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
              "state": "pushed-state", "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return params, verifier


def _push(op, client, params, **kwargs):
    if client[1] is None:
        return op.post("/par", data=params, **kwargs)
    return op.post("/par", data={k: v for k, v in params.items() if k != "client_id"}, auth=client, **kwargs)


def _authorize(op, client_id, request_uri, **extra):
    return op.authorize({"client_id": client_id, "request_uri": request_uri, **extra})


@pytest.fixture
def rp(op):
    op.add_user()
    return op.add_client()


def test_a_pushed_request_is_used_once_and_only_its_parameters_count(op, rp):
    params, verifier = _params(rp[0])
    pushed = _push(op, rp, params)
    assert pushed.status_code == 201, pushed.json
    assert pushed.headers["Cache-Control"] == "no-store"
    assert pushed.json["expires_in"] == 60 and pushed.json["request_uri"].startswith(PREFIX)
    request_uri = pushed.json["request_uri"]
    # Parameters sent beside request_uri are ignored (RFC 9126 §4).
    response = _authorize(op, rp[0], request_uri, state="from-the-front-channel", redirect_uri="https://evil.test/cb")
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = query_of(location)
    assert query["state"] == ["pushed-state"] and query["iss"] == [ISSUER]
    token = op.post("/token", auth=rp, data={"grant_type": "authorization_code", "code": query["code"][0],
                                             "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert token.status_code == 200, token.json
    # Second use: an error page, never a redirect.
    again = _authorize(op, rp[0], request_uri)
    assert again.status_code == 400 and "invalid_request_uri" in again.text


def test_the_request_uri_survives_login_and_consent(op, rp):
    params, _ = _params(rp[0])
    request_uri = _push(op, rp, params).json["request_uri"]
    first = op.get("/authorize", query_string={"client_id": rp[0], "request_uri": request_uri})
    assert first.status_code == 302 and first.headers["Location"].startswith("/login")
    # Logging in and consenting resume the request through its interaction, which holds the pushed request.
    page = op.get(op.login(login_url=first.headers["Location"]).headers["Location"])
    assert 'action="/authorize/consent"' in page.text and request_uri not in page.text
    response = op.post("/authorize/consent", data=MultiDict(hidden_fields(page.text) + [("decision", "approve")]))
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI)


def test_a_denied_consent_uses_the_request_uri_too(op, rp):
    params, _ = _params(rp[0])
    request_uri = _push(op, rp, params).json["request_uri"]
    denied = op.authorize({"client_id": rp[0], "request_uri": request_uri}, consent="deny")
    assert denied.status_code == 302 and "error=access_denied" in denied.headers["Location"]
    assert "iss=" in denied.headers["Location"]
    assert _authorize(op, rp[0], request_uri).status_code == 400


def test_an_error_response_uses_the_request_uri_too(op, rp):
    params, _ = _params(rp[0], prompt="none")
    request_uri = _push(op, rp, params).json["request_uri"]
    refused = op.get("/authorize", query_string={"client_id": rp[0], "request_uri": request_uri})  # not signed in
    assert refused.status_code == 302 and "error=login_required" in refused.headers["Location"]
    again = _authorize(op, rp[0], request_uri)
    assert again.status_code == 400, again.headers.get("Location")


@pytest.mark.parametrize("case", ["expired", "other client", "unknown", "no client_id"])
def test_unusable_request_uris_are_error_pages(op, rp, case):
    params, _ = _params(rp[0])
    request_uri = _push(op, rp, params).json["request_uri"]
    client_id = rp[0]
    if case == "expired":
        op.clock.advance(61)
    elif case == "other client":
        client_id = op.add_client(name="Other")[0]
    elif case == "unknown":
        request_uri = PREFIX + "x" * 43
    query = {"request_uri": request_uri} if case == "no client_id" else {"client_id": client_id, "request_uri": request_uri}
    response = op.authorize(query)
    assert response.status_code == 400, response.status_code
    assert "Location" not in response.headers


@pytest.mark.parametrize("setting", ["client", "provider"])
def test_a_plain_request_is_refused_when_pushing_is_required(make_app, base_env, provisioned_database_url, setting):
    env = {**base_env, "DATABASE_URL": provisioned_database_url}
    if setting == "provider":
        env["REQUIRE_PUSHED_AUTHORIZATION_REQUESTS"] = "true"
    op = Provider(make_app(env))
    op.add_user()
    client = op.add_client(require_pushed_authorization_requests=setting == "client")
    params, _ = _params(client[0])
    plain = op.authorize(params)
    assert plain.status_code == 400 and "invalid_request" in plain.text and "Location" not in plain.headers
    pushed = _push(op, client, params)
    assert pushed.status_code == 201
    assert _authorize(op, client[0], pushed.json["request_uri"]).status_code == 302
    assert op.get("/.well-known/openid-configuration").json["require_pushed_authorization_requests"] is (
        setting == "provider")


@pytest.mark.parametrize("case", ["bad redirect_uri", "no PKCE for a public client", "plain PKCE", "unknown scope",
                                  "request_uri in the body", "another client_id", "bad client secret",
                                  "unsupported response_type", "repeated parameter", "prompt none and login"])
def test_pushed_requests_are_validated_as_authorize_validates_them(op, rp, case):  # noqa: C901 - one branch per case
    client = rp
    params, _ = _params(rp[0])
    status, error = 400, "invalid_request"
    if case == "bad redirect_uri":
        params["redirect_uri"] = "https://evil.test/cb"
    elif case == "no PKCE for a public client":
        client = op.add_client(name="SPA", auth_method="none")
        params = {k: v for k, v in params.items() if not k.startswith("code_challenge")} | {"client_id": client[0]}
    elif case == "plain PKCE":
        params["code_challenge_method"] = "plain"
    elif case == "unknown scope":
        params["scope"] = "openid payments"
        error = "invalid_scope"
    elif case == "request_uri in the body":
        params["request_uri"] = PREFIX + "x"
    elif case == "another client_id":
        response = op.post("/par", data={**params, "client_id": "someone-else"}, auth=rp)
        assert (response.status_code, response.json["error"]) == (400, "invalid_request")
        return
    elif case == "bad client secret":
        client = (rp[0], "wrong")
        status, error = 401, "invalid_client"
    elif case == "unsupported response_type":
        params["response_type"] = "token"
        error = "unsupported_response_type"
    elif case == "repeated parameter":
        response = op.post("/par", data=MultiDict([*params.items(), ("scope", "openid")]), auth=rp)
        assert (response.status_code, response.json["error"]) == (400, "invalid_request")
        return
    elif case == "prompt none and login":
        params["prompt"] = "none login"
    response = _push(op, client, params)
    assert (response.status_code, response.json.get("error")) == (status, error), response.json


def test_a_proof_at_par_binds_the_code(op, rp):
    key = new_key()
    params, verifier = _params(rp[0])
    pushed = _push(op, rp, params, headers={"DPoP": proof(key, htu=ISSUER + "/par", iat=op.clock.now())})
    assert pushed.status_code == 201, pushed.json
    location = _authorize(op, rp[0], pushed.json["request_uri"]).headers["Location"]
    data = {"grant_type": "authorization_code", "code": query_of(location)["code"][0], "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}
    other = op.post("/token", auth=rp, data=data, headers={"DPoP": proof(new_key(), htu=ISSUER + "/token",
                                                                           iat=op.clock.now())})
    assert other.status_code == 400 and other.json["error"] == "invalid_grant"
    good = op.post("/token", auth=rp, data=data, headers={"DPoP": proof(key, htu=ISSUER + "/token", iat=op.clock.now())})
    assert good.status_code == 200
    assert jwt_parts(good.json["access_token"])[1]["cnf"]["jkt"] == thumbprint(public_jwk(key))
    # A dpop_jkt naming another key than the proof's is refused.
    mismatch = _push(op, rp, {**_params(rp[0])[0], "dpop_jkt": thumbprint(public_jwk(new_key()))},
                     headers={"DPoP": proof(key, htu=ISSUER + "/par", iat=op.clock.now())})
    assert mismatch.status_code == 400 and mismatch.json["error"] == "invalid_request"


def test_a_public_client_pushes_with_its_client_id(op):
    op.add_user()
    client = op.add_client(auth_method="none")
    params, verifier = _params(client[0])
    pushed = _push(op, client, params)
    assert pushed.status_code == 201, pushed.json
    location = _authorize(op, client[0], pushed.json["request_uri"]).headers["Location"]
    token = op.post("/token", data={"grant_type": "authorization_code", "code": query_of(location)["code"][0],
                                    "redirect_uri": REDIRECT_URI, "code_verifier": verifier, "client_id": client[0]})
    assert token.status_code == 200


def test_discovery_advertises_par_and_dpop(op):
    document = op.get("/.well-known/openid-configuration").json
    assert document["pushed_authorization_request_endpoint"] == ISSUER + "/par"
    assert document["require_pushed_authorization_requests"] is False
    assert "ES256" in document["dpop_signing_alg_values_supported"]
    assert not {"none", "HS256"} & set(document["dpop_signing_alg_values_supported"])
    assert document["authorization_response_iss_parameter_supported"] is True


# -- RFC 9207: iss in every authorization response ------------------------------------------------


@pytest.mark.parametrize("response_mode", ["query", "form_post"])
def test_iss_is_in_success_and_error_responses_of_every_response_mode(op, rp, response_mode):
    params, _ = _params(rp[0], response_mode=response_mode)

    def fields(response):
        if response_mode == "query":
            assert response.status_code == 302
            return {name: values[0] for name, values in query_of(response.headers["Location"]).items()}
        assert response.status_code == 200 and 'method="post"' in response.text
        return dict(hidden_fields(response.text))

    success = fields(op.authorize(params))
    assert success["iss"] == ISSUER and "code" in success
    for browser, refusal in ((op, {"scope": "openid payments"}), (op.new_browser(), {"prompt": "none"}),
                             (op, {"max_age": "x"})):
        error = fields(browser.get("/authorize", query_string={**params, **refusal}))
        assert error["iss"] == ISSUER and "error" in error and error["state"] == "pushed-state", (refusal, error)
    denied = fields(op.authorize({**params, "prompt": "consent"}, consent="deny"))
    assert denied["error"] == "access_denied" and denied["iss"] == ISSUER
