"""Request objects (RFC 9101, OpenID Connect Core §6) at /authorize and /par.

The objects are built and signed with PyJWT over keys made with ``cryptography``
(never with the provider's own JOSE code), and forged ones are each refused with
RFC 9101's ``invalid_request_object``: on the error page at /authorize (nothing
in an unverified object can be trusted, its redirect URI least of all), as JSON
at /par.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import jwt
import pytest
import test_fapi2
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from dpop_proofs import new_key, proof
from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, jwt_parts, pkce_pair, query_of

TYP = "oauth-authz-req+jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """A client's key pair, made with ``cryptography``; PyJWT signs with it."""

    _MAKERS: dict[str, Any] = {
        "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }
    _EXPORT: dict[str, Any] = {"PS256": RSAAlgorithm, "RS256": RSAAlgorithm, "ES256": ECAlgorithm,
                               "ES512": ECAlgorithm, "EdDSA": OKPAlgorithm}

    def __init__(self, alg: str = "ES256", kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or uuid.uuid4().hex[:8]
        self.private = self._MAKERS[alg]()

    def jwk(self) -> dict[str, Any]:
        key: dict[str, Any] = self._EXPORT[self.alg].to_jwk(self.private.public_key(), as_dict=True)
        return {**key, "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], *, typ: str | None = TYP, alg: str | None = None,
             headers: dict[str, Any] | None = None) -> str:
        header: dict[str, Any] = {"kid": self.kid, **(headers or {})}
        if typ is not None:
            header["typ"] = typ
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=header)

    def sign_bytes(self, payload: bytes) -> str:
        """A JWS over any payload (one that is not a JSON object)."""
        return jwt.PyJWS().encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid, "typ": TYP})


def unsigned(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    head = {"alg": "none", **(header or {})}
    return f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}."


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over the client's public key as the secret: the classic alg confusion."""
    signing_input = (_b64(json.dumps({"alg": "HS256", "kid": kid, "typ": TYP}).encode()) + "."
                     + _b64(json.dumps(claims).encode()))
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def request_claims(op: Provider, client_id: str, **extra: Any) -> tuple[dict[str, Any], str]:
    """The claims of a request object for ``client_id`` (an authorization request), and its PKCE verifier."""
    verifier, challenge = pkce_pair()
    now = op.clock.now()
    claims = {"iss": client_id, "aud": ISSUER, "exp": now + 300, "nbf": now, "iat": now, "jti": uuid.uuid4().hex,
              "client_id": client_id, "response_type": "code", "redirect_uri": REDIRECT_URI,
              "scope": "openid email", "state": "object-state", "nonce": "object-nonce",
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return {key: value for key, value in claims.items() if value is not None}, verifier


def registered(op: Provider, *signers: Signer, **registration: Any) -> str:
    client_id, _ = op.add_client(auth_method="none", jwks={"keys": [signer.jwk() for signer in signers]},
                                 **registration)
    return client_id


def refused_page(response: Any) -> bool:
    return response.status_code == 400 and "Location" not in response.headers and "invalid_request_object" in (
        response.text)


@pytest.fixture
def rp(op: Provider) -> tuple[Provider, str, Signer]:
    """A client with an ES256 key, and a P-521 one: ES512 is not among the request object algs."""
    op.add_user()
    signer = Signer("ES256")
    return op, registered(op, signer, ES512_SIGNER), signer


#: A key made once (P-521 generation is slow enough to matter).
ES512_SIGNER = Signer("ES512", kid="p521")


@pytest.mark.both_databases
@pytest.mark.parametrize("alg", ["PS256", "ES256", "EdDSA", "RS256"])
def test_a_signed_request_object_at_authorize_gets_a_code_and_tokens(op: Provider, alg: str) -> None:
    """RFC 9101 §5: the object's parameters are the request; login, consent and the code exchange follow."""
    op.add_user()
    signer = Signer(alg)
    client_id = registered(op, signer)
    claims, verifier = request_claims(op, client_id)
    response = op.authorize({"client_id": client_id, "request": signer.sign(claims)})
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    query = query_of(location)
    assert location.startswith(REDIRECT_URI + "?") and query["state"] == ["object-state"] and query["iss"] == [ISSUER]
    token = op.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                    "redirect_uri": REDIRECT_URI, "code_verifier": verifier, "client_id": client_id})
    assert token.status_code == 200, token.json
    _, id_token = jwt_parts(token.json["id_token"])
    assert id_token["nonce"] == "object-nonce" and id_token["aud"] == client_id
    assert token.json["scope"].split() == ["openid", "email"]


