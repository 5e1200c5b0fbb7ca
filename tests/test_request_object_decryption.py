"""Encrypted request objects decrypted by the key service (RFC 9101 §6.1, RFC 7516, RFC 7518 §4.3).

The decryption set ``openid.request-object`` (``use: enc``) on three real modules
(SoftHSM2, SoftHSM2 behind ``p11-kit server``, openCryptoki's soft token) and in
software; JWEs are built by jwcrypto, a library we do not write, to the public key
as the JWKS publishes it, and decrypted by the service, the content key by
``C_Decrypt`` with ``CKM_RSA_PKCS_OAEP`` on the token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from pkcs11 import Attribute, ObjectClass
from test_hsm_manager import published, token_session

from keys.errors import (
    DecryptionError,
    DecryptionFailed,
    HSMError,
    HSMUnavailable,
    MalformedJWE,
    MechanismUnsupported,
    UnknownDecryptionKey,
    UnsupportedEncryption,
    WrongKeyUse,
)
from keys.hsm import PKCS11_LOCK
from keys.jwe import MAX_TOKEN_LENGTH
from keys.service import ID_TOKEN_SET, REQUEST_OBJECT_SET

from support import start_key_service

ROOT = Path(__file__).resolve().parent.parent
FAST = {"HSM_RETRY_INITIAL_SECONDS": "0.2", "HSM_RETRY_MAX_SECONDS": "1"}
ENC = {"REQUEST_OBJECT_ENCRYPTION_ALG": "RSA-OAEP-256"}
ECDH = {"REQUEST_OBJECT_ENCRYPTION_ALG": "ECDH-ES"}
ENCS = ["A256GCM", "A128CBC-HS256"]


def encryption_key(app: Any) -> dict[str, Any]:
    """The decryption set's key as the JWKS publishes it (the only ``use: enc`` key there)."""
    keys = [jwk for jwk in published(app).values() if jwk.get("use") == "enc"]
    assert len(keys) == 1, keys
    return keys[0]


def encrypt(jwk: dict[str, Any], plaintext: bytes, *, enc: str = "A256GCM", kid: bool = True,
            alg: str | None = None, **header: Any) -> str:
    """A compact JWE built by jwcrypto to the published public key."""
    protected = {"alg": alg or jwk["alg"], "enc": enc, **({"kid": jwk["kid"]} if kid else {}), **header}
    token = jwcrypto_jwe.JWE(plaintext, json.dumps(protected), algs=[protected["alg"], enc])
    members = ("kty", "n", "e") if jwk["kty"] == "RSA" else ("kty", "crv", "x", "y")
    token.add_recipient(jwcrypto_jwk.JWK(**{name: jwk[name] for name in members}))
    return str(token.serialize(compact=True))


def request_object(client_key: jwcrypto_jwk.JWK, client_id: str = "client-1") -> str:
    """A request object signed (PS256) by a client with jwcrypto."""
    claims = {"iss": client_id, "aud": "https://op.example.test", "client_id": client_id, "response_type": "code",
              "scope": "openid", "exp": int(time.time()) + 300, "nonce": uuid.uuid4().hex}
    signed = jwcrypto_jws.JWS(json.dumps(claims).encode())
    signed.add_signature(client_key, alg="PS256", protected=json.dumps({"alg": "PS256",
                                                                        "typ": "oauth-authz-req+jwt"}))
    return str(signed.serialize(compact=True))


def tamper(token: str, part: int) -> str:
    """``token`` with one character of part ``part`` changed (a valid base64url character still)."""
    parts = token.split(".")
    segment = parts[part]
    parts[part] = segment[:-2] + ("A" if segment[-2] != "A" else "B") + segment[-1]
    return ".".join(parts)


def private_key_attributes(library: str, pin: str, token_label: str, key_label: str) -> list[dict[str, Any]]:
    with PKCS11_LOCK:
        token = pkcs11.lib(library).get_token(token_label=token_label)
        try:
            session = token.open(user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            session = token.open()
        try:
            return [{name: key[attribute] for name, attribute in (
                ("sign", Attribute.SIGN), ("decrypt", Attribute.DECRYPT), ("unwrap", Attribute.UNWRAP),
                ("derive", Attribute.DERIVE),
                ("sensitive", Attribute.SENSITIVE), ("extractable", Attribute.EXTRACTABLE),
                ("never_extractable", Attribute.NEVER_EXTRACTABLE), ("local", Attribute.LOCAL))}
                for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key_label})]
        finally:
            session.close()


