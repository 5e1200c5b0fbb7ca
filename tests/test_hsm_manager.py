"""The key service on a real SoftHSM2 token: generation, provisioning by hand,
rotation, fail-closed sets, lost sessions and start-up errors.

Signatures are verified here with ``cryptography`` alone, from the public keys
as the provider publishes them: nothing under ``keys/`` checks its own work.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pkcs11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeSensitive, KeyUnextractable, UserAlreadyLoggedIn
from pkcs11.util.ec import encode_ec_public_key
from sqlalchemy import func, select

from keys.errors import HSMError, InvalidKey, NoSigningKey
from keys.hsm import PKCS11_LOCK, HSMConfig, HSMManager
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET
from oidc.db import db, signing_keys
from oidc.state import key_service, state_of

from support import start_key_service

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
WRONG_PIN = "wrong-pin-5551-zz"


# -- independent JWS verification (cryptography only) ----------------------------------

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def key_from_jwk(jwk: dict[str, Any]) -> Any:
    """A ``cryptography`` public key rebuilt from the members of a published JWK."""
    assert not _PRIVATE_MEMBERS & set(jwk), f"published JWK has private members: {sorted(jwk)}"
    if jwk["kty"] == "RSA":
        n = int.from_bytes(b64url_decode(jwk["n"]), "big")
        e = int.from_bytes(b64url_decode(jwk["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if jwk["kty"] == "EC":
        curve, size = _CURVES[jwk["crv"]]
        x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
        assert len(x) == len(y) == size, "EC coordinates are fixed-width (RFC 7518 §6.2.1.2)"
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()).public_key()
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519", jwk
    return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))


def verify_signature(jwk: dict[str, Any], signing_input: bytes, signature: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` is a valid JWS signature by ``jwk``."""
    alg = jwk["alg"]
    key = key_from_jwk(jwk)
    if alg == "EdDSA":
        assert jwk["kty"] == "OKP"
        key.verify(signature, signing_input)
        return
    digest = _HASHES[alg[2:]]()
    if alg.startswith("RS"):
        assert jwk["kty"] == "RSA"
        key.verify(signature, signing_input, padding.PKCS1v15(), digest)
    elif alg.startswith("PS"):
        assert jwk["kty"] == "RSA"
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)  # RFC 7518 §3.5
        key.verify(signature, signing_input, pss, digest)
    else:
        assert jwk["kty"] == "EC" and {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg] == jwk["crv"]
        size = _CURVES[jwk["crv"]][1]
        assert len(signature) == 2 * size, "an ES signature is the raw, fixed-width r||s"
        r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))


def signing_input_for(kid: str, alg: str) -> bytes:
    header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iss": "https://op.example.test", "sub": "alice", "iat": int(time.time())}).encode())
    return f"{header}.{claims}".encode()


def published(app: Any) -> dict[str, dict[str, Any]]:
    """The JWK Set served at ``/.well-known/jwks.json``, by kid."""
    response = app.test_client().get("/.well-known/jwks.json")
    assert response.status_code == 200
    return {jwk["kid"]: jwk for jwk in response.get_json()["keys"]}


def sign_and_verify(app: Any, service: Any, key_set: str) -> Any:
    """Sign through the service's signer and verify with the key the app publishes."""
    signer = service.signer(key_set)
    signing_input = signing_input_for(signer.kid, signer.alg)
    signature = signer.sign(signing_input)
    jwk = published(app)[signer.kid]
    assert jwk["alg"] == signer.alg and jwk["use"] == "sig"
    verify_signature(jwk, signing_input, signature)
    return signer


def add_signing_route(app: Any) -> None:
    """A request path that signs through the app's key service (as the token endpoint does)."""

    @app.get("/_test/sign/<key_set>")
    def _test_sign(key_set: str) -> dict[str, str]:
        signer = key_service().signer(key_set)
        signing_input = signing_input_for(signer.kid, signer.alg)
        return {"kid": signer.kid, "input": signing_input.decode(), "signature": b64url(signer.sign(signing_input))}


