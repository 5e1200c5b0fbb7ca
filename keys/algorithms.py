"""JWS signature algorithms this key service signs with (RFC 7518, RFC 8037, RFC 9864).

``Ed25519`` is RFC 9864's fully specified name for EdDSA over Ed25519; the
polymorphic ``EdDSA`` (RFC 8037) stays for keys and clients that already use it.

Only asymmetric algorithms are offered: a resource server must be able to verify
our tokens from the public JWK Set alone.  ``HS*`` (a shared secret would have to
leave the key service) and ``none`` are refused by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keys.errors import UnsupportedAlgorithm

#: Smallest RSA modulus we generate or accept (RFC 7518 §3.3 requires 2048).
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Algorithm:
    """What a JWS ``alg`` needs from a key and from a signing backend."""

    name: str
    kty: str  # JWK key type: "RSA", "EC" or "OKP"
    curve: str | None  # JWK "crv" for EC/OKP keys
    hash_name: str | None  # message digest (OAEP's hash for a key-encryption alg), None for EdDSA
    signature_size: int | None  # fixed r||s length in bytes for ECDSA
    use: str = "sig"  # JWK "use": "sig" signs, "enc" decrypts (RFC 7517 §4.2); never both

    @property
    def is_rsa(self) -> bool:
        return self.kty == "RSA"

    @property
    def is_pss(self) -> bool:
        return self.name.startswith("PS")

    @property
    def is_ecdsa(self) -> bool:
        return self.kty == "EC"

    @property
    def is_eddsa(self) -> bool:
        return self.kty == "OKP"

    def digest(self, data: bytes) -> bytes:
        """The message digest ECDSA signs (PKCS#11 tokens lack CKM_ECDSA_SHA*)."""
        assert self.hash_name is not None, f"{self.name} signs the message itself"
        return hashlib.new(self.hash_name, data).digest()

    def cryptography_hash(self) -> hashes.HashAlgorithm:
        assert self.hash_name is not None, f"{self.name} has no separate hash"
        return _CRYPTOGRAPHY_HASHES[self.hash_name]()


_CRYPTOGRAPHY_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # RSA-OAEP's hash (RFC 7518 §4.3), never a signature's
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

ALGORITHMS: dict[str, Algorithm] = {
    "RS256": Algorithm("RS256", "RSA", None, "sha256", None),
    "RS384": Algorithm("RS384", "RSA", None, "sha384", None),
    "RS512": Algorithm("RS512", "RSA", None, "sha512", None),
    "PS256": Algorithm("PS256", "RSA", None, "sha256", None),
    "PS384": Algorithm("PS384", "RSA", None, "sha384", None),
    "PS512": Algorithm("PS512", "RSA", None, "sha512", None),
    "ES256": Algorithm("ES256", "EC", "P-256", "sha256", 64),
    "ES384": Algorithm("ES384", "EC", "P-384", "sha384", 96),
    "ES512": Algorithm("ES512", "EC", "P-521", "sha512", 132),
    "EdDSA": Algorithm("EdDSA", "OKP", "Ed25519", None, None),
    "Ed25519": Algorithm("Ed25519", "OKP", "Ed25519", None, None),
}

#: JWE key-management algorithms a decryption key set uses.  RSAES-OAEP (RFC 7518 §4.3): the content
#: key is decrypted with the private key (``C_Decrypt`` with ``CKM_RSA_PKCS_OAEP`` on a token); RSA-OAEP
#: (SHA-1) is there for tokens whose OAEP has no other hash (SoftHSM 2.6).  ECDH-ES in direct key
#: agreement mode over P-256 (RFC 7518 §4.6): the shared secret is derived with the private key
#: (``CKM_ECDH1_DERIVE`` on a token), the content key from it by the Concat KDF in software.  Never in
#: :data:`ALGORITHMS`: these never sign.
ENCRYPTION_ALGORITHMS: dict[str, Algorithm] = {
    "RSA-OAEP-256": Algorithm("RSA-OAEP-256", "RSA", None, "sha256", None, use="enc"),
    "RSA-OAEP": Algorithm("RSA-OAEP", "RSA", None, "sha1", None, use="enc"),
    "ECDH-ES": Algorithm("ECDH-ES", "EC", "P-256", None, None, use="enc"),
}

#: The RSAES-OAEP ones, by preference.
OAEP_ALGORITHMS: tuple[str, ...] = ("RSA-OAEP-256", "RSA-OAEP")

#: JWE content encryption algorithms accepted with them (RFC 7518 §5.2, §5.3).
CONTENT_ENCRYPTIONS: tuple[str, ...] = ("A256GCM", "A128CBC-HS256")

#: Both names of EdDSA over Ed25519: RFC 8037's polymorphic one and RFC 9864's fully specified one.
EDDSA_ALGORITHMS: tuple[str, ...] = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.is_eddsa)

