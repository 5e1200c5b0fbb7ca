"""Certificates for signing keys: ``keys csr`` signs a PKCS#10 request on the token, ``keys certificate``
attaches the issued chain, the JWKS publishes it as ``x5c`` / ``x5t#S256`` (RFC 7517 §4.7-4.9), doctor
watches its expiry.

A small CA (root and intermediate) is made here with ``cryptography``; the
request is verified with ``cryptography`` and the JWKS read back with PyJWT's
PyJWK and ``cryptography``'s x509, neither of which the provider uses to publish.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import re
import subprocess
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_doctor import doctor

from keys.errors import CertificateError
from keys.service import ID_TOKEN_SET
from keys.store import StoredChain

from support import start_key_service

pytestmark = [pytest.mark.hsm, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

NOW = dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class SmallCA:
    """A root and an intermediate CA that issue leaf certificates for requests."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._certificate(_name("Test Root"), _name("Test Root"), self.root_key.public_key(),
                                      self.root_key, ca=True)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._certificate(_name("Test Intermediate"), _name("Test Root"),
                                              self.intermediate_key.public_key(), self.root_key, ca=True)

    @staticmethod
    def _certificate(subject: x509.Name, issuer: x509.Name, public_key: Any, signing_key: Any, *, ca: bool,
                     not_before: dt.datetime | None = None, days: int = 365) -> x509.Certificate:
        start = not_before or NOW - dt.timedelta(days=1)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signing_key, hashes.SHA256()))

    def issue(self, request: x509.CertificateSigningRequest, **validity: Any) -> x509.Certificate:
        return self._certificate(request.subject, self.intermediate.subject, request.public_key(),
                                 self.intermediate_key, ca=False, **validity)

    def chain_pem(self, leaf: x509.Certificate, *rest: x509.Certificate) -> bytes:
        certificates = rest or (self.intermediate, self.root)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, *certificates))


def spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def published(app: Any, kid: str) -> dict[str, Any]:
    keys = app.test_client().get("/.well-known/jwks.json").get_json()["keys"]
    (jwk,) = [key for key in keys if key["kid"] == kid]
    return jwk


@pytest.mark.parametrize(("alg", "where"), [("ES256", "hsm"), ("RS256", "hsm"), ("PS256", "hsm"),
                                            ("RS256", "software"), ("EdDSA", "software")])
def test_a_request_signed_on_the_token_becomes_the_published_x5c(make_app, hsm_env, base_env, tmp_path, alg, where):
    env = hsm_env if where == "hsm" else base_env
    app = make_app({**env, "ID_TOKEN_SIGNING_ALG": alg, "HSM_ONLY_KEY_SETS": ID_TOKEN_SET if where == "hsm" else ""})
    service = start_key_service(app)
    signer = service.signer(ID_TOKEN_SET)
    assert signer.backend == where
    runner = app.test_cli_runner()
    out = tmp_path / "request.pem"

    made = runner.invoke(args=["keys", "csr", ID_TOKEN_SET, "--subject", "CN=op.example.test,O=Example",
                               "--out", str(out)])
    assert made.exit_code == 0, made.output
    request = x509.load_pem_x509_csr(out.read_bytes())
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=op.example.test,O=Example"
    # OpenSSL, as the README's runbook has the operator check it.
    checked = subprocess.run(["openssl", "req", "-in", str(out), "-verify", "-noout"], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, checked.stderr
    before = published(app, signer.kid)
    assert "x5c" not in before
    assert spki(request.public_key()) == spki(jwt.PyJWK(before).key)  # the published key, nobody else's

    ca = SmallCA()
    leaf = ca.issue(request)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ca.chain_pem(leaf))
    attached = runner.invoke(args=["keys", "certificate", ID_TOKEN_SET, "--chain", str(chain), "--json"])
    assert attached.exit_code == 0, attached.output
    assert json.loads(attached.output)["kid"] == signer.kid

    jwk = published(app, signer.kid)
    assert set(jwk) - set(before) == {"x5c", "x5t#S256"}
    # Standard base64 (not base64url) DER, leaf first (RFC 7517 §4.7).
    der = [base64.b64decode(item, validate=True) for item in jwk["x5c"]]
    certificates = [x509.load_der_x509_certificate(item) for item in der]
    assert certificates == [leaf, ca.intermediate, ca.root]
    assert spki(certificates[0].public_key()) == spki(jwt.PyJWK(jwk).key)
    for certificate, issuer in itertools.pairwise(certificates):
        certificate.verify_directly_issued_by(issuer)
    expected_thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der[0]).digest()).rstrip(b"=").decode()
    assert jwk["x5t#S256"] == expected_thumbprint

    # The key still signs, and what it signs verifies with the JWK as published now.
    header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
    signing_input = b".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
                              for part in (header, {"sub": "x"}))
    token = signing_input + b"." + base64.urlsafe_b64encode(signer.sign(signing_input)).rstrip(b"=")
    assert jwt.decode(token, key=jwt.PyJWK(jwk), algorithms=[signer.alg]) == {"sub": "x"}
    evidence = {item.kid: item for item in service.evidence(ID_TOKEN_SET)}[signer.kid]
    assert evidence.certificate is not None and evidence.certificate["subject"] == "CN=op.example.test,O=Example"
    assert evidence.certificate["chain_length"] == 3

    # Deleting the key deletes its certificate with it.
    service.delete(ID_TOKEN_SET, signer.kid)
    assert service.store.chains() == {}


