"""Signed and encrypted responses: JARM, RFC 9701 introspection, signed userinfo, encrypted ID tokens,
and the FAPI 2.0 Message Signing profile.

Every response is checked with libraries we do not write: PyJWT verifies the
signatures against the published JWK Set, jwcrypto decrypts with the client's
private key.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pytest
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, hidden_fields, jwt_parts, pkce_pair, query_of, verify_jws

JARM_MODES = ("query.jwt", "jwt", "fragment.jwt", "form_post.jwt")
INTROSPECTION_JWT = "application/token-introspection+jwt"


def _verify(op: Provider, token: str, *, audience: str | None = None, typ: str | None = None) -> dict[str, Any]:
    """``token``'s claims, verified by PyJWT with the published key its header names (and by ``cryptography``)."""
    header = pyjwt.get_unverified_header(token)
    if typ is not None:
        assert header["typ"] == typ
    jwks = op.jwks()
    jwk = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    key = pyjwt.PyJWK(jwk).key
    options = {"verify_aud": audience is not None, "require": ["iss"]}
    claims: dict[str, Any] = pyjwt.decode(token, key, algorithms=[jwk["alg"]], audience=audience, issuer=ISSUER,
                                          options=options)  # type: ignore[arg-type]
    assert verify_jws(jwks, token) == claims
    return claims


def _encryption_key(kty: str) -> jwcrypto_jwk.JWK:
    if kty == "RSA":
        return jwcrypto_jwk.JWK.generate(kty="RSA", size=2048, kid="enc-rsa", use="enc")
    if kty == "OKP":
        return jwcrypto_jwk.JWK.generate(kty="OKP", crv="X25519", kid="enc-x25519", use="enc")
    return jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256", kid="enc-ec", use="enc")


def _public_jwks(key: jwcrypto_jwk.JWK) -> dict[str, Any]:
    return {"keys": [json.loads(key.export_public())]}


def _decrypt(key: jwcrypto_jwk.JWK, token: str, alg: str, enc: str) -> tuple[dict[str, Any], str]:
    """The protected header and plaintext of a compact JWE, decrypted by jwcrypto with the client's key."""
    assert token.count(".") == 4, "a compact JWE"
    message = jwcrypto_jwe.JWE()
    message.deserialize(token, key=key)
    header = json.loads(message.objects["protected"])
    assert (header["alg"], header["enc"]) == (alg, enc)
    return header, message.payload.decode()


def _jarm_token(response: Any, mode: str) -> str:
    """The ``response`` parameter of a JARM authorization response, where ``mode`` puts it."""
    if mode == "form_post.jwt":
        assert response.status_code == 200
        assert f'action="{REDIRECT_URI}"' in response.text and "document.forms[0].submit()" in response.text
        fields = hidden_fields(response.text)
        assert [name for name, _ in fields] == ["response"]
        return fields[0][1]
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT_URI
    if mode == "fragment.jwt":
        assert not parts.query
        values = parse_qs(parts.fragment)
    else:
        assert not parts.fragment
        values = parse_qs(parts.query)
    assert list(values) == ["response"], location
    return values["response"][0]


def _params(client_id: str, **extra: Any) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
              "scope": "openid profile email", "state": "st-é 1", "nonce": "n", "code_challenge": challenge,
              "code_challenge_method": "S256", "_verifier": verifier, **extra}
    return params


def _authorize(op: Provider, params: dict[str, Any], **kwargs: Any) -> Any:
    return op.authorize({key: value for key, value in params.items() if not key.startswith("_")}, **kwargs)


@pytest.fixture
def rp(op: Provider) -> tuple[Provider, str, str]:
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    assert secret is not None
    return op, client_id, secret


# -- JARM --------------------------------------------------------------------------------------------