#: Every JWS alg we verify or sign with, in one list: client assertions accept
#: these, discovery advertises them.
JWS_ALGORITHMS: tuple[str, ...] = tuple(ALGORITHMS)

#: DER of the DigestInfo prefix (RFC 8017 §9.2, note 1) that CKM_RSA_PKCS signs
#: over when the token has no combined CKM_SHA*_RSA_PKCS mechanism.
DIGEST_INFO_PREFIXES: dict[str, bytes] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

#: JWK "crv" -> cryptography curve, for EC keys.
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}

#: JWK "crv" -> the ECDSA alg that curve is used with (RFC 7518 §3.4).
ALG_FOR_CURVE: dict[str, str] = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

#: JWK "crv" of each curve by its SEC 2 name (cryptography's ``curve.name``, PKCS#11's named-curve OID).
CURVE_FOR_SEC_NAME: dict[str, str] = {curve().name: crv for crv, curve in EC_CURVES.items()}
SEC_NAME_FOR_CURVE: dict[str, str] = {crv: name for name, crv in CURVE_FOR_SEC_NAME.items()}


def get_algorithm(name: str) -> Algorithm:
    """Look up a supported JWS algorithm, refusing symmetric ones, key-encryption ones and ``none``."""
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    if name in ENCRYPTION_ALGORITHMS:
        raise UnsupportedAlgorithm(f"{name!r} is a key-encryption algorithm (use 'enc'): its keys decrypt, "
                                   "never sign")
    if name.upper().startswith("HS"):
        raise UnsupportedAlgorithm(
            f"{name!r} is a symmetric (shared secret) algorithm; the key service "
            "only signs with asymmetric keys whose public half can be published"
        )
    if name.lower() == "none":
        raise UnsupportedAlgorithm("'none' is not a signature algorithm and is never used")
    raise UnsupportedAlgorithm(
        f"unsupported signing algorithm {name!r}; use one of {', '.join(ALGORITHMS)}"
    )


def key_algorithm(name: str) -> Algorithm:
    """The algorithm a key of a set is used with: a JWS one (``use: sig``) or a JWE key-encryption
    one (``use: enc``); anything else refused as :func:`get_algorithm` refuses it."""
    if name in ENCRYPTION_ALGORITHMS:
        return ENCRYPTION_ALGORITHMS[name]
    return get_algorithm(name)


def decryption_description(alg: str) -> str:
    """How a key-encryption algorithm decrypts on a token, e.g. ``CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256)``."""
    hash_name = ENCRYPTION_ALGORITHMS[alg].hash_name
    if hash_name is None:
        return "CKM_ECDH1_DERIVE (the Concat KDF over its shared secret in software)"
    label = hash_name.upper().replace("SHA", "SHA-")
    return f"CKM_RSA_PKCS_OAEP ({label}, MGF1-{label})"


def oaep_algorithm(preferred: str, hashes: tuple[str, ...]) -> str | None:
    """The key-encryption algorithm to publish a token's key for: ``preferred`` when the token's OAEP
    does its hash, else the other RSAES-OAEP one it does (RSA-OAEP on a SHA-1-only token), else None."""
    ordered = [preferred, *(name for name in OAEP_ALGORITHMS if name != preferred)]
    return next((name for name in ordered if ENCRYPTION_ALGORITHMS[name].hash_name in hashes), None)