def check_decrypts(app: Any, service: Any) -> dict[str, Any]:
    """JWEs from jwcrypto with each ``enc``, with and without ``kid``, decrypted by the service."""
    jwk = encryption_key(app)
    for enc in ENCS:
        for kid in (True, False):
            plaintext = f"request object, {enc}, kid {kid}".encode()
            assert service.decrypt(REQUEST_OBJECT_SET, encrypt(jwk, plaintext, enc=enc, kid=kid)) == plaintext
    return jwk


# -- on SoftHSM2 ----------------------------------------------------------------------------------


@pytest.fixture
def hsm_service(make_app: Any, hsm_env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    app = make_app({**hsm_env, **ENC, "HSM_ONLY_KEY_SETS": REQUEST_OBJECT_SET})
    yield app, start_key_service(app)


def test_softhsm_decrypts_jwes_built_by_jwcrypto_with_the_key_it_generated(hsm_service, softhsm, token):
    app, service = hsm_service
    jwk = check_decrypts(app, service)
    # SoftHSM 2.6's OAEP takes SHA-1 only: what works is published and advertised, nothing else.
    assert service.hsm.oaep_hashes(service.keys(REQUEST_OBJECT_SET)[0].record) == ("sha1",)
    assert jwk["alg"] == "RSA-OAEP" and jwk["use"] == "enc" and jwk["kty"] == "RSA"
    assert service.decryption_algorithms(REQUEST_OBJECT_SET) == (("RSA-OAEP",), ("A256GCM", "A128CBC-HS256"))
    assert service.backend_of(REQUEST_OBJECT_SET) == "hsm"
    document = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert document["request_object_encryption_alg_values_supported"] == ["RSA-OAEP"]
    assert document["request_object_encryption_enc_values_supported"] == ["A256GCM", "A128CBC-HS256"]
    # The token refuses RSA-OAEP-256 with its key, and so does the service, by name.
    with pytest.raises(UnsupportedEncryption, match="RSA-OAEP-256"):
        service.decrypt(REQUEST_OBJECT_SET, encrypt(jwk, b"x", alg="RSA-OAEP-256"))


def test_the_private_key_decrypts_only_never_signs_never_leaves_the_token(hsm_service, softhsm, token, tmp_path):
    app, service = hsm_service
    [attributes] = private_key_attributes(softhsm.library, softhsm.pin, token, REQUEST_OBJECT_SET)
    assert attributes == {"sign": False, "decrypt": True, "unwrap": False, "derive": False, "sensitive": True,
                          "extractable": False, "never_extractable": True, "local": True}
    kid = encryption_key(app)["kid"]
    with token_session(softhsm, token) as session:
        [public] = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                             Attribute.LABEL: REQUEST_OBJECT_SET}))
        assert public[Attribute.ENCRYPT] is True and public[Attribute.VERIFY] is False
        [private] = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                              Attribute.LABEL: REQUEST_OBJECT_SET}))
        assert bytes(private[Attribute.ID]).decode() == kid
    # The token itself refuses a signature with it (CKA_SIGN is false), not only our code: asked by
    # another program (OpenSC's pkcs11-tool).
    data = tmp_path / "data"
    data.write_bytes(b"\x00" * 32)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        softhsm.pkcs11_tool("--sign", "--id", kid.encode().hex(), "-m", "SHA256-RSA-PKCS", "--input-file",
                            str(data), "--output-file", str(tmp_path / "signature"), label=token)
    assert "CKR_KEY_FUNCTION_NOT_PERMITTED" in refused.value.stderr + refused.value.stdout
    # The evidence (``keys list --evidence``) shows it: on the token, use enc, decrypting with OAEP.
    [evidence] = service.evidence(REQUEST_OBJECT_SET)
    assert evidence.use == "enc" and evidence.backend == "hsm" and evidence.hsm_only_shortfalls() == []
    assert evidence.capabilities == {"CKA_SIGN": False, "CKA_DECRYPT": True, "CKA_UNWRAP": False, "CKA_DERIVE": False}
    assert evidence.decryption_mechanism_description == "CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA-1)"
    listed = json.loads(app.test_cli_runner().invoke(args=["keys", "list", "--evidence", "--json"]).output)
    [row] = [item for item in listed if item["set"] == REQUEST_OBJECT_SET]
    assert row["use"] == "enc" and row["kid"] == kid and row["attributes"]["CKA_EXTRACTABLE"] is False
    text = app.test_cli_runner().invoke(args=["keys", "list", "--evidence"]).output
    assert f"{REQUEST_OBJECT_SET}\t{kid}\tRSA-OAEP\ttoken" in text and "decrypts (use enc) with CKM_RSA_PKCS_OAEP" in text