@pytest.mark.hsm
def test_with_keys_on_the_token_a_posted_request_object_ends_in_tokens_the_token_signed(hsm_op: Provider) -> None:
    """The object in the form of POST /authorize (OIDC Core §3.1.2.1), the ID token signed on SoftHSM2."""
    from oidc_fixtures import verify_jws

    op = hsm_op
    op.add_user()
    signer = Signer("EdDSA")
    client_id = registered(op, signer, first_party=True)
    op.login()
    claims, verifier = request_claims(op, client_id)
    response = op.post("/authorize", data={"client_id": client_id, "request": signer.sign(claims)})
    assert response.status_code == 302, response.text[:300]
    query = query_of(response.headers["Location"])
    token = op.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                    "redirect_uri": REDIRECT_URI, "code_verifier": verifier, "client_id": client_id})
    assert token.status_code == 200, token.json
    assert verify_jws(op.jwks(), token.json["id_token"])["nonce"] == "object-nonce"


def test_only_the_objects_parameters_are_used(rp: tuple[Provider, str, Signer]) -> None:
    """RFC 9101 §5: parameters sent beside the object (a replayed or altered front channel) are ignored."""
    op, client_id, signer = rp
    claims, verifier = request_claims(op, client_id)
    outer = {"client_id": client_id, "request": signer.sign(claims), "state": "front-channel",
             "redirect_uri": "https://evil.example.test/cb", "scope": "openid profile offline_access",
             "nonce": "front-nonce", "code_challenge": pkce_pair()[1], "code_challenge_method": "S256",
             "response_type": "code"}
    response = op.authorize(outer)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT_URI + "?")
    query = query_of(response.headers["Location"])
    assert query["state"] == ["object-state"]
    token = op.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                    "redirect_uri": REDIRECT_URI, "code_verifier": verifier, "client_id": client_id})
    assert token.status_code == 200 and "refresh_token" not in token.json
    assert jwt_parts(token.json["id_token"])[1]["nonce"] == "object-nonce"


def test_the_objects_parameters_are_validated_as_plain_ones(rp: tuple[Provider, str, Signer]) -> None:
    """Once the object verifies, its parameters go through the one validation: errors go to its redirect URI."""
    op, client_id, signer = rp
    claims, _ = request_claims(op, client_id, scope="openid admin-everything", max_age=60)
    response = op.get("/authorize", query_string={"client_id": client_id, "request": signer.sign(claims)})
    assert response.status_code == 302
    query = query_of(response.headers["Location"])
    assert query["error"] == ["invalid_scope"] and query["state"] == ["object-state"]
    claims, _ = request_claims(op, client_id, redirect_uri="https://evil.example.test/cb")
    response = op.get("/authorize", query_string={"client_id": client_id, "request": signer.sign(claims)})
    assert response.status_code == 400 and "Location" not in response.headers


def _forgeries(op: Provider, client_id: str, signer: Signer, other_client: tuple[str, Signer]) -> dict[str, str]:
    claims, _ = request_claims(op, client_id)
    now = op.clock.now()
    impostor = Signer("ES256", kid=signer.kid)  # the same kid, another key
    rsa_signer = Signer("PS256", kid=signer.kid)
    other_id, other_signer = other_client
    valid = signer.sign(claims)
    head, body, signature = valid.split(".")
    tampered_body = _b64(json.dumps({**claims, "redirect_uri": "https://evil.example.test/cb"}).encode())
    return {
        "wrong key": impostor.sign(claims),
        "another client's key": other_signer.sign(claims),
        "another client's object": other_signer.sign({**claims, "iss": other_id, "client_id": other_id}),
        "alg confusion (HS256 with the public key)": hs256(claims, json.dumps(signer.jwk()).encode(), signer.kid),
        "alg none": unsigned(claims),
        "alg not allowed (ES512)": ES512_SIGNER.sign(claims),
        "key of another type": rsa_signer.sign(claims, alg="PS256"),
        "tampered payload": f"{head}.{tampered_body}.{signature}",
        "expired": signer.sign({**claims, "exp": now - 120}),
        "no exp": signer.sign({k: v for k, v in claims.items() if k != "exp"}),
        "nbf too old": signer.sign({**claims, "nbf": now - 3700}),
        "nbf in the future": signer.sign({**claims, "nbf": now + 600}),
        "aud another server": signer.sign({**claims, "aud": "https://other.example.test"}),
        "no aud": signer.sign({k: v for k, v in claims.items() if k != "aud"}),
        "iss another client": signer.sign({**claims, "iss": other_id}),
        "client_id another client": signer.sign({**claims, "client_id": other_id}),
        "typ of another JWT": signer.sign(claims, typ="at+jwt"),
        "crit": signer.sign(claims, headers={"crit": ["exp"], "exp": 1}),
        "request inside": signer.sign({**claims, "request": "a.b.c"}),
        "request_uri inside": signer.sign({**claims, "request_uri": "https://rp.example.test/r"}),
        "exp Infinity": signer.sign_bytes(json.dumps({**claims, "exp": float("inf")}).encode()),
        "a boolean parameter": signer.sign({**claims, "max_age": True}),
        "a parameter named in non-ASCII, of the wrong type": signer.sign({**claims, 'é"\\§': None}),
        "not a JWT": "a.b.c",
        "too long": "x" * 20000,
        "encrypted garbage": "eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0.AAAA.AAAA.AAAA.AAAA",
        "header not JSON": _b64(b"\xff\xfe") + "." + body + "." + signature,
        "huge header": _b64(json.dumps({"alg": "ES256", "x": "y" * 3000}).encode()) + "." + body + "." + signature,
        "header nested too deeply": _b64(("[" * 2000 + "]" * 2000).encode()) + "." + body + "." + signature,
        "payload nested too deeply": signer.sign_bytes(("[" * 2000 + "]" * 2000).encode()),
        "payload not an object": signer.sign_bytes(b"[1, 2]"),
    }


