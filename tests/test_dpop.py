"""DPoP (RFC 9449): proofs at the token endpoint, bound tokens, and the DPoP scheme at our own resources.

Proofs are built in tests/dpop_proofs.py (joserfc for the signature, the
RFC 7638 thumbprint by hand); every refusal the RFC asks for has a case.
"""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey, OctKey, RSAKey
from test_redis_rate_limit import redis_database  # noqa: F401  (the fixture)

from dpop_proofs import new_key, proof, public_jwk, thumbprint, unsigned_proof
from oidc_fixtures import ISSUER, REDIRECT_URI, jwt_parts

TOKEN_URL = ISSUER + "/token"
USERINFO_URL = ISSUER + "/userinfo"


def _client_credentials(op, client, dpop=None, **headers):
    if dpop is not None:
        headers["DPoP"] = dpop
    return op.post("/token", data={"grant_type": "client_credentials"}, auth=client, headers=headers)


def _machine(op, **kwargs):
    return op.add_client(grant_types=["client_credentials"], scope="api admin", **kwargs)


def _error(response):
    return response.status_code, response.json.get("error")


def _redeem(op, client, flow, dpop=None):
    """The code of ``flow`` at the token endpoint (with a proof, when given)."""
    client_id, secret = client
    data = {"grant_type": "authorization_code", "code": flow["code"], "redirect_uri": REDIRECT_URI,
            "code_verifier": flow["verifier"]}
    headers = {"DPoP": dpop} if dpop is not None else {}
    if secret is None:
        return op.post("/token", data={**data, "client_id": client_id}, headers=headers)
    return op.post("/token", data=data, auth=client, headers=headers)


def test_a_token_request_whose_proof_was_not_checked_is_not_taken_for_one_without(op):
    """``request.dpop`` is the checked proof or None for "checked, none sent"; unchecked, reading it fails."""
    from oidc.oauth2.server import authorization_server

    key = new_key()
    headers = {"DPoP": proof(key, htu=TOKEN_URL, iat=op.clock.now())}
    with op.app.test_request_context("/token", method="POST", headers=headers,
                                     data={"grant_type": "client_credentials"}):
        server = authorization_server()
        unchecked = server.create_oauth2_request(None)
        with pytest.raises(RuntimeError, match="not checked"):
            _ = unchecked.dpop
        checked = server.create_request_with_proof("/token")
        assert checked.dpop is not None and checked.dpop.jkt == thumbprint(public_jwk(key))
    with op.app.test_request_context("/token", method="POST", data={"grant_type": "client_credentials"}):
        assert authorization_server().create_request_with_proof("/token").dpop is None


def test_a_proof_binds_the_access_token_to_its_key(op):
    client = _machine(op)
    key = new_key()
    response = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now()))
    assert response.status_code == 200, response.json
    body = response.json
    assert body["token_type"] == "DPoP"
    _, claims = jwt_parts(body["access_token"])
    assert claims["cnf"] == {"jkt": thumbprint(public_jwk(key))}
    introspection = op.post("/introspect", data={"token": body["access_token"]}, auth=client).json
    assert introspection["active"] is True
    assert introspection["token_type"] == "DPoP" and introspection["cnf"] == claims["cnf"]
    # Without a proof: a Bearer token, no cnf.
    plain = _client_credentials(op, client).json
    assert plain["token_type"] == "Bearer" and "cnf" not in jwt_parts(plain["access_token"])[1]


def test_htu_is_compared_with_the_configured_issuer_without_query_and_with_default_ports(op):
    client = _machine(op)
    for htu in ("https://OP.example.test/token", "https://op.example.test:443/token",
                "https://op.example.test/token?x=1#f"):
        response = _client_credentials(op, client, proof(new_key(), htu=htu, iat=op.clock.now()))
        assert response.status_code == 200, (htu, response.json)


def _refusal_proof(op, case):  # noqa: C901 - one branch per parametrised case
    key, now = new_key(), op.clock.now()
    if case == "wrong htm":
        return proof(key, htm="GET", htu=TOKEN_URL, iat=now)
    if case == "wrong htu":
        return proof(key, htu=ISSUER + "/introspect", iat=now)
    if case == "htu of the Host header":  # the request is sent to another host name below
        return proof(key, htu="https://evil.example.test/token", iat=now)
    if case == "stale iat":
        return proof(key, htu=TOKEN_URL, iat=now - 3600)
    if case == "future iat":
        return proof(key, htu=TOKEN_URL, iat=now + 3600)
    if case == "signed by another key":
        return proof(new_key(), htu=TOKEN_URL, iat=now, jwk=public_jwk(key))
    if case == "private jwk":
        return proof(key, htu=TOKEN_URL, iat=now, jwk=key.as_dict(private=True))
    if case == "alg none":
        return unsigned_proof(htu=TOKEN_URL, iat=now, jwk=public_jwk(key))
    if case == "HS256":
        secret = OctKey.generate_key(256)
        return proof(secret, htu=TOKEN_URL, iat=now, alg="HS256", jwk=secret.as_dict(private=False))
    if case == "wrong typ":
        return proof(key, htu=TOKEN_URL, iat=now, typ="JWT")
    if case == "no jti":
        return proof(key, htu=TOKEN_URL, iat=now, claims={"jti": None})
    if case == "not a JWT":
        return "not-a-proof"
    raise AssertionError(case)


