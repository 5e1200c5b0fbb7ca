"""The software manager: keys sealed with AES-256-GCM in SQLite and PostgreSQL."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, update

from keys.errors import InvalidKey, SealingError, UnsupportedAlgorithm
from keys.sealing import Sealer
from oidc.db import db, signing_keys

from jose_helpers import verify
from support import build_key_service, start_key_service

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def _sealed(app, kid):
    with app.app_context():
        return db.session.execute(
            select(signing_keys.c.sealed_private).where(signing_keys.c.kid == kid)
        ).scalar_one()


def _set_sealed(app, kid, value):
    with app.app_context():
        db.session.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(sealed_private=value))
        db.session.commit()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_signs_and_verifies_with_published_key(make_app, base_env, alg):
    app = make_app({**base_env, "ID_TOKEN_SIGNING_ALG": alg})
    service = start_key_service(app)
    signer = service.signer("openid.id-token")
    assert (signer.alg, signer.backend) == (alg, "software")
    published = app.test_client().get("/.well-known/jwks.json").json["keys"]
    jwk = next(key for key in published if key["kid"] == signer.kid)
    signing_input = b"eyJhbGciOiJ0ZXN0In0.eyJzdWIiOiIxIn0"
    verify(jwk, alg, signing_input, signer.sign(signing_input))
    # A signature over other bytes must not verify with the same key.
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify(jwk, alg, signing_input + b"x", signer.sign(signing_input))


def test_default_algorithms_are_rs256_2048_and_es256(make_app, base_env):
    service = start_key_service(make_app(base_env))
    id_signer, at_signer = service.signer("openid.id-token"), service.signer("jwt.access-token")
    assert (id_signer.alg, at_signer.alg) == ("RS256", "ES256")
    from jose_helpers import public_key_from_jwk

    assert public_key_from_jwk(service.public_key(id_signer.kid)).key_size == 2048


@pytest.mark.both_databases
def test_private_keys_are_sealed_not_stored_in_clear(make_app, base_env):
    app = make_app({**base_env, "ACCESS_TOKEN_SIGNING_ALG": "EdDSA"})
    service = start_key_service(app)
    kid = service.signer("jwt.access-token").kid
    sealed = _sealed(app, kid)
    assert sealed is not None and len(sealed) > 32
    # The clear PKCS#8 of an Ed25519 key ends with the 32 secret bytes behind a fixed prefix.
    assert bytes.fromhex("302e020100300506032b657004220420") not in sealed


def test_tampered_ciphertext_is_refused(make_app, base_env):
    app = make_app(base_env)
    kid = start_key_service(app).signer("jwt.access-token").kid
    sealed = bytearray(_sealed(app, kid))
    sealed[-5] ^= 0x01
    _set_sealed(app, kid, bytes(sealed))
    fresh = build_key_service(app)
    with pytest.raises(SealingError, match="failed authentication"):
        fresh.start()


@pytest.mark.both_databases
def test_sealed_key_copied_onto_another_row_does_not_open(make_app, base_env):
    app = make_app(base_env)
    service = start_key_service(app)
    id_kid = service.signer("openid.id-token").kid
    at_kid = service.signer("jwt.access-token").kid
    # Copy the ES256 access-token key's ciphertext over the ID token row.
    _set_sealed(app, id_kid, _sealed(app, at_kid))
    fresh = build_key_service(app)
    with pytest.raises(SealingError, match="another key set"):
        fresh.start()


def test_wrong_secret_is_refused(make_app, base_env):
    app = make_app(base_env)
    start_key_service(app)
    other = make_app({**base_env, "SECRETS_SYSTEM": secrets.token_urlsafe(32)})
    with pytest.raises(SealingError, match="not in SECRETS_SYSTEM"):
        build_key_service(other).start()


@pytest.mark.parametrize("value, message", [("", "not set"), ("too-short-secret", "at least 32")])
def test_missing_or_short_secret_is_a_start_up_error(make_app, base_env, value, message):
    app = make_app({**base_env, "SECRETS_SYSTEM": value})
    with pytest.raises(SealingError, match=message):
        build_key_service(app)


def test_sealer_binds_set_and_kid():
    sealer = Sealer([secrets.token_urlsafe(32)])
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": "1"}
    sealed = sealer.seal(b"private", key_set="a", kid="1", public_jwk=jwk)
    assert sealer.open(sealed, key_set="a", kid="1", public_jwk=jwk) == b"private"
    for key_set, kid in [("b", "1"), ("a", "2"), ("a1", ""), ("", "a1")]:
        with pytest.raises(SealingError):
            sealer.open(sealed, key_set=key_set, kid=kid, public_jwk=jwk)
    with pytest.raises(SealingError, match="malformed"):
        sealer.open(b"\x01short", key_set="a", kid="1", public_jwk=jwk)


@pytest.mark.both_databases
def test_secret_rotation_with_reseal_command(make_app, base_env, system_secret):
    app = make_app(base_env)
    service = start_key_service(app)
    kids = {service.signer("openid.id-token").kid, service.signer("jwt.access-token").kid}
    new_secret = secrets.token_urlsafe(32)

    # 1. Prepend the new secret: old rows still open, new ones seal under the new secret.
    rotated = make_app({**base_env, "SECRETS_SYSTEM": f"{new_secret},{system_secret}"})
    result = rotated.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 0, result.output
    assert "re-sealed 2 key(s)" in result.output
    again = rotated.test_cli_runner().invoke(args=["keys", "reseal"])
    assert "re-sealed 0 key(s)" in again.output

    # 2. Drop the old secret: every key still opens and signs.
    only_new = make_app({**base_env, "SECRETS_SYSTEM": new_secret})
    fresh = build_key_service(only_new)
    fresh.start()
    assert {fresh.signer("openid.id-token").kid, fresh.signer("jwt.access-token").kid} == kids

    # 3. And the old secret alone no longer opens them.
    with pytest.raises(SealingError):
        build_key_service(make_app({**base_env, "SECRETS_SYSTEM": system_secret})).start()


@pytest.mark.both_databases
def test_reseal_with_an_unopenable_row_writes_nothing(make_app, base_env, system_secret):
    app = make_app(base_env)
    service = start_key_service(app)
    id_kid = service.signer("openid.id-token").kid
    at_kid = service.signer("jwt.access-token").kid
    before_at = _sealed(app, at_kid)
    _set_sealed(app, id_kid, b"\x01" + b"\x00" * 60)  # sealed under no known secret
    rotated = make_app({**base_env, "SECRETS_SYSTEM": f"{secrets.token_urlsafe(32)},{system_secret}"})
    result = rotated.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 1
    assert "not in SECRETS_SYSTEM" in result.output
    assert system_secret not in result.output
    assert _sealed(app, at_kid) == before_at  # the good row was not rewritten either


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none", "RS1", "ES256K"])
def test_symmetric_none_and_unknown_algorithms_are_refused(make_app, base_env, alg):
    from oidc.settings import ConfigError

    with pytest.raises(ConfigError, match="ID_TOKEN_SIGNING_ALG"):
        make_app({**base_env, "ID_TOKEN_SIGNING_ALG": alg})
    service = start_key_service(make_app(base_env))
    with pytest.raises(UnsupportedAlgorithm):
        service.generate("custom", alg)


@pytest.mark.filterwarnings("ignore:Key size should be")
def test_import_refuses_symmetric_public_only_and_weak_keys(make_app, base_env):
    service = start_key_service(make_app(base_env))
    with pytest.raises(UnsupportedAlgorithm, match="symmetric"):
        service.import_jwk("custom", {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "alg": "HS256"})
    with pytest.raises(UnsupportedAlgorithm):
        service.import_jwk("custom", {**ECKey.generate_key("P-256").as_dict(private=True), "alg": "HS256"})
    with pytest.raises(InvalidKey, match="no private part"):
        service.import_jwk("custom", ECKey.generate_key("P-256").as_dict(private=False))
    weak = RSAKey.import_key(rsa.generate_private_key(65537, 1024)).as_dict(private=True)
    with pytest.raises(InvalidKey, match="1024 bits is too small"):
        service.import_jwk("custom", weak)
    p384 = ECKey.import_key(ec.generate_private_key(ec.SECP384R1())).as_dict(private=True)
    with pytest.raises(InvalidKey, match="curve"):
        service.import_jwk("custom", {**p384, "alg": "ES256"})
    with pytest.raises(InvalidKey):
        service.import_jwk("custom", {"kty": "RSA", "n": "!!", "e": "AQAB", "d": "!!"})
    assert service.keys("openid.id-token")  # nothing else changed
    assert "custom" not in service.key_set_names()


def test_imported_key_signs_in_a_new_set(make_app, base_env):
    app = make_app(base_env)
    service = start_key_service(app)
    private = ECKey.import_key(ec.generate_private_key(ec.SECP256R1())).as_dict(private=True)
    record = service.import_jwk("partner.signing", {**private, "kid": "partner-1"})
    assert (record.kid, record.alg, record.backend) == ("partner-1", "ES256", "software")
    signer = service.signer("partner.signing")
    assert signer.kid == "partner-1"
    published = app.test_client().get("/.well-known/jwks.json").json["keys"]
    verify(next(k for k in published if k["kid"] == "partner-1"), "ES256", b"abc", signer.sign(b"abc"))
    with pytest.raises(InvalidKey, match="already in use"):
        service.import_jwk("partner.signing", {**private, "kid": "partner-1"})


def test_imported_key_without_kid_gets_its_thumbprint(make_app, base_env):
    service = start_key_service(make_app(base_env))
    key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    record = service.import_jwk("thumb", key.as_dict(private=True))
    assert record.kid == key.thumbprint()


def test_published_keys_have_no_private_members(make_app, base_env):
    app = make_app(base_env)
    service = start_key_service(app)
    service.import_jwk("rsa.imported", RSAKey.import_key(rsa.generate_private_key(65537, 2048)).as_dict(private=True))
    service.generate("ed.custom", "EdDSA")
    keys = app.test_client().get("/.well-known/jwks.json").json["keys"]
    assert len(keys) == 4
    for jwk in keys:
        assert PRIVATE_MEMBERS.isdisjoint(jwk), jwk
        assert {"kid", "kty", "alg", "use"} <= set(jwk)
        assert jwk["use"] == "sig"
