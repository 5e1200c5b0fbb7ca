"""Our own tokens verified only with the keys of their own set, malformed JOSE headers, and the
software keys' sealing binding their public part (outside review items 2, 4 and 8)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from keys.errors import SealingError

from oidc_fixtures import ISSUER, b64d

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(op, key_set: str, header_extra: dict, claims: dict, kid: str | None = None) -> str:
    """A JWS signed by the active key of ``key_set`` (or key ``kid``) with extra header members."""
    from oidc.state import state_of

    service = state_of(op.app).key_service()
    signer = service.signer(key_set)
    header = {"alg": signer.alg, "kid": signer.kid, **header_extra}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    return f"{signing_input.decode()}.{_b64(signer.sign(signing_input))}"


def _client_token_claims(client_id: str, scope: str = "api") -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "sub": client_id, "aud": ISSUER, "client_id": client_id, "iat": now, "exp": now + 600,
            "jti": uuid.uuid4().hex, "scope": scope}


def _introspect(op, client_id, secret, token):
    response = op.post("/introspect", data={"token": token}, auth=(client_id, secret))
    assert response.status_code == 200, response.json
    return response.json


def test_access_tokens_verify_only_with_access_token_keys(op):
    """RFC 8725 §3.1 / RFC 9068 §4: an access token signed by an ID-token key, or by a key of an
    admin-created set, is not an access token of ours, even though its key is published."""
    from oidc.state import state_of

    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api")
    claims = _client_token_claims(client_id)
    genuine = _sign(op, "jwt.access-token", {"typ": "at+jwt"}, claims)
    assert _introspect(op, client_id, secret, genuine)["active"] is True
    forged = _sign(op, "openid.id-token", {"typ": "at+jwt"}, claims)
    assert _introspect(op, client_id, secret, forged) == {"active": False}
    with op.app.app_context():
        state_of(op.app).key_service().generate("partner", "ES256")
        state_of(op.app).clock.advance(3600)
    from_partner = _sign(op, "partner", {"typ": "at+jwt"}, claims)
    assert _introspect(op, client_id, secret, from_partner) == {"active": False}


def test_id_token_hint_verifies_only_with_id_token_keys(op):
    """OIDC RP-Initiated Logout §2 / RFC 8725 §3.1: an "ID token" signed by the access-token key is no hint."""
    op.add_user()
    client_id, secret = op.add_client()
    id_token = op.tokens(client_id, secret)["id_token"]
    _, payload, _ = id_token.split(".")
    forged = _sign(op, "jwt.access-token", {"typ": "JWT"}, json.loads(b64d(payload)))
    response = op.get("/logout", query_string={"id_token_hint": forged})
    assert response.status_code == 400 and "Traceback" not in response.text


def test_crit_of_the_wrong_type_is_an_invalid_token_everywhere(op, admin_key):
    """RFC 7515 §4.1.11 (a crit we do not understand is a rejection) and RFC 6750 §3.1
    (a malformed token is invalid_token): never a 500 with a traceback."""
    op.add_user()
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api admin")
    claims = _client_token_claims(client_id, "api admin")
    for crit in (5, ["exp"], "x", None):
        token = _sign(op, "jwt.access-token", {"typ": "at+jwt", "crit": crit}, claims)
        response = op.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert _introspect(op, client_id, secret, token) == {"active": False}
        response = op.get("/admin/users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        hint = _sign(op, "openid.id-token", {"typ": "JWT", "crit": crit},
                     {"iss": ISSUER, "sub": "x", "aud": client_id, "exp": int(time.time()) + 60})
        response = op.get("/logout", query_string={"id_token_hint": hint})
        assert response.status_code == 400 and "Traceback" not in response.text


def _assertion_client(op):
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "rp-key-1"})
    client_id, _ = op.add_client(grant_types=["client_credentials"], scope="api", auth_method="private_key_jwt",
                                 jwks={"keys": [key.as_dict(private=False)]})
    return key, client_id


def _assertion(key, client_id, aud, header_extra=None, lifetime=60):
    from joserfc import jwt

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
              "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES256", "kid": "rp-key-1", **(header_extra or {})}, claims, key)


def _assert_with(op, assertion):
    return op.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                   "client_assertion": assertion})


def test_private_key_jwt_with_malformed_crit_is_invalid_client(op):
    """RFC 7515 §4.1.11, RFC 6749 §5.2: a malformed client assertion is invalid_client, not a 500."""
    key, client_id = _assertion_client(op)
    header = {"alg": "ES256", "kid": "rp-key-1", "crit": 5}
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "exp": int(time.time()) + 60, "jti": "j"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    from joserfc import jws

    signature = jws.serialize_compact({"alg": "ES256"}, signing_input.encode(), key).split(".")[2]
    response = _assert_with(op, f"{signing_input}.{signature}")
    assert response.status_code in (400, 401) and response.json["error"] == "invalid_client"


def test_private_key_jwt_audience_is_the_issuer_as_a_single_string(op):
    """OIDC Core §9 (2025 errata) and draft-ietf-oauth-rfc7523bis: aud is the issuer identifier,
    a single string; not an array, not another endpoint of ours."""
    key, client_id = _assertion_client(op)
    assert _assert_with(op, _assertion(key, client_id, ISSUER)).status_code == 200
    for aud in ([ISSUER], [ISSUER, "https://elsewhere.example"], f"{ISSUER}/introspect", f"{ISSUER}/token"):
        response = _assert_with(op, _assertion(key, client_id, aud))
        assert response.status_code in (400, 401) and response.json["error"] == "invalid_client", aud


def test_private_key_jwt_token_endpoint_audience_where_the_setting_allows_it(make_app, base_env):
    """draft-ietf-oauth-rfc7523bis §5: the token endpoint URL only as a deployment's explicit choice."""
    from oidc_fixtures import Provider

    op = Provider(make_app({**base_env, "CLIENT_ASSERTION_ACCEPT_TOKEN_ENDPOINT_AUDIENCE": "true"}))
    key, client_id = _assertion_client(op)
    assert _assert_with(op, _assertion(key, client_id, f"{ISSUER}/token")).status_code == 200
    assert _assert_with(op, _assertion(key, client_id, [f"{ISSUER}/token"])).json["error"] == "invalid_client"