def check_signing_request(app: Any, key_set: str) -> str:
    response = app.test_client().get(f"/_test/sign/{key_set}")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    verify_signature(published(app)[body["kid"]], body["input"].encode(), b64url_decode(body["signature"]))
    return body["kid"]


def store_rows(app: Any) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(signing_keys)).scalar_one()


def ec_private_jwk(kid: str) -> tuple[dict[str, str], ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()
    jwk = {
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
        "x": b64url(numbers.public_numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.public_numbers.y.to_bytes(32, "big")),
        "d": b64url(numbers.private_value.to_bytes(32, "big")),
    }
    return jwk, key


def delete_pairs(softhsm: Any, token: str, key_label: str) -> None:
    """Destroy every key pair labelled ``key_label`` from another process, as an operator would."""
    ids = {obj["ID"] for obj in softhsm.list_objects(token) if obj.get("label") == key_label}
    for cka_id in ids:
        for kind in ("privkey", "pubkey"):
            softhsm.pkcs11_tool("--delete-object", "--type", kind, "--id", cka_id, label=token)
    assert softhsm.key_objects(token, key_label) == {"private": 0, "public": 0}


@contextlib.contextmanager
def token_session(softhsm: Any, label: str) -> Iterator[Any]:
    """A session of our own on the token, for reading attributes back.

    Login state is per token per process: when a manager is already logged in,
    a plain session shares its login (and closing it does not log anyone out).
    """
    with PKCS11_LOCK:
        token = pkcs11.lib(softhsm.library).get_token(token_label=label)
        try:
            session = token.open(rw=True, user_pin=softhsm.pin)
        except UserAlreadyLoggedIn:
            session = token.open(rw=True)
        try:
            yield session
        finally:
            session.close()


class _FunctionList(ctypes.Structure):
    """The head of CK_FUNCTION_LIST (PKCS#11 v2.40 §5.15), up to C_Logout."""

    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)] + [
        (name, ctypes.c_void_p) for name in (
            "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo",
            "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
            "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState",
            "C_SetOperationState", "C_Login", "C_Logout",
        )
    ]


def _call_module(library: str, function: str, argument: int) -> None:
    """Call a PKCS#11 function python-pkcs11 does not offer, on the module this process loaded.

    dlopen() of the same path returns the same module instance, so this acts
    on the manager's sessions and login too.
    """
    function_list = ctypes.POINTER(_FunctionList)()
    module = ctypes.CDLL(library)
    with PKCS11_LOCK:
        assert module.C_GetFunctionList(ctypes.byref(function_list)) == 0
        pointer = getattr(function_list.contents, function)
        assert ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong)(pointer)(argument) == 0


def close_all_sessions(library: str, slot_id: int) -> None:
    """``C_CloseAllSessions``: every session of this process on the slot, logged out and closed."""
    _call_module(library, "C_CloseAllSessions", slot_id)


def log_out(library: str, session_handle: int) -> None:
    """``C_Logout`` through any session: the login is per token per process, so all lose it."""
    _call_module(library, "C_Logout", session_handle)


# -- 1. every algorithm, verified with the published key --------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_signs_on_the_hsm_and_verifies_with_the_published_key(make_app, hsm_env, softhsm, token, alg):
    app = make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": alg, "ACCESS_TOKEN_SIGNING_ALG": alg})
    service = start_key_service(app)
    jwks = published(app)
    assert len(jwks) == 2
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        signer = sign_and_verify(app, service, key_set)
        assert (signer.alg, signer.backend) == (alg, "hsm")
        assert softhsm.key_objects(token, key_set) == {"private": 1, "public": 1}
        jwk = jwks[signer.kid]
        expected = {"RS256": ("RSA", None), "PS256": ("RSA", None), "ES256": ("EC", "P-256"),
                    "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"), "EdDSA": ("OKP", "Ed25519")}[alg]
        assert (jwk["kty"], jwk.get("crv")) == expected
        if jwk["kty"] == "RSA":
            assert key_from_jwk(jwk).key_size == 2048

        # The verification above is not vacuous: another input, or another key, fails.
        signature = signer.sign(b"header.claims")
        with pytest.raises(InvalidSignature):
            verify_signature(jwk, b"header.claimz", signature)
        other = next(other for kid, other in jwks.items() if kid != signer.kid)
        with pytest.raises(InvalidSignature):
            verify_signature(other, b"header.claims", signature)


