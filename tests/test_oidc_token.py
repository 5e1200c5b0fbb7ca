"""The token endpoint: grants, client authentication, codes, refresh rotation, errors."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from oidc_fixtures import ISSUER, REDIRECT_URI, jwt_parts, registered_client, verify_jws


def _assert_error(response, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    assert "Traceback" not in response.get_data(as_text=True)


def test_code_exchange_gives_signed_id_and_rfc9068_access_tokens(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id)
    response = op.redeem(client_id, secret, flow)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["refresh_token"]
    jwks = op.jwks()
    header, _ = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt"
    claims = verify_jws(jwks, body["access_token"])
    assert {"iss", "exp", "aud", "sub", "client_id", "iat", "jti", "scope"} <= set(claims)
    assert claims["client_id"] == client_id and claims["iss"] == ISSUER and claims["aud"] == ISSUER
    id_claims = verify_jws(jwks, body["id_token"])
    assert id_claims["sub"] == claims["sub"]
    assert id_claims["email"] == "alice@example.test" and id_claims["preferred_username"] == "alice"


@pytest.mark.both_databases
def test_code_is_single_use_and_replay_revokes_what_it_issued(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id)
    first = op.redeem(client_id, secret, flow).json
    _assert_error(op.redeem(client_id, secret, flow), 400, "invalid_grant")
    introspected = op.post("/introspect", data={"token": first["access_token"]}, auth=(client_id, secret)).json
    assert introspected == {"active": False}
    refresh = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                      auth=(client_id, secret))
    _assert_error(refresh, 400, "invalid_grant")


@pytest.mark.both_databases
@pytest.mark.parametrize("extra, use_other_client, error", [
    pytest.param({"code_verifier": "x" * 50}, False, "invalid_grant", id="wrong verifier"),
    pytest.param({"code_verifier": None}, False, "invalid_request", id="missing verifier"),
    pytest.param({"redirect_uri": REDIRECT_URI + "/x"}, False, "invalid_grant", id="wrong redirect_uri"),
    pytest.param({"redirect_uri": None}, False, "invalid_grant", id="missing redirect_uri"),
    pytest.param({"code": "nope"}, False, "invalid_grant", id="unknown code"),
    pytest.param({}, True, "invalid_grant", id="other client"),
])
def test_bad_code_exchanges_are_invalid_grant_and_write_nothing(op, extra, use_other_client, error):
    """RFC 6749 §4.1.3, §5.2; RFC 7636 §4.6: a refused exchange issues nothing and leaves the code usable."""
    op.add_user()
    client_id, secret = op.add_client()
    other = op.add_client()
    original = op.code_flow(client_id)
    extra = dict(extra)
    flow = {**original, "code": extra.pop("code", original["code"])}
    before = (op.count("AccessToken"), op.count("RefreshToken"))
    response = op.redeem(*(other if use_other_client else (client_id, secret)), flow, **extra)
    _assert_error(response, 400, error)
    assert (op.count("AccessToken"), op.count("RefreshToken")) == before
    # The code was not burnt by the failed attempt: the rightful exchange still works.
    assert op.redeem(client_id, secret, original).status_code == 200


def test_code_redeemed_by_another_client_is_refused_and_still_usable_by_its_own(op):
    op.add_user()
    client_id, secret = op.add_client()
    other_id, other_secret = op.add_client()
    flow = op.code_flow(client_id)
    _assert_error(op.redeem(other_id, other_secret, flow), 400, "invalid_grant")
    assert op.redeem(client_id, secret, flow).status_code == 200


def test_expired_code_is_refused(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id)
    op.clock.advance(61)
    _assert_error(op.redeem(client_id, secret, flow), 400, "invalid_grant")


def test_code_verifier_for_a_request_without_challenge_is_refused(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id, pkce=False)
    _assert_error(op.redeem(client_id, secret, flow), 400, "invalid_request")


def test_public_client_with_pkce(op):
    op.add_user()
    client_id, _ = op.add_client(auth_method="none")
    flow = op.code_flow(client_id)
    response = op.redeem(client_id, None, flow)
    assert response.status_code == 200
    _assert_error(op.redeem(client_id, None, {**op.code_flow(client_id), "verifier": None}), 400, "invalid_request")


def test_wrong_secret_over_basic_is_401_with_www_authenticate(op):
    client_id, _ = op.add_client(grant_types=["client_credentials"], scope="api")
    response = op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong"))
    _assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("header", ["Basic !!!notbase64", "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
                                    "Basic " + base64.b64encode(b"no-colon").decode()])
def test_malformed_basic_credentials(op, header):
    response = op.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": header})
    _assert_error(response, 401, "invalid_client")
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("scheme", ["Basic ", "basic\t ", "BASIC  "])
def test_basic_credentials_are_read_form_urlencoded_after_any_whitespace(op, scheme):
    """RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encodes them; the precheck
    decodes the header once and client authentication reads what it decoded, as Authlib would."""
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    encoded = "".join(f"%{byte:02X}" for byte in client_id.encode()) + ":" + secret.replace("-", "%2D")
    header = scheme + base64.b64encode(encoded.encode()).decode()
    response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                       headers={"Authorization": header})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert verify_jws(op.jwks(), response.json["access_token"])["client_id"] == client_id
    wrong = scheme + base64.b64encode(f"{client_id}:{secret}x".encode()).decode()
    _assert_error(op.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": wrong}),
                  401, "invalid_client")


def test_client_secret_post(op):
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="client_secret_post")
    ok = op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                 "client_secret": secret})
    assert ok.status_code == 200
    # Registered for client_secret_post: Basic is not accepted.
    _assert_error(op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)),
                  401, "invalid_client")
    _assert_error(op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                          "client_secret": secret + "x"}), 401, "invalid_client")


def test_client_credentials_has_no_id_token_nor_refresh_token(op):
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api:read api:write",
                                      audiences=["https://api.example.test"])
    response = op.post("/token", data={"grant_type": "client_credentials", "scope": "api:read",
                                       "resource": "https://api.example.test"}, auth=(client_id, secret))
    assert response.status_code == 200
    body = response.json
    assert "id_token" not in body and "refresh_token" not in body
    claims = verify_jws(op.jwks(), body["access_token"])
    assert claims["sub"] == client_id and claims["scope"] == "api:read" and claims["aud"] == "https://api.example.test"
    _assert_error(op.post("/token", data={"grant_type": "client_credentials", "scope": "admin"},
                          auth=(client_id, secret)), 400, "invalid_scope")
    _assert_error(op.post("/token", data={"grant_type": "client_credentials", "resource": "https://x.example"},
                          auth=(client_id, secret)), 400, "invalid_target")


def test_grant_not_registered_for_the_client_is_unauthorized_client(op):
    client_id, secret = op.add_client()  # authorization_code + refresh_token only
    _assert_error(op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)),
                  400, "unauthorized_client")


@pytest.mark.parametrize("data,error", [
    ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
    ({"grant_type": "urn:made:up"}, "unsupported_grant_type"),
    ({}, "invalid_request"),
    ({"grant_type": "authorization_code"}, "invalid_request"),
    ({"grant_type": "refresh_token"}, "invalid_request"),
    ({"grant_type": "authorization_code", "code": "x" * 20000}, "invalid_request"),
    ({"grant_type": "authorization_code", "code": ["a", "b"]}, "invalid_request"),
])
def test_malformed_token_requests(op, data, error):
    client_id, secret = op.add_client()
    _assert_error(op.post("/token", data=data, auth=(client_id, secret)), 400, error)


def test_secrets_in_the_url_and_wrong_content_type_are_refused(op):
    client_id, secret = op.add_client()
    _assert_error(op.post(f"/token?client_secret={secret}", data={"grant_type": "authorization_code"},
                          auth=(client_id, secret)), 400, "invalid_request")
    _assert_error(op.post("/token", json={"grant_type": "client_credentials"}, auth=(client_id, secret)),
                  400, "invalid_request")
    assert op.get("/token").status_code == 405


@pytest.mark.both_databases
def test_refresh_rotation_and_reuse_revokes_the_family(op):
    op.add_user()
    client_id, secret = op.add_client()
    first = op.tokens(client_id, secret)
    second = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                     auth=(client_id, secret))
    assert second.status_code == 200 and second.headers["Cache-Control"] == "no-store"
    second = second.json
    assert second["refresh_token"] != first["refresh_token"] and second["id_token"]
    third = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
                    auth=(client_id, secret)).json
    # Reuse of a rotated token: refused, and the whole family is revoked.
    reuse = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                    auth=(client_id, secret))
    _assert_error(reuse, 400, "invalid_grant")
    for token in (third["access_token"], third["refresh_token"], second["access_token"]):
        assert op.post("/introspect", data={"token": token}, auth=(client_id, secret)).json == {"active": False}
    _assert_error(op.post("/token", data={"grant_type": "refresh_token", "refresh_token": third["refresh_token"]},
                          auth=(client_id, secret)), 400, "invalid_grant")


@pytest.mark.both_databases
def test_client_registered_without_id_token_on_refresh_gets_none_on_refresh_only(op):
    """OIDC Core §12.2: the ID token of a refresh response is optional; the code exchange keeps its own."""
    op.add_user()
    client_id, secret = op.add_client(id_token_on_refresh=False)
    first = op.tokens(client_id, secret)
    assert first["id_token"]
    refreshed = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                        auth=(client_id, secret))
    assert refreshed.status_code == 200
    assert "id_token" not in refreshed.json
    assert refreshed.json["refresh_token"] != first["refresh_token"]
    assert op.post("/introspect", data={"token": refreshed.json["access_token"]},
                   auth=(client_id, secret)).json["active"] is True
    # The default still returns one (clients expect it).
    default_id, default_secret = op.add_client()
    again = op.tokens(default_id, default_secret)
    assert op.post("/token", data={"grant_type": "refresh_token", "refresh_token": again["refresh_token"]},
                   auth=(default_id, default_secret)).json["id_token"]


def test_refresh_can_narrow_but_not_widen_scope(op):
    op.add_user()
    client_id, secret = op.add_client()
    first = op.tokens(client_id, secret, scope="openid email offline_access")
    narrowed = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                       "scope": "openid"}, auth=(client_id, secret)).json
    assert narrowed["scope"] == "openid"
    widened = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": narrowed["refresh_token"],
                                      "scope": "openid profile"}, auth=(client_id, secret))
    _assert_error(widened, 400, "invalid_scope")


def test_refresh_token_of_another_client_is_refused(op):
    op.add_user()
    client_id, secret = op.add_client()
    other_id, other_secret = op.add_client()
    first = op.tokens(client_id, secret)
    _assert_error(op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                          auth=(other_id, other_secret)), 400, "invalid_grant")
    assert op.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                   auth=(client_id, secret)).status_code == 200


def test_no_refresh_token_without_offline_access_unless_client_policy(op):
    op.add_user()
    client_id, secret = op.add_client()
    assert "refresh_token" not in op.tokens(client_id, secret, scope="openid")
    always_id, always_secret = op.add_client(refresh_always=True, first_party=True)
    assert "refresh_token" in op.tokens(always_id, always_secret, scope="openid")
    no_grant_id, no_grant_secret = op.add_client(grant_types=["authorization_code"])
    assert "refresh_token" not in op.tokens(no_grant_id, no_grant_secret)


def test_plain_oauth_code_flow_has_no_id_token(op):
    op.add_user()
    client_id, secret = op.add_client(scope="api offline_access")
    body = op.tokens(client_id, secret, scope="api")
    assert "id_token" not in body


def test_disabled_client_cannot_authenticate(op):
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    from oidc.accounts.clients import set_disabled

    with op.app.app_context():
        set_disabled(registered_client(client_id), True)
    _assert_error(op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)),
                  401, "invalid_client")


# -- private_key_jwt ------------------------------------------------------------------------


def _keypair():
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "rp-key-1"})
    return key, {"keys": [key.as_dict(private=False)]}


def _assertion(key, client_id: str, *, aud: str = ISSUER, jti: str | None = None, lifetime: int = 60,
               alg: str = "ES256") -> str:
    from joserfc import jwt

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
              "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": "rp-key-1"}, claims, key)


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.mark.both_databases
def test_private_key_jwt_and_jti_replay(op):
    key, jwks = _keypair()
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api",
                                      auth_method="private_key_jwt", jwks=jwks)
    assert secret is None
    assertion = _assertion(key, client_id)
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion}
    assert op.post("/token", data=data).status_code == 200
    _assert_error(op.post("/token", data=data), 400, "invalid_client")  # same jti again


@pytest.mark.parametrize("case", ["wrong key", "wrong audience", "expired", "too long-lived", "garbage",
                                  "unknown client"])
def test_private_key_jwt_refusals(op, case):
    key, jwks = _keypair()
    client_id, _ = op.add_client(grant_types=["client_credentials"], scope="api", auth_method="private_key_jwt",
                                 jwks=jwks)
    if case == "wrong key":
        other, _ = _keypair()
        assertion = _assertion(other, client_id)
    elif case == "wrong audience":
        assertion = _assertion(key, client_id, aud="https://elsewhere.example")
    elif case == "expired":
        assertion = _assertion(key, client_id, lifetime=-120)
    elif case == "too long-lived":
        assertion = _assertion(key, client_id, lifetime=86400)
    elif case == "garbage":
        assertion = "not.a.jwt"
    else:
        assertion = _assertion(key, "nobody")
    response = op.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                       "client_assertion": assertion})
    assert response.status_code in (400, 401)
    assert response.json["error"] == "invalid_client"


def test_private_key_jwt_refuses_hs256_even_with_the_key_that_made_it(op):
    """OIDC Core §9 / RFC 7523 §3: private_key_jwt assertions are asymmetric signatures.

    The verifier is handed the very symmetric key that made the HS256 assertion
    (no registered JWK Set could hold one): it verifies only if HS256 were in the
    allowed algorithms, so this fails the day it is.  The same call with an
    ES256 assertion and its key passes, so the refusal is the algorithm's.
    """
    from authlib.oauth2.rfc6749.errors import InvalidClientError
    from joserfc import jwt
    from joserfc.jwk import OctKey

    from oidc.oauth2.client_auth import PrivateKeyJWT

    key, jwks = _keypair()
    client_id, _ = op.add_client(grant_types=["client_credentials"], scope="api", auth_method="private_key_jwt",
                                 jwks=jwks)
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "exp": now + 60}
    secret = OctKey.import_key("k" * 32)
    hs256 = jwt.encode({"alg": "HS256"}, {**claims, "jti": "two"}, secret)
    with op.app.test_request_context():
        method = PrivateKeyJWT()
        es256 = jwt.encode({"alg": "ES256"}, {**claims, "jti": "one"}, key)
        assert method.process_assertion_claims(es256, key)["sub"] == client_id
        with pytest.raises(InvalidClientError):
            method.process_assertion_claims(hs256, secret)


def test_secret_based_client_cannot_use_an_assertion(op):
    key, jwks = _keypair()
    client_id, _secret = op.add_client(grant_types=["client_credentials"], scope="api", jwks=jwks)
    response = op.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                       "client_assertion": _assertion(key, client_id)})
    assert response.json["error"] == "invalid_client"


@pytest.mark.both_databases
def test_client_secrets_are_stored_as_keyed_hashes_and_codes_too(op):
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id)
    body = op.redeem(client_id, secret, flow).json
    from oidc.db import db

    with op.app.app_context():
        dump = json.dumps([list(map(str, row)) for table in ("clients", "authorization_codes", "refresh_tokens")
                           for row in db.session.execute(db.text(f"SELECT * FROM {table}"))])
    for value in (secret, flow["code"], body["refresh_token"]):
        assert value not in dump


@pytest.mark.both_databases
def test_code_and_refresh_requests_return_their_connection_whatever_the_answer(op):
    """The two grants' transaction (oidc.queries.CoreTransaction) ends with each request: committed
    with a success, rolled back with a refusal or a replay; no connection is left checked out but the
    one the thread keeps (oidc.statements.transaction_connection)."""
    op.add_user()
    client_id, secret = op.add_client()
    flow = op.code_flow(client_id)
    kept = 1  # the connection the thread keeps
    first = op.redeem(client_id, secret, flow)
    assert first.status_code == 200 and op.checked_out_connections() == kept
    _assert_error(op.redeem(client_id, secret, flow), 400, "invalid_grant")  # a replay: the family revoked
    assert op.checked_out_connections() == kept
    second = op.tokens(client_id, secret)
    refresh = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    rotated = op.post("/token", data=refresh, auth=(client_id, secret))
    assert rotated.status_code == 200 and op.checked_out_connections() == kept
    _assert_error(op.post("/token", data={**refresh, "refresh_token": "unknown"}, auth=(client_id, secret)),
                  400, "invalid_grant")
    assert op.checked_out_connections() == kept
    # What the successful rotation wrote was committed: its tokens work, the old refresh token is spent.
    assert op.post("/introspect", data={"token": rotated.json["refresh_token"]},
                   auth=(client_id, secret)).json["active"] is True
    _assert_error(op.post("/token", data=refresh, auth=(client_id, secret)), 400, "invalid_grant")
    assert op.checked_out_connections() == kept


def test_token_grants_are_chosen_as_authlib_chooses_them() -> None:
    """The grant of a token request is the first registered whose own ``check_token_endpoint`` takes it,
    as Authlib's loop over every grant finds it: grants with a check of their own included."""
    from types import SimpleNamespace

    from authlib.oauth2.rfc6749 import grants

    from oidc.oauth2.grants.client_credentials import ClientCredentialsGrant
    from oidc.oauth2.grants.refresh_token import RefreshTokenGrant
    from oidc.oauth2.server import AuthorizationServer

    class Prefixed(grants.ClientCredentialsGrant):  # a grant that takes grant types by a rule of its own
        GRANT_TYPE = "x-prefixed"

        @classmethod
        def check_token_endpoint(cls, request) -> bool:
            return str(request.payload.grant_type).startswith("x-") and request.method == "POST"

    server = AuthorizationServer()
    for grant_cls in (RefreshTokenGrant, Prefixed, ClientCredentialsGrant):
        server.register_grant(grant_cls)
    for grant_type in ("client_credentials", "refresh_token", "x-prefixed", "x-other", "other", "", None):
        for method in ("POST", "GET"):
            request = SimpleNamespace(payload=SimpleNamespace(grant_type=grant_type), method=method)
            expected = next((cls for cls, _ in server._token_grants if cls.check_token_endpoint(request)), None)
            try:
                chosen = type(server.get_token_grant(request))
            except Exception as error:  # the refusal: unsupported_grant_type
                assert expected is None and getattr(error, "error", None) == "unsupported_grant_type"
            else:
                assert chosen is expected
