"""A second vendor: openCryptoki's soft token (pkcsslotd, libpkcs11_sw).

It offers ``CKM_RSA_PKCS`` and the PSS mechanisms but not ``CKM_SHA256_RSA_PKCS``,
and no EC at all; and ``pkcs11-tool --keypairgen`` makes *extractable* private
keys on it.  So: RS256 signs as ``CKM_RSA_PKCS`` over a DigestInfo computed in
Python (RFC 8017 §9.2), an ES256 set is refused at start-up naming the missing
mechanism, a pkcs11-tool pair is refused until hardened, and pairs made with
``python -m keys.provision`` are adopted as they are.  Signatures verified with
``cryptography``; attributes read back from the token.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass
from test_doctor import doctor, line
from test_hsm_manager import published, signing_input_for, verify_signature

from keys.errors import HSMError, MechanismUnsupported
from keys.hsm import PKCS11_LOCK
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET

from support import start_key_service

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


@pytest.fixture
def ock_env(base_env: dict[str, str], opencryptoki: Any) -> Iterator[dict[str, str]]:
    """An HSM deployment on the openCryptoki soft token, with key labels of its own."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    yield {**base_env, "HSM_ENABLED": "true", "HSM_LIBRARY": opencryptoki.library,
           "HSM_TOKEN_LABEL": opencryptoki.LABEL, "HSM_PIN": opencryptoki.PIN, "HSM_KEY_SET_PREFIX": prefix}
    opencryptoki.destroy_labelled(prefix)


def private_keys(opencryptoki: Any, label: str) -> list[dict[Attribute, Any]]:
    with PKCS11_LOCK:
        token = pkcs11.lib(opencryptoki.library).get_token(token_label=opencryptoki.LABEL)
        try:
            session = token.open(user_pin=opencryptoki.PIN)
        except pkcs11.UserAlreadyLoggedIn:  # a manager of this process is logged in: share its login
            session = token.open()
        try:
            return [
                {attribute: key[attribute] for attribute in (
                    Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE, Attribute.SIGN)}
                for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
            ]
        finally:
            session.close()


def pkcs11_tool(opencryptoki: Any, *args: str) -> None:
    subprocess.run(
        ["pkcs11-tool", "--module", opencryptoki.library, "--token-label", opencryptoki.LABEL, "--login",
         "--pin", opencryptoki.PIN, *args], check=True, capture_output=True, timeout=120,
    )


def provision(opencryptoki: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keys.provision", *args, "--module", opencryptoki.library,
         "--token-label", opencryptoki.LABEL], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HSM_PIN": opencryptoki.PIN},
    )


def test_rsa_sets_are_generated_and_sign_with_the_mechanisms_the_token_has(make_app, ock_env, opencryptoki, caplog):
    caplog.set_level(logging.INFO, logger="keys")
    app = make_app({**ock_env, "ID_TOKEN_SIGNING_ALG": "RS256", "ACCESS_TOKEN_SIGNING_ALG": "PS256"})
    service = start_key_service(app)
    for key_set, alg in ((ID_TOKEN_SET, "RS256"), (ACCESS_TOKEN_SET, "PS256")):
        signer = service.signer(key_set)
        assert (signer.alg, signer.backend) == (alg, "hsm")
        signing_input = signing_input_for(signer.kid, alg)
        verify_signature(published(app)[signer.kid], signing_input, signer.sign(signing_input))
        (key,) = private_keys(opencryptoki, ock_env["HSM_KEY_SET_PREFIX"] + key_set)
        assert key == {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.NEVER_EXTRACTABLE: True,
                       Attribute.SIGN: True}
    chosen = {record.getMessage() for record in caplog.records if "on the HSM with" in record.getMessage()}
    assert chosen == {
        "key set openid.id-token signs RS256 on the HSM with CKM_RSA_PKCS over a SHA-256 DigestInfo computed in Python",
        "key set jwt.access-token signs PS256 on the HSM with CKM_SHA256_RSA_PKCS_PSS",
    }
    service.hsm.close()


def test_a_set_whose_algorithm_the_token_cannot_do_is_refused_at_start_up(make_app, ock_env, opencryptoki):
    with pytest.raises(MechanismUnsupported) as refused:
        start_key_service(make_app({**ock_env, "ACCESS_TOKEN_SIGNING_ALG": "ES256"}))
    message = str(refused.value)
    label = ock_env["HSM_KEY_SET_PREFIX"] + ACCESS_TOKEN_SET
    assert f"labelled {label!r}" in message and "ES256" in message and "CKM_EC_KEY_PAIR_GEN" in message
    assert "\n" not in message and opencryptoki.PIN not in message
    # Adopt-only, nothing to generate: the signing mechanism is what is missing.
    with pytest.raises(MechanismUnsupported) as refused:
        start_key_service(make_app({**ock_env, "ACCESS_TOKEN_SIGNING_ALG": "ES256", "HSM_GENERATE_KEYS": "false"}))
    assert f"key set {label!r} cannot sign ES256" in str(refused.value)
    assert "CKM_ECDSA_SHA256 or CKM_ECDSA" in str(refused.value)
    assert private_keys(opencryptoki, label) == []