@pytest.mark.both_databases
@pytest.mark.parametrize("mode", JARM_MODES)
def test_each_jarm_mode_end_to_end(rp, mode):
    """JARM §2.3: the code and state in one signed JWT (iss, aud, short exp), where the mode puts it;
    the code in it is redeemed as any other."""
    op, client_id, secret = rp
    params = _params(client_id, response_mode=mode)
    token = _jarm_token(_authorize(op, params), mode)
    header, _ = jwt_parts(token)
    assert header["typ"] == "JWT" and header["alg"] == "RS256"
    claims = _verify(op, token, audience=client_id)
    assert claims["iss"] == ISSUER and claims["aud"] == client_id and claims["state"] == "st-é 1"
    assert 0 < claims["exp"] - time.time() <= 60 + 5
    assert set(claims) == {"iss", "aud", "exp", "code", "state"}
    redeemed = op.redeem(client_id, secret, {"code": claims["code"], "verifier": params["_verifier"]})
    assert redeemed.status_code == 200, redeemed.json
    assert "id_token" in redeemed.json


@pytest.mark.parametrize("mode", ["query.jwt", "fragment.jwt", "form_post.jwt"])
def test_errors_that_may_be_redirected_go_in_a_jarm_response(rp, mode):
    """JARM §2.2: an error response is a JARM response too (prompt=none with no login: login_required)."""
    op, client_id, _ = rp
    response = op.get("/authorize", query_string={
        key: value for key, value in _params(client_id, response_mode=mode, prompt="none").items()
        if not key.startswith("_")})
    claims = _verify(op, _jarm_token(response, mode), audience=client_id)
    assert claims["error"] == "login_required" and claims["state"] == "st-é 1"
    assert "code" not in claims and claims["iss"] == ISSUER


def test_a_refused_parameter_and_a_denied_consent_in_jarm(op):
    op.add_user()
    client_id, _ = op.add_client()
    refused = op.get("/authorize", query_string={
        key: value for key, value in _params(client_id, response_mode="jwt", scope="openid nope").items()
        if not key.startswith("_")})
    assert _verify(op, _jarm_token(refused, "jwt"), audience=client_id)["error"] == "invalid_scope"
    denied = _authorize(op, _params(client_id, response_mode="query.jwt"), consent="deny")
    assert _verify(op, _jarm_token(denied, "query.jwt"), audience=client_id)["error"] == "access_denied"


@pytest.mark.parametrize("mode", ["JWT", "query.JWT", "jwt.query", "fragment", "query.jwt ", "form_post.jwt\x00"])
def test_response_modes_we_do_not_deliver_are_refused_in_the_default_mode(rp, mode):
    op, client_id, _ = rp
    response = op.get("/authorize", query_string={
        key: value for key, value in _params(client_id, response_mode=mode).items() if not key.startswith("_")})
    if response.status_code == 400:  # a control character: the error page, before the client is trusted
        assert "Location" not in response.headers
        return
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == ["invalid_request"]


@pytest.mark.parametrize("kty,alg,enc", [("RSA", "RSA-OAEP-256", "A256GCM"), ("EC", "ECDH-ES", "A256GCM"),
                                         ("RSA", "RSA-OAEP-256", "A128CBC-HS256")])
def test_an_encrypted_jarm_response_is_signed_then_encrypted_to_the_client(op, kty, alg, enc):
    op.add_user()
    key = _encryption_key(kty)
    client_id, _ = op.add_client(first_party=True, jwks=_public_jwks(key), authorization_encrypted_response_alg=alg,
                                 authorization_encrypted_response_enc=enc)
    token = _jarm_token(_authorize(op, _params(client_id, response_mode="query.jwt")), "query.jwt")
    header, inner = _decrypt(key, token, alg, enc)
    assert header["cty"] == "JWT" and header["kid"] == json.loads(key.export_public())["kid"]
    claims = _verify(op, inner, audience=client_id)
    assert "code" in claims and claims["state"] == "st-é 1"


# -- encrypted ID tokens, signed userinfo, RFC 9701 --------------------------------------------------