# -- 2. what generation leaves on the token ---------------------------------------------------


def _public_key_on_token(public: Any) -> Any:
    """The public key rebuilt from the token's own attributes (not from the manager)."""
    if public[Attribute.KEY_TYPE] == KeyType.RSA:
        return rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"), int.from_bytes(public[Attribute.MODULUS], "big")
        ).public_key()
    if public[Attribute.KEY_TYPE] == KeyType.EC:
        return load_der_public_key(encode_ec_public_key(public))
    point = bytes(public[Attribute.EC_POINT])
    assert point[:2] == b"\x04\x20"  # Ed25519: a DER OCTET STRING of 32 bytes
    return ed25519.Ed25519PublicKey.from_public_bytes(point[2:])


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generated_key_pairs_are_labelled_and_the_private_key_never_leaves_the_token(manager, softhsm, token, alg):
    record = manager.generate("openid.id-token", alg, rsa_bits=2048)
    assert record.backend == "hsm" and record.alg == alg

    with token_session(softhsm, token) as session:
        privates = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        publics = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
        assert len(privates) == len(publics) == 1
        private, public = privates[0], publics[0]
        for obj in (private, public):
            assert obj[Attribute.LABEL] == "acme.openid.id-token"
            assert obj[Attribute.ID] == record.kid.encode("ascii")
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.ALWAYS_SENSITIVE] is True and private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.SIGN] is True
        assert private[Attribute.DECRYPT] is False and private[Attribute.UNWRAP] is False
        assert public[Attribute.TOKEN] is True and public[Attribute.VERIFY] is True

        secret_parts = [Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.PRIME_2] if alg[0] in "RP" else [
            Attribute.VALUE]
        for attribute in secret_parts:
            with pytest.raises(AttributeSensitive):
                private[attribute]
        # Nor can it be wrapped out under a key of our own.
        wrapping_key = session.generate_key(KeyType.AES, 256, store=False, template={Attribute.WRAP: True})
        with pytest.raises(KeyUnextractable):
            wrapping_key.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)

        # The published JWK is the token's own public key.
        spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert key_from_jwk(record.public_jwk).public_bytes(*spki) == _public_key_on_token(public).public_bytes(*spki)

    signing_input = signing_input_for(record.kid, alg)
    verify_signature(record.public_jwk, signing_input, manager.signer(record).sign(signing_input))
    assert softhsm.key_objects(token, "acme.openid.id-token") == {"private": 1, "public": 1}


# -- 3. key pairs provisioned by hand for Ory Hydra ------------------------------------------


def test_key_pairs_provisioned_for_hydra_are_used_as_they_are(make_app, hsm_env, softhsm, token):
    softhsm.keypairgen(token, "rsa:4096", "hydra.openid.id-token", "746573742d6b65792d6964")
    softhsm.keypairgen(token, "EC:prime256v1", "hydra.jwt.access-token", "c0ffee01")
    before = softhsm.list_objects(token)
    assert len(before) == 4

    app = make_app({**hsm_env, "HSM_KEY_SET_PREFIX": "hydra."})
    service = start_key_service(app)
    jwks = published(app)
    assert {kid: jwk["alg"] for kid, jwk in jwks.items()} == {"test-key-id": "RS256", "c0ffee01": "ES256"}
    assert key_from_jwk(jwks["test-key-id"]).key_size == 4096
    assert jwks["c0ffee01"]["crv"] == "P-256"

    assert sign_and_verify(app, service, ID_TOKEN_SET).kid == "test-key-id"
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == "c0ffee01"
    assert {service.backend_of(ID_TOKEN_SET), service.backend_of(ACCESS_TOKEN_SET)} == {"hsm"}

    # Nothing generated: the same objects on the token, no key in the database.
    assert softhsm.list_objects(token) == before
    assert store_rows(app) == 0


# -- 4. several key pairs in one set ---------------------------------------------------------