def test_chains_that_do_not_certify_this_key_in_order_and_now_are_refused(make_app, hsm_env, tmp_path):
    app = make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "ES256"})
    service = start_key_service(app)
    kid = service.signer(ID_TOKEN_SET).kid
    ca = SmallCA()
    request = service.certificate_request(ID_TOKEN_SET, "CN=op.example.test")
    leaf = ca.issue(request)

    other = ca.issue(x509.CertificateSigningRequestBuilder().subject_name(_name("someone else"))
                     .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    refusals = {
        "another key": (ca.chain_pem(other), "certifies another public key than key"),
        "out of order": (ca.chain_pem(leaf, ca.root, ca.intermediate), "certificate 1 (CN=op.example.test) is not signed by "
                                                                      "certificate 2 (CN=Test Root)"),
        "expired": (ca.chain_pem(ca.issue(request, not_before=NOW - dt.timedelta(days=40), days=30)),
                    "certificate 1 (CN=op.example.test) expired at"),
        "not yet valid": (ca.chain_pem(ca.issue(request, not_before=NOW + dt.timedelta(days=1))),
                          "certificate 1 (CN=op.example.test) is not valid before"),
        "not PEM": (b"hello", "the chain is not PEM certificates"),
    }
    for case, (pem, message) in refusals.items():
        with pytest.raises(CertificateError) as refused:
            service.attach_certificate(ID_TOKEN_SET, pem)
        assert message in str(refused.value), case
    assert service.store.chains() == {}
    assert "x5c" not in published(app, kid)

    chain = tmp_path / "chain.pem"
    chain.write_bytes(refusals["out of order"][0])
    result = app.test_cli_runner().invoke(args=["keys", "certificate", ID_TOKEN_SET, "--chain", str(chain)])
    assert result.exit_code == 1 and "leaf first" in result.output

    # A chain that stops short of the root (relying parties hold their own trust anchor) is accepted.
    service.attach_certificate(ID_TOKEN_SET, ca.chain_pem(leaf, ca.intermediate))
    assert len(published(app, kid)["x5c"]) == 2
    with pytest.raises(CertificateError, match="the subject 'nonsense' is not an RFC 4514 name"):
        service.certificate_request(ID_TOKEN_SET, "nonsense")


def test_doctor_warns_before_a_certificate_expires_and_fails_after(make_app, hsm_env):
    app = make_app(hsm_env)
    service = start_key_service(app)
    kid = service.signer(ID_TOKEN_SET).kid
    ca = SmallCA()
    request = service.certificate_request(ID_TOKEN_SET, "CN=op.example.test")
    service.attach_certificate(ID_TOKEN_SET, ca.chain_pem(ca.issue(request, days=20)))

    status, lines, output = doctor(hsm_env)
    (check,) = [entry for entry in lines if entry.startswith(f"[warn] certificate {ID_TOKEN_SET}/{kid}:")]
    assert re.search(r"in 1[89] day\(s\)", check) and f"oidc-hsm keys csr {ID_TOKEN_SET} --kid {kid}" in check
    assert status == 0, output  # a warning is not a failure

    # The same chain once its time has passed (written as it was stored, the clock being real).
    stored = service.store.chains()[(ID_TOKEN_SET, kid)]
    service.store.put_chain(StoredChain(ID_TOKEN_SET, kid, stored.chain_pem, int(NOW.timestamp()) - 60,
                                        stored.attached_at))
    status, lines, output = doctor(hsm_env)
    assert status == 1
    (check,) = [entry for entry in lines if entry.startswith(f"[FAIL] certificate {ID_TOKEN_SET}/{kid}:")]
    assert "expired at" in check


def test_the_request_is_signed_by_the_key_on_the_token(make_app, hsm_env):
    """Nothing but the token could have made the signature: the key has no software copy and cannot leave."""
    app = make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "ES256", "HSM_ONLY_KEY_SETS": ID_TOKEN_SET})
    service = start_key_service(app)
    signer = service.signer(ID_TOKEN_SET)
    request = service.certificate_request(ID_TOKEN_SET, "CN=op.example.test")
    assert request.is_signature_valid
    assert service.store.sealed_private(ID_TOKEN_SET, signer.kid) is None
    (evidence,) = [item for item in service.evidence(ID_TOKEN_SET) if item.kid == signer.kid]
    assert evidence.hsm_only_shortfalls() == []
