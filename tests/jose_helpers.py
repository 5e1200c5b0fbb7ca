"""Independent JWS verification for tests: ``cryptography`` only, never ``keys/``.

The key service's own code is what is under test, so signatures are checked
here from the public JWK as published, built back into a ``cryptography`` key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def public_key_from_jwk(jwk: dict[str, Any]) -> Any:
    if jwk["kty"] == "RSA":
        n = int.from_bytes(b64decode(jwk["n"]), "big")
        e = int.from_bytes(b64decode(jwk["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if jwk["kty"] == "EC":
        x = int.from_bytes(b64decode(jwk["x"]), "big")
        y = int.from_bytes(b64decode(jwk["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[jwk["crv"]]()).public_key()
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    return ed25519.Ed25519PublicKey.from_public_bytes(b64decode(jwk["x"]))


def verify(jwk: dict[str, Any], alg: str, signing_input: bytes, signature: bytes) -> None:
    """Raise ``cryptography.exceptions.InvalidSignature`` unless the JWS signature is valid."""
    key = public_key_from_jwk(jwk)
    if alg == "EdDSA":
        key.verify(signature, signing_input)
        return
    digest = _HASHES[alg[2:]]()
    if alg.startswith("RS"):
        key.verify(signature, signing_input, padding.PKCS1v15(), digest)
    elif alg.startswith("PS"):
        key.verify(signature, signing_input, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest)
    else:
        size = {"256": 32, "384": 48, "512": 66}[alg[2:]]
        assert len(signature) == 2 * size, "ES signatures are fixed-width raw r||s"
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