def test_several_key_pairs_in_a_set_are_published_and_the_newest_active_one_signs(make_app, hsm_env, softhsm, token):
    softhsm.keypairgen(token, "EC:prime256v1", ACCESS_TOKEN_SET, "01")  # by hand: active since forever
    app = make_app(hsm_env)
    service = start_key_service(app)
    now = [time.time()]
    service.clock = lambda: now[0]
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == "01"

    first = service.generate(ACCESS_TOKEN_SET)
    now[0] += 60
    second = service.generate(ACCESS_TOKEN_SET)
    assert first.backend == second.backend == "hsm"
    assert second.active_at == first.active_at + 60 > now[0]
    assert softhsm.key_objects(token, ACCESS_TOKEN_SET) == {"private": 3, "public": 3}
    assert {"01", first.kid, second.kid} <= set(published(app))
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == "01"  # neither is active yet

    now[0] = first.active_at
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == first.kid
    now[0] = second.active_at - 1
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == first.kid
    now[0] = second.active_at
    service.refresh()
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == second.kid
    statuses = {status.record.kid: status.status for status in service.keys(ACCESS_TOKEN_SET)}
    assert statuses == {"01": "previous", first.kid: "previous", second.kid: "active"}
    assert {"01", first.kid, second.kid} <= set(published(app))


def test_several_hand_provisioned_key_pairs_of_a_set_are_all_published_and_kept(make_app, hsm_env, softhsm, token):
    for cka_id in ("01", "02", "03"):
        softhsm.keypairgen(token, "EC:prime256v1", ACCESS_TOKEN_SET, cka_id)
    app = make_app({**hsm_env, "HSM_DESTROY_RETIRED_KEYS": "true"})
    service = start_key_service(app)
    # No creation time on the token: the service's order (active_at, created_at, kid) picks the last kid.
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == "03"
    assert {"01", "02", "03"} <= set(published(app))
    # Nothing says when "03" took over from the others: they are never retired
    # (nor, with HSM_DESTROY_RETIRED_KEYS, destroyed) on their own, however late it is.
    service.clock = lambda: time.time() + 10 * 365 * 24 * 3600
    service.refresh()
    assert {"01", "02", "03"} <= set(published(app))
    assert service.retire_expired() == []
    assert softhsm.key_objects(token, ACCESS_TOKEN_SET) == {"private": 3, "public": 3}


# -- 6. sessions lost under a worker ----------------------------------------------------------


def test_signing_recovers_when_the_session_is_closed_behind_the_managers_back(make_app, hsm_env, softhsm, token):
    app = make_app(hsm_env)
    add_signing_route(app)
    service = start_key_service(app)
    hsm = service.hsm
    kids = {key_set: sign_and_verify(app, service, key_set).kid for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET)}
    assert hsm.reconnects == 0

    # The manager's own session, closed (and logged out) under it.
    with PKCS11_LOCK:
        hsm._session.close()
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert sign_and_verify(app, service, key_set).kid == kids[key_set]
    assert hsm.reconnects == 1

    # Every session of this process on the slot closed at once; then a request that signs.
    close_all_sessions(softhsm.library, softhsm.slot_id(token))
    assert check_signing_request(app, ID_TOKEN_SET) == kids[ID_TOKEN_SET]
    assert check_signing_request(app, ACCESS_TOKEN_SET) == kids[ACCESS_TOKEN_SET]
    assert hsm.reconnects == 2

    # The whole module finalised and initialised again.
    with PKCS11_LOCK:
        pkcs11.lib(softhsm.library).reinitialize()
    assert check_signing_request(app, ACCESS_TOKEN_SET) == kids[ACCESS_TOKEN_SET]
    assert hsm.reconnects == 3
    assert hsm.is_usable()

    # Recovering found the same keys again; it never generated new ones.
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert softhsm.key_objects(token, key_set) == {"private": 1, "public": 1}