@pytest.mark.both_databases
@pytest.mark.parametrize("kty,alg", [("RSA", "RSA-OAEP-256"), ("EC", "ECDH-ES"), ("OKP", "ECDH-ES")])
def test_an_encrypted_id_token_is_decrypted_by_jwcrypto_with_the_clients_key(op, kty, alg):
    op.add_user()
    key = _encryption_key(kty)
    client_id, secret = op.add_client(first_party=True, jwks=_public_jwks(key),
                                      id_token_encrypted_response_alg=alg, id_token_encrypted_response_enc="A256GCM")
    tokens = op.tokens(client_id, secret)
    _, inner = _decrypt(key, tokens["id_token"], alg, "A256GCM")
    claims = _verify(op, inner, audience=client_id)
    assert claims["nonce"] == tokens["_flow"]["nonce"] and claims["sub"]
    # An encrypted ID token is no id_token_hint: only our own signed ID tokens are.
    refused = op.get("/authorize", query_string={"response_type": "code", "client_id": client_id,
                                                 "redirect_uri": REDIRECT_URI, "scope": "openid",
                                                 "prompt": "none", "id_token_hint": tokens["id_token"]})
    assert query_of(refused.headers["Location"])["error"] == ["invalid_request"]


def test_signed_userinfo_is_application_jwt_with_iss_and_aud(op):
    op.add_user()
    client_id, secret = op.add_client(first_party=True, userinfo_signed_response_alg="RS256")
    tokens = op.tokens(client_id, secret)
    response = op.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200 and response.mimetype == "application/jwt"
    assert response.headers["Cache-Control"] == "no-store"
    claims = _verify(op, response.get_data(as_text=True), audience=client_id)
    assert claims["iss"] == ISSUER and claims["aud"] == client_id
    assert claims["sub"] == jwt_parts(tokens["id_token"])[1]["sub"] and claims["preferred_username"] == "alice"
    assert "exp" not in claims


@pytest.mark.parametrize("signed", [True, False])
def test_encrypted_userinfo(op, signed):
    """OIDC Core §5.3.2: signed then encrypted, or encrypted JSON when no signing alg is registered."""
    op.add_user()
    key = _encryption_key("RSA")
    client_id, secret = op.add_client(first_party=True, jwks=_public_jwks(key),
                                      userinfo_signed_response_alg="RS256" if signed else None,
                                      userinfo_encrypted_response_alg="RSA-OAEP-256")
    tokens = op.tokens(client_id, secret)
    response = op.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.mimetype == "application/jwt"
    header, plaintext = _decrypt(key, response.get_data(as_text=True), "RSA-OAEP-256", "A128CBC-HS256")
    claims = _verify(op, plaintext, audience=client_id) if signed else json.loads(plaintext)
    assert ("cty" in header) is signed
    assert claims["preferred_username"] == "alice"


@pytest.mark.both_databases
def test_jwt_introspection_response(op):
    """RFC 9701 §4-5: typ token-introspection+jwt, iss, aud (the caller), iat, token_introspection."""
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    tokens = op.tokens(client_id, secret)
    asked = op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                    headers={"Accept": INTROSPECTION_JWT})
    assert asked.status_code == 200 and asked.mimetype == INTROSPECTION_JWT
    assert asked.headers["Cache-Control"] == "no-store"
    token = asked.get_data(as_text=True)
    claims = _verify(op, token, audience=client_id, typ="token-introspection+jwt")
    assert set(claims) == {"iss", "aud", "iat", "token_introspection"}
    assert abs(claims["iat"] - time.time()) < 60
    answer = claims["token_introspection"]
    assert answer["active"] is True and answer["client_id"] == client_id and answer["scope"]
    inactive = op.post("/introspect", data={"token": "nope"}, auth=(client_id, secret),
                       headers={"Accept": f"application/json;q=0.5, {INTROSPECTION_JWT}"})
    assert _verify(op, inactive.get_data(as_text=True), audience=client_id)["token_introspection"] == {"active": False}
    for accept in (None, "application/json", "*/*", f"application/json, {INTROSPECTION_JWT};q=0.1", "x" * 2000):
        plain = op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                        headers={"Accept": accept} if accept else {})
        assert plain.mimetype == "application/json" and plain.json["active"] is True, accept


def test_an_encrypted_introspection_response(op):
    op.add_user()
    key = _encryption_key("EC")
    client_id, secret = op.add_client(first_party=True, jwks=_public_jwks(key),
                                      introspection_encrypted_response_alg="ECDH-ES",
                                      introspection_encrypted_response_enc="A256GCM")
    tokens = op.tokens(client_id, secret)
    asked = op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                    headers={"Accept": INTROSPECTION_JWT})
    assert asked.mimetype == INTROSPECTION_JWT
    _, inner = _decrypt(key, asked.get_data(as_text=True), "ECDH-ES", "A256GCM")
    assert _verify(op, inner, audience=client_id, typ="token-introspection+jwt")["token_introspection"]["active"]