FORGERIES = [
    "wrong key", "another client's key", "another client's object", "alg confusion (HS256 with the public key)",
    "alg none", "alg not allowed (ES512)", "key of another type", "tampered payload", "expired", "no exp",
    "nbf too old", "nbf in the future", "aud another server", "no aud", "iss another client",
    "client_id another client", "typ of another JWT", "crit", "request inside", "request_uri inside",
    "exp Infinity", "a boolean parameter", "a parameter named in non-ASCII, of the wrong type", "not a JWT", "too long",
    "encrypted garbage", "header not JSON", "huge header", "header nested too deeply", "payload nested too deeply",
    "payload not an object",
]


@pytest.fixture
def forged(rp: tuple[Provider, str, Signer]) -> tuple[Provider, str, dict[str, str]]:
    op, client_id, signer = rp
    other_signer = Signer("ES256")
    other_id = registered(op, other_signer)
    return op, client_id, _forgeries(op, client_id, signer, (other_id, other_signer))


def test_every_forgery_is_listed(forged: tuple[Provider, str, dict[str, str]]) -> None:
    assert sorted(forged[2]) == sorted(FORGERIES)


@pytest.mark.parametrize("case", FORGERIES)
def test_forged_request_objects_are_refused_on_the_error_page(forged: tuple[Provider, str, dict[str, str]],
                                                              case: str) -> None:
    """RFC 9101 §6.3: invalid_request_object, never a redirect (its redirect URI is not trusted), never a 500."""
    op, client_id, objects = forged
    before = op.count("Interaction")
    response = op.get("/authorize", query_string={"client_id": client_id, "request": objects[case],
                                                  "redirect_uri": REDIRECT_URI, "response_type": "code"})
    assert refused_page(response), (case, response.status_code, response.text[:300])
    assert op.count("Interaction") == before


def test_forged_request_objects_are_refused_at_par(forged: tuple[Provider, str, dict[str, str]]) -> None:
    """RFC 9126 §2.3 with RFC 9101 §6.3: a JSON invalid_request_object, and nothing stored."""
    op, client_id, objects = forged
    for case in FORGERIES:
        response = op.post("/par", data={"client_id": client_id, "request": objects[case]})
        # A parameter too long for any form body is refused before it is read, as at the token endpoint.
        expected = "invalid_request" if case == "too long" else "invalid_request_object"
        assert (response.status_code, response.json["error"]) == (400, expected), (case, response.json)
    assert op.count("PushedAuthorizationRequest") == 0


def test_an_unknown_client_or_no_client_id_beside_the_object_is_the_error_page(rp: tuple[Provider, str, Signer]) -> None:
    op, client_id, signer = rp
    claims, _ = request_claims(op, client_id)
    token = signer.sign(claims)
    assert "invalid_client" in op.get("/authorize", query_string={"client_id": "nobody", "request": token}).text
    missing = op.get("/authorize", query_string={"request": token})
    assert missing.status_code == 400 and "Location" not in missing.headers
    both = op.get("/authorize", query_string={"client_id": client_id, "request": token, "request_uri": "urn:x"})
    assert both.status_code == 400 and "Location" not in both.headers


