"""A property-based sweep of malformed requests against every endpoint of the discovery document.

Hypothesis draws requests from a small grammar of bad input: oversized values,
NUL and other control characters, invalid UTF-8 and broken percent-encoding,
repeated parameters, parameters both in the URL and the body, wrong content
types and methods, malformed HTTP Basic credentials and malformed JOSE
headers in bearer tokens, hints and client assertions.  For each one:

* no 5xx, and no traceback in the body or the log (no ERROR record at all);
* an error the endpoint's RFC names, with the status it names (RFC 6749 §5.2
  at the token endpoint, RFC 7662 §2.3 / RFC 7009 §2.2.1 for introspection and
  revocation, RFC 6750 §3.1 at userinfo, RFC 6749 §4.1.2.1 at the
  authorization endpoint: the error page until the redirect URI is trusted);
* nothing written to the database.

The number of examples is bounded (the sweep is part of the suite, on both
databases) and the database is derandomised so a failure reproduces.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_fixtures import ISSUER, REDIRECT_URI

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

TOKEN_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                "unsupported_grant_type", "invalid_scope", "invalid_target", "unsupported_token_type",
                # RFC 9449 §7.1 (a malformed DPoP header); RFC 9126 §2.3 (the authorization request's errors)
                "invalid_dpop_proof", "use_dpop_nonce", "unsupported_response_type",
                # RFC 9101 §6.3 (a request object pushed to /par)
                "invalid_request_object"}
TABLES = ("users", "clients", "authorization_codes", "refresh_tokens", "access_tokens", "consents",
          "login_sessions", "client_assertions", "signing_keys", "hashing_keys", "pushed_authorization_requests",
          "dpop_proofs", "interactions", "initial_access_tokens",
          "device_authorizations")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws(header: object, payload: object = None) -> str:
    payload = {"iss": ISSUER, "sub": "x", "exp": 4102444800} if payload is None else payload
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}.{_b64(b'sig')}"


MALFORMED_JOSE = [
    _jws({"alg": "ES256", "kid": "k", "crit": 5}), _jws({"alg": 5, "kid": "k"}), _jws({"alg": "none"}),
    _jws({"alg": "ES256", "kid": ["k"]}), _jws({"alg": "HS256", "kid": "k", "typ": 7}), _jws([1, 2]),
    _jws({"alg": "ES256", "kid": "k"}, [1]), _jws({"alg": "ES256", "kid": "k"}, "x"),
    "e30.e30.", "..", "a.b.c", "!!!.@@@.###", _b64(b"\xff\xfe") + ".e30.e30", "x" * 20000,
]
#: response_mode values, JARM's (JARM §2.3) among them, and near misses of them.
RESPONSE_MODE_VALUES = ["jwt", "query.jwt", "fragment.jwt", "form_post.jwt", "JWT", "query.jwt.jwt", "fragment",
                        ".jwt", "jwt.", "form_post.jwt\x00", "query,jwt", "form_post .jwt"]
#: Accept headers, RFC 9701's media type among them (at /introspect it asks for a JWT answer).
ACCEPT = st.sampled_from([None, "application/token-introspection+jwt", "application/jwt", "*/*;q=x",
                          "application/token-introspection+jwt;q=abc", "application/token-introspection+jwt;q=0",
                          "application/json;q=0, application/token-introspection+jwt", "x" * 5000, ",,,;;;",
                          "text/html", "application/token-introspection+jwt\x7f", "é/é"])
BAD_VALUES = st.one_of(
    st.sampled_from(["", "\x00", "a\x00b", "x" * 5000, "x" * 70_000, "é", "\ufffd", '"\\', "%", "%zz",
                     "%ff%fe", "%00", "\r\n", "openid\x00", REDIRECT_URI + "\x00", "²", "-1", "99999999999",
                     *MALFORMED_JOSE, *RESPONSE_MODE_VALUES]),
    st.text(max_size=40),
)
NAMES = st.sampled_from(["grant_type", "client_id", "client_secret", "code", "redirect_uri", "scope", "state",
                         "response_type", "response_mode", "refresh_token", "token", "token_type_hint",
                         "code_verifier", "code_challenge", "code_challenge_method", "nonce", "prompt", "max_age",
                         "id_token_hint", "post_logout_redirect_uri", "client_assertion",
                         "client_assertion_type", "resource", "request", "request_uri", "access_token",
                         "login_hint", "device_code", "user_code", "x\x00", "é"])
BASIC = st.sampled_from([
    None, "Basic", "Basic ", "Basic !!!", "Basic\t" + base64.b64encode(b"\xff:\xfe").decode() + " x",
    "Basic " + base64.b64encode(b"nocolon").decode(), "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
    "Basic " + base64.b64encode(b"a\x00:b").decode(), "Bearer", "Bearer ", "bearer a.b.c",
    *("Bearer " + token for token in MALFORMED_JOSE[:8]), "Digest x", "x" * 9000,
])
CONTENT_TYPES = st.sampled_from([None, "application/x-www-form-urlencoded", "application/json", "text/plain",
                                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded; charset=latin1"])
METHODS = st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH"])


@st.composite
def requests(draw: st.DrawFn) -> dict:
    pairs = draw(st.lists(st.tuples(NAMES, BAD_VALUES), max_size=5))
    if draw(st.booleans()) and pairs:
        pairs.append(pairs[0])  # a repeated parameter
    raw_query = draw(st.sampled_from(["", "%", "%zz=1", "%ff=%fe", "a=%00", "scope=openid", "grant_type=x&grant_type=y",
                                      "client_id=%C0%AE", "&&&==", "x" * 20000]))
    return {"method": draw(METHODS), "pairs": pairs, "raw_query": raw_query,
            "in_body": draw(st.booleans()), "content_type": draw(CONTENT_TYPES),
            "authorization": draw(BASIC), "accept": draw(ACCEPT),
            "raw_body": draw(st.sampled_from([None, b"\xff\xfe\x00", b"%zz=%", b"{\"a\":", b"a=" + b"%ff" * 300,
                                              b"grant_type=\xff\xfe&scope=\xc3"]) | st.binary(max_size=40))}


def _encode(pairs: list[tuple[str, str]]) -> str:
    from urllib.parse import quote

    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)


def _row_count(op) -> int:
    from oidc.db import db

    with op.app.app_context():
        return int(db.session.execute(db.text(
            "SELECT " + " + ".join(f"(SELECT COUNT(*) FROM {table})" for table in TABLES))).scalar_one())


def _check_token_endpoint(response, endpoint: str) -> None:
    if response.status_code in (200, 201):
        assert endpoint != "/token"
        return
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"
    error = response.json["error"]
    assert error in TOKEN_ERRORS, error
    # RFC 6749 §5.2: 400, or 401 for invalid_client; 413 for a body too large to read.
    expected = {400, 401} if error == "invalid_client" else {400, 413}
    assert response.status_code in expected, (error, response.status_code)


def _check(response, endpoint: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code < 500, (endpoint, response.status_code, body[:300])
    assert "Traceback" not in body
    if response.status_code == 405:
        return
    if endpoint in ("/token", "/introspect", "/revoke", "/par", "/device_authorization"):
        _check_token_endpoint(response, endpoint)
    elif endpoint == "/userinfo":
        assert response.status_code in (400, 401, 403), response.status_code
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        if response.json:
            assert response.json["error"] in ("invalid_request", "invalid_token", "insufficient_scope")
    elif endpoint == "/authorize":
        assert response.status_code in (200, 302, 400, 413), response.status_code
        if response.status_code == 302:
            location = response.headers["Location"]
            assert location.startswith((REDIRECT_URI + "?", REDIRECT_URI + "#response=", "/login?")), location
    elif endpoint.startswith("/register"):
        _check_registration(response)
    elif endpoint == "/logout":
        assert response.status_code in (200, 303, 400, 413), response.status_code
    elif endpoint in ("/device", "/device/confirm"):
        # RFC 8628 §3.3: the user-code page answers a wrong, malformed or missing code, an expired
        # form or too many guesses with itself and a message; the confirmation, without a code entered, is the error page.
        assert response.status_code in (200, 400, 413, 429), response.status_code
        assert response.mimetype == "text/html"
    else:  # discovery and JWKS: read-only documents
        assert response.status_code in (200, 304, 400, 413), response.status_code


REGISTRATION_ERRORS = {"invalid_redirect_uri", "invalid_client_metadata", "invalid_software_statement",
                       "unapproved_software_statement"}


def _check_registration(response) -> None:
    """RFC 7591 §3.2.2 and RFC 6750 §3.1: 400 with a registration error, or 401 invalid_token (413 too large)."""
    if response.status_code in (200, 201, 204):
        return
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"
    error = response.json["error"]
    if response.status_code == 401:
        assert error == "invalid_token" and response.headers["WWW-Authenticate"].startswith("Bearer ")
    elif response.status_code == 413:
        assert error == "invalid_request"
    else:
        assert response.status_code == 400 and error in REGISTRATION_ERRORS, (response.status_code, error)


@pytest.fixture
def swept(op):
    op.add_user()
    client_id, secret = op.add_client(grant_types=["authorization_code", "refresh_token", "client_credentials",
                                                   DEVICE_GRANT])
    discovery = op.get("/.well-known/openid-configuration").json
    # With the pages no discovery names: the device's user-code form and its confirmation (RFC 8628 §3.3).
    endpoints = sorted({discovery[name][len(ISSUER):] for name in discovery
                        if name.endswith(("_endpoint", "_uri")) and isinstance(discovery[name], str)
                        and discovery[name].startswith(ISSUER)} | {"/.well-known/openid-configuration", "/device",
                                                                   "/device/confirm"})
    return op, client_id, secret, endpoints


def test_the_sweep_covers_every_endpoint_of_the_discovery_document(swept):
    _, _, _, endpoints = swept
    assert set(endpoints) == {"/authorize", "/token", "/userinfo", "/introspect", "/revoke", "/logout", "/par",
                              "/register", "/device_authorization", "/device", "/device/confirm",
                              "/.well-known/jwks.json", "/.well-known/openid-configuration"}


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_requests_get_rfc_errors_and_write_nothing(swept, caplog, data):
    """RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7662 §2.3, RFC 7009 §2.2.1, RFC 7515 §4.1.11:
    every malformed request gets the standard's error and status, never a 5xx or a traceback,
    and leaves the database as it was."""
    op, client_id, secret, endpoints = swept
    endpoint = data.draw(st.sampled_from(endpoints))
    request = data.draw(requests())
    pairs = list(request["pairs"])
    if data.draw(st.booleans()):  # sometimes a real client, so requests get further in
        pairs.append(("client_id", client_id))
        if endpoint == "/authorize":
            pairs += [("redirect_uri", REDIRECT_URI), ("response_type", "code")]
    if request["authorization"] is None and data.draw(st.booleans()):
        request["authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    encoded = _encode(pairs)
    query = "&".join(part for part in (request["raw_query"], "" if request["in_body"] else encoded) if part)
    body = request["raw_body"] if request["raw_body"] is not None else (encoded if request["in_body"] else "")
    headers = {"Authorization": request["authorization"]} if request["authorization"] else {}
    if request["accept"] is not None:
        headers["Accept"] = request["accept"]
    before = _row_count(op)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = op.http.open(endpoint, base_url=ISSUER, method=request["method"], query_string=query or None,
                                data=body if request["method"] != "GET" else None,
                                content_type=request["content_type"], headers=headers)
    _check(response, endpoint)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not errors, [record.getMessage() for record in errors]
    # A request good enough to need a login has started its interaction (one row), one good enough to
    # start a device authorization has its row (RFC 8628 §3.2), and nothing else is written.
    starts_login = response.status_code == 302 and response.headers["Location"].startswith("/login?")
    starts_device = endpoint == "/device_authorization" and response.status_code == 200
    assert _row_count(op) == before + (1 if starts_login or starts_device else 0)


#: A JOSE header or payload nested past Python's recursion limit: json raises RecursionError for it,
#: not ValueError.
_DEEP = _b64(("[" * 2000 + "]" * 2000).encode())
DEEP_JOSE = {"header": f"{_DEEP}.e30.{_b64(b'sig')}",
             "payload": f"{_b64(json.dumps({'alg': 'RS256', 'kid': 'k'}).encode())}.{_DEEP}.{_b64(b'sig')}"}


@pytest.mark.parametrize("part", list(DEEP_JOSE))
def test_jose_json_nested_too_deeply_is_refused_everywhere(swept, caplog, part):
    """RFC 6750 §3.1, RFC 7662 §2.3, RFC 7009 §2.2.1, RFC 7523 §3: a JWT whose header or claims are
    nested too deeply is an invalid token, client assertion or hint, never a 500."""
    op, client_id, secret, _ = swept
    token = DEEP_JOSE[part]
    assertion = {"grant_type": "client_credentials", "client_id": client_id, "client_assertion": token,
                 "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    requests = {
        "/userinfo": lambda: op.get("/userinfo", headers={"Authorization": "Bearer " + token}),
        "/introspect": lambda: op.post("/introspect", data={"token": token}, auth=(client_id, secret)),
        "/revoke": lambda: op.post("/revoke", data={"token": token}, auth=(client_id, secret)),
        "/logout": lambda: op.get("/logout", query_string={"id_token_hint": token}),
        "/token": lambda: op.post("/token", data=assertion),
    }
    with caplog.at_level(logging.WARNING):
        for endpoint, send in requests.items():
            _check(send(), endpoint)
        admin = op.get("/admin/clients", headers={"Authorization": "Bearer " + token})
    assert (admin.status_code, admin.json["error"]) == (401, "invalid_token")
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


# -- request objects (RFC 9101) ------------------------------------------------------------------------

#: JSON values of every shape, small.
OBJECT_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                           | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                                              children, max_size=3),
                           max_leaves=6)
OBJECT_HEADERS = st.one_of(
    st.fixed_dictionaries({"alg": st.sampled_from(["ES256", "PS256", "RS256", "EdDSA", "Ed25519", "none", "none",
                                                   "None", "HS256", "ES512", "", "RSA-OAEP-256"])}, optional={
        "kid": st.sampled_from(["request-key", "other"]) | OBJECT_JSON_VALUES,
        "typ": st.sampled_from(["oauth-authz-req+jwt", "JWT", "at+jwt", "application/oauth-authz-req+jwt"]) | OBJECT_JSON_VALUES,
        "crit": OBJECT_JSON_VALUES, "enc": OBJECT_JSON_VALUES, "jwk": OBJECT_JSON_VALUES, "zip": st.just("DEF")}),
    OBJECT_JSON_VALUES)
CLAIM_NAMES = st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "jti", "client_id", "response_type", "redirect_uri",
                               "scope", "state", "nonce", "code_challenge", "code_challenge_method", "max_age",
                               "prompt", "resource", "request", "request_uri", "claims", "dpop_jkt", "é", ""])


@st.composite
def request_objects(draw: st.DrawFn, client_id: str, now: int) -> str:
    """A request object, mostly malformed: any header, claims of any type (some right), signed or not."""
    good = {"iss": client_id, "aud": ISSUER, "exp": now + 300, "nbf": now, "client_id": client_id,
            "response_type": "code", "redirect_uri": REDIRECT_URI, "scope": "openid"}
    drawn = draw(st.dictionaries(CLAIM_NAMES, OBJECT_JSON_VALUES, max_size=4))
    kept = {name: value for name, value in good.items() if draw(st.integers(0, 7)) > 0}
    # Mostly the right claims with one or two odd ones, so that objects get past each check in turn.
    claims = {**drawn, **kept} if draw(st.booleans()) else {**kept, **drawn}
    payload = draw(st.sampled_from([json.dumps(claims).encode()] * 6
                                   + [b"[1]", b"\xff", ("[" * 1500 + "]" * 1500).encode()]))
    shape = draw(st.sampled_from(["signed", "signed", "signed", "drawn header", "unsigned", "unsigned", "five parts"]))
    if shape == "signed":  # a real signature by the client's registered key, over whatever payload
        import jwt
        return jwt.PyJWS().encode(payload, SWEEP_OBJECT_KEY, algorithm="ES256",
                                  headers={"kid": "request-key", "typ": draw(st.sampled_from(["oauth-authz-req+jwt",
                                                                                              "JWT", "x"]))})
    header = _b64(json.dumps(draw(OBJECT_HEADERS) if shape != "unsigned" else {"alg": "none"}).encode())
    signature = draw(st.sampled_from(["", _b64(b"sig"), "!!", _b64(bytes(64))]))
    if shape == "five parts":
        return ".".join([header, _b64(b"key"), _b64(b"iv"), _b64(payload), signature])
    return f"{header}.{_b64(payload)}.{'' if shape == 'unsigned' else signature}"


#: The key of the client the request object sweep registers (made once: hypothesis runs many examples).
SWEEP_OBJECT_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def object_client(swept):
    from jwt.algorithms import ECAlgorithm

    op = swept[0]
    jwk = {**ECAlgorithm.to_jwk(SWEEP_OBJECT_KEY.public_key(), as_dict=True), "kid": "request-key"}
    unsigned_id, _ = op.add_client(auth_method="none", jwks={"keys": [jwk]}, request_object_signing_alg="none")
    signed_id, secret = op.add_client(jwks={"keys": [jwk]})
    return op, {"none": (unsigned_id, None), "signed": (signed_id, secret)}


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_request_objects_drawn_at_random_get_rfc_errors_and_write_nothing(object_client, caplog, data):
    """RFC 9101 §6.3: a request object that is malformed, unverifiable or refused is invalid_request_object
    (the error page at /authorize, JSON at /par), never a 5xx or a redirect to an unverified URI."""
    op, clients = object_client
    client_id, secret = clients[data.draw(st.sampled_from(sorted(clients)))]
    endpoint = data.draw(st.sampled_from(["/authorize", "/par"]))
    token = data.draw(request_objects(client_id, op.clock.now()))
    params = {"client_id": client_id, "request": token}
    if data.draw(st.booleans()):  # front-channel parameters beside it, ignored
        params.update(redirect_uri=REDIRECT_URI, response_type="code", state="outer")
    before = _row_count(op)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        if endpoint == "/par":
            response = op.post("/par", data=params, auth=(client_id, secret) if secret else None)
        else:
            response = op.get("/authorize", query_string=params)
    _check(response, endpoint)
    if response.status_code == 400 and endpoint == "/authorize":
        assert "Location" not in response.headers  # /par's errors are checked by _check: RFC 9126 §2.3's
    if response.status_code == 302:
        assert "state=outer" not in response.headers["Location"]
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    starts_login = response.status_code == 302 and response.headers["Location"].startswith("/login?")
    assert _row_count(op) == before + (1 if starts_login or response.status_code == 201 else 0)


# -- /register: JSON bodies (RFC 7591 §2) -----------------------------------------------------------------------

METADATA_NAMES = st.sampled_from([
    "client_name", "redirect_uris", "post_logout_redirect_uris", "grant_types", "response_types", "scope",
    "token_endpoint_auth_method", "jwks", "jwks_uri", "logo_uri", "policy_uri", "tos_uri", "client_uri", "contacts",
    "software_id", "software_version", "software_statement", "application_type", "security_profile",
    "require_pushed_authorization_requests", "dpop_bound_access_tokens", "backchannel_logout_uri",
    "backchannel_logout_session_required", "authorization_signed_response_alg", "id_token_encrypted_response_alg",
    "id_token_encrypted_response_enc", "userinfo_signed_response_alg", "require_signed_request_object",
    "request_object_signing_alg", "client_id", "x\x00"])
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
              BAD_VALUES, st.sampled_from([REDIRECT_URI, "https://rp.example.test/jwks", "authorization_code",
                                           "client_credentials", "private_key_jwt", "none", "code", "fapi2",
                                           *MALFORMED_JOSE[:6]])),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                                max_size=4)),
    max_leaves=12)
REGISTRATION_BODIES = st.one_of(
    st.dictionaries(METADATA_NAMES, JSON_VALUES, max_size=6),
    JSON_VALUES,
)


@pytest.fixture
def open_registration(make_app, provisioned_database_url, system_secret, admin_key):
    from conftest import software_env

    from oidc_fixtures import Provider

    return Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                              "REGISTRATION_OPEN": "true"}))


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_registration_requests_get_rfc_7591_errors_and_write_nothing(open_registration, caplog, data):
    """RFC 7591 §3.2.2: any JSON body (or none) gets a registration error with 400, never a 5xx or a
    traceback; only a registration that succeeds (201) writes, and it writes one client."""
    op = open_registration
    body = data.draw(REGISTRATION_BODIES)
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "PUT", "GET", "DELETE"]))
    path = data.draw(st.sampled_from(["/register", "/register/" + "a" * 32, "/register/%00", "/register/" + "x" * 300]))
    raw = data.draw(st.sampled_from([None, None, None, b"{", b"\xff\xfe", b"[" * 3000 + b"]" * 3000]))
    content_type = data.draw(st.sampled_from(["application/json", "application/json", "text/plain", None]))
    authorization = data.draw(st.sampled_from([None, None, "Bearer", "Bearer x", "Basic !!!", "Bearer " + "x" * 600]))
    headers = {"Authorization": authorization} if authorization else {}
    before = _row_count(op)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = op.http.open(path, base_url=ISSUER, method=method, headers=headers, content_type=content_type,
                                data=raw if raw is not None else json.dumps(body, allow_nan=True))
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code != 405:
        _check_registration(response)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not errors, [record.getMessage() for record in errors]
    assert _row_count(op) == before + (1 if response.status_code == 201 else 0)
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mode=st.one_of(st.sampled_from(RESPONSE_MODE_VALUES), st.text(max_size=20)),
       accept=ACCEPT, prompt=st.sampled_from(["none", "login none", None]))
def test_response_modes_and_accept_headers(swept, caplog, mode, accept, prompt):
    """JARM §2.3 and RFC 9701 §4: any response_mode gets a response in a mode we deliver (a JARM one only
    when asked for by its exact name), any Accept header a JSON or an RFC 9701 answer; never a 5xx, never an
    ERROR line, nothing written."""
    import jwt as pyjwt

    op, client_id, secret, _ = swept
    params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid",
              "state": "s", "response_mode": mode, **({"prompt": prompt} if prompt else {})}
    before = _row_count(op)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = op.http.get("/authorize", base_url=ISSUER, query_string=params)
        introspection = op.http.post("/introspect", base_url=ISSUER, data={"token": "x"},
                                     headers={"Authorization": "Basic " + base64.b64encode(
                                         f"{client_id}:{secret}".encode()).decode(),
                                              **({"Accept": accept} if accept is not None else {})})
    _check(response, "/authorize")
    jarm = mode in ("jwt", "query.jwt", "fragment.jwt", "form_post.jwt")
    if response.status_code == 302:
        location = response.headers["Location"]
        assert (("response=" in location) is jarm) or location.startswith("/login?"), (mode, location)
    elif response.status_code == 200 and jarm:
        assert mode == "form_post.jwt" and 'name="response"' in response.get_data(as_text=True)
    assert introspection.status_code == 200
    if introspection.mimetype == "application/token-introspection+jwt":
        claims = pyjwt.decode(introspection.get_data(as_text=True), options={"verify_signature": False})
        assert claims["token_introspection"] == {"active": False} and claims["aud"] == client_id
    else:
        assert introspection.mimetype == "application/json" and introspection.json == {"active": False}
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    starts_login = response.status_code == 302 and response.headers["Location"].startswith("/login?")
    assert _row_count(op) == before + (1 if starts_login else 0)


USER_CODE_INPUT = st.one_of(
    BAD_VALUES,
    st.text(alphabet="BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz-  \t0O1Iaeiou", max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)


@pytest.fixture
def device_op(make_app, provisioned_database_url, system_secret, admin_key):
    from conftest import software_env

    from oidc_fixtures import Provider

    op = Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                            "DEVICE_USER_CODE_RATE_LIMIT": "100000/minute"}))
    client_id, secret = op.add_client(grant_types=[DEVICE_GRANT], scope="openid profile")
    return op, client_id, secret


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(user_code=USER_CODE_INPUT, scope=st.one_of(st.none(), BAD_VALUES),
       resource=st.one_of(st.none(), BAD_VALUES))
def test_bad_user_codes_and_device_requests_get_a_message_or_an_rfc_error(device_op, caplog, user_code, scope,
                                                                           resource):
    """RFC 8628 §3.2, §3.3: whatever is typed into the user-code form (with its CSRF token, from our page)
    is the page with a message, never a 5xx, and decides nothing; whatever an authenticated client sends to
    /device_authorization is a device code or an RFC 6749 §5.2 error, and only a device code writes a row."""
    from oidc_fixtures import hidden_fields

    op, client_id, secret = device_op
    before = _row_count(op)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        browser = op.new_browser()
        linked = browser.get("/device", query_string={"user_code": user_code})  # verification_uri_complete
        assert linked.status_code in (200, 413) and linked.mimetype == "text/html", linked.status_code
        page = browser.get("/device")
        answer = browser.post("/device", data={**dict(hidden_fields(page.text)), "user_code": user_code})
        assert answer.status_code in (400, 413), answer.status_code
        assert answer.mimetype == "text/html" and "Traceback" not in answer.text
        if answer.status_code == 400:
            assert "not valid or has expired" in answer.text
        data = {name: value for name, value in (("scope", scope), ("resource", resource)) if value is not None}
        response = op.post("/device_authorization", data=data, auth=(client_id, secret))
    _check(response, "/device_authorization")
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert _row_count(op) == before + (1 if response.status_code == 200 else 0)


# -- encrypted request objects (RFC 9101 §6.1) at a provider that decrypts ---------------------------------

JWE_HEADERS = st.one_of(
    st.fixed_dictionaries({"alg": st.sampled_from(["RSA-OAEP-256", "RSA-OAEP", "ECDH-ES", "dir", "RSA1_5", "none", ""]),
                           "enc": st.sampled_from(["A256GCM", "A128CBC-HS256", "A128GCM", "", "x"])},
                          optional={"kid": st.text(max_size=8), "zip": st.just("DEF"), "crit": OBJECT_JSON_VALUES,
                                    "epk": OBJECT_JSON_VALUES, "cty": st.sampled_from(["JWT", "x"])}),
    OBJECT_JSON_VALUES)
SEGMENTS = st.sampled_from(["", "AAAA", _b64(bytes(16)), _b64(bytes(256)), _b64(bytes(12)), "!!", "A"])


@pytest.fixture
def decrypting(make_app, base_env):
    from jwt.algorithms import ECAlgorithm

    from oidc_fixtures import Provider

    op = Provider(make_app({**base_env, "REQUEST_OBJECT_ENCRYPTION_ALG": "RSA-OAEP-256"}))
    public = next(key for key in op.jwks()["keys"] if key.get("use") == "enc")
    jwk = {**ECAlgorithm.to_jwk(SWEEP_OBJECT_KEY.public_key(), as_dict=True), "kid": "request-key"}
    client_id, _ = op.add_client(auth_method="none", jwks={"keys": [jwk]})
    return op, client_id, public


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_five_part_request_objects_drawn_at_random_are_refused_and_never_a_5xx(decrypting, caplog, data):
    """RFC 9101 §6.3: a JWE that is malformed, for another key, altered or empty inside is invalid_request_object
    on the error page; the key service names why, and nothing is logged as an error."""
    from jwcrypto import jwe, jwk

    op, client_id, public = decrypting
    if data.draw(st.booleans()):  # a real JWE to the provider's key, one part then replaced or cut
        inner = data.draw(st.sampled_from([b"", b"a.b.c", b"{}", b"\xff" * 40, b"x.y.z.w.v"]))
        made = jwe.JWE(inner, protected={"alg": public["alg"], "enc": "A256GCM", "kid": public["kid"]})
        made.add_recipient(jwk.JWK(**public))
        parts = str(made.serialize(compact=True)).split(".")
        index = data.draw(st.integers(0, 4))
        parts[index] = data.draw(st.one_of(SEGMENTS, st.just(parts[index][:-1]), st.just(parts[index])))
    else:
        parts = [_b64(json.dumps(data.draw(JWE_HEADERS)).encode()), *(data.draw(SEGMENTS) for _ in range(4))]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = op.get("/authorize", query_string={"client_id": client_id, "request": ".".join(parts)})
    assert response.status_code == 400 and "Location" not in response.headers, response.status_code
    assert "invalid_request_object" in response.get_data(as_text=True)
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


_NAMES = st.text(max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(pairs=st.lists(st.tuples(_NAMES, st.text(max_size=8)), max_size=6), name=_NAMES)
def test_request_parameters_read_as_werkzeug_reads_them(pairs: list[tuple[str, str]], name: str) -> None:
    """The request's parameters (``Parameters``) answer ``get`` as werkzeug's MultiDict does, and the
    control-character check (one search over the joined strings) as a search of each name and value."""
    from werkzeug.datastructures import MultiDict

    from oidc.oauth2.parameters import (
        Parameters,
        has_control_character,
        holds_control_character,
        repeated_parameter,
    )

    ours, theirs = Parameters(pairs), MultiDict(pairs)
    for key in {name, *(key for key, _ in pairs)}:
        assert ours.get(key) == theirs.get(key)
        assert ours.get(key, "absent") == theirs.get(key, "absent")
        assert ours.get(key, -1, type=int) == theirs.get(key, -1, type=int)
    held = any(has_control_character(key) or has_control_character(value) for key, value in pairs)
    assert holds_control_character(ours) == holds_control_character(theirs) == held
    assert holds_control_character(ours) == held  # read again (Parameters keeps the answer)
    names = [name, *(key for key, _ in reversed(pairs))]
    first_repeated = next((key for key in names if len(theirs.getlist(key)) > 1), None)
    expected = None if first_repeated is None else f"The {first_repeated} parameter is repeated."
    for params in (ours, theirs, ours):
        refused = repeated_parameter(params, names)
        assert (None if refused is None else str(refused)) == expected


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(pairs=st.lists(st.tuples(_NAMES, st.text(max_size=8)), max_size=8))
def test_parameter_sizes_count_every_name_and_value(pairs: list[tuple[str, str]]) -> None:
    """The sizes an authorization request is held to (``parameters.sizes``): every name and value
    sent, a repeated name once per value, and the longest value; the same for both kinds of MultiDict."""
    from werkzeug.datastructures import MultiDict

    from oidc.oauth2.parameters import Parameters, sizes

    expected = (sum(len(name) + len(value) for name, value in pairs), max((len(v) for _, v in pairs), default=0))
    assert sizes(Parameters(pairs)) == sizes(MultiDict(pairs)) == expected


#: Registered redirect URIs of every shape: a query to keep, a path parameter, an upper-case
#: scheme, a native app's scheme with and without a path, non-ASCII, an empty query, a fragment, an
#: empty fragment, no scheme, a bare path.
_REDIRECT_URIS = st.sampled_from([
    "https://client.example/cb", "https://client.example/cb?tenant=a%20b&x=c+d&flag", "HTTPS://Client.example/cb",
    "https://client.example/p;v=1", "com.example.app:/callback", "myapp:cb", "http://127.0.0.1:8080",
    "https://client.example/cb?", "https://client.example/caf\u00e9?q=\u00fc&q=2", "https://client.example/cb?a=&b",
    "https://client.example/cb#f", "https://client.example/cb?a=1#", "//client.example/cb", "cb",
])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(uri=_REDIRECT_URIS, params=st.lists(st.tuples(_NAMES, st.text(max_size=12)), max_size=4))
def test_authorization_response_uri_as_authlib_builds_it(uri: str, params: list[tuple[str, str]]) -> None:
    """The query response's Location (RFC 6749 §4.1.2) is the URI Authlib's add_params_to_uri makes."""
    from authlib.common.urls import add_params_to_uri as authlibs

    from oidc.oauth2.response_modes import add_params_to_uri

    assert add_params_to_uri(uri, params) == authlibs(uri, params)


def test_jose_headers_are_checked_each_time_and_kept_read_only() -> None:
    """A JOSE header parsed once per distinct segment: a refused one is refused again, an accepted one is
    the same read-only header each time (no caller can change what the next token's check reads)."""
    from oidc.oauth2.jwt import InvalidToken, _header

    refused = [_jws({"alg": "ES256", "kid": "k", "crit": 5}), _jws({"alg": 5, "kid": "k"}), _jws({"alg": "none"}),
               _jws({"alg": "HS256", "kid": "k", "typ": 7}), _jws([1, 2]), "e30.e30.", "..", "!!!.@@@.###"]
    for token in refused:
        for _ in range(2):
            with pytest.raises(InvalidToken):
                _header(token)
    token = _jws({"alg": "ES256", "kid": "k", "typ": "at+jwt"})
    header = _header(token)
    assert dict(header) == {"alg": "ES256", "kid": "k", "typ": "at+jwt"} and _header(token) == header
    with pytest.raises(TypeError):
        header["kid"] = "other"  # type: ignore[index]


_CLAIM_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2, max_value=2**64),
                          st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([ISSUER, "", "x"]),
                          st.text(max_size=4), st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=2),
                          st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