# -- one kind is never another -----------------------------------------------------------------------


def test_no_artefact_signed_with_the_id_token_set_verifies_as_another(op):
    """RFC 8725 §3.11: an ID token, a JARM response, a signed userinfo and an introspection response are
    all signed with the ID token set; each verifies as its own kind only."""
    op.add_user()
    client_id, secret = op.add_client(first_party=True, userinfo_signed_response_alg="RS256")
    params = _params(client_id, response_mode="query.jwt")
    jarm = _jarm_token(_authorize(op, params), "query.jwt")
    code = pyjwt.decode(jarm, options={"verify_signature": False})["code"]
    tokens = op.redeem(client_id, secret, {"code": code, "verifier": params["_verifier"]}).json
    userinfo = op.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    introspection = op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                            headers={"Accept": INTROSPECTION_JWT})
    from oidc.oauth2.jwt import (
        ARTEFACTS,
        ID_TOKEN,
        INTROSPECTION_RESPONSE,
        JARM_RESPONSE,
        USERINFO_RESPONSE,
        InvalidToken,
        verify_artefact,
    )

    made = {ID_TOKEN: tokens["id_token"], JARM_RESPONSE: jarm, USERINFO_RESPONSE: userinfo.get_data(as_text=True),
            INTROSPECTION_RESPONSE: introspection.get_data(as_text=True)}
    with op.app.test_request_context():
        for kind, token in made.items():
            for artefact in ARTEFACTS:
                if artefact is kind:
                    assert verify_artefact(token, artefact)["iss"] == ISSUER
                else:
                    with pytest.raises(InvalidToken):
                        verify_artefact(token, artefact)
    # And at the door: a JARM response, a signed userinfo, an introspection response are no id_token_hint.
    for token in (jarm, made[USERINFO_RESPONSE], made[INTROSPECTION_RESPONSE]):
        refused = op.get("/authorize", query_string={"response_type": "code", "client_id": client_id,
                                                     "redirect_uri": REDIRECT_URI, "scope": "openid",
                                                     "prompt": "none", "id_token_hint": token})
        assert query_of(refused.headers["Location"])["error"] == ["invalid_request"]


# -- registration and discovery ------------------------------------------------------------------------


@pytest.mark.parametrize("metadata,message", [
    ({"authorization_signed_response_alg": "HS256"}, "authorization_signed_response_alg"),
    ({"userinfo_signed_response_alg": "none"}, "userinfo_signed_response_alg"),
    ({"introspection_signed_response_alg": "ES256"}, "introspection_signed_response_alg"),
    ({"id_token_encrypted_response_alg": "RSA1_5"}, "id_token_encrypted_response_alg"),
    ({"id_token_encrypted_response_enc": "A256GCM"}, "needs id_token_encrypted_response_alg"),
    ({"userinfo_encrypted_response_alg": "RSA-OAEP-256", "userinfo_encrypted_response_enc": "A128GCM"},
     "userinfo_encrypted_response_enc"),
    ({"authorization_encrypted_response_alg": "RSA-OAEP-256"}, "no key with use 'enc'"),
    ({"authorization_encrypted_response_alg": "ECDH-ES", "jwks": "rsa"}, "no key with use 'enc'"),
])
def test_registration_refuses_what_cannot_be_delivered(op, metadata, message):
    from oidc.accounts.clients import ClientError

    metadata = dict(metadata)
    if metadata.get("jwks") == "rsa":
        metadata["jwks"] = _public_jwks(_encryption_key("RSA"))
    with pytest.raises(ClientError, match=message):
        op.add_client(**metadata)