def test_a_login_lost_behind_the_managers_back_does_not_hide_the_key_pairs(softhsm, token):
    config = HSMConfig(library=softhsm.library, pin=softhsm.pin, token_label=token)
    first = HSMManager(config)
    first.open()
    record = first.generate(ID_TOKEN_SET, "ES256", rsa_bits=2048)
    second = HSMManager(config)
    second.open()  # login is per token per process: this one shares the first one's
    try:
        assert [found.kid for found in second.records(ID_TOKEN_SET)] == [record.kid]
        # python-pkcs11 logs the whole process out when the logged-in session closes;
        # the second manager's session stays valid but can no longer see private objects.
        first.close()
        assert [found.kid for found in second.records(ID_TOKEN_SET)] == [record.kid]
        assert second.reconnects == 1
        signing_input = signing_input_for(record.kid, "ES256")
        verify_signature(record.public_jwk, signing_input, second.signer(record).sign(signing_input))
        # Logged out again, now through a session of the first manager: a readiness check heals it.
        first.open()
        log_out(softhsm.library, first._session.handle)
        first.close()
        assert second.is_usable()
        assert [found.kid for found in second.records(ID_TOKEN_SET)] == [record.kid]
        assert second.reconnects == 2
    finally:
        second.close()


@pytest.mark.both_databases
def test_a_lost_login_does_not_turn_an_hsm_set_into_a_software_one(make_app, hsm_env, softhsm, token):
    first_app = make_app(hsm_env)
    first = start_key_service(first_app)
    second_app = make_app(hsm_env)
    second = start_key_service(second_app)
    kid = first.signer(ID_TOKEN_SET).kid
    assert second.signer(ID_TOKEN_SET).kid == kid

    first.hsm.close()  # logs this process out of the token
    second.refresh()
    assert second.backend_of(ID_TOKEN_SET) == "hsm"
    assert sign_and_verify(second_app, second, ID_TOKEN_SET).kid == kid
    assert set(published(second_app)) == set(published(first_app))


# -- 7. an HSM that cannot be used at start-up ------------------------------------------------


@pytest.mark.parametrize("case", ["missing library", "not a PKCS#11 module", "unknown label", "wrong PIN", "no such slot"])
def test_unusable_hsm_stops_start_up_with_one_clear_line_and_no_pin(
    make_app, hsm_env, softhsm, token, tmp_path, caplog, case
):
    not_a_module = tmp_path / "libnot-pkcs11.so"
    not_a_module.write_bytes(b"\x7fELF but not really")
    slots = {softhsm.slot_id(token)}
    missing_slot = next(number for number in range(424242, 424342) if number not in slots)
    override, where, reason = {
        "missing library": ({"HSM_LIBRARY": str(tmp_path / "nope" / "libpkcs11.so")}, f"token label {token!r}",
                            "the library file does not exist"),
        "not a PKCS#11 module": ({"HSM_LIBRARY": str(not_a_module)}, f"token label {token!r}",
                                 "cannot load or initialise the module"),
        "unknown label": ({"HSM_TOKEN_LABEL": "no-such-token"}, "token label 'no-such-token'",
                          "no slot holds a token with this label"),
        "wrong PIN": ({"HSM_PIN": WRONG_PIN}, f"token label {token!r}", "login failed: the PIN is incorrect"),
        "no such slot": ({"HSM_TOKEN_LABEL": "", "HSM_SLOT": str(missing_slot)}, f"slot {missing_slot}",
                         "no token is present in this slot"),
    }[case]
    env = {**hsm_env, **override}
    caplog.set_level(logging.DEBUG)
    app = make_app(env)

    with pytest.raises(HSMError) as failure:
        start_key_service(app)
    message = str(failure.value)
    assert message.startswith(f"PKCS#11 module {env['HSM_LIBRARY']}, {where}: {reason}"), message
    assert "\n" not in message
    everything = "".join(traceback.format_exception(failure.value)) + caplog.text + repr(
        [(record.msg, record.args) for record in caplog.records]
    )
    for pin in (softhsm.pin, env["HSM_PIN"]):
        assert pin not in everything
    # Nothing was served or written.
    assert state_of(app).key_service_started is None
    assert store_rows(app) == 0
    assert softhsm.list_objects(token) == []


