"""Malformed DPoP proofs (RFC 9449) at every endpoint that reads one: /token, /par, /userinfo, the admin API.

A proof is parsed before anyone is authenticated, so whatever its header, its
claims or the ``Authorization: DPoP`` value hold, the answer is the standard's
refusal, never a 5xx or a traceback:

* at /token and /par, 400 ``invalid_dpop_proof`` (RFC 9449 §4.3, §5);
* at /userinfo, 401 with the ``WWW-Authenticate: DPoP`` challenge and
  ``invalid_dpop_proof`` or ``invalid_token`` (RFC 9449 §7.1, RFC 6750 §3.1);
* at the admin API, its 401 ``invalid_token`` with a challenge.

The cases the review found come first, each by name; then hypothesis mutates
the proof's header, its key, its claims and the token beside it (a fixed seed
and a bounded number of examples, so a failure reproduces).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from joserfc.jwk import OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from dpop_proofs import ath, b64url, new_key, proof, public_jwk
from oidc_fixtures import ISSUER, REDIRECT_URI, pkce_pair

ENDPOINTS = ("/token", "/par", "/userinfo", "/admin/clients")

#: One key per key type, made once: RSA key generation is slow.
KEYS: dict[str, Any] = {"ES256": new_key(), "PS256": RSAKey.generate_key(2048), "EdDSA": OKPKey.generate_key("Ed25519")}


class Target:
    """The provider with what each endpoint needs for a request that only the proof can spoil."""

    def __init__(self, op: Any) -> None:
        self.op = op
        op.add_user()
        self.rp = op.add_client(redirect_uris=[REDIRECT_URI], grant_types=["authorization_code", "client_credentials"],
                                scope="openid profile admin", admin_api=True)
        self.key = KEYS["ES256"]
        now = op.clock.now()
        flow = op.code_flow(self.rp[0], scope="openid profile")
        redeemed = op.post("/token", auth=self.rp, headers={"DPoP": proof(self.key, htu=ISSUER + "/token", iat=now)},
                           data={"grant_type": "authorization_code", "code": flow["code"],
                                 "redirect_uri": REDIRECT_URI, "code_verifier": flow["verifier"]})
        admin = op.post("/token", auth=self.rp, headers={"DPoP": proof(self.key, htu=ISSUER + "/token", iat=now)},
                        data={"grant_type": "client_credentials", "scope": "admin", "resource": ISSUER + "/admin"})
        assert redeemed.status_code == 200 and admin.status_code == 200, (redeemed.json, admin.json)
        #: A DPoP-bound access token good at each resource (with a good proof).
        self.tokens = {"/userinfo": redeemed.json["access_token"], "/admin/clients": admin.json["access_token"]}

    def send(self, endpoint: str, dpop: str, access_token: str | None = None) -> Any:
        """``endpoint`` with the proof ``dpop``; at a resource, ``Authorization: DPoP <access_token>``."""
        if endpoint == "/token":
            return self.op.post(endpoint, auth=self.rp, headers={"DPoP": dpop},
                                data={"grant_type": "client_credentials"})
        if endpoint == "/par":
            return self.op.post(endpoint, auth=self.rp, headers={"DPoP": dpop},
                                data={"response_type": "code", "redirect_uri": REDIRECT_URI, "scope": "openid",
                                      "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"})
        token = self.tokens[endpoint] if access_token is None else access_token
        return self.op.get(endpoint, headers={"Authorization": "DPoP " + token, "DPoP": dpop})

    def method(self, endpoint: str) -> str:
        return "POST" if endpoint in ("/token", "/par") else "GET"


@pytest.fixture
def target(op: Any) -> Target:
    return Target(op)


def check_refusal(endpoint: str, response: Any, *, may_succeed: bool = False) -> None:
    """The RFC's refusal of a malformed proof at ``endpoint`` (or, with ``may_succeed``, its success)."""
    body = response.get_data(as_text=True)
    assert response.status_code < 500, (endpoint, response.status_code, body[:300])
    assert "Traceback" not in body
    if may_succeed and response.status_code in (200, 201):
        return
    if endpoint in ("/token", "/par"):
        assert (response.status_code, response.json["error"]) == (400, "invalid_dpop_proof"), body[:300]
        assert response.headers["Cache-Control"] == "no-store"
    elif endpoint == "/userinfo":
        assert response.status_code == 401, body[:300]
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("DPoP ") and "algs=" in challenge, challenge
        if response.json:  # RFC 6750 §3.1: no error code when no token was sent at all
            error = response.json["error"]
            assert error in ("invalid_dpop_proof", "invalid_token") and f'error="{error}"' in challenge
    else:
        assert (response.status_code, response.json["error"]) == (401, "invalid_token"), body[:300]
        challenge = response.headers["WWW-Authenticate"]
        # RFC 9449 §7.1: a refused DPoP credential is answered with the DPoP challenge.
        dpop_scheme = response.request.headers.get("Authorization", "")[:5].lower() == "dpop "
        assert challenge.startswith("DPoP " if dpop_scheme else "Bearer "), challenge
        assert ("algs=" in challenge) is dpop_scheme, challenge


