"""When the HSM fails, in one process: the failure model of keys/hsm.py on real modules.

The classification is checked per ``CKR_*`` code; everything else runs against
real tokens: SoftHSM2 directly, and SoftHSM2 behind ``p11-kit server`` through
p11-kit's client module (a network HSM's shape: its server killed is the
appliance gone).  Signatures are verified with ``cryptography`` alone.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as ckr
from test_hsm_manager import (
    add_signing_route,
    b64url_decode,
    published,
    signing_input_for,
    token_session,
    verify_signature,
)

from keys.algorithms import get_algorithm
from keys.errors import HSMError, HSMOperationError, HSMUnavailable, KeyServiceError, MechanismUnsupported
from keys.hsm import CALLER, MODULE, SESSION, HSMConfig, HSMManager, ckr_name, classify
from keys.mechanisms import candidates
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET

from support import start_key_service

#: The database plays no part in these: one is enough (the drills run on PostgreSQL too).
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FAST = {"HSM_RETRY_INITIAL_SECONDS": "0.2", "HSM_RETRY_MAX_SECONDS": "1"}
ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "ES512"]

# -- 1. classification, per CKR_* code (PKCS#11 v2.40 §5.1) ------------------------------------

_NOT_INITIALIZED = ckr.PKCS11Error("Initialisation error (not initialized). Should never see this.")

CLASSIFICATION = [
    (ckr.SessionHandleInvalid(), "CKR_SESSION_HANDLE_INVALID", SESSION),
    (ckr.SessionClosed(), "CKR_SESSION_CLOSED", SESSION),
    (ckr.ObjectHandleInvalid(), "CKR_OBJECT_HANDLE_INVALID", SESSION),
    (ckr.KeyHandleInvalid(), "CKR_KEY_HANDLE_INVALID", SESSION),
    (ckr.UserNotLoggedIn(), "CKR_USER_NOT_LOGGED_IN", SESSION),
    (ckr.OperationActive(), "CKR_OPERATION_ACTIVE", SESSION),
    (ckr.OperationNotInitialized(), "CKR_OPERATION_NOT_INITIALIZED", SESSION),
    (ckr.FunctionFailed(), "CKR_FUNCTION_FAILED", SESSION),
    (ckr.GeneralError(), "CKR_GENERAL_ERROR", SESSION),
    (ckr.DeviceError(), "CKR_DEVICE_ERROR", MODULE),
    (ckr.DeviceRemoved(), "CKR_DEVICE_REMOVED", MODULE),
    (ckr.DeviceMemory(), "CKR_DEVICE_MEMORY", MODULE),
    (ckr.TokenNotPresent(), "CKR_TOKEN_NOT_PRESENT", MODULE),
    (ckr.TokenNotRecognised(), "CKR_TOKEN_NOT_RECOGNIZED", MODULE),
    (ckr.SlotIDInvalid(), "CKR_SLOT_ID_INVALID", MODULE),
    (_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED", MODULE),
    (ckr.ArgumentsBad(), "CKR_ARGUMENTS_BAD", CALLER),
    (ckr.MechanismInvalid(), "CKR_MECHANISM_INVALID", CALLER),
    (ckr.MechanismParamInvalid(), "CKR_MECHANISM_PARAM_INVALID", CALLER),
    (ckr.KeyTypeInconsistent(), "CKR_KEY_TYPE_INCONSISTENT", CALLER),
    (ckr.KeySizeRange(), "CKR_KEY_SIZE_RANGE", CALLER),
    (ckr.DataLenRange(), "CKR_DATA_LEN_RANGE", CALLER),
    (ckr.TemplateIncomplete(), "CKR_TEMPLATE_INCOMPLETE", CALLER),
    (ckr.TemplateInconsistent(), "CKR_TEMPLATE_INCONSISTENT", CALLER),
    (ckr.AttributeValueInvalid(), "CKR_ATTRIBUTE_VALUE_INVALID", CALLER),
    (ckr.PinIncorrect(), "CKR_PIN_INCORRECT", CALLER),
    (ckr.PinLocked(), "CKR_PIN_LOCKED", CALLER),
    (ckr.HostMemory(), "CKR_HOST_MEMORY", CALLER),
    (ckr.PKCS11Error("Unmapped error code 0x80000001"), "CKR 0x80000001", CALLER),
]


@pytest.mark.parametrize("exc, code, kind", CLASSIFICATION, ids=[code for _, code, _ in CLASSIFICATION])
def test_each_error_code_is_classified(exc, code, kind):
    """PKCS#11 v2.40 §5.1: stale sessions are reopened, lost devices re-initialised, the rest never retried."""
    assert ckr_name(exc) == code
    assert classify(exc) == kind
    # A session-level error (a general error among them) that a new session did not cure: the module is broken.
    expected_after_reopen = MODULE if kind == SESSION else kind
    assert classify(exc, after_reopen=True) == expected_after_reopen