def test_slot_selects_the_token_when_no_label_is_given(make_app, hsm_env, softhsm, token):
    app = make_app({**hsm_env, "HSM_TOKEN_LABEL": "", "HSM_SLOT": str(softhsm.slot_id(token))})
    service = start_key_service(app)
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert sign_and_verify(app, service, key_set).backend == "hsm"
        assert softhsm.key_objects(token, key_set) == {"private": 1, "public": 1}


def test_token_label_wins_over_slot(make_app, hsm_env, softhsm, token):
    other = softhsm.new_token()
    app = make_app({**hsm_env, "HSM_SLOT": str(softhsm.slot_id(other))})
    service = start_key_service(app)
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert sign_and_verify(app, service, key_set).backend == "hsm"
        assert softhsm.key_objects(token, key_set) == {"private": 1, "public": 1}
    assert softhsm.list_objects(other) == []


# -- 8. HSM-only key sets ------------------------------------------------------------------------


@pytest.mark.parametrize("hsm_only", [ID_TOKEN_SET, "*"])
def test_hsm_only_set_is_generated_on_the_hsm_and_never_falls_back_to_software(
    make_app, hsm_env, softhsm, token, hsm_only
):
    app = make_app({**hsm_env, "HSM_ONLY_KEY_SETS": hsm_only})
    service = start_key_service(app)
    now = [time.time()]
    service.clock = lambda: now[0]
    hsm_kid = sign_and_verify(app, service, ID_TOKEN_SET).kid
    assert service.backend_of(ID_TOKEN_SET) == "hsm"
    assert softhsm.key_objects(token, ID_TOKEN_SET) == {"private": 1, "public": 1}

    # No software key can enter the set: whoever held it could sign accepted tokens.
    imported, _ = ec_private_jwk("imported-id-token-key")
    with pytest.raises(InvalidKey, match="HSM-only"):
        service.import_jwk(ID_TOKEN_SET, imported)
    other, other_key = ec_private_jwk("imported-access-key")
    if hsm_only == "*":
        with pytest.raises(InvalidKey, match="HSM-only"):
            service.import_jwk(ACCESS_TOKEN_SET, other)
        # "*" covers sets created later through the admin API or CLI too.
        assert service.generate("partner.signing", "ES256").backend == "hsm"
    else:
        service.import_jwk(ACCESS_TOKEN_SET, other)
        assert service.generate("partner.signing", "ES256").backend == "software"
    now[0] += 3600
    service.refresh()
    signer = sign_and_verify(app, service, ID_TOKEN_SET)
    assert (signer.kid, signer.backend) == (hsm_kid, "hsm")
    assert "imported-id-token-key" not in published(app)

    # The HSM key pairs destroyed: the HSM-only set fails closed.
    delete_pairs(softhsm, token, ID_TOKEN_SET)
    delete_pairs(softhsm, token, ACCESS_TOKEN_SET)
    service.refresh()
    with pytest.raises(NoSigningKey, match="HSM-only"):
        service.signer(ID_TOKEN_SET)
    assert service.backend_of(ID_TOKEN_SET) is None
    assert hsm_kid not in published(app)

    if hsm_only == "*":
        with pytest.raises(NoSigningKey, match="HSM-only"):
            service.signer(ACCESS_TOKEN_SET)
        assert "imported-access-key" not in published(app)
    else:
        # A set that is not HSM-only falls back to its software key (the documented contrast).
        fallback = sign_and_verify(app, service, ACCESS_TOKEN_SET)
        assert (fallback.kid, fallback.backend) == ("imported-access-key", "software")
        signing_input = signing_input_for(fallback.kid, "ES256")
        r_s = fallback.sign(signing_input)
        other_key.public_key().verify(
            encode_dss_signature(int.from_bytes(r_s[:32], "big"), int.from_bytes(r_s[32:], "big")),
            signing_input, ec.ECDSA(hashes.SHA256()),
        )