# -- the review's cases, one by one -------------------------------------------------------------------


def _sign_text(header: str, claims: str, key: Any, alg: str = "ES256") -> str:
    """A compact JWS of any header and claims text (even what no JOSE library would write), signed by ``key``."""
    signing_input = f"{b64url(header.encode())}.{b64url(claims.encode())}"
    signature = JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def _sign(header: object, claims: object, key: Any, alg: str) -> str:
    return _sign_text(json.dumps(header), json.dumps(claims), key, alg)


def _proof_with(target: Target, endpoint: str, *, header: dict[str, Any] | None = None,
                claims: dict[str, Any] | None = None, jwk: dict[str, Any] | None = None) -> str:
    """A good proof for ``endpoint`` but for the members given (a member set to None is left out)."""
    key = target.key
    full_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": {**public_jwk(key), **(jwk or {})}, **(header or {})}
    full_claims: dict[str, Any] = {"htm": target.method(endpoint), "htu": ISSUER + endpoint,
                                   "iat": target.op.clock.now(), "jti": uuid.uuid4().hex}
    if endpoint in target.tokens:
        full_claims["ath"] = ath(target.tokens[endpoint])
    full_claims.update(claims or {})
    return _sign({k: v for k, v in full_header.items() if v is not None},
                 {k: v for k, v in full_claims.items() if v is not None}, key, "ES256")