# -- 2. mechanisms chosen from the token's list -------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_raw_mechanism_over_a_python_digest_signs_what_the_combined_one_would(softhsm, token, alg):
    """Offered only the raw mechanism (as openCryptoki offers CKM_RSA_PKCS alone), the signature still verifies.

    RFC 8017 §9.2 (DigestInfo for RSASSA-PKCS1-v1_5), RFC 7518 §3.5 (PSS salt = hash length), §3.4 (ECDSA r||s).
    """
    manager = HSMManager(HSMConfig(library=softhsm.library, pin=softhsm.pin, token_label=token))
    manager.open()
    try:
        record = manager.generate(ID_TOKEN_SET, alg, rsa_bits=2048)
        combined, raw = candidates(get_algorithm(alg))
        assert manager.signing_plan(alg).mechanism == (raw if alg.startswith("ES") else combined).mechanism
        # The token's own list, without the combined mechanism.
        assert manager._mechanisms is not None  # read by signing_plan
        manager._mechanisms.pop(combined.mechanism, None)
        manager._plans.clear()
        plan = manager.signing_plan(alg)
        assert plan.mechanism == raw.mechanism and "computed in Python" in plan.description
        signing_input = signing_input_for(record.kid, alg)
        verify_signature(record.public_jwk, signing_input, manager.signer(record).sign(signing_input))
        # Without either, the algorithm is refused, naming both mechanisms.
        assert manager._mechanisms is not None
        manager._mechanisms.pop(raw.mechanism)
        manager._plans.clear()
        with pytest.raises(MechanismUnsupported, match=f"{combined.mechanism_name} or {raw.mechanism_name}"):
            manager.signer(record).sign(signing_input)
    finally:
        manager.close()


@SQLITE
def test_the_choice_of_mechanism_is_logged_once_per_set(make_app, hsm_env, caplog):
    caplog.set_level(logging.INFO, logger="keys")
    app = make_app(hsm_env)
    start_key_service(app)
    lines = [record.getMessage() for record in caplog.records if "on the HSM with" in record.getMessage()]
    assert sorted(lines) == [
        "key set jwt.access-token signs ES256 on the HSM with CKM_ECDSA over a SHA-256 digest computed in Python",
        "key set openid.id-token signs RS256 on the HSM with CKM_SHA256_RSA_PKCS",
    ]


@SQLITE
def test_ed25519_is_published_under_its_fully_specified_name(make_app, hsm_env):
    """RFC 9864: ``Ed25519`` is a fully specified JWS alg; ``EdDSA`` stays accepted and listed."""
    app = make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "Ed25519", "ACCESS_TOKEN_SIGNING_ALG": "EdDSA"})
    service = start_key_service(app)
    jwks = published(app)
    signer = service.signer(ID_TOKEN_SET)
    assert (signer.alg, jwks[signer.kid]["alg"], jwks[signer.kid]["crv"]) == ("Ed25519", "Ed25519", "Ed25519")
    assert jwks[service.signer(ACCESS_TOKEN_SET).kid]["alg"] == "EdDSA"
    signing_input = signing_input_for(signer.kid, "Ed25519")
    ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwks[signer.kid]["x"])).verify(
        signer.sign(signing_input), signing_input
    )
    discovery = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert discovery["id_token_signing_alg_values_supported"] == ["EdDSA", "Ed25519"]
    assert {"EdDSA", "Ed25519"} <= set(discovery["token_endpoint_auth_signing_alg_values_supported"])
    import base64
    import hashlib

    from oidc.oauth2.jwt import half_hash

    expected = base64.urlsafe_b64encode(hashlib.sha512(b"token").digest()[:32]).rstrip(b"=").decode()
    assert half_hash("token", "Ed25519") == half_hash("token", "EdDSA") == expected


# -- 3. what is adopted from a token provisioned by hand ------------------------------------------


