"""Tokens signed through the key service: every algorithm, software keys and SoftHSM2 keys.

``at_hash`` is checked here independently of oidc/: the left half of the
SHA-2 digest named by the alg (SHA-512 for EdDSA), base64url.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from oidc_fixtures import Provider, jwt_parts, verify_jws


def _expected_at_hash(access_token: str, alg: str) -> str:
    function = hashlib.sha512 if alg == "EdDSA" else {"256": hashlib.sha256, "384": hashlib.sha384,
                                                      "512": hashlib.sha512}[alg[-3:]]
    digest = function(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def _full_flow(provider: Provider, expected_id_alg: str, expected_at_alg: str) -> None:
    provider.add_user()
    client_id, secret = provider.add_client()
    body = provider.tokens(client_id, secret)
    jwks = provider.jwks()
    id_header, _ = jwt_parts(body["id_token"])
    at_header, _ = jwt_parts(body["access_token"])
    assert id_header["alg"] == expected_id_alg and at_header["alg"] == expected_at_alg
    assert at_header["typ"] == "at+jwt"
    id_claims = verify_jws(jwks, body["id_token"])
    verify_jws(jwks, body["access_token"])
    assert id_claims["at_hash"] == _expected_at_hash(body["access_token"], expected_id_alg)
    # Refresh: a new ID token whose at_hash matches the new access token.
    refreshed = provider.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                              auth=(client_id, secret)).json
    claims = verify_jws(jwks, refreshed["id_token"])
    assert claims["at_hash"] == _expected_at_hash(refreshed["access_token"], expected_id_alg)
    assert "nonce" not in claims and claims["auth_time"] == id_claims["auth_time"]
    userinfo = provider.get("/userinfo", headers={"Authorization": "Bearer " + refreshed["access_token"]})
    assert userinfo.status_code == 200 and userinfo.json["sub"] == id_claims["sub"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the matrix runs on one database
@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA"])
def test_software_keys_every_alg(make_app, base_env, alg):
    provider = Provider(make_app({**base_env, "ID_TOKEN_SIGNING_ALG": alg, "ACCESS_TOKEN_SIGNING_ALG": alg}))
    _full_flow(provider, alg, alg)


@pytest.mark.both_databases
@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_software_keys_both_databases(make_app, base_env, alg):
    provider = Provider(make_app({**base_env, "ID_TOKEN_SIGNING_ALG": alg}))
    _full_flow(provider, alg, "ES256")


@pytest.mark.hsm
@pytest.mark.parametrize("id_alg,at_alg", [("RS256", "ES256"), ("EdDSA", "ES384")])
def test_hsm_keys(make_app, hsm_env, id_alg, at_alg, softhsm):
    provider = Provider(make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": id_alg, "ACCESS_TOKEN_SIGNING_ALG": at_alg}))
    from oidc.state import key_service

    with provider.app.app_context():
        assert key_service().signer("openid.id-token").backend == "hsm"
        assert key_service().signer("jwt.access-token").backend == "hsm"
    _full_flow(provider, id_alg, at_alg)


@pytest.mark.hsm
def test_hsm_keys_introspection_revocation_and_logout(make_app, hsm_env, softhsm):
    provider = Provider(make_app(hsm_env))
    provider.add_user()
    client_id, secret = provider.add_client(post_logout_redirect_uris=["https://rp.example.test/bye"])
    body = provider.tokens(client_id, secret)
    assert provider.post("/introspect", data={"token": body["access_token"]}, auth=(client_id, secret)).json["active"]
    assert provider.post("/revoke", data={"token": body["access_token"]}, auth=(client_id, secret)).status_code == 200
    assert provider.post("/introspect", data={"token": body["access_token"]}, auth=(client_id, secret)).json == {
        "active": False}
    logout = provider.get("/logout", query_string={"id_token_hint": body["id_token"],
                                                   "post_logout_redirect_uri": "https://rp.example.test/bye"})
    assert logout.status_code == 303


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_id_tokens_at_hash_is_for_the_key_that_signs_it(make_app, base_env, monkeypatch):
    """The ID-token signer is resolved once per token: when the active key changes between two
    look-ups (a rotation, another token taking over), ``at_hash`` is still for the key that signed."""
    from oidc.state import key_service

    provider = Provider(make_app({**base_env, "ID_TOKEN_SIGNING_ALG": "ES384"}))  # access tokens: ES256
    provider.add_user()
    client_id, secret = provider.add_client()
    with provider.app.app_context():
        service = key_service()
    real = service.signer
    asked: list[str] = []

    def flapping(key_set: str):
        # Every other look-up of the ID-token set answers with a key of another alg (ES256).
        if key_set == "openid.id-token":
            asked.append(key_set)
            if len(asked) % 2 == 0:
                return real("jwt.access-token")
        return real(key_set)

    monkeypatch.setattr(service, "signer", flapping)
    body = provider.tokens(client_id, secret)
    header, claims = jwt_parts(body["id_token"])
    assert claims["at_hash"] == _expected_at_hash(body["access_token"], header["alg"])
    assert len(asked) == 1