_CLAIMS = st.dictionaries(st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "validate"]),
                          _CLAIM_VALUES, max_size=8)


def _outcome(validate: object, claims: dict[str, object]) -> object:
    try:
        validate(claims)  # type: ignore[operator]
    except Exception as error:  # the outcome compared is the error itself
        return type(error), str(error)
    return None


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(claims=_CLAIMS, check_exp=st.booleans(), now=st.integers(min_value=0, max_value=2**33))
def test_own_token_claims_checked_as_joserfc_checks_them(claims: dict[str, object], check_exp: bool,
                                                         now: int) -> None:
    """The claims registry of our own tokens (its checks found once per registry) refuses or accepts
    each claims set as joserfc's own ``validate`` does on the same registry, with the same error."""
    from joserfc.jwt import JWTClaimsRegistry

    from oidc.oauth2.jwt import _claims_registry

    registry = _claims_registry(lambda: now, ISSUER, check_exp, 0)
    expected = _outcome(lambda value: JWTClaimsRegistry.validate(registry, value), claims)
    assert _outcome(registry.validate, claims) == expected
    assert _outcome(registry.validate, claims) == expected  # the same registry, again


_B64URL_OCTETS = st.binary(max_size=12).map(lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(value=st.one_of(_B64URL_OCTETS, st.text("AQgwEZ-_+/=*\x00é", max_size=9).map(lambda text: text.encode()),
                       st.binary(max_size=9)))
def test_jws_segments_decoded_as_joserfc_decodes_them(value: bytes) -> None:
    """A JWS segment's strict decoding (``hashing.b64url_decode_strict``, what ``verify_own_jwt`` reads the
    signature and the claims with): the same octets as joserfc's ``urlsafe_b64decode``, and refused
    (``binascii.Error``) exactly when joserfc refuses it: padding, ``+``/``/``, a length of 4n+1,
    non-zero unused bits, a character outside the alphabet."""
    import binascii

    from joserfc.util import urlsafe_b64decode

    from oidc.hashing import b64url_decode_strict

    try:
        expected: bytes | None = urlsafe_b64decode(value)
    except binascii.Error:
        expected = None
    try:
        decoded: bytes | None = b64url_decode_strict(value)
    except binascii.Error:
        decoded = None
    assert decoded == expected


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=70))
def test_b64url_encodes_as_the_standard_library_and_decodes_back(data: bytes) -> None:
    """``keys.b64url`` (JWS segments, keyed hashes, PKCE): ``base64.urlsafe_b64encode`` without padding;
    the strict decoding of JWS segments gives the octets back."""
    from keys import b64url
    from oidc.hashing import b64url_decode_strict

    encoded = b64url(data)
    assert encoded == base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    assert b64url_decode_strict(encoded.encode("ascii")) == data