@pytest.mark.both_databases
def test_a_request_object_pushed_to_par_is_stored_as_its_parameters(op: Provider) -> None:
    """RFC 9126 §3: the pushed object's parameters (not the form's) are what the request_uri stands for."""
    op.add_user()
    signer = Signer("PS256")
    client_id, secret = op.add_client(jwks={"keys": [signer.jwk()]}, audiences=["https://api.example.test"])
    claims, verifier = request_claims(op, client_id, resource="https://api.example.test")
    pushed = op.post("/par", auth=(client_id, secret), data={"request": signer.sign(claims), "state": "form-state",
                                                             "scope": "openid profile"})
    assert pushed.status_code == 201, pushed.json
    response = op.authorize({"client_id": client_id, "request_uri": pushed.json["request_uri"]})
    assert response.status_code == 302, response.text[:300]
    query = query_of(response.headers["Location"])
    assert query["state"] == ["object-state"]
    token = op.post("/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier})
    assert token.status_code == 200 and token.json["scope"].split() == ["openid", "email"]
    assert jwt_parts(token.json["access_token"])[1]["aud"] == "https://api.example.test"


def test_unsigned_objects_only_from_clients_registered_for_them(op: Provider) -> None:
    """OIDC Registration §2: request_object_signing_alg none; its objects are held to the same claims."""
    op.add_user()
    signer = Signer("ES256")
    client_id = registered(op, signer, request_object_signing_alg="none")
    claims, _ = request_claims(op, client_id)
    assert op.authorize({"client_id": client_id, "request": unsigned(claims)}).status_code == 302
    # The registered alg is the only one: a signed object of this client is refused.
    assert refused_page(op.get("/authorize", query_string={"client_id": client_id, "request": signer.sign(claims)}))
    assert refused_page(op.get("/authorize", query_string={
        "client_id": client_id, "request": unsigned({**claims, "exp": op.clock.now() - 100})}))
    assert refused_page(op.get("/authorize", query_string={"client_id": client_id,
                                                          "request": unsigned(claims) + "c2ln"}))


def test_the_registered_alg_is_the_only_one_accepted(op: Provider) -> None:
    es256, ps256 = Signer("ES256"), Signer("PS256")
    client_id = registered(op, es256, ps256, request_object_signing_alg="PS256")
    claims, _ = request_claims(op, client_id)
    op.add_user()
    assert refused_page(op.get("/authorize", query_string={"client_id": client_id, "request": es256.sign(claims)}))
    assert op.authorize({"client_id": client_id, "request": ps256.sign(claims)}).status_code == 302


def test_registration_of_request_object_metadata(op: Provider) -> None:
    from oidc.accounts.clients import ClientError

    with pytest.raises(ClientError, match="request_object_signing_alg"):
        op.add_client(request_object_signing_alg="HS256")
    with pytest.raises(ClientError, match="none"):
        op.add_client(request_object_signing_alg="none", require_signed_request_object=True)
    with pytest.raises(ClientError, match="jwks"):
        op.add_client(request_object_signing_alg="ES256")
    with pytest.raises(ClientError, match="jwks"):
        op.add_client(require_signed_request_object=True)


@pytest.mark.parametrize("setting", ["client", "provider"])
def test_require_signed_request_object(make_app: Any, base_env: dict[str, str], provisioned_database_url: str,
                                       setting: str) -> None:
    """RFC 9101 §10.5: a plain request (or an unsigned object) is refused at /authorize and /par."""
    env = {**base_env, "DATABASE_URL": provisioned_database_url}
    if setting == "provider":
        env["REQUIRE_SIGNED_REQUEST_OBJECT"] = "true"
    op = Provider(make_app(env))
    op.add_user()
    signer = Signer("ES256")
    client_id, secret = op.add_client(jwks={"keys": [signer.jwk()]},
                                      require_signed_request_object=setting == "client")
    claims, _ = request_claims(op, client_id)
    plain = {key: value for key, value in claims.items() if key not in ("iss", "aud", "exp", "nbf", "iat", "jti")}
    refused = op.get("/authorize", query_string=plain)
    assert refused.status_code == 400 and "Location" not in refused.headers and "signed request objects" in refused.text
    pushed_plain = op.post("/par", auth=(client_id, secret), data=plain)
    assert (pushed_plain.status_code, pushed_plain.json["error"]) == (400, "invalid_request")
    assert op.authorize({"client_id": client_id, "request": signer.sign(claims)}).status_code == 302
    pushed = op.post("/par", auth=(client_id, secret), data={"request": signer.sign(claims)})
    assert pushed.status_code == 201, pushed.json
    assert op.authorize({"client_id": client_id, "request_uri": pushed.json["request_uri"]}).status_code == 302
    discovery = op.get("/.well-known/openid-configuration").json
    assert discovery["require_signed_request_object"] is (setting == "provider")
    assert ("none" in discovery["request_object_signing_alg_values_supported"]) is (setting == "client")


def test_discovery_advertises_request_objects_by_value_only(op: Provider) -> None:
    discovery = op.get("/.well-known/openid-configuration").json
    assert discovery["request_parameter_supported"] is True
    assert discovery["request_uri_parameter_supported"] is False
    assert discovery["request_object_signing_alg_values_supported"] == ["PS256", "ES256", "EdDSA", "Ed25519", "RS256",
                                                                        "none"]
    assert discovery["require_signed_request_object"] is False


def test_a_remote_request_uri_is_never_fetched(rp: tuple[Provider, str, Signer]) -> None:
    op, client_id, _ = rp
    response = op.get("/authorize", query_string={"client_id": client_id,
                                                  "request_uri": "https://rp.example.test/request.jwt"})
    assert response.status_code == 400 and "invalid_request_uri" in response.text


# -- the FAPI 2.0 profile ---------------------------------------------------------------------------


class FapiObjects(test_fapi2.FapiClient):
    """A FAPI 2.0 client (private_key_jwt, DPoP) whose requests are pushed as request objects."""

    def __init__(self, op: Provider, alg: str = "ES256") -> None:  # the parent's, with two keys registered
        self.op = op
        self.key = ECKey.generate_key("P-256", parameters={"kid": "rp"})
        self.dpop_key = new_key()
        self.signer = Signer(alg)
        # One JWK Set: the client's assertion key and its request object key.
        self.client_id, _ = op.add_client(auth_method="private_key_jwt", redirect_uris=[REDIRECT_URI],
                                          jwks={"keys": [self.key.as_dict(private=False), self.signer.jwk()]})

    def push_object(self, **claims: Any) -> Any:
        params = self.params()
        now = self.op.clock.now()
        body = {"iss": self.client_id, "aud": ISSUER, "nbf": now, "exp": now + 300, **params, **claims}
        body = {key: value for key, value in body.items() if value is not None}
        return self.push({"client_id": self.client_id, "request": self.signer.sign(body)})


def test_fapi2_a_request_object_pushed_with_dpop_and_private_key_jwt(make_app: Any, base_env: dict[str, str]) -> None:
    op = Provider(make_app({**base_env, **test_fapi2.FAPI_ENV}))
    op.add_user()
    client = FapiObjects(op, "PS256")
    pushed = client.push_object()
    assert pushed.status_code == 201, pushed.json
    response = op.authorize({"client_id": client.client_id, "request_uri": pushed.json["request_uri"]})
    assert response.status_code == 302, response.text[:300]
    token = client.redeem(query_of(response.headers["Location"])["code"][0])
    assert token.status_code == 200 and token.json["token_type"] == "DPoP", token.json
    # The profile's rules on request objects.
    now = op.clock.now()
    for claims in ({"nbf": None}, {"nbf": now, "exp": now + 3601}, {"nbf": now - 3700}):
        refused = client.push_object(**claims)
        assert (refused.status_code, refused.json["error"]) == (400, "invalid_request_object"), claims
    discovery = op.get("/.well-known/openid-configuration").json
    assert discovery["request_object_signing_alg_values_supported"] == ["PS256", "ES256", "EdDSA", "Ed25519"]


def test_fapi2_message_signing_requires_a_typed_signed_object_at_par(make_app: Any, base_env: dict[str, str]) -> None:
    """FAPI 2.0 Message Signing §5.3.1: plain pushed parameters are refused, and so is an object without its typ."""
    op = Provider(make_app({**base_env, "SECURITY_PROFILE": "fapi2-message-signing", "ID_TOKEN_SIGNING_ALG": "PS256",
                            "ACCESS_TOKEN_SIGNING_ALG": "ES256"}))
    op.add_user()
    client = FapiObjects(op, "ES256")
    plain = client.push(client.params())
    assert (plain.status_code, plain.json["error"]) == (400, "invalid_request")
    now = op.clock.now()
    untyped = client.signer.sign({"iss": client.client_id, "aud": ISSUER, "nbf": now, "exp": now + 300,
                                  **client.params()}, typ=None)
    refused = client.push({"client_id": client.client_id, "request": untyped})
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_request_object")
    pushed = client.push_object()
    assert pushed.status_code == 201, pushed.json


def test_fapi2_refuses_rs256_request_objects(make_app: Any, base_env: dict[str, str]) -> None:
    op = Provider(make_app({**base_env, **test_fapi2.FAPI_ENV}))
    client = FapiObjects(op, "RS256")
    refused = client.push_object()
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_request_object")
    assert "PS256" in refused.json["error_description"]


# -- registration through the CLI and the admin API -------------------------------------------------------


def test_clients_cli_and_admin_api_register_request_object_metadata(op: Provider, admin_key: str, tmp_path: Any) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [Signer("ES256").jwk()]}))
    result = op.app.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "CLI RP", "--redirect-uri", REDIRECT_URI, "--jwks-file", str(jwks),
        "--require-signed-request-object", "--request-object-signing-alg", "ES256", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["require_signed_request_object"] is True and created["request_object_signing_alg"] == "ES256"
    auth = {"Authorization": f"Bearer {admin_key}"}
    response = op.post("/admin/clients", headers=auth, json={
        "name": "API RP", "redirect_uris": [REDIRECT_URI], "jwks": {"keys": [Signer("EdDSA").jwk()]},
        "require_signed_request_object": True, "request_object_signing_alg": "EdDSA"})
    assert response.status_code == 201, response.json
    assert response.json["require_signed_request_object"] is True
    refused = op.post("/admin/clients", headers=auth, json={"name": "API RP", "redirect_uris": [REDIRECT_URI],
                                                            "request_object_signing_alg": "HS256"})
    assert refused.status_code == 400
    schema = op.get("/admin/openapi.json").json["components"]["schemas"]["ClientRegistration"]["properties"]
    assert schema["request_object_signing_alg"]["enum"] == ["PS256", "ES256", "EdDSA", "Ed25519", "RS256", "none"]
    assert schema["require_signed_request_object"]["type"] == "boolean"


