"""Several tokens of two vendors, and the audit set and certificates on openCryptoki's soft token.

``HSM_TOKENS=A,O``: A is a SoftHSM2 token behind its own ``p11-kit server`` (reached through a
copy of p11-kit's client module, tests/remote_token.RemoteTokens), O is openCryptoki's soft token
(``libopencryptoki`` and the ``pkcsslotd`` the fixture starts).  Two modules, two mechanism lists:
openCryptoki has no EC and no ``CKM_SHA256_RSA_PKCS``, so every set here is RSA (RS256 signed as
``CKM_RSA_PKCS`` over a DigestInfo on O, PS256 with ``CKM_SHA256_RSA_PKCS_PSS``).  Each test labels
its keys with a prefix of its own and destroys them on O afterwards (O is the machine's one token).

Signatures are verified with PyJWT and ``cryptography`` against the published JWK Sets.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from pkcs11 import Attribute
from test_audit_trail import _checkpoint_tokens, _issue_tokens, _trail
from test_hsm_opencryptoki import private_keys
from test_hsm_tokens import FAST, REJOIN_BOUND, _sign, _signers_until, _verify
from test_key_certificates import SmallCA, spki

from keys.errors import HSMUnavailable
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET

from jose_helpers import b64decode, verify
from oidc_fixtures import Provider
from support import start_key_service

pytestmark = pytest.mark.e2e
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: openCryptoki's soft token has RSA only: every set signs with an RSA algorithm it has.
RSA_SETS = {"ID_TOKEN_SIGNING_ALG": "RS256", "ACCESS_TOKEN_SIGNING_ALG": "PS256",
            "AUDIT_CHECKPOINT_SIGNING_ALG": "RS256"}


@pytest.fixture
def vendor_tokens(softhsm: Any, p11kit_client: str, opencryptoki: Any,
                  base_env: dict[str, str]) -> Iterator[tuple[Any, dict[str, str]]]:
    """(A's p11-kit servers, the environment of HSM_TOKENS=A,O): A a SoftHSM2 token behind p11-kit, O openCryptoki."""
    from remote_token import RemoteTokens

    directory = Path(tempfile.mkdtemp(prefix="vt-"))  # short: a socket path has 108 bytes
    remote = RemoteTokens(softhsm=softhsm, labels={"A": softhsm.new_token()}, client_module=p11kit_client,
                          directory=directory)
    remote.start()
    prefix = f"v{uuid.uuid4().hex[:8]}."
    env = {**base_env, **remote.env(), **FAST, **RSA_SETS, "HSM_TOKENS": "A,O", "HSM_KEY_SET_PREFIX": prefix,
           "HSM_ONLY_KEY_SETS": "*", "HSM_O_LIBRARY": opencryptoki.library,
           "HSM_O_TOKEN_LABEL": opencryptoki.LABEL, "HSM_O_PIN": opencryptoki.PIN}
    try:
        yield remote, env
    finally:
        remote.stop()
        opencryptoki.destroy_labelled(prefix)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ock_only(base_env: dict[str, str], opencryptoki: Any) -> Iterator[dict[str, str]]:
    """One token, openCryptoki's, every set HSM-only and RSA, with key labels of the test's own."""
    prefix = f"o{uuid.uuid4().hex[:8]}."
    yield {**base_env, **RSA_SETS, "HSM_ENABLED": "true", "HSM_LIBRARY": opencryptoki.library,
           "HSM_TOKEN_LABEL": opencryptoki.LABEL, "HSM_PIN": opencryptoki.PIN, "HSM_KEY_SET_PREFIX": prefix,
           "HSM_ONLY_KEY_SETS": "*"}
    opencryptoki.destroy_labelled(prefix)


@SQLITE
def test_a_softhsm2_and_an_opencryptoki_token_sign_in_turns_and_either_carries_on_alone(
        make_app, vendor_tokens, softhsm, opencryptoki):
    remote, env = vendor_tokens
    prefix = env["HSM_KEY_SET_PREFIX"]
    app = make_app(env)
    service = start_key_service(app)
    service.start_recovery()
    try:
        # Each token holds its own pair of each set, generated there, not extractable.
        for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
            assert softhsm.key_objects(remote.labels["A"], prefix + key_set) == {"private": 1, "public": 1}
            (key,) = private_keys(opencryptoki, prefix + key_set)
            assert key[Attribute.EXTRACTABLE] is False and key[Attribute.NEVER_EXTRACTABLE] is True
        assert len(json.loads(service.jwks_document()[0])["keys"]) == 4
        evidence = {item.location["token"]: item for item in service.evidence(ACCESS_TOKEN_SET)}
        assert evidence["A"].location["token_label"] == remote.labels["A"]
        assert evidence["O"].location["token_label"] == opencryptoki.LABEL
        assert evidence["O"].signing_mechanism == "CKM_SHA256_RSA_PKCS_PSS"
        assert all(not item.hsm_only_shortfalls() for item in evidence.values())

        # In turns over the two modules; each signature verifies with PyJWT from the JWKS.
        signed = [_sign(service) for _ in range(6)]
        assert sorted(name or "" for name, _ in signed) == ["A", "A", "A", "O", "O", "O"]
        for _, token in signed:
            _verify(service, token)
        for _ in range(2):  # the ID-token set too: RS256 is CKM_RSA_PKCS over a DigestInfo on O
            _verify(service, _sign(service, ID_TOKEN_SET)[1])

        # A's appliance is gone: O signs every request after the one in flight on A.
        remote.servers["A"].kill()
        failures, signed_by = 0, []
        for _ in range(20):
            try:
                name, token = _sign(service)
            except HSMUnavailable:
                failures += 1
                continue
            signed_by.append(name)
            _verify(service, token)
        assert failures <= 1 and set(signed_by) == {"O"}, (failures, signed_by)
        ready = app.test_client().get("/health/ready")
        assert ready.status_code == 200
        assert ready.get_json()["checks"]["hsm"]["tokens"] == {"A": {"ok": False, "reason": "hsm_unavailable"},
                                                               "O": {"ok": True}}

        # Back: A rejoins the turns by itself.
        remote.servers["A"].start()
        assert _signers_until(service, {"A", "O"}, REJOIN_BOUND) == {"A", "O"}
        assert service.health().tokens == {"A": None, "O": None}
    finally:
        service.close()


@pytest.mark.both_databases
def test_the_audit_set_on_two_vendors_keeps_checkpointing_while_one_token_is_down(make_app, vendor_tokens):
    """The audit set's pairs on A and O: with A killed, checkpoints are signed on O, A's outage and return
    are entries of the chain (named by token), and the chain verifies."""
    from oidc.vocabulary import AUDIT_CHECKPOINT_SET

    remote, env = vendor_tokens
    op = Provider(make_app({**env, "AUDIT_CHAIN": "true", "AUDIT_SEAL_SECONDS": "3600",
                            "AUDIT_CHECKPOINT_ENTRIES": "4"}))
    from oidc.state import state_of

    service = state_of(op.app).key_service()
    service.start_recovery()
    trail = _trail(op)
    try:
        assert {item.location["token"] for item in service.evidence(AUDIT_CHECKPOINT_SET)} == {"A", "O"}
        client = op.add_client(grant_types=["client_credentials"], scope="api", auth_method="client_secret_basic")
        assert _statuses(op, client, 4) == [200] * 4
        trail.seal()
        remote.servers["A"].kill()
        statuses = _statuses(op, client, 12)  # signed on O now: at most the one in flight on A fails
        assert statuses.count(200) >= 11 and set(statuses) <= {200, 503}, statuses
        for _ in range(3):
            trail.seal()  # every checkpoint signed, by whichever healthy token's key takes its turn
        remote.servers["A"].start()
        deadline = time.monotonic() + REJOIN_BOUND
        while service.health().tokens["A"] is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.health().tokens["A"] is None
        assert _statuses(op, client, 4) == [200] * 4
        trail.seal()
        result = trail.verify()
        assert result.ok and result.unsealed == 0, result.problem
        entries = list(trail.export())
        lost = [entry["fields"] for entry in entries if entry["event"] == "hsm.lost"]
        back = [entry["fields"] for entry in entries if entry["event"] == "hsm.available"]
        # Each names the token (a field the trail keeps: a field named ``token`` is never stored).
        assert [fields.get("hsm_token") for fields in lost] == ["A"]
        assert [fields.get("hsm_token") for fields in back] == ["A"]
        issued = 8 + statuses.count(200)
        assert len([entry for entry in entries if entry["event"] == "token.issued"]) == issued
        # Each checkpoint verifies with the audit JWKS (cryptography), whichever token signed it.
        audit_keys = {key["kid"]: key for key in op.get("/.well-known/audit-jwks.json").get_json()["keys"]}
        signed_on = {item.kid: item.location["token"] for item in service.evidence(AUDIT_CHECKPOINT_SET)}
        tokens = _checkpoint_tokens(op)
        assert len(tokens) == result.checkpoints >= 4
        kids = []
        for checkpoint in tokens:
            header_b64, payload_b64, signature = checkpoint.split(".")
            header = json.loads(b64decode(header_b64))
            verify(audit_keys[header["kid"]], "RS256", f"{header_b64}.{payload_b64}".encode(), b64decode(signature))
            kids.append(header["kid"])
        assert {signed_on[kid] for kid in kids} == {"A", "O"}
    finally:
        trail.stop()
        service.close()


@SQLITE
def test_checkpoints_are_signed_on_the_opencryptoki_token(make_app, ock_only, opencryptoki):
    from oidc.state import state_of
    from oidc.vocabulary import AUDIT_CHECKPOINT_SET

    op = Provider(make_app({**ock_only, "AUDIT_CHAIN": "true", "AUDIT_SEAL_SECONDS": "3600",
                            "AUDIT_CHECKPOINT_ENTRIES": "4"}))
    service = state_of(op.app).key_service()
    assert service.backend_of(AUDIT_CHECKPOINT_SET) == "hsm"
    (key,) = private_keys(opencryptoki, ock_only["HSM_KEY_SET_PREFIX"] + AUDIT_CHECKPOINT_SET)
    assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False
    _issue_tokens(op, 6)
    trail = _trail(op)
    trail.seal()
    result = trail.verify()
    assert result.ok and result.checkpoints >= 1, result.problem
    (jwk,) = op.get("/.well-known/audit-jwks.json").get_json()["keys"]
    assert jwk["alg"] == "RS256" and jwk["kty"] == "RSA"
    for checkpoint in _checkpoint_tokens(op):
        header_b64, payload_b64, signature = checkpoint.split(".")
        assert json.loads(b64decode(header_b64))["kid"] == jwk["kid"]
        verify(jwk, "RS256", f"{header_b64}.{payload_b64}".encode(), b64decode(signature))
    (evidence,) = service.evidence(AUDIT_CHECKPOINT_SET)
    assert evidence.location["token_label"] == opencryptoki.LABEL and evidence.hsm_only_shortfalls() == []
    service.close()


@SQLITE
@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_a_request_signed_on_the_opencryptoki_token_gets_its_chain_published(make_app, ock_only, tmp_path, alg):
    app = make_app({**ock_only, "ID_TOKEN_SIGNING_ALG": alg})
    service = start_key_service(app)
    signer = service.signer(ID_TOKEN_SET)
    assert signer.backend == "hsm"
    runner = app.test_cli_runner()
    out = tmp_path / "request.pem"
    made = runner.invoke(args=["keys", "csr", ID_TOKEN_SET, "--subject", "CN=op.example.test", "--out", str(out)])
    assert made.exit_code == 0, made.output
    request = x509.load_pem_x509_csr(out.read_bytes())
    assert request.is_signature_valid  # signed on the token, by the key whose public half is published
    keys = {key["kid"]: key for key in app.test_client().get("/.well-known/jwks.json").get_json()["keys"]}
    assert spki(request.public_key()) == spki(jwt.PyJWK(keys[signer.kid]).key)

    ca = SmallCA()
    leaf = ca.issue(request)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ca.chain_pem(leaf))
    attached = runner.invoke(args=["keys", "certificate", ID_TOKEN_SET, "--chain", str(chain), "--json"])
    assert attached.exit_code == 0, attached.output
    (jwk,) = [key for key in app.test_client().get("/.well-known/jwks.json").get_json()["keys"]
              if key["kid"] == signer.kid]
    certificates = [x509.load_der_x509_certificate(b64decode_standard(item)) for item in jwk["x5c"]]
    assert certificates == [leaf, ca.intermediate, ca.root] and "x5t#S256" in jwk
    # What the token signs now verifies with the JWK as published, x5c and all (PyJWT).
    from keys import compact_jws

    token = compact_jws(service.signer(ID_TOKEN_SET), {"sub": "x"}, "JWT")
    assert jwt.decode(token, key=jwt.PyJWK(jwk), algorithms=[alg]) == {"sub": "x"}
    (evidence,) = [item for item in service.evidence(ID_TOKEN_SET) if item.kid == signer.kid]
    assert evidence.certificate is not None and evidence.certificate["chain_length"] == 3
    service.close()


def _statuses(op: Provider, client: tuple[str, str | None], count: int) -> list[int]:
    """``count`` client_credentials requests; their statuses."""
    client_id, secret = client
    return [op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                    auth=(client_id, secret or "")).status_code for _ in range(count)]


def b64decode_standard(value: str) -> bytes:
    import base64

    return base64.b64decode(value, validate=True)


@SQLITE
def test_a_set_one_vendors_token_cannot_sign_is_refused_naming_that_token(make_app, vendor_tokens, opencryptoki):
    """ES256 on A (SoftHSM2 has EC) and O (openCryptoki has none): refused at start-up, naming O and the mechanism."""
    from keys.errors import MechanismUnsupported

    _, env = vendor_tokens
    with pytest.raises(MechanismUnsupported) as refused:
        start_key_service(make_app({**env, "ACCESS_TOKEN_SIGNING_ALG": "ES256"}))
    message = str(refused.value)
    assert "token 'O'" in message and "ES256" in message and "CKM_EC_KEY_PAIR_GEN" in message
    assert opencryptoki.PIN not in message and "\n" not in message