@SQLITE
def test_an_extractable_hand_provisioned_key_is_refused_or_adopted_loudly(make_app, hsm_env, softhsm, token, caplog):
    """PKCS#11 v2.40 §4.9: a private key with CKA_EXTRACTABLE can leave the token; an HSM key must not."""
    softhsm.pkcs11_tool("--keypairgen", "--key-type", "EC:prime256v1", "--usage-sign", "--extractable",
                        "--label", ACCESS_TOKEN_SET, "--id", "0a", label=token)
    softhsm.keypairgen(token, "EC:prime256v1", ID_TOKEN_SET, "0b")
    before = softhsm.list_objects(token)
    with pytest.raises(HSMError) as refused:
        start_key_service(make_app({**hsm_env, "ACCESS_TOKEN_SIGNING_ALG": "ES256", "ID_TOKEN_SIGNING_ALG": "ES256"}))
    assert "key '0a' is refused, its private key is extractable" in str(refused.value)
    assert softhsm.list_objects(token) == before  # nothing generated in its place

    with pytest.raises(HSMError, match="HSM-only"):
        start_key_service(make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "ES256", "HSM_ALLOW_EXTRACTABLE_KEYS": "true",
                                    "HSM_ONLY_KEY_SETS": ACCESS_TOKEN_SET}))

    caplog.set_level(logging.WARNING, logger="keys")
    app = make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "ES256", "HSM_ALLOW_EXTRACTABLE_KEYS": "true"})
    service = start_key_service(app)
    assert service.signer(ACCESS_TOKEN_SET).kid == "0a"
    assert any("ADOPTED ALTHOUGH its private key is extractable" in r.getMessage() for r in caplog.records)
    assert softhsm.list_objects(token) == before


def test_a_public_key_is_found_by_label_and_id_not_by_id_alone(manager, softhsm, token):
    """A private key whose own public half is missing must not be published with another set's key of the same id."""
    softhsm.keypairgen(token, "EC:prime256v1", "acme.other.set", "01")
    softhsm.keypairgen(token, "EC:prime256v1", "acme.openid.id-token", "01")
    assert [record.kid for record in manager.records(ID_TOKEN_SET)] == ["01"]
    mine = manager.records(ID_TOKEN_SET)[0].public_jwk
    assert mine != manager.records("other.set")[0].public_jwk
    with token_session(softhsm, token) as session:
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: "acme.openid.id-token"}):
            obj.destroy()
    assert manager.records(ID_TOKEN_SET) == []


@SQLITE
def test_adopt_only_never_generates(make_app, hsm_env, softhsm, token):
    """HSM_GENERATE_KEYS=false: a set with no pair on the token stops the start naming its label."""
    env = {**hsm_env, "HSM_GENERATE_KEYS": "false", "HSM_KEY_SET_PREFIX": "hydra."}
    with pytest.raises(HSMError) as failure:
        start_key_service(make_app(env))
    assert "no key pair labelled 'hydra.openid.id-token'" in str(failure.value)
    assert "HSM_GENERATE_KEYS is false" in str(failure.value)
    assert softhsm.list_objects(token) == []

    softhsm.keypairgen(token, "rsa:2048", "hydra.openid.id-token", "746573742d6b65792d6964")
    softhsm.keypairgen(token, "EC:prime256v1", "hydra.jwt.access-token", "6b6964")
    app = make_app(env)
    service = start_key_service(app)
    assert {service.signer(ID_TOKEN_SET).kid, service.signer(ACCESS_TOKEN_SET).kid} == {"test-key-id", "kid"}
    with pytest.raises(HSMError, match="HSM_GENERATE_KEYS is false"):
        service.generate(ACCESS_TOKEN_SET)
    assert len(softhsm.list_objects(token)) == 4


# -- 4. readiness ----------------------------------------------------------------------------------


@SQLITE
def test_readiness_reports_codes_only_and_touches_the_token_at_most_once_per_interval(make_app, hsm_env, softhsm):
    app = make_app({**hsm_env, "HSM_READINESS_CACHE_SECONDS": "1.5"})
    client = app.test_client()
    service = start_key_service(app)
    assert client.get("/health/ready").status_code == 200
    # The session closed behind the manager's back: a probe that touched the token would reopen it.
    service.hsm._session.close()
    for _ in range(30):
        response = client.get("/health/ready")
        assert response.status_code == 200
    assert service.hsm.reconnects == 0
    time.sleep(1.6)
    assert client.get("/health/ready").status_code == 200
    assert service.hsm.reconnects == 1
    body = client.get("/health/ready").get_data(as_text=True)
    assert softhsm.library not in body and hsm_env["HSM_TOKEN_LABEL"] not in body


# -- 5. a network HSM that goes away and comes back (p11-kit server) --------------------------------