def test_clock_skew_is_the_client_assertion_leeway(rp: tuple[Provider, str, Signer]) -> None:
    """Times are the provider's clock, with CLIENT_ASSERTION_LEEWAY of skew: an object made a few seconds
    ahead of it (a client's clock) is accepted, one made ten minutes ahead is not."""
    op, client_id, signer = rp
    claims, _ = request_claims(op, client_id, nbf=op.clock.now() + 30)
    assert op.authorize({"client_id": client_id, "request": signer.sign(claims)}).status_code == 302
    claims, _ = request_claims(op, client_id, exp=op.clock.now() + 300.5)  # a NumericDate may have a fraction
    assert op.authorize({"client_id": client_id, "request": signer.sign(claims)}).status_code == 302
    claims, _ = request_claims(op, client_id, iat=op.clock.now() + 600)
    assert refused_page(op.get("/authorize", query_string={"client_id": client_id, "request": signer.sign(claims)}))


def test_dpop_at_par_binds_the_code_of_a_pushed_object(make_app: Any, base_env: dict[str, str]) -> None:
    """RFC 9449 §10.1: the proof sent to /par binds the code, whatever the object says."""
    op = Provider(make_app(base_env))
    op.add_user()
    signer = Signer("ES256")
    client_id, secret = op.add_client(jwks={"keys": [signer.jwk()]})
    claims, verifier = request_claims(op, client_id)
    key = new_key()
    headers = {"DPoP": proof(key, htu=ISSUER + "/par", iat=op.clock.now())}
    pushed = op.post("/par", auth=(client_id, secret), data={"request": signer.sign(claims)}, headers=headers)
    assert pushed.status_code == 201, pushed.json
    response = op.authorize({"client_id": client_id, "request_uri": pushed.json["request_uri"]})
    code = query_of(response.headers["Location"])["code"][0]
    without = op.post("/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert without.status_code == 400, without.json


# -- what the profiles and the key service add ---------------------------------------------------------


def test_a_profile_that_requires_the_typ_refuses_objects_without_it(rp: tuple[Provider, str, Signer],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9101 §10.8 (FAPI 2.0 Message Signing §5.3.1): the hook a profile answers True to."""
    from oidc.oauth2 import security_profile

    op, client_id, signer = rp
    claims, _ = request_claims(op, client_id)
    monkeypatch.setattr(security_profile, "requires_request_object_typ", lambda client: True)
    for typ in (None, "JWT"):
        assert refused_page(op.get("/authorize", query_string={"client_id": client_id,
                                                              "request": signer.sign(claims, typ=typ)}))
    assert op.authorize({"client_id": client_id, "request": signer.sign(claims)}).status_code == 302


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "ECDH-ES"])
@pytest.mark.parametrize("backend", ["software", pytest.param("softhsm", marks=pytest.mark.hsm)])
def test_a_signed_object_encrypted_to_the_providers_key_is_decrypted_and_verified(
        make_app: Any, base_env: dict[str, str], request: pytest.FixtureRequest, backend: str, alg: str) -> None:
    """RFC 9101 §6.1: signed (PyJWT), then encrypted (jwcrypto) to the provider's published ``use: enc`` key
    (``REQUEST_OBJECT_ENCRYPTION_ALG``), decrypted by the key service, on the token where the set is."""
    from jwcrypto import jwe, jwk

    env = request.getfixturevalue("hsm_env") if backend == "softhsm" else base_env
    op = Provider(make_app({**env, "REQUEST_OBJECT_ENCRYPTION_ALG": alg}))
    op.add_user()
    signer = Signer("ES256")
    client_id = registered(op, signer)
    # A token whose OAEP does SHA-1 only (SoftHSM2) publishes its RSA key for RSA-OAEP instead.
    accepted = ("RSA-OAEP-256", "RSA-OAEP") if alg == "RSA-OAEP-256" else (alg,)
    encryption_keys = [key for key in op.jwks()["keys"] if key.get("use") == "enc" and key.get("alg") in accepted]
    assert encryption_keys, op.jwks()
    claims, verifier = request_claims(op, client_id)
    public = encryption_keys[0]
    token = jwe.JWE(signer.sign(claims).encode(), protected={"alg": public["alg"], "enc": "A256GCM", "cty": "JWT",
                                                             "kid": public["kid"]})  # jwcrypto: epk for ECDH-ES
    token.add_recipient(jwk.JWK(**public))
    response = op.authorize({"client_id": client_id, "request": token.serialize(compact=True)})
    assert response.status_code == 302, response.text[:300]
    query = query_of(response.headers["Location"])
    assert query["state"] == ["object-state"]
    token_response = op.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                             "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
                                             "client_id": client_id})
    assert token_response.status_code == 200


# -- over HTTP ---------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_under_gunicorn_signed_objects_at_authorize_and_at_par_end_in_tokens(make_app: Any, base_env: dict[str, str],
                                                                             tmp_path: Any) -> None:
    """The provider under gunicorn, a PS256 object of some 6000 characters in a GET URL (longer than
    gunicorn's default request line), and one pushed to /par; ``requests`` plays the browser."""
    import time
    from urllib.parse import urlencode

    import requests
    from test_oidc_interop import RP_CALLBACK, _browse_to_callback

    from oidc_fixtures import serve_with_gunicorn

    signer = Signer("PS256")
    with serve_with_gunicorn(make_app, base_env, tmp_path, redirect_uris=[RP_CALLBACK],
                             jwks={"keys": [signer.jwk()]}) as served:
        issuer, client_id, secret = served["issuer"], served["client_id"], served["client_secret"]
        for route in ("authorize", "par"):
            verifier, challenge = pkce_pair()
            now = int(time.time())
            claims = {"iss": client_id, "aud": issuer, "exp": now + 300, "nbf": now, "client_id": client_id,
                      "response_type": "code", "redirect_uri": RP_CALLBACK, "scope": "openid", "state": route,
                      "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256",
                      "x_padding": "p" * 3500}
            token = signer.sign(claims)
            if route == "authorize":
                assert len(token) > 4094
                query = {"client_id": client_id, "request": token}
            else:
                pushed = requests.post(issuer + "/par", data={"request": token}, auth=(client_id, secret), timeout=10)
                assert pushed.status_code == 201, pushed.text
                query = {"client_id": client_id, "request_uri": pushed.json()["request_uri"]}
            callback = _browse_to_callback(requests.Session(), f"{issuer}/authorize?{urlencode(query)}")
            parameters = query_of(callback)
            assert parameters["state"] == [route] and parameters["iss"] == [issuer]
            tokens = requests.post(issuer + "/token", auth=(client_id, secret), timeout=10, data={
                "grant_type": "authorization_code", "code": parameters["code"][0], "redirect_uri": RP_CALLBACK,
                "code_verifier": verifier})
            assert tokens.status_code == 200, tokens.text
            assert jwt_parts(tokens.json()["id_token"])[1]["nonce"] == "n"


# -- keys by reference, and metadata registered by the client ------------------------------------------


@pytest.fixture
def key_server(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An https server on loopback serving the client's JWK Set (tests/test_registration.py's)."""
    from test_registration import _KeyServer

    server = _KeyServer(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(server.certificate.cert))
    try:
        yield server
    finally:
        server.close()


def test_a_request_object_verifies_with_the_keys_at_the_clients_jwks_uri(
        key_server: Any, make_app: Any, provisioned_database_url: str, system_secret: str, admin_key: str) -> None:
    """The client's keys by reference (RFC 7591 §2), fetched once and cached, as for private_key_jwt."""
    from conftest import software_env

    op = Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                            "DEVELOPMENT_MODE": "true", "REGISTRATION_OPEN": "true"}))
    op.add_user()
    signer = Signer("ES256")
    key_server.document = {"keys": [signer.jwk()]}
    made = op.post("/register", json={"client_name": "By reference", "redirect_uris": [REDIRECT_URI],
                                      "token_endpoint_auth_method": "none", "jwks_uri": key_server.url,
                                      "require_signed_request_object": True, "request_object_signing_alg": "ES256"})
    assert made.status_code == 201, made.json
    assert made.json["require_signed_request_object"] is True and made.json["request_object_signing_alg"] == "ES256"
    client_id = made.json["client_id"]
    for _ in range(2):
        claims, _ = request_claims(op, client_id)
        assert op.authorize({"client_id": client_id, "request": signer.sign(claims)}).status_code == 302
    assert key_server.fetches == 1
    assert refused_page(op.get("/authorize", query_string={"client_id": client_id,
                                                          "request": Signer("ES256", kid=signer.kid).sign(claims)}))
    refused = op.post("/register", json={"client_name": "Unsigned", "redirect_uris": [REDIRECT_URI],
                                         "token_endpoint_auth_method": "none", "request_object_signing_alg": "none",
                                         "require_signed_request_object": True})
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_client_metadata")