def test_a_signing_key_never_decrypts_and_a_decryption_key_never_signs(hsm_service, softhsm, token):
    app, service = hsm_service
    jwk = encryption_key(app)
    with pytest.raises(WrongKeyUse, match="never signs"):
        service.signer(REQUEST_OBJECT_SET)
    with pytest.raises(WrongKeyUse, match="never decrypts"):
        service.decrypt(ID_TOKEN_SET, encrypt(jwk, b"x"))
    enc_record = service.keys(REQUEST_OBJECT_SET)[0].record
    sig_record = service.signer(ID_TOKEN_SET).record
    with pytest.raises(WrongKeyUse):
        service.hsm.signer(enc_record)
    with pytest.raises(WrongKeyUse):
        service.hsm.sign(enc_record, None, b"x")
    with pytest.raises(WrongKeyUse):
        service.hsm.decrypter(sig_record)
    with pytest.raises(WrongKeyUse):
        service.software.signer(enc_record)
    with pytest.raises(WrongKeyUse):
        service.software.decrypter(sig_record)
    # Nor does rotation (or an import) put a signing key into the decryption set, or the reverse.
    with pytest.raises(WrongKeyUse):
        service.generate(REQUEST_OBJECT_SET, "PS256")
    with pytest.raises(WrongKeyUse):
        service.generate(ID_TOKEN_SET, "RSA-OAEP-256")
    with pytest.raises(WrongKeyUse, match="generated, not imported"):
        service.import_jwk(REQUEST_OBJECT_SET, jwcrypto_jwk.JWK.generate(kty="RSA", size=2048).export(as_dict=True))


def test_a_nested_jwe_around_a_signed_request_object_decrypts_to_the_jws(hsm_service):
    app, service = hsm_service
    client_key = jwcrypto_jwk.JWK.generate(kty="RSA", size=2048)
    signed = request_object(client_key)
    nested = encrypt(encryption_key(app), signed.encode(), cty="JWT")
    inner = service.decrypt(REQUEST_OBJECT_SET, nested).decode()
    assert inner == signed
    verified = jwcrypto_jws.JWS()
    verified.deserialize(inner)
    verified.verify(client_key)  # the client's signature, untouched by the round trip
    assert json.loads(verified.payload)["client_id"] == "client-1"


def test_bad_jwes_are_refused_with_an_error_that_names_what_is_wrong(hsm_service):
    app, service = hsm_service
    jwk = encryption_key(app)
    good = encrypt(jwk, b"request object")
    attempts_before = service.hsm.reconnect_attempts
    refusals: list[tuple[str, type[DecryptionError], str]] = [
        (encrypt({**jwk, "kid": "not-ours"}, b"x"), UnknownDecryptionKey, "not-ours"),
        (tamper(good, 4), DecryptionFailed, "does not decrypt"),  # the tag
        (tamper(good, 3), DecryptionFailed, "does not decrypt"),  # the ciphertext
        (tamper(good, 1), DecryptionFailed, "does not decrypt"),  # the encrypted key: OAEP refuses it on the token
        (encrypt(jwk, b"x", enc="A128GCM"), UnsupportedEncryption, "A128GCM"),
        (encrypt(jwk, b"x", alg="RSA1_5"), UnsupportedEncryption, "RSA1_5"),
        (good.rsplit(".", 1)[0], MalformedJWE, "5 parts"),
        (good + ".x", MalformedJWE, "5 parts"),
        ("e30." + good.split(".", 1)[1], MalformedJWE, "'alg' and 'enc'"),
        ("!!!." + good.split(".", 1)[1], MalformedJWE, "base64url"),
        ("A" * 3000 + "." + good.split(".", 1)[1], MalformedJWE, "protected header"),
        (good + "A" * MAX_TOKEN_LENGTH, MalformedJWE, "at most"),
    ]
    for token, error, words in refusals:
        with pytest.raises(error, match=words):
            service.decrypt(REQUEST_OBJECT_SET, token)
    # A ciphertext the token refuses (CKR_GENERAL_ERROR on SoftHSM) is the sender's fault: the token
    # was never reopened or re-initialised for it, and it still decrypts.
    assert service.hsm.reconnect_attempts == attempts_before and service.hsm.available
    assert service.decrypt(REQUEST_OBJECT_SET, good) == b"request object"