def test_hsm_only_set_the_token_cannot_generate_stops_start_up(make_app, hsm_env, softhsm, token, caplog):
    # SoftHSM refuses RSA moduli above 16384 bits: generation on the token is impossible.
    app = make_app({**hsm_env, "HSM_ONLY_KEY_SETS": "*", "RSA_KEY_SIZE": "32768"})
    with pytest.raises(HSMError) as failure:
        start_key_service(app)
    message = str(failure.value)
    assert message.startswith(f"PKCS#11 module {softhsm.library}, token label {token!r}: cannot generate the RS256")
    assert "'openid.id-token'" in message and "\n" not in message
    assert softhsm.pin not in message + caplog.text
    assert store_rows(app) == 0  # no software key instead
    assert softhsm.list_objects(token) == []


# -- 9. rotation on the HSM -------------------------------------------------------------------


@pytest.mark.parametrize("destroy", [False, True], ids=["kept-on-token", "destroyed"])
def test_rotation_on_the_hsm(make_app, hsm_env, softhsm, token, destroy):
    app = make_app({**hsm_env, "HSM_DESTROY_RETIRED_KEYS": "true" if destroy else "false"})
    service = start_key_service(app)
    prepublication = state_of(app).settings.key_prepublication_seconds
    retention = state_of(app).settings.key_retention_seconds
    now = [float(int(time.time()) + 1)]
    service.clock = lambda: now[0]
    old = sign_and_verify(app, service, ACCESS_TOKEN_SET)
    assert old.backend == "hsm"

    new = service.generate(ACCESS_TOKEN_SET)
    assert new.backend == "hsm" and new.kid != old.kid
    assert new.active_at == now[0] + prepublication
    on_token = [obj for obj in softhsm.list_objects(token) if obj.get("label") == ACCESS_TOKEN_SET]
    assert sorted(obj["kind"] for obj in on_token) == ["Private Key Object"] * 2 + ["Public Key Object"] * 2
    assert {obj["ID"] for obj in on_token} == {old.kid.encode().hex(), new.kid.encode().hex()}

    # Published at once, signing only after the pre-publication period.
    assert {old.kid, new.kid} <= set(published(app))
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == old.kid
    now[0] = new.active_at - 1
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == old.kid
    now[0] = new.active_at
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == new.kid
    assert {old.kid, new.kid} <= set(published(app))

    # The old key stays published until every token it signed has expired.
    now[0] = new.active_at + retention - 1
    service.refresh()
    assert old.kid in published(app)
    assert service.retire_expired() == []
    assert softhsm.key_objects(token, ACCESS_TOKEN_SET) == {"private": 2, "public": 2}

    now[0] = new.active_at + retention
    service.refresh()
    assert old.kid not in published(app) and new.kid in published(app)
    retired = service.retire_expired()
    assert sign_and_verify(app, service, ACCESS_TOKEN_SET).kid == new.kid
    service.refresh()
    assert old.kid not in published(app)
    if destroy:
        assert [record.kid for record in retired] == [old.kid]
        assert softhsm.key_objects(token, ACCESS_TOKEN_SET) == {"private": 1, "public": 1}
        assert [obj["ID"] for obj in softhsm.list_objects(token) if obj.get("label") == ACCESS_TOKEN_SET] == [
            new.kid.encode().hex()] * 2
    else:
        assert retired == []
        assert softhsm.key_objects(token, ACCESS_TOKEN_SET) == {"private": 2, "public": 2}
    # The other set was left alone.
    assert softhsm.key_objects(token, ID_TOKEN_SET) == {"private": 1, "public": 1}


def test_rsa_key_generated_for_ps256_on_the_hsm_stays_ps256(make_app, hsm_env, softhsm, token):
    """The token only knows "RSA": the algorithm a key was generated for is kept in its lifecycle row."""
    app = make_app(hsm_env)
    service = start_key_service(app)
    record = service.generate(ID_TOKEN_SET, "PS256")
    service.refresh()
    now = record.active_at + 1
    service.clock = lambda: now
    service.refresh()
    assert service.public_key(record.kid)["alg"] == "PS256"
    assert {s.record.kid: s.record.alg for s in service.keys(ID_TOKEN_SET)}[record.kid] == "PS256"
    signer = sign_and_verify(app, service, ID_TOKEN_SET)
    assert (signer.kid, signer.alg) == (record.kid, "PS256")