def _encrypted(op: Provider, inner: bytes, *, alg: str | None = None) -> str:
    """``inner`` encrypted by jwcrypto to the provider's published request object key (A256GCM)."""
    from jwcrypto import jwe, jwk

    public = next(key for key in op.jwks()["keys"] if key.get("use") == "enc")
    token = jwe.JWE(inner, protected={"alg": alg or public["alg"], "enc": "A256GCM", "kid": public["kid"]})
    token.add_recipient(jwk.JWK(**public))
    return str(token.serialize(compact=True))


def test_encrypted_objects_that_are_not_signed_ones_inside_or_do_not_decrypt_are_refused(
        make_app: Any, base_env: dict[str, str]) -> None:
    """RFC 9101 §6.1 (nested: signed, then encrypted) and §6.3: each an invalid_request_object page."""
    op = Provider(make_app({**base_env, "REQUEST_OBJECT_ENCRYPTION_ALG": "RSA-OAEP-256"}))
    op.add_user()
    signer = Signer("ES256")
    client_id = registered(op, signer)
    claims, _ = request_claims(op, client_id)
    good = _encrypted(op, signer.sign(claims).encode())
    head, key, iv, ciphertext, tag = good.split(".")
    flipped = ciphertext[:-2] + ("A" if ciphertext[-2] != "A" else "B") + ciphertext[-1]
    cases = {
        "claims in the clear inside": _encrypted(op, json.dumps(claims).encode()),
        "an unsigned object inside": _encrypted(op, unsigned(claims).encode()),
        "an object signed by another key inside": _encrypted(op, Signer("ES256", kid=signer.kid).sign(claims).encode()),
        "a ciphertext altered": ".".join([head, key, iv, flipped, tag]),
        "another key's kid": ".".join([_b64(json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM",
                                                        "kid": "nobody"}).encode()), key, iv, ciphertext, tag]),
    }
    for case, token in cases.items():
        assert refused_page(op.get("/authorize", query_string={"client_id": client_id, "request": token})), case
    assert op.authorize({"client_id": client_id, "request": good}).status_code == 302