def test_admin_api_and_cli_register_the_metadata(op, admin_key, tmp_path):
    key = _encryption_key("RSA")
    body = {"name": "RP", "redirect_uris": [REDIRECT_URI], "jwks": _public_jwks(key),
            "authorization_signed_response_alg": "RS256", "authorization_encrypted_response_alg": "RSA-OAEP-256",
            "security_profile": "fapi2-message-signing", "auth_method": "private_key_jwt"}
    refused = op.post("/admin/clients", json=body, headers={"Authorization": f"Bearer {admin_key}"})
    assert refused.status_code == 400  # fapi2 wants PS256/ES256/EdDSA: the provider signs RS256
    body["security_profile"] = "default"
    created = op.post("/admin/clients", json=body, headers={"Authorization": f"Bearer {admin_key}"})
    assert created.status_code == 201, created.json
    assert created.json["authorization_encrypted_response_enc"] == "A128CBC-HS256"
    assert created.json["authorization_signed_response_alg"] == "RS256"
    bad = op.post("/admin/clients", json={**body, "userinfo_encrypted_response_alg": "dir"},
                  headers={"Authorization": f"Bearer {admin_key}"})
    assert bad.status_code == 400 and "userinfo_encrypted_response_alg" in bad.json["error_description"]
    openapi = op.get("/admin/openapi.json")
    assert openapi.status_code == 200
    fields = openapi.json["components"]["schemas"]["ClientRegistration"]["properties"]
    assert fields["introspection_encrypted_response_alg"]["enum"] == ["RSA-OAEP-256", "ECDH-ES"]
    assert "fapi2-message-signing" in fields["security_profile"]["enum"]
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(_public_jwks(key)))
    result = op.app.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "CLI RP", "--redirect-uri", REDIRECT_URI, "--jwks-file", str(jwks_file),
        "--userinfo-signed-response-alg", "RS256", "--id-token-encrypted-response-alg", "RSA-OAEP-256",
        "--id-token-encrypted-response-enc", "A256GCM", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["userinfo_signed_response_alg"] == "RS256"
    assert (shown["id_token_encrypted_response_alg"], shown["id_token_encrypted_response_enc"]) == (
        "RSA-OAEP-256", "A256GCM")


def test_discovery_lists_the_response_metadata(op):
    document = op.get("/.well-known/openid-configuration").json
    assert set(document["response_modes_supported"]) == {"query", "form_post", *JARM_MODES}
    for name in ("authorization_signing_alg_values_supported", "introspection_signing_alg_values_supported",
                 "userinfo_signing_alg_values_supported"):
        assert document[name] == document["id_token_signing_alg_values_supported"] == ["RS256"]
    for kind in ("id_token", "userinfo", "authorization", "introspection"):
        assert document[f"{kind}_encryption_alg_values_supported"] == ["RSA-OAEP-256", "ECDH-ES"]
        assert document[f"{kind}_encryption_enc_values_supported"] == ["A256GCM", "A128CBC-HS256"]


# -- FAPI 2.0 Message Signing ---------------------------------------------------------------------------

MS_ENV = {"SECURITY_PROFILE": "fapi2-message-signing", "ID_TOKEN_SIGNING_ALG": "PS256",
          "ACCESS_TOKEN_SIGNING_ALG": "ES256"}


def test_requires_signed_request_object_names_the_message_signing_profile(make_app, base_env):
    """The profile of a client decides (provider-wide or registered); the request objects themselves are
    tests/test_request_objects.py's."""
    from types import SimpleNamespace

    from oidc.oauth2.security_profile import requires_request_object_typ, requires_signed_request_object

    app = make_app(base_env)
    with app.app_context():
        for profile, required in (("fapi2-message-signing", True), ("fapi2", False), (None, False)):
            client = SimpleNamespace(security_profile=profile, require_signed_request_object=False)
            assert requires_signed_request_object(client) is required
            assert requires_request_object_typ(client) is required


@pytest.fixture
def ms(make_app, base_env):
    op = Provider(make_app({**base_env, **MS_ENV}))
    op.add_user()
    return op