@pytest.mark.e2e
@SQLITE
def test_the_remote_token_signs_every_algorithm_it_offers_and_refuses_the_one_it_does_not(
    make_app, remote_hsm_env, remote_token, softhsm, token
):
    """Through p11-kit's client module: generation, signatures verified by cryptography, attributes.

    p11-kit 0.24's RPC does not carry CKM_EDDSA: an Ed25519 set is refused at start-up in one line.
    """
    for alg in ("RS256", "PS256", "ES384"):
        app = make_app({**remote_hsm_env, "ID_TOKEN_SIGNING_ALG": alg, "ACCESS_TOKEN_SIGNING_ALG": "ES256"})
        service = start_key_service(app)
        for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
            signer = service.signer(key_set)
            signing_input = signing_input_for(signer.kid, signer.alg)
            verify_signature(published(app)[signer.kid], signing_input, signer.sign(signing_input))
        service.hsm.close()
    with token_session(softhsm, token) as session:
        privates = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        assert privates and all(key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE] for key in privates)
        assert all(key[Attribute.NEVER_EXTRACTABLE] for key in privates)
    with pytest.raises(MechanismUnsupported) as refused:
        start_key_service(make_app({**remote_hsm_env, "ID_TOKEN_SIGNING_ALG": "Ed25519"}))
    message = str(refused.value)
    assert "key set 'openid.id-token'" in message and "Ed25519" in message and "CKM_EDDSA" in message
    assert "\n" not in message and softhsm.pin not in message


@pytest.mark.e2e
@SQLITE
def test_the_token_gone_and_back_costs_503s_then_heals_in_the_same_process(
    make_app, remote_hsm_env, remote_token, softhsm, token, caplog
):
    """The outage drill in one process: 503 + Retry-After while gone, one WARNING, one INFO, same keys."""
    from oidc.observability import metrics

    caplog.set_level(logging.DEBUG)
    outages, unavailable_seconds = metrics.HSM_OUTAGES._value.get(), metrics.HSM_UNAVAILABLE_SECONDS._value.get()
    failed_attempts = metrics.HSM_RECONNECT_ATTEMPTS.labels("failed")._value.get()
    app = make_app({**remote_hsm_env, **FAST, "HSM_ONLY_KEY_SETS": "*", "HSM_READINESS_CACHE_SECONDS": "0"})
    add_signing_route(app)
    client = app.test_client()
    service = start_key_service(app)
    kids = {key_set: service.signer(key_set).kid for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET)}
    jwks_before = client.get("/.well-known/jwks.json").get_data()
    objects_before = softhsm.list_objects(token)
    assert client.get(f"/_test/sign/{ID_TOKEN_SET}").status_code == 200

    remote_token.kill()
    started = time.monotonic()
    statuses = []
    while time.monotonic() - started < 2.5:
        response = client.get(f"/_test/sign/{ACCESS_TOKEN_SET}")
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.get_json()["error"] == "temporarily_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        time.sleep(0.01)
    assert set(statuses) == {503}, statuses
    # Probed with backoff, not per request: a few attempts for a couple of hundred requests.
    assert service.hsm.reconnect_attempts <= 8 < len(statuses)
    # Public keys and discovery keep being served from memory.
    assert client.get("/.well-known/jwks.json").get_data() == jwks_before
    assert client.get("/.well-known/openid-configuration").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["hsm"] == {"ok": False, "configured": True, "reason": "hsm_unavailable"}
    assert remote_token.client_library not in ready.get_data(as_text=True)
    # HSM-only: no software key was made or published meanwhile.
    with pytest.raises(HSMUnavailable):
        service.signer(ID_TOKEN_SET).sign(b"x")

    remote_token.start()
    back = time.monotonic()
    while client.get(f"/_test/sign/{ACCESS_TOKEN_SET}").status_code != 200:
        assert time.monotonic() - back < 15, "not back within 15 s of the token's return"
        time.sleep(0.05)
    assert client.get("/health/ready").status_code == 200
    assert {key_set: service.signer(key_set).kid for key_set in kids} == kids
    assert client.get("/.well-known/jwks.json").get_data() == jwks_before
    assert softhsm.list_objects(token) == objects_before  # nothing generated twice
    # The metrics saw one outage, its failed probes, and the time it lasted; the state is back to 1.
    assert metrics.HSM_OUTAGES._value.get() == outages + 1
    assert metrics.HSM_RECONNECT_ATTEMPTS.labels("failed")._value.get() > failed_attempts
    assert metrics.HSM_UNAVAILABLE_SECONDS._value.get() - unavailable_seconds >= 2.5
    assert metrics.hsm_available() == 1

    lost = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith("HSM unavailable")]
    found = [r for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("HSM available again")]
    assert len(lost) == 1 and len(found) == 1
    assert "CKR_DEVICE_ERROR" in lost[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert softhsm.pin not in caplog.text


@pytest.mark.e2e
@SQLITE
def test_start_up_waits_for_the_token_only_as_long_as_configured(make_app, remote_hsm_env, remote_token):
    """HSM_STARTUP_WAIT_SECONDS: 0 stops at once with one line; N waits up to N s, then proceeds or stops."""
    remote_token.kill()
    started = time.monotonic()
    with pytest.raises(HSMUnavailable) as failure:
        start_key_service(make_app(remote_hsm_env))
    assert time.monotonic() - started < 5
    assert "no slot holds a token with this label" in str(failure.value) and "\n" not in str(failure.value)

    started = time.monotonic()
    with pytest.raises(HSMUnavailable):
        start_key_service(make_app({**remote_hsm_env, "HSM_STARTUP_WAIT_SECONDS": "1.5", **FAST}))
    assert time.monotonic() - started >= 1.5

    threading.Timer(1.0, remote_token.start).start()
    started = time.monotonic()
    app = make_app({**remote_hsm_env, "HSM_STARTUP_WAIT_SECONDS": "30", **FAST})
    service = start_key_service(app)
    assert 1.0 <= time.monotonic() - started < 15
    assert service.signer(ID_TOKEN_SET).backend == "hsm"
    assert app.test_client().get("/health/ready").status_code == 200


@pytest.mark.e2e
@SQLITE
def test_a_degraded_start_serves_stored_keys_and_finishes_when_the_token_is_back(make_app, remote_hsm_env, remote_token):
    """A replacement worker's start: not ready, public keys from the store, 503 to sign, then whole."""
    first = make_app({**remote_hsm_env, **FAST})
    kids = {key_set: start_key_service(first).signer(key_set).kid for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET)}
    start_key_service(first).hsm.close()
    remote_token.kill()

    app = make_app({**remote_hsm_env, **FAST})
    add_signing_route(app)
    client = app.test_client()
    service = start_key_service(app, degraded_ok=True)
    assert service.pending_start
    assert set(published(app)) == set(kids.values())
    response = client.get(f"/_test/sign/{ID_TOKEN_SET}")
    assert response.status_code == 503 and response.headers["Retry-After"]
    ready = client.get("/health/ready").get_json()
    assert ready["checks"]["keys"]["failed"] == {ID_TOKEN_SET: "hsm_unavailable", ACCESS_TOKEN_SET: "hsm_unavailable"}

    remote_token.start()
    deadline = time.monotonic() + 15
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not service.pending_start
    assert client.get(f"/_test/sign/{ID_TOKEN_SET}").status_code == 200
    assert {key_set: service.signer(key_set).kid for key_set in kids} == kids
    service.hsm.close()