def test_an_encrypted_object_from_a_client_without_keys_is_refused_before_it_is_decrypted(
        make_app: Any, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its inner object could never verify (RFC 9101 §6.1): no private-key operation is spent on it."""
    from keys.service import KeyService

    op = Provider(make_app({**base_env, "REQUEST_OBJECT_ENCRYPTION_ALG": "RSA-OAEP-256"}))
    op.add_user()
    keyless, _ = op.add_client(auth_method="none")
    signer = Signer("ES256")
    claims, _ = request_claims(op, keyless)
    token = _encrypted(op, signer.sign(claims).encode())
    decryptions: list[str] = []
    original = KeyService.decrypt

    def counted(self: KeyService, key_set: str, token: str) -> bytes:
        decryptions.append(key_set)
        return original(self, key_set, token)

    monkeypatch.setattr(KeyService, "decrypt", counted)
    response = op.get("/authorize", query_string={"client_id": keyless, "request": token})
    assert refused_page(response) and "registered no keys" in response.text
    assert decryptions == []
    with_keys = registered(op, signer)
    claims, _ = request_claims(op, with_keys)
    assert op.authorize({"client_id": with_keys, "request": _encrypted(op, signer.sign(claims).encode())}).status_code == 302
    assert decryptions == ["openid.request-object"]


@pytest.mark.e2e
def test_an_hsm_outage_while_decrypting_a_request_object_is_a_503_then_it_decrypts_again(
        make_app: Any, remote_hsm_env: dict[str, str], remote_token: Any) -> None:
    """The decryption key on a token behind ``p11-kit server``, the server killed and started again: /authorize
    answers 503 with Retry-After meanwhile (never a 500, never invalid_request_object), then the flow goes on."""
    import time

    op = Provider(make_app({**remote_hsm_env, "HSM_RETRY_INITIAL_SECONDS": "0.2", "HSM_RETRY_MAX_SECONDS": "1",
                            "REQUEST_OBJECT_ENCRYPTION_ALG": "RSA-OAEP-256", "HSM_ONLY_KEY_SETS": "*"}))
    op.add_user()
    signer = Signer("ES256")
    client_id = registered(op, signer, first_party=True)
    op.login()
    claims, _ = request_claims(op, client_id)
    token = _encrypted(op, signer.sign(claims).encode())
    query = {"client_id": client_id, "request": token}
    assert op.get("/authorize", query_string=query).status_code == 302
    remote_token.kill()
    response = op.get("/authorize", query_string=query)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1, response.status_code
    remote_token.start()
    deadline = time.monotonic() + 15
    while (response := op.get("/authorize", query_string=query)).status_code == 503:
        assert time.monotonic() < deadline, "decryption not back within 15 s of the token's return"
        time.sleep(0.2)
    assert response.status_code == 302 and query_of(response.headers["Location"])["state"] == ["object-state"]