@pytest.mark.parametrize("response_mode", [None, "query", "form_post.jwt"])
def test_the_message_signing_profile_answers_in_jarm(ms, response_mode):
    """FAPI 2.0 Message Signing §5.4: JARM, on top of the Security Profile (PAR, PKCE, private_key_jwt, DPoP)
    and of §5.3.1 (the request pushed as a signed request object); a request without a JARM mode gets ``jwt``."""
    from test_request_objects import FapiObjects

    client = FapiObjects(ms, "PS256")
    pushed = client.push_object(response_mode=response_mode)
    assert pushed.status_code == 201, pushed.json
    response = ms.authorize({"client_id": client.client_id, "request_uri": pushed.json["request_uri"]})
    mode = response_mode if response_mode in JARM_MODES else "query.jwt"
    token = _jarm_token(response, mode)
    assert jwt_parts(token)[0]["alg"] == "PS256"
    claims = _verify(ms, token, audience=client.client_id)
    assert claims["state"] == "s"
    redeemed = client.redeem(claims["code"])
    assert redeemed.status_code == 200, redeemed.json


def test_discovery_and_settings_under_message_signing(ms):
    from oidc.state import state_of

    settings = state_of(ms.app).settings
    assert settings.fapi2 and settings.fapi2_message_signing
    document = ms.get("/.well-known/openid-configuration").json
    assert set(document["response_modes_supported"]) == set(JARM_MODES)
    assert document["authorization_signing_alg_values_supported"] == ["PS256"]
    assert document["require_pushed_authorization_requests"] is True
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["require_signed_request_object"] is True
    assert document["request_object_signing_alg_values_supported"] == ["PS256", "ES256", "EdDSA", "Ed25519"]


def test_a_client_registered_for_message_signing_on_a_default_provider(op):
    """The per-client profile: its responses, errors included, are JARM ones; other clients are untouched."""
    from joserfc.jwk import ECKey

    op.add_user()
    key = ECKey.generate_key("P-256", parameters={"kid": "rp"})
    with op.app.app_context():
        from oidc.accounts.clients import ClientError, create_client

        with pytest.raises(ClientError, match="PS256, ES256 or EdDSA"):
            create_client(name="MS", redirect_uris=[REDIRECT_URI], auth_method="private_key_jwt",
                          jwks={"keys": [key.as_dict(private=False)]}, security_profile="fapi2-message-signing")
        client, _ = create_client(name="plain", redirect_uris=[REDIRECT_URI])
        from oidc.oauth2 import security_profile

        assert security_profile.profile_of(client) == "default" and not security_profile.requires_jarm(client)
        client.security_profile = "fapi2-message-signing"  # as stored: the column holds the long name
        assert security_profile.requires_jarm(client) and security_profile.is_fapi2(client)


# -- keys on the token ------------------------------------------------------------------------------------


def test_jarm_and_jwt_introspection_signed_on_the_softhsm2_token(hsm_op):
    """The responses are signed by the key the token holds: its kid is the one published for the ID token set,
    and the signature verifies with that public key (PyJWT and ``cryptography``)."""
    op = hsm_op
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    params = _params(client_id, response_mode="form_post.jwt")
    jarm = _jarm_token(_authorize(op, params), "form_post.jwt")
    claims = _verify(op, jarm, audience=client_id)
    tokens = op.redeem(client_id, secret, {"code": claims["code"], "verifier": params["_verifier"]}).json
    introspection = op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                            headers={"Accept": INTROSPECTION_JWT}).get_data(as_text=True)
    assert _verify(op, introspection, audience=client_id)["token_introspection"]["active"] is True
    from oidc.state import state_of
    from oidc.vocabulary import ID_TOKEN_SET

    with op.app.app_context():
        signer = state_of(op.app).key_service().signer(ID_TOKEN_SET)
        assert signer.backend == "hsm"
        kid = signer.kid
    assert jwt_parts(jarm)[0]["kid"] == jwt_parts(introspection)[0]["kid"] == jwt_parts(tokens["id_token"])[0]["kid"]
    assert jwt_parts(jarm)[0]["kid"] == kid