def test_caller_faults_are_never_retried_and_never_raw(manager):
    """CKR_KEY_TYPE_INCONSISTENT / CKR_GENERAL_ERROR for a wrong mechanism: an HSMOperationError naming it."""
    record = manager.generate(ID_TOKEN_SET, "ES256", rsa_bits=2048)
    with pytest.raises(HSMOperationError) as refused:
        manager.sign(record, get_algorithm("RS256"), b"data")
    assert isinstance(refused.value, KeyServiceError)
    assert "CKM_SHA256_RSA_PKCS" in str(refused.value) and refused.value.code.startswith("CKR_")
    assert manager.available  # the token is fine: it is the operation that is wrong


#: A worker's view of a lost device in the middle of a key look-up, in a process of its own
#: (so its real stderr is what is checked): the look-up fails, and nothing prints a traceback.
_LOOKUP_SCRIPT = r"""
import gc, sys
from keys.errors import HSMUnavailable
from keys.hsm import HSMConfig, HSMManager

manager = HSMManager(HSMConfig(library=sys.argv[1], pin=sys.argv[2], token_label=sys.argv[3]))
manager.open()
manager.generate("lookup", "ES256", rsa_bits=2048)
print("ready", flush=True)
sys.stdin.readline()  # the token's server is killed meanwhile
for _ in range(3):
    try:
        manager.records("lookup")
    except HSMUnavailable:
        print("unavailable", flush=True)
gc.collect()
"""


@pytest.mark.e2e
def test_a_search_cut_off_by_a_lost_device_leaves_no_traceback_on_stderr(remote_token, softhsm, token):
    """python-pkcs11 finishes a failed search in ``__del__``, which fails again on a lost device."""
    import subprocess
    import sys
    from pathlib import Path

    process = subprocess.Popen(
        [sys.executable, "-c", _LOOKUP_SCRIPT, remote_token.client_library, softhsm.pin, token],
        cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        remote_token.kill()
        out, err = process.communicate("go\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.split() == ["unavailable"] * 3
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.count("HSM unavailable") == 1  # the one WARNING (logging's last-resort handler)