REFUSALS = ["wrong htm", "wrong htu", "htu of the Host header", "stale iat", "future iat", "signed by another key",
            "private jwk", "alg none", "HS256", "wrong typ", "no jti", "not a JWT"]


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_proofs_are_refused_with_invalid_dpop_proof(op, case):
    client = _machine(op)
    dpop = _refusal_proof(op, case)
    if case == "htu of the Host header":
        response = op.http.post("/token", base_url="https://evil.example.test", data={"grant_type": "client_credentials"},
                                auth=client, headers={"DPoP": dpop})
    else:
        response = _client_credentials(op, client, dpop)
    assert _error(response) == (400, "invalid_dpop_proof"), response.json


def test_a_replayed_proof_is_refused(op):
    client = _machine(op)
    dpop = proof(new_key(), htu=TOKEN_URL, iat=op.clock.now())
    assert _client_credentials(op, client, dpop).status_code == 200
    assert _error(_client_credentials(op, client, dpop)) == (400, "invalid_dpop_proof")


def test_two_proof_headers_are_refused(op):
    client = _machine(op)
    key, now = new_key(), op.clock.now()
    response = op.post("/token", data={"grant_type": "client_credentials"}, auth=client,
                       headers=[("DPoP", proof(key, htu=TOKEN_URL, iat=now)), ("DPoP", proof(key, htu=TOKEN_URL, iat=now))])
    assert _error(response) == (400, "invalid_dpop_proof")


def test_a_client_registered_for_bound_tokens_needs_a_proof(op):
    client = _machine(op, dpop_bound_access_tokens=True)
    assert _error(_client_credentials(op, client)) == (400, "invalid_dpop_proof")
    assert _client_credentials(op, client, proof(new_key(), htu=TOKEN_URL, iat=op.clock.now())).status_code == 200


@pytest.mark.both_databases
def test_a_proof_is_accepted_once_by_two_instances_on_one_database(make_app, base_env, provisioned_database_url):
    from oidc_fixtures import Provider

    env = {**base_env, "DATABASE_URL": provisioned_database_url}
    first, second = Provider(make_app(env)), Provider(make_app(env))
    client = _machine(first)
    dpop = proof(new_key(), htu=TOKEN_URL, iat=first.clock.now())
    statuses = sorted(_client_credentials(provider, client, dpop).status_code for provider in (first, second))
    assert statuses == [200, 400]


# -- nonces (§8) ---------------------------------------------------------------------------------


@pytest.fixture
def nonce_op(make_app, base_env, provisioned_database_url):
    from oidc_fixtures import Provider

    return Provider(make_app({**base_env, "DATABASE_URL": provisioned_database_url, "DPOP_NONCE": "true",
                              "DPOP_NONCE_LIFETIME": "60"}))


def test_server_nonces(nonce_op):
    op = nonce_op
    client = _machine(op)
    key = new_key()
    missing = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now()))
    assert _error(missing) == (400, "use_dpop_nonce")
    nonce = missing.headers["DPoP-Nonce"]
    other = ("y" if nonce[0] == "x" else "x") + nonce[1:]  # always another nonce, whatever its first character
    wrong = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now(), nonce=other))
    assert _error(wrong) == (400, "use_dpop_nonce") and wrong.headers["DPoP-Nonce"] == nonce
    good = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now(), nonce=nonce))
    assert good.status_code == 200, good.json
    assert good.headers["DPoP-Nonce"]
    op.clock.advance(121)  # two nonce periods later the old nonce is stale
    stale = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now(), nonce=nonce))
    assert _error(stale) == (400, "use_dpop_nonce") and stale.headers["DPoP-Nonce"] != nonce


def test_a_resource_request_without_the_nonce_gets_use_dpop_nonce(nonce_op):
    op = nonce_op
    op.add_user()
    client = op.add_client(redirect_uris=[REDIRECT_URI])
    key = new_key()
    first = _redeem(op, client, op.code_flow(client[0]), proof(key, htu=TOKEN_URL, iat=op.clock.now()))
    nonce = first.headers["DPoP-Nonce"]
    flow = op.code_flow(client[0])
    token = _redeem(op, client, flow, proof(key, htu=TOKEN_URL, iat=op.clock.now(), nonce=nonce)).json
    access = token["access_token"]
    response = op.get("/userinfo", headers={"Authorization": f"DPoP {access}",
                                            "DPoP": proof(key, htm="GET", htu=USERINFO_URL, iat=op.clock.now(),
                                                          access_token=access)})
    assert response.status_code == 401 and response.json["error"] == "use_dpop_nonce"
    assert response.headers["WWW-Authenticate"].startswith("DPoP ") and response.headers["DPoP-Nonce"]