@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_lost_token_makes_jarm_and_rfc_9701_answers_503_never_500(make_app, remote_hsm_env, remote_token):
    """The token behind p11-kit goes away: a JARM response (a code, or an error) and an RFC 9701 answer
    are 503 temporarily_unavailable with Retry-After; no code is left written; back when the token is."""
    op = Provider(make_app({**remote_hsm_env, "HSM_ONLY_KEY_SETS": "*", "HSM_RETRY_INITIAL_SECONDS": "0.2",
                            "HSM_RETRY_MAX_SECONDS": "1"}))
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    tokens = op.tokens(client_id, secret)  # signed in, with an access token to introspect
    codes = op.count("AuthorizationCode")
    request = {key: value for key, value in _params(client_id, response_mode="query.jwt").items()
               if not key.startswith("_")}
    remote_token.kill()
    try:
        answers = [op.get("/authorize", query_string=request),
                   op.get("/authorize", query_string={**request, "scope": "openid nope"}),
                   op.post("/introspect", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                           headers={"Accept": INTROSPECTION_JWT})]
        for response in answers:
            assert response.status_code == 503, (response.status_code, response.get_data(as_text=True)[:200])
            assert int(response.headers["Retry-After"]) >= 1
        assert op.count("AuthorizationCode") == codes
    finally:
        remote_token.start()
    deadline = time.monotonic() + 15
    while (response := op.get("/authorize", query_string=request)).status_code == 503:
        assert time.monotonic() < deadline, "not back within 15 s of the token's return"
        time.sleep(0.1)
    assert "code" in _verify(op, _jarm_token(response, "query.jwt"), audience=client_id)


@pytest.mark.e2e
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_chromium_posts_the_form_post_jwt_response_to_the_client(make_app, base_env, tmp_path, tls):
    """A real browser under the page's CSP, on http and as deployed (https through the TLS proxy): the
    form_post.jwt page submits itself, and the client receives one ``response`` parameter whose JWT
    verifies against the JWKS gunicorn serves."""
    import requests

    from oidc_fixtures import PASSWORD, serve_with_gunicorn
    from support import chromium_executable

    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    # (an https client behind an https provider: a form posted from https to http gets Chromium's warning)
    callback = "https://rp.example.test/callback" if tls else "http://127.0.0.1:9/callback"
    with serve_with_gunicorn(make_app, base_env, tmp_path, redirect_uris=[callback], first_party=True,
                             tls=tls) as served:
        _, challenge = pkce_pair()
        url = served["issuer"] + "/authorize?" + urlencode({
            "response_type": "code", "client_id": served["client_id"], "redirect_uri": callback,
            "scope": "openid", "state": "browser-ß", "code_challenge": challenge, "code_challenge_method": "S256",
            "response_mode": "form_post.jwt"})
        posted: list[tuple[str, str]] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=served["chromium_args"])
            try:
                page = browser.new_page()
                page.set_default_timeout(15000)

                def arrive(route: Any) -> None:
                    posted.append((route.request.method, route.request.post_data or ""))
                    route.fulfill(status=200, content_type="text/html", body="<h1>client callback</h1>")

                page.route(callback + "*", arrive)
                page.goto(url)
                page.fill("#username", "alice")
                page.fill("#password", PASSWORD)
                page.click("#sign-in")
                page.wait_for_url(callback + "*")
            finally:
                browser.close()
        jwks = requests.get(served["issuer"] + "/.well-known/jwks.json", timeout=10,
                            verify=served["verify"]).json()
    assert len(posted) == 1 and posted[0][0] == "POST"
    form = parse_qs(posted[0][1])
    assert list(form) == ["response"]
    token = form["response"][0]
    jwk = next(key for key in jwks["keys"] if key["kid"] == pyjwt.get_unverified_header(token)["kid"])
    claims = pyjwt.decode(token, pyjwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience=served["client_id"],
                          issuer=served["issuer"])
    assert claims["state"] == "browser-ß" and claims["code"]


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("ID_TOKEN_SIGNING_ALG", "RS256", "ID_TOKEN_SIGNING_ALG is RS256"),
    ("AUTHORIZATION_CODE_LIFETIME", "120", "at most 60 s"),
    ("SECURITY_PROFILE", "fapi2-message-signin", "SECURITY_PROFILE must be one of"),
])
def test_start_up_errors_under_message_signing(tmp_path, variable, value, message):
    """The Security Profile's start-up checks hold under Message Signing, which is built on it."""
    from oidc.settings import ConfigError, load_settings

    env = {**MS_ENV, variable: value}
    with pytest.raises(ConfigError, match=message):
        load_settings(env, instance_path=str(tmp_path))
    assert load_settings(MS_ENV, instance_path=str(tmp_path)).fapi2_message_signing
