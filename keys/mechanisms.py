"""Which PKCS#11 mechanism signs (or generates) for each JWS algorithm, chosen from the token's own list.

Tokens differ: SoftHSM2 has ``CKM_SHA256_RSA_PKCS`` but no ``CKM_ECDSA_SHA256``;
openCryptoki's soft token has ``CKM_RSA_PKCS`` and the PSS mechanisms but not
``CKM_SHA256_RSA_PKCS``, and no EC at all; p11-kit's RPC client (0.24) does not
pass ``CKM_EDDSA`` through.  So nothing is assumed: the manager reads the slot's
mechanism list once (``C_GetMechanismList``, ``C_GetMechanismInfo``: PKCS#11 v2.40
§5.5) and, per algorithm, takes the first candidate below that the token offers
with ``CKF_SIGN`` (and, for RSA, a key size range that covers the key):

* the combined hash-and-sign mechanism (the token hashes);
* else the raw mechanism over a digest computed here: ``CKM_RSA_PKCS`` over a DER
  ``DigestInfo`` (RFC 8017 §9.2, what Ory Hydra's crypto11 does), ``CKM_RSA_PKCS_PSS``
  over the digest with the same hash and MGF1 parameters (PKCS#11 v2.40 Current
  Mechanisms §2.1, RSA), ``CKM_ECDSA`` over the digest (its raw ``r||s`` is the
  JWS signature: §2.3, ECDSA, and RFC 7518 §3.4);
* Ed25519: ``CKM_EDDSA`` without parameters, pure Ed25519 (PKCS#11 v3.0 Current
  Mechanisms §2.3, EdDSA).

Decryption keys (``use: enc``) need ``CKM_RSA_PKCS_OAEP`` with ``CKF_DECRYPT``; which OAEP hashes
the token accepts its mechanism list does not say (SoftHSM 2.6 takes only SHA-1, answering
``CKR_ARGUMENTS_BAD`` for SHA-256), so the key service tries them once at start-up
(:meth:`keys.hsm.HSMManager.oaep_hashes`) and publishes the algorithm that works.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import Mechanism, MechanismFlag

from keys.algorithms import ALGORITHMS, DIGEST_INFO_PREFIXES, ENCRYPTION_ALGORITHMS, Algorithm
from keys.errors import MechanismUnsupported

_PSS_PARAMETERS = {
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256, 32),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384, 48),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512, 64),
}
_COMBINED_RSA = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
                 "sha512": Mechanism.SHA512_RSA_PKCS}
_COMBINED_PSS = {"sha256": Mechanism.SHA256_RSA_PKCS_PSS, "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
                 "sha512": Mechanism.SHA512_RSA_PKCS_PSS}
_COMBINED_ECDSA = {"sha256": Mechanism.ECDSA_SHA256, "sha384": Mechanism.ECDSA_SHA384,
                   "sha512": Mechanism.ECDSA_SHA512}

#: Key-pair generation mechanism per JWK key type (PKCS#11 v2.40 Current Mechanisms §2.1, §2.3; v3.0 §2.3).
GENERATION_MECHANISMS: dict[str, Mechanism] = {
    "RSA": Mechanism.RSA_PKCS_KEY_PAIR_GEN,
    "EC": Mechanism.EC_KEY_PAIR_GEN,
    "OKP": Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
}


def mechanism_name(mechanism: Any) -> str:
    """``CKM_…`` name of a mechanism, as the PKCS#11 standard spells it."""
    name = getattr(mechanism, "name", None)
    return f"CKM_{name}" if name else f"CKM 0x{int(mechanism):08x}"


@dataclass(frozen=True)
class MechanismSupport:
    """What ``C_GetMechanismInfo`` says of one mechanism."""

    flags: int
    min_key_bits: int
    max_key_bits: int

    def signs(self) -> bool:
        return bool(self.flags & MechanismFlag.SIGN)

    def decrypts(self) -> bool:
        return bool(self.flags & MechanismFlag.DECRYPT)

    def derives(self) -> bool:
        return bool(self.flags & MechanismFlag.DERIVE)

    def generates(self) -> bool:
        return bool(self.flags & MechanismFlag.GENERATE_KEY_PAIR)

    def fits(self, bits: int | None) -> bool:
        # A zero maximum means the token did not say (some report nothing).
        if bits is None or self.max_key_bits == 0:
            return True
        return self.min_key_bits <= bits <= self.max_key_bits


@dataclass(frozen=True)
class SigningPlan:
    """How one algorithm is signed on this token: mechanism, parameter, and what is fed to it."""

    alg: str
    mechanism: Mechanism
    parameter: Any
    prepare: Callable[[bytes], bytes] = field(repr=False)
    description: str = ""

    @property
    def mechanism_name(self) -> str:
        return mechanism_name(self.mechanism)


def _digest(hash_name: str) -> Callable[[bytes], bytes]:
    return lambda data: hashlib.new(hash_name, data).digest()


def _digest_info(hash_name: str) -> Callable[[bytes], bytes]:
    prefix = DIGEST_INFO_PREFIXES[hash_name]
    return lambda data: prefix + hashlib.new(hash_name, data).digest()


def _identity(data: bytes) -> bytes:
    return data