CASES: dict[str, dict[str, Any]] = {
    "htu with an unclosed IPv6 bracket": {"claims": {"htu": "http://[::1"}},
    "htu with a port out of range": {"claims": {"htu": "https://op.example.test:99999/token"}},
    "htu not a string": {"claims": {"htu": ["https://op.example.test/token"]}},
    "EC jwk of curve P-999": {"jwk": {"crv": "P-999"}},
    "EC jwk of curve secp256k1": {"jwk": {"crv": "secp256k1"}},
    "EC jwk whose x is not base64url": {"jwk": {"x": "!!!"}},
    "EC jwk whose x is a number": {"jwk": {"x": 5}},
    "EC jwk off its curve": {"jwk": {"x": "A" * 43}},
    "EC jwk with kty OKP": {"jwk": {"kty": "OKP", "crv": "X25519"}},
    "jwk of unknown kty": {"jwk": {"kty": "oct2"}},
    "jwk not an object": {"header": {"jwk": "key"}},
    "RSA jwk under ES256": {"header": {"jwk": {"kty": "RSA", "n": "AQAB" * 100, "e": "AQAB"}}},
    "RSA jwk with a huge exponent": {"header": {"alg": "PS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "A" * 5000}}},
    "OKP jwk of curve X25519": {"header": {"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "X25519", "x": "A" * 43}}},
    "OKP jwk of curve Ed448 under EdDSA": {"header": {"alg": "EdDSA", "jwk": public_jwk(OKPKey.generate_key("Ed448"))}},
    "alg of another key type": {"header": {"alg": "EdDSA"}},
    "alg not a string": {"header": {"alg": ["ES256"]}},
    "typ not a string": {"header": {"typ": 7}},
    "crit not a list": {"header": {"crit": 5}},
    "iat a string": {"claims": {"iat": "now"}},
    "iat a float": {"claims": {"iat": 1.5}},
    "iat huge": {"claims": {"iat": 10 ** 400}},
    "jti a number": {"claims": {"jti": 7}},
    "htm a list": {"claims": {"htm": ["GET", "POST"]}},
    "ath a number": {"claims": {"ath": 1}},  # (read at a resource only: RFC 9449 §4.2)
}
RESOURCES = ("/userinfo", "/admin/clients")


@pytest.mark.parametrize(("case", "endpoint"), [(case, endpoint) for case in CASES for endpoint in ENDPOINTS
                                                if not case.startswith("ath") or endpoint in RESOURCES])
def test_a_malformed_proof_is_refused(target: Target, endpoint: str, case: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        response = target.send(endpoint, _proof_with(target, endpoint, **CASES[case]))
    check_refusal(endpoint, response)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("part", ["header", "payload"])
def test_json_nested_too_deeply_is_refused(target: Target, endpoint: str, part: str) -> None:
    """Python's json raises RecursionError (not ValueError) for arrays nested past its limit."""
    deep = "[" * 2000 + "]" * 2000  # within the proof's size limit once encoded
    header = json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(target.key)})
    claims = json.dumps({"htm": target.method(endpoint), "htu": ISSUER + endpoint, "iat": target.op.clock.now(),
                         "jti": uuid.uuid4().hex})
    dpop = _sign_text(deep, claims, target.key) if part == "header" else _sign_text(header, deep, target.key)
    check_refusal(endpoint, target.send(endpoint, dpop))


def test_a_jti_with_a_lone_surrogate_is_recorded_like_any_other(target: Target) -> None:
    """JSON can escape a lone surrogate (RFC 8259 §8.2), which UTF-8 cannot encode: such a jti is
    still recorded, so the proof is accepted once and its replay refused (RFC 9449 §11.1)."""
    dpop = _proof_with(target, "/token", claims={"jti": "\ud800" + uuid.uuid4().hex})
    assert target.send("/token", dpop).status_code == 200
    check_refusal("/token", target.send("/token", dpop))


@pytest.mark.parametrize("endpoint", RESOURCES)
@pytest.mark.parametrize("token", ["é", "a.b.é", "tok\x7fen", "tok en", "\xff" * 20])
def test_a_token_that_is_not_ascii_under_the_dpop_scheme_is_refused(target: Target, endpoint: str, token: str) -> None:
    """RFC 9449 §4.2 hashes the token's ASCII octets; RFC 6750 §2.1: a token is b64token characters."""
    dpop = _proof_with(target, endpoint, claims={"ath": "x"})
    check_refusal(endpoint, target.send(endpoint, dpop, access_token=token))


@pytest.mark.parametrize("nonce", ["é", "\ud800", 5, {}, None, "x" * 65])
def test_with_nonces_on_a_malformed_nonce_gets_use_dpop_nonce(make_app: Any, base_env: dict[str, str],
                                                             provisioned_database_url: str, nonce: Any) -> None:
    """RFC 9449 §8: a proof without the server's nonce gets ``use_dpop_nonce`` and a fresh one."""
    from oidc_fixtures import Provider

    target = Target.__new__(Target)
    target.op = Provider(make_app({**base_env, "DATABASE_URL": provisioned_database_url, "DPOP_NONCE": "true"}))
    target.rp = target.op.add_client(grant_types=["client_credentials"])
    target.key, target.tokens = KEYS["ES256"], {}
    response = target.send("/token", _proof_with(target, "/token", claims={"nonce": nonce}))
    assert (response.status_code, response.json["error"]) == (400, "use_dpop_nonce"), response.json
    assert response.headers["DPoP-Nonce"]


def test_the_good_proofs_of_the_fixture_are_accepted(target: Target) -> None:
    """The fuzzing below starts from these: unchanged, they succeed (so a refusal is the mutation's)."""
    for endpoint in ENDPOINTS:
        response = target.send(endpoint, _proof_with(target, endpoint))
        assert response.status_code in (200, 201), (endpoint, response.get_data(as_text=True)[:300])


# -- fuzzing ------------------------------------------------------------------------------------------

ODD = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1.5, 10 ** 30, 10 ** 400, -(10 ** 400), float("inf"), "", "é",
                     "\x00", "\ud800", "x" * 5000, [], {}, ["a"], {"a": 1}, "P-999", "!!!", "http://[::1",
                     "http://[::1]:99999/token", "https://op.example.test:x/token", "//", "RSA", "EC", "OKP",
                     "oct", "none", "HS256", "ES256K", "Ed448", "X25519", "secp256k1", "P-384", "AQAB", "A" * 43]),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
)
HEADER_MEMBERS = st.sampled_from(["typ", "alg", "jwk", "kid", "crit", "b64", "x5c", "jku"])
JWK_MEMBERS = st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d", "k", "use", "key_ops", "alg", "kid", "ext"])
CLAIMS = st.sampled_from(["htm", "htu", "iat", "jti", "ath", "nonce", "exp", "nbf"])
ALGS = st.sampled_from([*KEYS, "ES384", "ES512", "RS256", "PS384", "Ed25519", "Ed448", "ES256K", "HS256", "none"])
LATIN1 = st.characters(max_codepoint=255, exclude_characters="\r\n")
#: Values of ``Authorization: DPoP <value>`` (latin-1: what an HTTP header can carry).
TOKEN_VALUES = st.one_of(st.text(LATIN1, min_size=1, max_size=60), st.sampled_from(["é", "a.b.c", "e30.e30.", "x" * 9000]))
#: What one example spoils: the proof's key, its header, its claims, the token beside it, the JSON
#: shape of a part, the signature, or the header field as a whole.
LAYERS = st.sampled_from(["jwk", "header", "claims", "claims", "token", "shape", "signature", "raw"])