@pytest.mark.both_databases
def test_rotation_publishes_the_next_key_first_and_every_published_key_decrypts(hsm_service):
    app, service = hsm_service
    old = encryption_key(app)
    new = service.generate(REQUEST_OBJECT_SET)
    assert new.use == "enc" and new.backend == "hsm"
    statuses = {status.record.kid: status.status for status in service.keys(REQUEST_OBJECT_SET)}
    assert statuses == {old["kid"]: "active", new.kid: "next"}
    jwks = published(app)
    assert jwks[new.kid]["use"] == "enc" and jwks[new.kid]["alg"] == old["alg"]
    for jwk in (old, jwks[new.kid]):
        for kid in (True, False):  # by kid, or each key in turn when there is none
            assert service.decrypt(REQUEST_OBJECT_SET, encrypt(jwk, jwk["kid"].encode(), kid=kid)) == jwk["kid"].encode()


def test_a_decryption_key_provisioned_by_hand_is_adopted_and_one_that_can_sign_is_not(
    make_app, hsm_env, softhsm, token, caplog
):
    """Adopt-only (HSM_GENERATE_KEYS=false).  ``pkcs11-tool --usage-decrypt`` leaves SoftHSM's CKA_SIGN on:
    that pair is not taken for decryption (nor published); one made by ``keys.provision --use enc`` is."""
    for key_set, key_type, key_id in (("openid.id-token", "rsa:2048", "sig-1"),
                                      ("jwt.access-token", "EC:prime256v1", "sig-2"),
                                      (REQUEST_OBJECT_SET, "rsa:2048", "both-1")):
        usage = "--usage-decrypt" if key_set == REQUEST_OBJECT_SET else "--usage-sign"
        softhsm.pkcs11_tool("--keypairgen", "--key-type", key_type, usage, "--label", key_set, "--id",
                            key_id.encode().hex(), "--sensitive", label=token)
    env = {**hsm_env, **ENC, "HSM_GENERATE_KEYS": "false"}
    with pytest.raises(HSMError, match="no key pair labelled 'openid\\.request-object'"):
        start_key_service(make_app(env))
    assert "key openid.request-object/both-1 is not adopted for decryption: its private key has CKA_SIGN" in caplog.text

    kid = "enc-1"
    provision = subprocess.run(
        [sys.executable, "-m", "keys.provision", "generate", "--use", "enc", "--module", softhsm.library,
         "--token-label", token, "--label", REQUEST_OBJECT_SET, "--id", kid.encode().hex(), "--key-type", "rsa:2048"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**softhsm.env(), "HSM_PIN": softhsm.pin},
    )
    assert provision.returncode == 0, provision.stderr
    objects_before = softhsm.list_objects(token)
    app = make_app(env)
    service = start_key_service(app)
    jwk = check_decrypts(app, service)
    assert jwk["kid"] == kid and service.backend_of(REQUEST_OBJECT_SET) == "hsm"
    assert "both-1" not in published(app)
    assert softhsm.list_objects(token) == objects_before  # nothing generated


def test_the_setting_names_the_algorithms_it_accepts():
    from oidc.settings import ConfigError, load_settings

    secret = "s" * 40
    with pytest.raises(ConfigError, match="REQUEST_OBJECT_ENCRYPTION_ALG must be one of RSA-OAEP-256, RSA-OAEP"):
        load_settings({"SECRETS_SYSTEM": secret, "REQUEST_OBJECT_ENCRYPTION_ALG": "RSA1_5"}, instance_path="instance")
    settings = load_settings({"SECRETS_SYSTEM": secret, **ENC}, instance_path="instance")
    assert settings.decryption_key_sets == {REQUEST_OBJECT_SET: "RSA-OAEP-256"}
    assert REQUEST_OBJECT_SET not in settings.key_set_algorithms  # the signing sets stay what they were
    assert load_settings({"SECRETS_SYSTEM": secret}, instance_path="instance").decryption_key_sets == {}