def test_assertion_jti_is_kept_as_long_as_the_assertion_is_accepted(op):
    """RFC 7523 §3 (jti replay) with the leeway: an assertion accepted until exp + leeway keeps its
    jti at least that long, so pruning at exp does not open a replay window."""
    from oidc.models import ClientAssertion

    key, client_id = _assertion_client(op)
    assertion = _assertion(key, client_id, ISSUER, lifetime=30)
    assert _assert_with(op, assertion).status_code == 200
    with op.app.app_context():
        row = ClientAssertion.query.one()
        claims = json.loads(b64d(assertion.split(".")[1]))
        assert row.expires_at >= claims["exp"] + 60  # CLIENT_ASSERTION_LEEWAY


def test_a_public_key_written_into_the_table_is_not_published(op):
    """RFC 8725 §3.1: only keys whose sealed private half opens and matches are trusted; replacing a
    software key's public JWK in the database (without the system secret) must not publish it."""
    from joserfc.jwk import ECKey
    from sqlalchemy import update

    from oidc.db import db, signing_keys
    from oidc.state import state_of

    with op.app.app_context():
        service = state_of(op.app).key_service()
        record = service.generate("partner", "ES256")
        attacker = ECKey.generate_key("P-256").as_dict(private=False)
        forged = {**record.public_jwk, "x": attacker["x"], "y": attacker["y"]}
        db.session.execute(update(signing_keys).where(signing_keys.c.kid == record.kid)
                           .values(public_jwk=json.dumps(forged, sort_keys=True)))
        db.session.commit()
        with pytest.raises(SealingError, match=r"failed authentication|does not match"):
            service.refresh()  # the snapshot with the forged key is never adopted
        service.refresh_seconds = 0
        published = [jwk for jwk in json.loads(service.jwks_document()[0])["keys"] if jwk["kid"] == record.kid]
    assert published == [record.public_jwk]  # still the genuine one


def test_a_software_key_published_beside_hsm_keys_is_published_only_if_it_opens(hsm_op):
    """RFC 8725 §3.1: in a set the HSM serves, software keys are published without signing; each is
    published only if its sealed private key opens and matches the public JWK in its row."""
    from joserfc.jwk import ECKey
    from sqlalchemy import update

    from oidc.db import db, signing_keys
    from oidc.state import state_of

    op = hsm_op
    with op.app.app_context():
        service = state_of(op.app).key_service()
        assert service.backend_of("openid.id-token") == "hsm"
        private = ECKey.generate_key("P-256", parameters={"kid": "beside-the-hsm"}).as_dict(private=True)
        record = service.software.import_jwk("openid.id-token", private, created_at=0, active_at=0)
        service.refresh()
        assert record.public_jwk in json.loads(service.jwks_document()[0])["keys"]
        attacker = ECKey.generate_key("P-256").as_dict(private=False)
        forged = {**record.public_jwk, "x": attacker["x"], "y": attacker["y"]}
        db.session.execute(update(signing_keys).where(signing_keys.c.kid == record.kid)
                           .values(public_jwk=json.dumps(forged, sort_keys=True)))
        db.session.commit()
        service.refresh()
        kids = [jwk["kid"] for jwk in json.loads(service.jwks_document()[0])["keys"]]
    assert "beside-the-hsm" not in kids


def test_rows_sealed_before_the_public_key_was_bound_still_open_and_reseal_upgrades_them(make_app, base_env):
    """RFC 8725 §3.1 without a flag day: a row sealed in format 1 (set and kid only) still opens, is
    checked against its public JWK, and `keys reseal` rewrites it in format 2 (public JWK bound)."""
    import os

    from sqlalchemy import select, update

    from keys.sealing import associated_data
    from oidc.db import db, signing_keys
    from oidc.state import state_of

    from support import build_key_service, start_key_service

    app = make_app(base_env)
    service = start_key_service(app)
    record = next(status.record for status in service.keys("jwt.access-token"))
    sealer = state_of(app).sealer()
    with app.app_context():
        sealed = db.session.execute(select(signing_keys.c.sealed_private)
                                    .where(signing_keys.c.kid == record.kid)).scalar_one()
        der = sealer.open(sealed, key_set=record.key_set, kid=record.kid, public_jwk=record.public_jwk)
        key = sealer._keys[0]
        nonce = os.urandom(12)
        v1 = b"\x01" + key.fingerprint + nonce + key.aead.encrypt(nonce, der, associated_data(record.key_set,
                                                                                           record.kid))
        db.session.execute(update(signing_keys).where(signing_keys.c.kid == record.kid).values(sealed_private=v1))
        db.session.commit()
    fresh = build_key_service(app)
    fresh.start()  # opens the format-1 row and signs with it
    assert fresh.signer("jwt.access-token").kid == record.kid
    result = app.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        resealed = db.session.execute(select(signing_keys.c.sealed_private)
                                      .where(signing_keys.c.kid == record.kid)).scalar_one()
    assert resealed[:1] == b"\x02"
    build_key_service(app).start()