@st.composite
def mutated_proofs(draw: st.DrawFn, target: Target, endpoint: str) -> tuple[str, str | None]:  # noqa: C901 - one branch per layer
    """A proof for ``endpoint`` with one layer of it spoilt, signed by a real key, and the access
    token to send beside it (None: the good one)."""
    layer = draw(LAYERS)
    signing_alg = draw(st.sampled_from(list(KEYS)))
    key = KEYS[signing_alg]
    access_token = draw(TOKEN_VALUES) if layer == "token" and endpoint in target.tokens else None
    header: Any = {"typ": "dpop+jwt", "alg": signing_alg, "jwk": public_jwk(key)}
    token = target.tokens.get(endpoint, "") if access_token is None else access_token
    claims: Any = {"htm": target.method(endpoint), "htu": ISSUER + endpoint, "iat": target.op.clock.now(),
                   "jti": uuid.uuid4().hex, "ath": ath(token) if token.isascii() else "x"}
    if layer == "jwk":
        for name in draw(st.sets(JWK_MEMBERS, min_size=1, max_size=3)):
            header["jwk"][name] = draw(ODD)
        for name in draw(st.sets(st.sampled_from(["x", "y", "n", "e", "crv"]), max_size=1)):
            header["jwk"].pop(name, None)
    elif layer == "header":
        for name in draw(st.sets(HEADER_MEMBERS, min_size=1, max_size=2)):
            header[name] = draw(ALGS) if name == "alg" and draw(st.booleans()) else draw(ODD)
    elif layer == "claims":
        for name in draw(st.sets(CLAIMS, min_size=1, max_size=3)):
            claims[name] = draw(ODD)
    elif layer == "shape":
        if draw(st.booleans()):
            header = draw(ODD)
        else:
            claims = draw(ODD)
    signed = _sign(header, claims, key, signing_alg)
    if layer == "signature":
        signed = signed.rpartition(".")[0] + "." + draw(st.sampled_from(["", "!!!", b64url(b"x" * 64), "A" * 9000]))
    elif layer == "raw":
        at = draw(st.integers(0, len(signed)))
        inserted = draw(st.text(LATIN1, min_size=1, max_size=5))
        signed = draw(st.sampled_from([signed[:at] + inserted + signed[at:], inserted, signed + "." + signed]))
    return signed, access_token


@seed(94490701)
@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_proofs_get_the_standard_refusal(target: Target, caplog: Any, data: Any) -> None:
    """RFC 9449 §4.3 and §7.1: any proof (and any token beside it) gets the refusal its endpoint names,
    never a 5xx, a traceback or an ERROR record."""
    endpoint = data.draw(st.sampled_from(ENDPOINTS))
    dpop, access_token = data.draw(mutated_proofs(target, endpoint))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = target.send(endpoint, dpop, access_token=access_token)
    event(f"{endpoint} {response.status_code} {(response.json or {}).get('error_description', '')}"[:90])
    check_refusal(endpoint, response, may_succeed=True)
    assert not [record.getMessage() for record in caplog.records
                if record.levelno >= logging.ERROR or record.exc_info]


def test_an_rsa_proof_key_with_an_exponent_over_32_bits_is_refused_before_any_arithmetic() -> None:
    """A huge public exponent makes each verification of an unauthenticated proof cost milliseconds."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from oidc.hashing import b64url
    from oidc.oauth2.dpop import InvalidDPoPProof, _public_key

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    n = b64url(numbers.n.to_bytes(256, "big"))
    assert _public_key({"kty": "RSA", "n": n, "e": "AQAB"}, "PS256") is not None
    for exponent in (2**32 + 15, 2**3071 + 1):
        e = b64url(exponent.to_bytes((exponent.bit_length() + 7) // 8, "big"))
        with pytest.raises(InvalidDPoPProof, match="exponent larger than 32 bits"):
            _public_key({"kty": "RSA", "n": n, "e": e}, "PS256")