def reheader(token: str, **changes: Any) -> str:
    """``token`` with its protected header changed (so its tag no longer matches either)."""
    header, rest = token.split(".", 1)
    members = json.loads(jwcrypto_jwe.base64url_decode(header))
    members.update(changes)
    return jwcrypto_jwe.base64url_encode(json.dumps(members)) + "." + rest


def test_ecdh_es_derives_the_shared_secret_on_softhsm_and_the_kdf_runs_in_software(make_app, hsm_env, softhsm, token):
    app = make_app({**hsm_env, **ECDH, "HSM_ONLY_KEY_SETS": REQUEST_OBJECT_SET})
    service = start_key_service(app)
    jwk = check_decrypts(app, service)  # jwcrypto's ECDH-ES to the published P-256 key
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ECDH-ES", "enc")
    assert service.decryption_algorithms(REQUEST_OBJECT_SET) == (("ECDH-ES",), ("A256GCM", "A128CBC-HS256"))
    document = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert document["request_object_encryption_alg_values_supported"] == ["ECDH-ES"]
    [attributes] = private_key_attributes(softhsm.library, softhsm.pin, token, REQUEST_OBJECT_SET)
    assert attributes == {"sign": False, "decrypt": False, "unwrap": False, "derive": True, "sensitive": True,
                          "extractable": False, "never_extractable": True, "local": True}
    [evidence] = service.evidence(REQUEST_OBJECT_SET)
    assert evidence.decryption_mechanism == "CKM_ECDH1_DERIVE" and evidence.hsm_only_shortfalls() == []
    assert evidence.capabilities == {"CKA_SIGN": False, "CKA_DECRYPT": False, "CKA_UNWRAP": False, "CKA_DERIVE": True}
    nested = encrypt(jwk, request_object(jwcrypto_jwk.JWK.generate(kty="RSA", size=2048)).encode(), cty="JWT")
    assert service.decrypt(REQUEST_OBJECT_SET, nested).count(b".") == 2
    # apu/apv enter the Concat KDF (RFC 7518 §4.6.2): as jwcrypto puts them there, we take them out.
    parties = {"apu": jwcrypto_jwe.base64url_encode("client-1"), "apv": jwcrypto_jwe.base64url_encode("op")}
    for enc in ENCS:
        assert service.decrypt(REQUEST_OBJECT_SET, encrypt(jwk, b"parties", enc=enc, **parties)) == b"parties"
    good = encrypt(jwk, b"x")
    other_curve = jwcrypto_jwk.JWK.generate(kty="EC", crv="P-384").export_public(as_dict=True)
    off_curve = {**json.loads(jwcrypto_jwe.base64url_decode(good.split(".")[0]))["epk"], "y": jwk["x"]}
    refusals: list[tuple[str, type[DecryptionError], str]] = [
        (reheader(good, epk=other_curve), DecryptionFailed, "does not decrypt"),
        (reheader(good, epk=off_curve), DecryptionFailed, "does not decrypt"),
        (reheader(good, epk="not a key"), DecryptionFailed, "does not decrypt"),
        (tamper(good, 4), DecryptionFailed, "does not decrypt"),
        (good.split(".")[0] + ".AAAA." + good.split(".", 2)[2], MalformedJWE, "empty encrypted key"),
        (encrypt(jwk, b"x", alg="ECDH-ES+A256KW"), UnsupportedEncryption, "ECDH-ES\\+A256KW"),
    ]
    attempts_before = service.hsm.reconnect_attempts
    for bad, error, words in refusals:
        with pytest.raises(error, match=words):
            service.decrypt(REQUEST_OBJECT_SET, bad)
    assert service.hsm.reconnect_attempts == attempts_before
    with pytest.raises(WrongKeyUse):
        service.signer(REQUEST_OBJECT_SET)


@pytest.mark.e2e
def test_ecdh_es_is_refused_at_start_where_the_token_cannot_derive(make_app, remote_hsm_env, remote_token):
    """p11-kit's client module (0.24) does not pass CKM_ECDH1_DERIVE through: said at start, never advertised."""
    app = make_app({**remote_hsm_env, **ECDH, "HSM_ONLY_KEY_SETS": REQUEST_OBJECT_SET})
    with pytest.raises(MechanismUnsupported, match="cannot decrypt ECDH-ES: the token offers no CKM_ECDH1_DERIVE"):
        start_key_service(app)