# -- bound tokens at /userinfo and refresh (§5, §7) --------------------------------------------------


def _bound_tokens(op, key, client):
    flow = op.code_flow(client[0])
    response = _redeem(op, client, flow, proof(key, htu=TOKEN_URL, iat=op.clock.now()))
    assert response.status_code == 200, response.json
    return response.json


def _userinfo(op, access, dpop=None, scheme="DPoP"):
    headers = {"Authorization": f"{scheme} {access}"}
    if dpop is not None:
        headers["DPoP"] = dpop
    return op.get("/userinfo", headers=headers)


def test_a_bound_token_at_userinfo(op):
    op.add_user()
    client = op.add_client(auth_method="none")
    key = new_key()
    tokens = _bound_tokens(op, key, client)
    access = tokens["access_token"]
    assert tokens["token_type"] == "DPoP"
    now = op.clock.now()
    good = _userinfo(op, access, proof(key, htm="GET", htu=USERINFO_URL, iat=now, access_token=access))
    assert good.status_code == 200 and good.json["preferred_username"] == "alice"

    def refused(response, error):
        assert response.status_code == 401, response.json
        assert response.json["error"] == error
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("DPoP ") and f'error="{error}"' in challenge and "algs=" in challenge

    # Presented as a bearer token (§7.1): refused, with the DPoP challenge.
    refused(_userinfo(op, access, scheme="Bearer"), "invalid_token")
    # No proof, no ath, a wrong ath, the proof of another key, the proof of another URL.
    refused(_userinfo(op, access), "invalid_dpop_proof")
    refused(_userinfo(op, access, proof(key, htm="GET", htu=USERINFO_URL, iat=now)), "invalid_dpop_proof")
    refused(_userinfo(op, access, proof(key, htm="GET", htu=USERINFO_URL, iat=now, access_token=access + "x")),
            "invalid_dpop_proof")
    refused(_userinfo(op, access, proof(new_key(), htm="GET", htu=USERINFO_URL, iat=now, access_token=access)),
            "invalid_token")
    refused(_userinfo(op, access, proof(key, htm="GET", htu=TOKEN_URL, iat=now, access_token=access)),
            "invalid_dpop_proof")
    # A proof is good once.
    replay = proof(key, htm="GET", htu=USERINFO_URL, iat=now, access_token=access)
    assert _userinfo(op, access, replay).status_code == 200
    refused(_userinfo(op, access, replay), "invalid_dpop_proof")
    # A Bearer token sent with the DPoP scheme is not accepted either.
    bearer = _redeem(op, client, op.code_flow(client[0])).json["access_token"]
    refused(_userinfo(op, bearer, proof(key, htm="GET", htu=USERINFO_URL, iat=now, access_token=bearer)),
            "invalid_token")
    # A refusal of a good DPoP token (no openid scope here) is a DPoP challenge too.
    machine = _machine(op)
    client_token = _client_credentials(op, machine, proof(key, htu=TOKEN_URL, iat=now)).json["access_token"]
    scope = _userinfo(op, client_token, proof(key, htm="GET", htu=USERINFO_URL, iat=now, access_token=client_token))
    assert scope.status_code == 403 and scope.headers["WWW-Authenticate"].startswith("DPoP ")
    # With no credentials at all, both schemes are offered.
    anonymous = op.get("/userinfo")
    assert anonymous.status_code == 401
    assert [c.split()[0] for c in anonymous.headers.getlist("WWW-Authenticate")] == ["Bearer", "DPoP"]


def test_a_public_clients_refresh_token_is_bound_to_its_key(op):
    op.add_user()
    client = op.add_client(auth_method="none")
    key = new_key()
    tokens = _bound_tokens(op, key, client)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client[0]}
    assert _error(op.post("/token", data=data)) == (400, "invalid_grant")  # without a proof
    other = op.post("/token", data=data, headers={"DPoP": proof(new_key(), htu=TOKEN_URL, iat=op.clock.now())})
    assert _error(other) == (400, "invalid_grant")
    good = op.post("/token", data=data, headers={"DPoP": proof(key, htu=TOKEN_URL, iat=op.clock.now())})
    assert good.status_code == 200, good.json
    assert good.json["token_type"] == "DPoP"
    assert jwt_parts(good.json["access_token"])[1]["cnf"]["jkt"] == thumbprint(public_jwk(key))
    # The rotated token is bound to the same key.
    data["refresh_token"] = good.json["refresh_token"]
    again = op.post("/token", data=data, headers={"DPoP": proof(new_key(), htu=TOKEN_URL, iat=op.clock.now())})
    assert _error(again) == (400, "invalid_grant")