def candidates(algorithm: Algorithm) -> list[SigningPlan]:
    """The ways to sign ``algorithm``, preferred first."""
    name, hash_name = algorithm.name, algorithm.hash_name
    if algorithm.is_eddsa:
        return [SigningPlan(name, Mechanism.EDDSA, None, _identity, "CKM_EDDSA")]
    assert hash_name is not None
    label = hash_name.upper().replace("SHA", "SHA-")
    if algorithm.is_rsa and algorithm.is_pss:
        parameter = _PSS_PARAMETERS[hash_name]
        return [
            SigningPlan(name, _COMBINED_PSS[hash_name], parameter, _identity, mechanism_name(_COMBINED_PSS[hash_name])),
            SigningPlan(name, Mechanism.RSA_PKCS_PSS, parameter, _digest(hash_name),
                        f"CKM_RSA_PKCS_PSS over a {label} digest computed in Python"),
        ]
    if algorithm.is_rsa:
        return [
            SigningPlan(name, _COMBINED_RSA[hash_name], None, _identity, mechanism_name(_COMBINED_RSA[hash_name])),
            SigningPlan(name, Mechanism.RSA_PKCS, None, _digest_info(hash_name),
                        f"CKM_RSA_PKCS over a {label} DigestInfo computed in Python"),
        ]
    return [
        SigningPlan(name, _COMBINED_ECDSA[hash_name], None, _identity, mechanism_name(_COMBINED_ECDSA[hash_name])),
        SigningPlan(name, Mechanism.ECDSA, None, _digest(hash_name),
                    f"CKM_ECDSA over a {label} digest computed in Python"),
    ]


#: CK_RSA_PKCS_OAEP_PARAMS per OAEP hash: the same hash for MGF1, no label (RFC 7518 §4.3, PKCS#11 v2.40
#: Current Mechanisms §2.1.8).
OAEP_PARAMETERS: dict[str, tuple[Mechanism, Any, None]] = {
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256, None),
    "sha1": (Mechanism.SHA_1, pkcs11.MGF.SHA1, None),
}


def check_decryption(offered: Mapping[Any, MechanismSupport], *, key_bits: int | None = None,
                     alg: str = "RSA-OAEP-256") -> None:
    """Raise :class:`MechanismUnsupported` unless the token decrypts RSAES-OAEP (for ``key_bits`` keys),
    or for ``ECDH-ES`` derives an ECDH shared secret (``CKM_ECDH1_DERIVE`` with ``CKF_DERIVE``)."""
    if alg == "ECDH-ES":
        derive = offered.get(Mechanism.ECDH1_DERIVE)
        if derive is None or not derive.derives():
            raise MechanismUnsupported("the token offers no CKM_ECDH1_DERIVE with CKF_DERIVE")
        return
    support = offered.get(Mechanism.RSA_PKCS_OAEP)
    if support is None or not support.decrypts():
        raise MechanismUnsupported("the token offers no CKM_RSA_PKCS_OAEP with CKF_DECRYPT")
    if not support.fits(key_bits):
        raise MechanismUnsupported(f"CKM_RSA_PKCS_OAEP on this token takes {support.min_key_bits} to "
                                   f"{support.max_key_bits}-bit keys, not {key_bits}")


def mechanism_requirements(alg: str) -> tuple[tuple[Mechanism, ...], ...]:
    """What a token needs for ``alg``, each as alternatives (any one will do, preferred first).

    Its key-pair generation mechanism, and the signing mechanisms of :func:`candidates`:
    the table ``doctor`` checks a token against is the one the manager signs with.  An
    algorithm this service does not know needs nothing it could name.
    """
    if alg == "ECDH-ES":
        return (GENERATION_MECHANISMS["EC"],), (Mechanism.ECDH1_DERIVE,)
    if alg in ENCRYPTION_ALGORITHMS:
        return (GENERATION_MECHANISMS["RSA"],), (Mechanism.RSA_PKCS_OAEP,)
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        return ()
    return (GENERATION_MECHANISMS[algorithm.kty],), tuple(plan.mechanism for plan in candidates(algorithm))


def choose(algorithm: Algorithm, offered: Mapping[Any, MechanismSupport], *, key_bits: int | None = None) -> SigningPlan:
    """The preferred way the token offers to sign ``algorithm``; :class:`MechanismUnsupported` if none."""
    options = candidates(algorithm)
    for plan in options:
        support = offered.get(plan.mechanism)
        if support is not None and support.signs() and (not algorithm.is_rsa or support.fits(key_bits)):
            return plan
    wanted = " or ".join(plan.mechanism_name for plan in options)
    size = f" for {key_bits}-bit keys" if algorithm.is_rsa and key_bits else ""
    raise MechanismUnsupported(f"the token offers no {wanted} with CKF_SIGN{size}")


def check_generation(algorithm: Algorithm, offered: Mapping[Any, MechanismSupport], *, rsa_bits: int) -> None:
    """Raise :class:`MechanismUnsupported` unless the token can generate a key pair for ``algorithm``."""
    mechanism = GENERATION_MECHANISMS[algorithm.kty]
    support = offered.get(mechanism)
    if support is None or not support.generates():
        raise MechanismUnsupported(f"the token offers no {mechanism_name(mechanism)} with CKF_GENERATE_KEY_PAIR")
    if algorithm.is_rsa and not support.fits(rsa_bits):
        raise MechanismUnsupported(
            f"{mechanism_name(mechanism)} on this token generates {support.min_key_bits} to "
            f"{support.max_key_bits}-bit keys, not {rsa_bits}"
        )