def test_ecdh_es_in_software(make_app, base_env):
    app = make_app({**base_env, **ECDH})
    service = start_key_service(app)
    jwk = check_decrypts(app, service)
    assert jwk["alg"] == "ECDH-ES" and service.backend_of(REQUEST_OBJECT_SET) == "software"


# -- behind p11-kit server, and its outage ----------------------------------------------------------


@pytest.mark.e2e
def test_decryption_through_p11_kit_and_an_outage_is_the_unavailable_error_then_503(
    make_app, remote_hsm_env, remote_token
):
    app = make_app({**remote_hsm_env, **FAST, **ENC, "HSM_ONLY_KEY_SETS": "*"})
    tokens: list[str] = []

    @app.get("/_test/decrypt")
    def _test_decrypt() -> dict[str, str]:  # a request path that decrypts, as the authorization endpoint does
        return {"plaintext": start_key_service(app).decrypt(REQUEST_OBJECT_SET, tokens[0]).decode()}

    service = start_key_service(app)
    jwk = check_decrypts(app, service)
    assert jwk["alg"] == "RSA-OAEP"  # p11-kit passes the OAEP parameters to SoftHSM 2.6 as they are
    token = encrypt(jwk, b"during an outage")
    tokens.append(token)

    client = app.test_client()
    assert client.get("/_test/decrypt").get_json() == {"plaintext": "during an outage"}
    remote_token.kill()
    with pytest.raises(HSMUnavailable):
        service.decrypt(REQUEST_OBJECT_SET, token)
    response = client.get("/_test/decrypt")
    assert response.status_code == 503 and response.get_json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    remote_token.start()
    deadline = time.monotonic() + 15
    while client.get("/_test/decrypt").status_code != 200:
        assert time.monotonic() < deadline, "decryption not back within 15 s of the token's return"
        time.sleep(0.1)
    assert service.decrypt(REQUEST_OBJECT_SET, token) == b"during an outage"


@pytest.mark.e2e
def test_a_start_without_the_token_publishes_the_stored_decryption_key_for_what_the_token_does(
    make_app, remote_hsm_env, remote_token
):
    env = {**remote_hsm_env, **FAST, **ENC, "HSM_ONLY_KEY_SETS": "*"}
    first = make_app(env)
    jwk = check_decrypts(first, start_key_service(first))
    remote_token.kill()
    app = make_app(env)  # a replacement worker, starting while the token is away
    service = start_key_service(app, degraded_ok=True)
    assert encryption_key(app) == jwk  # RSA-OAEP, as stored at generation: not the configured RSA-OAEP-256
    with pytest.raises(HSMUnavailable):
        service.decrypt(REQUEST_OBJECT_SET, encrypt(jwk, b"x"))
    assert service.health().failed[REQUEST_OBJECT_SET] == "hsm_unavailable"


# -- openCryptoki's soft token -------------------------------------------------------------------


@pytest.mark.e2e
def test_opencryptoki_decrypts_with_rsa_oaep_256_on_its_soft_token(make_app, base_env, opencryptoki):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = {**base_env, **ENC, "HSM_ENABLED": "true", "HSM_LIBRARY": opencryptoki.library,
           "HSM_TOKEN_LABEL": opencryptoki.LABEL, "HSM_PIN": opencryptoki.PIN, "HSM_KEY_SET_PREFIX": prefix,
           "HSM_ONLY_KEY_SETS": REQUEST_OBJECT_SET, "ACCESS_TOKEN_SIGNING_ALG": "PS256"}
    try:
        app = make_app(env)
        service = start_key_service(app)
        jwk = check_decrypts(app, service)
        assert jwk["alg"] == "RSA-OAEP-256"  # its OAEP takes SHA-256
        [attributes] = private_key_attributes(opencryptoki.library, opencryptoki.PIN, opencryptoki.LABEL,
                                              prefix + REQUEST_OBJECT_SET)
        assert attributes["sign"] is False and attributes["decrypt"] is True
        assert attributes["extractable"] is False and attributes["sensitive"] is True
        nested = encrypt(jwk, request_object(jwcrypto_jwk.JWK.generate(kty="RSA", size=2048)).encode(), cty="JWT")
        assert service.decrypt(REQUEST_OBJECT_SET, nested).count(b".") == 2
        with pytest.raises(DecryptionFailed):
            service.decrypt(REQUEST_OBJECT_SET, tamper(encrypt(jwk, b"x"), 1))
    finally:
        opencryptoki.destroy_labelled(prefix)