def test_hydra_provisioned_pairs_are_refused_while_extractable_and_adopted_once_hardened(make_app, ock_env, opencryptoki):
    prefix = ock_env["HSM_KEY_SET_PREFIX"]
    pkcs11_tool(opencryptoki, "--keypairgen", "--key-type", "rsa:2048", "--usage-sign", "--sensitive",
                "--label", prefix + ID_TOKEN_SET, "--id", "746573742d6b65792d6964")
    assert private_keys(opencryptoki, prefix + ID_TOKEN_SET)[0][Attribute.EXTRACTABLE] is True  # the vendor's default
    generated = provision(opencryptoki, "generate", "--label", prefix + ACCESS_TOKEN_SET, "--id", "6b6964",
                          "--key-type", "rsa:2048")
    assert generated.returncode == 0, generated.stderr
    env = {**ock_env, "ACCESS_TOKEN_SIGNING_ALG": "RS256", "HSM_GENERATE_KEYS": "false"}

    with pytest.raises(HSMError) as refused:
        start_key_service(make_app(env))
    assert "key 'test-key-id' is refused, its private key is extractable" in str(refused.value)

    hardened = provision(opencryptoki, "harden", "--label", prefix + ID_TOKEN_SET, "--id", "746573742d6b65792d6964")
    assert hardened.returncode == 0, hardened.stderr
    app = make_app(env)
    service = start_key_service(app)
    jwks = published(app)
    assert set(jwks) == {"test-key-id", "kid"}
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        signer = service.signer(key_set)
        signing_input = signing_input_for(signer.kid, signer.alg)
        verify_signature(jwks[signer.kid], signing_input, signer.sign(signing_input))
        (key,) = private_keys(opencryptoki, prefix + key_set)
        assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False
    # Generated by the provisioning tool: never extractable at all; hardened: not any more.
    assert private_keys(opencryptoki, prefix + ACCESS_TOKEN_SET)[0][Attribute.NEVER_EXTRACTABLE] is True
    assert private_keys(opencryptoki, prefix + ID_TOKEN_SET)[0][Attribute.NEVER_EXTRACTABLE] is False
    service.hsm.close()


def test_evidence_shows_a_generated_key_and_a_pkcs11_tool_pair_that_can_be_extracted(make_app, ock_env, opencryptoki):
    """openCryptoki's pkcs11-tool pairs are generated on the token (CKA_LOCAL) but extractable by default."""
    prefix = ock_env["HSM_KEY_SET_PREFIX"]
    pkcs11_tool(opencryptoki, "--keypairgen", "--key-type", "rsa:2048", "--usage-sign", "--sensitive",
                "--label", prefix + ID_TOKEN_SET, "--id", "746f6f6c")
    app = make_app({**ock_env, "ID_TOKEN_SIGNING_ALG": "RS256", "ACCESS_TOKEN_SIGNING_ALG": "RS256",
                    "HSM_ALLOW_EXTRACTABLE_KEYS": "true"})
    service = start_key_service(app)
    found = {item.kid: item for item in service.evidence()}
    tool = found["tool"]
    assert tool.attributes["CKA_LOCAL"] is True and tool.attributes["CKA_EXTRACTABLE"] is True
    assert tool.attributes["CKA_NEVER_EXTRACTABLE"] is False
    assert "CKA_EXTRACTABLE is true" in tool.hsm_only_shortfalls()
    generated = found[service.signer(ACCESS_TOKEN_SET).kid]
    assert generated.hsm_only_shortfalls() == [], generated.attributes
    assert generated.location["token_label"] == opencryptoki.LABEL
    # No CKM_SHA256_RSA_PKCS on this token: the raw mechanism over a DigestInfo signs.
    assert generated.signing_mechanism == "CKM_RSA_PKCS"
    service.hsm.close()


def test_doctor_fails_the_es256_set_on_a_token_without_ec(base_env: dict[str, str], opencryptoki: Any) -> None:
    """openCryptoki's soft token has RSA but no EC: the ES256 access-token set cannot live there."""
    prefix = f"doctor-{uuid.uuid4().hex[:8]}."  # no keys under this prefix: the key checks fail too
    env = {**base_env, "HSM_ENABLED": "true", "HSM_LIBRARY": opencryptoki.library,
           "HSM_TOKEN_LABEL": opencryptoki.LABEL, "HSM_PIN": opencryptoki.PIN, "HSM_KEY_SET_PREFIX": prefix,
           "ACCESS_TOKEN_SIGNING_ALG": "ES256"}
    status, lines, output = doctor(env)
    assert status == 1, output
    assert line(lines, "login").startswith("[ok  ]")
    assert line(lines, "mechanisms openid.id-token").startswith("[ok  ] mechanisms openid.id-token: RS256")
    es = line(lines, "mechanisms jwt.access-token")
    assert es.startswith("[FAIL]") and "ES256 needs CKM_EC_KEY_PAIR_GEN, CKM_ECDSA" in es
    assert "fix: set ACCESS_TOKEN_SIGNING_ALG" in es
    assert "oidc-hsm keys generate" in line(lines, "keys openid.id-token")
