"""X.509 certificates for signing keys: a request signed where the key lives, the issued chain checked.

* :func:`certificate_request` builds a PKCS#10 request (RFC 2986) for a key the
  process does not hold.  ``cryptography``'s CSR builder signs only with private
  keys it has in memory, so the ``CertificationRequestInfo`` is built with
  ``asn1crypto`` and its DER is signed through the key's :class:`Signer`, the
  same path every JWS takes: an HSM key never leaves the token.  The request is
  verified with ``cryptography`` before it is handed out.
* :func:`check_chain` accepts an issued chain only when its leaf certifies this
  very key, each certificate is signed by the next, and all are valid now.
* :func:`x5c_members` gives the JWK members that publish a chain (RFC 7517 §4.7, §4.9).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from datetime import datetime
from typing import Any

from asn1crypto import algos, csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keys.algorithms import Algorithm, get_algorithm
from keys.errors import CertificateError
from keys.jwk import PublicKey
from keys.jws import b64url
from keys.signer import Signer

#: How X.509 names each JWS algorithm's signature (RFC 4055 §5, RFC 5758 §3.2, RFC 8410 §3).
_SIGNATURE_ALGORITHMS = {
    ("RSA", "sha256"): "sha256_rsa", ("RSA", "sha384"): "sha384_rsa", ("RSA", "sha512"): "sha512_rsa",
    ("EC", "sha256"): "sha256_ecdsa", ("EC", "sha384"): "sha384_ecdsa", ("EC", "sha512"): "sha512_ecdsa",
}


def _signature_algorithm(algorithm: Algorithm) -> algos.SignedDigestAlgorithm:
    if algorithm.is_eddsa:
        return algos.SignedDigestAlgorithm({"algorithm": "ed25519"})
    assert algorithm.hash_name is not None
    if algorithm.is_pss:
        # JWS PSxxx: MGF1 with the same hash, salt as long as the hash (RFC 7518 §3.5), said so in
        # RSASSA-PSS-params (RFC 4055 §3.1).
        digest = {"algorithm": algorithm.hash_name}
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": algos.RSASSAPSSParams({
            "hash_algorithm": digest,
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": digest},
            "salt_length": algorithm.cryptography_hash().digest_size,
            "trailer_field": "trailer_field_bc",
        })})
    return algos.SignedDigestAlgorithm({"algorithm": _SIGNATURE_ALGORITHMS[(algorithm.kty, algorithm.hash_name)]})


def _x509_signature(algorithm: Algorithm, jws_signature: bytes) -> bytes:
    """The signature as X.509 wants it: ECDSA's JWS ``r||s`` (RFC 7518 §3.4) becomes a DER
    ``ECDSA-Sig-Value`` (RFC 5480 §2.2 / RFC 3279 §2.2.3); RSA and Ed25519 are the same bytes."""
    if not algorithm.is_ecdsa:
        return jws_signature
    half = len(jws_signature) // 2
    r, s = int.from_bytes(jws_signature[:half], "big"), int.from_bytes(jws_signature[half:], "big")
    return encode_dss_signature(r, s)


def parse_subject(subject: str) -> x509.Name:
    """An RFC 4514 distinguished name (``"CN=op.example.com,O=Example"``), refused when it does not parse."""
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        raise CertificateError(f"the subject {subject!r} is not an RFC 4514 name: {exc}") from None
    if not list(name):
        raise CertificateError("the subject is empty: give at least CN=...")
    return name


def certificate_request(signer: Signer, public_key: PublicKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``public_key`` (the signer's), signed through ``signer``."""
    algorithm = get_algorithm(signer.alg)
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = csr.CertificationRequestInfo({
        "version": "v1",
        "subject": asn1_x509.Name.load(subject.public_bytes()),
        "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
        "attributes": [],  # present and empty (RFC 2986 §4.1: the field is not optional)
    })
    signature = _x509_signature(algorithm, signer.sign(info.dump()))
    request = csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": _signature_algorithm(algorithm),
        "signature": signature,
    })
    built = x509.load_der_x509_csr(request.dump())
    if not built.is_signature_valid:
        raise CertificateError(f"the request signed by key {signer.kid!r} ({signer.alg}) does not verify")
    return built


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _describe(index: int, certificate: x509.Certificate) -> str:
    return f"certificate {index + 1} ({certificate.subject.rfc4514_string() or 'empty subject'})"


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"the chain is not PEM certificates: {exc}") from None
    if not certificates:
        raise CertificateError("the chain holds no certificate")
    return certificates


def check_chain(certificates: list[x509.Certificate], public_key: PublicKey, now: datetime | None, *,
                kid: str) -> None:
    """Refuse a chain that does not certify ``public_key`` leaf first, each signed by the next, valid at
    ``now`` (validity not checked when ``now`` is None).

    The last certificate's own issuer (a root) need not be included: relying
    parties anchor trust themselves (RFC 7517 §4.7 lets the chain stop short of it).
    """
    if _spki(certificates[0].public_key()) != _spki(public_key):
        raise CertificateError(f"{_describe(0, certificates[0])} certifies another public key than key {kid!r}'s: "
                               "the first certificate must be the one issued for this key's request")
    for index, (certificate, issuer) in enumerate(itertools.pairwise(certificates)):
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateError(
                f"{_describe(index, certificate)} is not signed by {_describe(index + 1, issuer)}: "
                "give the chain leaf first, each certificate followed by its issuer") from None
    if now is None:
        return
    for index, certificate in enumerate(certificates):
        if now < certificate.not_valid_before_utc:
            raise CertificateError(f"{_describe(index, certificate)} is not valid before "
                                   f"{certificate.not_valid_before_utc.isoformat()}")
        if now > certificate.not_valid_after_utc:
            raise CertificateError(f"{_describe(index, certificate)} expired at "
                                   f"{certificate.not_valid_after_utc.isoformat()}")


def not_after(certificates: list[x509.Certificate]) -> datetime:
    """When the chain stops being valid: its earliest notAfter."""
    return min(certificate.not_valid_after_utc for certificate in certificates)


def to_pem(certificates: list[x509.Certificate]) -> str:
    return "".join(certificate.public_bytes(serialization.Encoding.PEM).decode("ascii") for certificate in certificates)


def x5c_members(certificates: list[x509.Certificate]) -> dict[str, Any]:
    """``x5c`` (standard base64 DER, leaf first: RFC 7517 §4.7) and ``x5t#S256`` (base64url SHA-256 of
    the leaf's DER: §4.9)."""
    der = [certificate.public_bytes(serialization.Encoding.DER) for certificate in certificates]
    return {
        "x5c": [base64.b64encode(item).decode("ascii") for item in der],
        "x5t#S256": b64url(hashlib.sha256(der[0]).digest()),
    }


def summary(certificates: list[x509.Certificate]) -> dict[str, Any]:
    """What an operator reads about an attached chain (its leaf, and where it ends)."""
    leaf = certificates[0]
    return {
        "subject": leaf.subject.rfc4514_string(),
        "issuer": leaf.issuer.rfc4514_string(),
        "serial_number": format(leaf.serial_number, "x"),
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "chain_not_after": not_after(certificates).isoformat(),
        "chain_length": len(certificates),
        "sha256_fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
    }