# -- in software ------------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_without_an_hsm_the_decryption_key_is_sealed_in_the_store(make_app, base_env):
    app = make_app({**base_env, **ENC})
    service = start_key_service(app)
    jwk = check_decrypts(app, service)
    assert jwk["alg"] == "RSA-OAEP-256" and service.backend_of(REQUEST_OBJECT_SET) == "software"
    assert service.store.sealed_private(REQUEST_OBJECT_SET, jwk["kid"]) is not None
    [evidence] = service.evidence(REQUEST_OBJECT_SET)
    assert evidence.use == "enc" and evidence.backend == "software"
    with pytest.raises(DecryptionFailed):
        service.decrypt(REQUEST_OBJECT_SET, tamper(encrypt(jwk, b"x"), 1))


def test_without_the_setting_there_is_no_decryption_set_and_nothing_is_advertised(make_app, base_env):
    app = make_app(base_env)
    service = start_key_service(app)
    assert not [jwk for jwk in published(app).values() if jwk.get("use") == "enc"]
    assert service.decryption_algorithms(REQUEST_OBJECT_SET) == ((), ())
    document = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert "request_object_encryption_alg_values_supported" not in document


# -- property-based: any input is refused cleanly ---------------------------------------------------

_BASE64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=80)


@pytest.fixture(scope="module")
def software_decryption(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A software decryption set on a file of its own (module-scoped: hypothesis calls the test many times)."""
    from sqlalchemy import MetaData, create_engine

    from keys.sealing import Sealer
    from keys.service import KeyService, KeySetPolicy, RotationPolicy
    from keys.software import SoftwareManager
    from keys.store import KeyStore, define_signing_keys_table

    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('jwe') / 'keys.db'}")
    metadata = MetaData()
    table = define_signing_keys_table(metadata)
    metadata.create_all(engine)
    store = KeyStore(engine, table)
    service = KeyService(key_sets=[KeySetPolicy(REQUEST_OBJECT_SET, "RSA-OAEP-256")], store=store,
                         software=SoftwareManager(store, Sealer.from_setting("x" * 32)), hsm=None,
                         rotation=RotationPolicy(prepublication_seconds=600, retention_seconds=3600), rsa_bits=2048,
                         lock=_no_lock)
    service.start()
    yield service, service.keys(REQUEST_OBJECT_SET)[0].record.public_jwk
    engine.dispose()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_lock() -> _NoLock:
    return _NoLock()


@seed(9101)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.one_of(_BASE64URL, st.dictionaries(st.sampled_from(["alg", "enc", "kid", "zip", "crit", "cty"]),
                                                 st.one_of(st.text(max_size=20), st.integers(), st.none(),
                                                           st.lists(st.text(max_size=5), max_size=2)))),
    parts=st.lists(_BASE64URL, min_size=0, max_size=6),
    cut=st.integers(min_value=0, max_value=4),
)
def test_any_input_is_decrypted_or_refused_with_a_decryption_error(software_decryption, header, parts, cut):
    service, jwk = software_decryption
    if isinstance(header, dict):
        header_segment = json.dumps(header).encode().hex()  # not base64url: refused as such, or
        header_segment = jwcrypto_jwe.base64url_encode(json.dumps(header)) if cut % 2 else header_segment
    else:
        header_segment = header
    token = ".".join([header_segment, *parts])
    # A genuine JWE with one part replaced by the drawn one, too.
    genuine = encrypt(jwk, b"x").split(".")
    if parts:
        genuine[cut] = parts[0]
    for candidate in (token, ".".join(genuine)):
        try:
            plaintext = service.decrypt(REQUEST_OBJECT_SET, candidate)
        except DecryptionError:
            continue
        assert plaintext == b"x"  # only an untouched JWE decrypts


@pytest.mark.e2e
def test_doctor_checks_the_decryption_set_like_the_signing_sets(make_app, hsm_env):
    from test_doctor import doctor, line

    env = {**hsm_env, **ENC}
    start_key_service(make_app(env))  # provisions the sets, as the first start does
    status, lines, _ = doctor(env)
    assert "CKM_RSA_PKCS_OAEP available" in line(lines, f"mechanisms {REQUEST_OBJECT_SET}")
    assert line(lines, f"keys {REQUEST_OBJECT_SET}").startswith("[ok  ]")
    assert "HSM token" in line(lines, f"backend {REQUEST_OBJECT_SET}")
    assert status == 0, lines
