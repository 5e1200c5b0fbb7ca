"""The FAPI 2.0 Security Profile (SECURITY_PROFILE=fapi2, or a client's security_profile): what it requires and refuses."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from dpop_proofs import new_key, proof
from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, jwt_parts, pkce_pair, query_of

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FAPI_ENV = {"SECURITY_PROFILE": "fapi2", "ID_TOKEN_SIGNING_ALG": "ES256", "ACCESS_TOKEN_SIGNING_ALG": "ES256"}


def _assertion(key, client_id, aud=ISSUER):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES256", "kid": "rp"}, claims, key)


class FapiClient:
    """A confidential client with a private_key_jwt key and a DPoP key."""

    def __init__(self, op, **registration):
        self.op = op
        self.key = ECKey.generate_key("P-256", parameters={"kid": "rp"})
        self.dpop_key = new_key()
        registration.setdefault("redirect_uris", [REDIRECT_URI])
        self.client_id, _ = op.add_client(auth_method="private_key_jwt",
                                          jwks={"keys": [self.key.as_dict(private=False)]}, **registration)

    def auth(self, aud=ISSUER):
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": _assertion(self.key, self.client_id, aud)}

    def dpop(self, path):
        return {"DPoP": proof(self.dpop_key, htu=ISSUER + path, iat=self.op.clock.now())}

    def params(self, **extra):
        self.verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT_URI,
                  "scope": "openid offline_access", "state": "s", "nonce": "n", "code_challenge": challenge,
                  "code_challenge_method": "S256", **extra}
        return {key: value for key, value in params.items() if value is not None}

    def push(self, params, aud=ISSUER, dpop=True):
        return self.op.post("/par", data={**params, **self.auth(aud)}, headers=self.dpop("/par") if dpop else {})

    def code(self, dpop=True, **extra):
        pushed = self.push(self.params(**extra), dpop=dpop)
        assert pushed.status_code == 201, pushed.json
        response = self.op.authorize({"client_id": self.client_id, "request_uri": pushed.json["request_uri"]})
        assert response.status_code == 302, response.text[:300]
        return query_of(response.headers["Location"])["code"][0]

    def redeem(self, code, *, dpop=True, aud=ISSUER):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": self.verifier, **self.auth(aud)}
        return self.op.post("/token", data=data, headers=self.dpop("/token") if dpop else {})

    def refresh(self, refresh_token):
        return self.op.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                            **self.auth()}, headers=self.dpop("/token"))


@pytest.fixture
def fapi(make_app, base_env):
    op = Provider(make_app({**base_env, **FAPI_ENV}))
    op.add_user()
    return op


def _error(response):
    return response.status_code, response.json.get("error")


def test_a_fapi2_code_flow_with_par_pkce_private_key_jwt_and_dpop(fapi):
    client = FapiClient(fapi)
    response = client.redeem(client.code())
    assert response.status_code == 200, response.json
    tokens = response.json
    assert tokens["token_type"] == "DPoP"
    assert jwt_parts(tokens["access_token"])[0]["alg"] == "ES256"
    assert jwt_parts(tokens["id_token"])[0]["alg"] == "ES256"
    assert "cnf" in jwt_parts(tokens["access_token"])[1]
    # A confidential client's refresh token is not rotated: the same one works again (a retry after a lost response).
    first = client.refresh(tokens["refresh_token"])
    assert first.status_code == 200 and "refresh_token" not in first.json, first.json
    second = client.refresh(tokens["refresh_token"])
    assert second.status_code == 200, second.json
    introspection = fapi.post("/introspect", data={"token": first.json["access_token"], **client.auth()})
    assert introspection.json["active"] is True


def test_discovery_under_the_profile(fapi):
    document = fapi.get("/.well-known/openid-configuration").json
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["introspection_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["require_pushed_authorization_requests"] is True
    assert set(document["dpop_signing_alg_values_supported"]) <= {"PS256", "ES256", "EdDSA", "Ed25519"}
    assert set(document["token_endpoint_auth_signing_alg_values_supported"]) <= {"PS256", "ES256", "EdDSA", "Ed25519"}
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]


@pytest.mark.parametrize("case", ["plain request", "no PKCE", "no redirect_uri", "response_type code id_token",
                                  "list aud", "token endpoint aud", "no proof at the token endpoint",
                                  "RS256 proof", "code older than 60 s", "client_secret at par", "RS256 assertion"])
def test_what_the_profile_refuses(fapi, case):
    client = FapiClient(fapi)
    if case == "plain request":
        response = fapi.authorize(client.params())
        assert response.status_code == 400 and "Location" not in response.headers
        return
    if case in ("no PKCE", "no redirect_uri", "response_type code id_token"):
        changes: dict[str, dict[str, str | None]] = {
            "no PKCE": {"code_challenge": None, "code_challenge_method": None},
            "no redirect_uri": {"redirect_uri": None},
            "response_type code id_token": {"response_type": "code id_token"}}
        params = client.params(**changes[case])
        expected = "unsupported_response_type" if case.startswith("response_type") else "invalid_request"
        assert _error(client.push(params)) == (400, expected)
        return
    if case == "list aud":
        assert client.push(client.params(), aud=[ISSUER]).json["error"] == "invalid_client"
        return
    if case == "token endpoint aud":
        assert client.push(client.params(), aud=ISSUER + "/token").json["error"] == "invalid_client"
        assert client.redeem(client.code(), aud=ISSUER + "/token").json["error"] == "invalid_client"
        return
    if case == "no proof at the token endpoint":
        assert _error(client.redeem(client.code(dpop=False), dpop=False)) == (400, "invalid_dpop_proof")
        return
    if case == "RS256 proof":
        rsa = RSAKey.generate_key(2048)
        response = fapi.post("/par", data={**client.params(), **client.auth()},
                             headers={"DPoP": proof(rsa, htu=ISSUER + "/par", iat=fapi.clock.now(), alg="RS256")})
        assert _error(response) == (400, "invalid_dpop_proof")
        return
    if case == "code older than 60 s":
        code = client.code()
        fapi.clock.advance(61)
        assert _error(client.redeem(code)) == (400, "invalid_grant")
        return
    if case == "RS256 assertion":
        rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa"})
        rsa_client_id, _ = fapi.add_client(auth_method="private_key_jwt", redirect_uris=[REDIRECT_URI],
                                           jwks={"keys": [rsa.as_dict(private=False)]})
        now = int(time.time())
        assertion = jwt.encode({"alg": "RS256", "kid": "rsa"}, {
            "iss": rsa_client_id, "sub": rsa_client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
            "jti": uuid.uuid4().hex}, rsa, algorithms=["RS256"])
        response = fapi.post("/par", data={**client.params(), "client_id": rsa_client_id,
                                           "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        assert response.json["error"] == "invalid_client", response.json
        return
    if case == "client_secret at par":
        response = fapi.post("/par", data=client.params(), auth=(client.client_id, "secret"))
        assert response.status_code in (400, 401) and response.json["error"] == "invalid_client"
        return
    raise AssertionError(case)


def test_registration_under_the_profile(fapi):
    from oidc.accounts.clients import ClientError

    for registration in ({"auth_method": "client_secret_basic"}, {"auth_method": "none"}):
        with pytest.raises(ClientError, match="private_key_jwt"):
            fapi.add_client(**registration)
    with pytest.raises(ClientError, match="https"):
        FapiClient(fapi, redirect_uris=["http://127.0.0.1:8080/cb"])


def test_loopback_redirects_only_in_development_mode(make_app, base_env):
    op = Provider(make_app({**base_env, **FAPI_ENV, "DEVELOPMENT_MODE": "true"}))
    op.add_user()
    client = FapiClient(op, redirect_uris=["http://127.0.0.1:8080/cb"])
    pushed = client.push(client.params(redirect_uri="http://127.0.0.1:8080/cb"))
    assert pushed.status_code == 201, pushed.json


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("ID_TOKEN_SIGNING_ALG", "RS256", "ID_TOKEN_SIGNING_ALG is RS256"),
    ("ACCESS_TOKEN_SIGNING_ALG", "RS256", "ACCESS_TOKEN_SIGNING_ALG is RS256"),
    ("AUTHORIZATION_CODE_LIFETIME", "120", "at most 60 s"),
    ("DPOP_SIGNING_ALGS", "RS256,ES384", "DPOP_SIGNING_ALGS"),
    ("PAR_LIFETIME", "600", "PAR_LIFETIME is 600"),
])
def test_start_up_errors_under_the_profile(tmp_path, variable, value, message):
    from oidc.settings import ConfigError, load_settings

    env = {**FAPI_ENV, variable: value}
    with pytest.raises(ConfigError, match=message):
        load_settings(env, instance_path=str(tmp_path))
    assert load_settings({**env, "SECURITY_PROFILE": "default"}, instance_path=str(tmp_path))


def test_the_profile_for_one_client_on_a_default_provider(make_app, base_env):
    op = Provider(make_app({**base_env, "ID_TOKEN_SIGNING_ALG": "ES256", "AUTHORIZATION_CODE_LIFETIME": "300"}))
    op.add_user()
    client = FapiClient(op, security_profile="fapi2")
    # Its plain requests are refused, its codes live 60 s, its refresh tokens are not rotated.
    assert op.authorize(client.params()).status_code == 400
    code = client.code()
    op.clock.advance(61)
    assert _error(client.redeem(code)) == (400, "invalid_grant")
    tokens = client.redeem(client.code()).json
    rs256 = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                    **client.auth()},
                    headers={"DPoP": proof(RSAKey.generate_key(2048), htu=ISSUER + "/token", iat=op.clock.now(),
                                           alg="RS256")})
    assert _error(rs256) == (400, "invalid_dpop_proof")  # the provider accepts RS256 proofs, this client not
    assert client.refresh(tokens["refresh_token"]).status_code == 200
    assert client.refresh(tokens["refresh_token"]).status_code == 200
    # Another client of the same provider keeps the default rules: rotation with reuse detection.
    other = op.add_client(name="Default RP")
    flow = op.code_flow(other[0])
    default_tokens = op.redeem(*other, flow).json
    data = {"grant_type": "refresh_token", "refresh_token": default_tokens["refresh_token"]}
    rotated = op.post("/token", data=data, auth=other)
    assert rotated.status_code == 200 and rotated.json["refresh_token"] != default_tokens["refresh_token"]
    assert _error(op.post("/token", data=data, auth=other)) == (400, "invalid_grant")


def test_a_fapi2_client_needs_fapi2_signatures(op):
    from oidc.accounts.clients import ClientError

    with pytest.raises(ClientError, match="ID_TOKEN_SIGNING_ALG is RS256"):
        FapiClient(op, security_profile="fapi2")


def test_a_key_set_that_signs_with_rs256_stops_the_profile_at_start_up(make_app, base_env, provisioned_database_url):
    """The configured algorithm is ES256, but the key set still holds its RS256 key (provisioned earlier)."""
    from keys.errors import KeyServiceError

    with pytest.raises(KeyServiceError, match=r"'openid\.id-token' signs with RS256"):
        Provider(make_app({**base_env, **FAPI_ENV, "DATABASE_URL": provisioned_database_url}))


def test_clients_cli_and_admin_api_register_the_new_metadata(op, admin_key):
    runner = op.app.test_cli_runner()
    result = runner.invoke(args=["clients", "create", "--name", "CLI RP", "--redirect-uri", REDIRECT_URI,
                                 "--require-par", "--dpop-bound", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["require_pushed_authorization_requests"] is True and created["dpop_bound_access_tokens"] is True
    assert created["security_profile"] is None
    response = op.post("/admin/clients", headers={"Authorization": f"Bearer {admin_key}"},
                       json={"name": "API RP", "redirect_uris": [REDIRECT_URI], "dpop_bound_access_tokens": True,
                             "require_pushed_authorization_requests": True})
    assert response.status_code == 201 and response.json["dpop_bound_access_tokens"] is True
    refused = op.post("/admin/clients", headers={"Authorization": f"Bearer {admin_key}"},
                      json={"name": "API RP", "redirect_uris": [REDIRECT_URI], "security_profile": "fapi2"})
    assert refused.status_code == 400 and "private_key_jwt" in refused.json["error_description"]