def test_dpop_jkt_binds_the_code(op):
    op.add_user()
    client = op.add_client()
    key = new_key()
    jkt = thumbprint(public_jwk(key))
    flow = op.code_flow(client[0], extra={"dpop_jkt": jkt})
    other = _redeem(op, client, flow, proof(new_key(), htu=TOKEN_URL, iat=op.clock.now()))
    assert _error(other) == (400, "invalid_grant")
    assert _error(_redeem(op, client, flow)) == (400, "invalid_grant")  # without a proof
    good = _redeem(op, client, flow, proof(key, htu=TOKEN_URL, iat=op.clock.now()))
    assert good.status_code == 200 and jwt_parts(good.json["access_token"])[1]["cnf"]["jkt"] == jkt
    malformed = op.get("/authorize", query_string={"response_type": "code", "client_id": client[0],
                                                   "redirect_uri": REDIRECT_URI, "scope": "openid",
                                                   "dpop_jkt": "short"})
    assert malformed.status_code == 302 and "error=invalid_request" in malformed.headers["Location"]


def test_the_admin_api_accepts_a_bound_token_with_its_proof(op):
    """RFC 9449 §7: a DPoP-bound token made for the admin API (its audience, a client allowed to ask)."""
    client = _machine(op, admin_api=True)
    key = new_key()
    access = op.post("/token", data={"grant_type": "client_credentials", "scope": "admin", "resource": ISSUER + "/admin"},
                     auth=client,
                     headers={"DPoP": proof(key, htu=TOKEN_URL, iat=op.clock.now())}).json["access_token"]
    url = ISSUER + "/admin/clients"
    assert op.get("/admin/clients", headers={"Authorization": f"Bearer {access}"}).status_code == 401
    good = op.get("/admin/clients", headers={
        "Authorization": f"DPoP {access}",
        "DPoP": proof(key, htm="GET", htu=url, iat=op.clock.now(), access_token=access)})
    assert good.status_code == 200, good.json
    assert op.get("/admin/clients", headers={"Authorization": f"DPoP {access}"}).status_code == 401


@pytest.mark.parametrize("key_type", ["RSA", "OKP"])
def test_rsa_and_eddsa_proofs(op, key_type):
    from joserfc.jwk import OKPKey

    client = _machine(op)
    key, alg = (RSAKey.generate_key(2048), "PS256") if key_type == "RSA" else (OKPKey.generate_key("Ed25519"), "EdDSA")
    response = _client_credentials(op, client, proof(key, htu=TOKEN_URL, iat=op.clock.now(), alg=alg))
    assert response.status_code == 200, response.json
    assert jwt_parts(response.json["access_token"])[1]["cnf"]["jkt"] == thumbprint(public_jwk(key))
    assert isinstance(key, RSAKey | OKPKey) and not isinstance(key, ECKey)


def test_with_redis_as_the_jti_store_two_instances_accept_a_proof_once(
        make_app, base_env, provisioned_database_url, redis_database):  # noqa: F811  (the fixture imported above)
    from oidc_fixtures import Provider

    url, connection = redis_database
    env = {**base_env, "DATABASE_URL": provisioned_database_url, "DPOP_JTI_STORAGE_URI": url}
    first, second = Provider(make_app(env)), Provider(make_app(env))
    client = _machine(first)
    dpop = proof(new_key(), htu=TOKEN_URL, iat=first.clock.now())
    statuses = sorted(_client_credentials(provider, client, dpop).status_code for provider in (first, second))
    assert statuses == [200, 400]
    (name,) = connection.keys("dpop-jti:*")
    assert 0 < connection.ttl(name) <= 2 * 60 + 1  # kept as long as its iat is acceptable, then gone
    assert first.count("DPoPProof") == 0  # nothing in the database


def test_a_jti_store_that_is_down_is_a_503_not_a_500(make_app, base_env, provisioned_database_url, caplog):
    """RFC 6749 §5.2 has no code for it; RFC 9110 §15.6.4: 503 with Retry-After, no trace, when the
    shared jti store cannot be reached (a closed loopback port here)."""
    from oidc_fixtures import Provider

    env = {**base_env, "DATABASE_URL": provisioned_database_url, "DPOP_JTI_STORAGE_URI": "redis://127.0.0.1:1/0"}
    provider = Provider(make_app(env))
    client = _machine(provider)
    response = _client_credentials(provider, client, proof(new_key(), htu=TOKEN_URL, iat=provider.clock.now()))
    assert response.status_code == 503 and response.json["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"]
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text
