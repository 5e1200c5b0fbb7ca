"""The key service: signing keys on a PKCS#11 HSM or sealed in SQL, and the JWKS.

This package knows nothing about OAuth or Flask.  Its one contract with the
token builders (see :class:`keys.service.KeyService`)::

    signer = service.signer("openid.id-token")
    signer.kid, signer.alg
    signature = signer.sign(signing_input)   # compact_jws(signer, claims, typ) builds the JWS around it
    service.jwks_document()
    service.public_key(kid)
"""

from keys.errors import (
    CertificateError,
    HSMError,
    HSMOperationError,
    HSMUnavailable,
    InvalidKey,
    KeyNotFound,
    KeyServiceError,
    MechanismUnsupported,
    NoSigningKey,
    SealingError,
    UnsupportedAlgorithm,
)
from keys.evidence import HSM_ONLY_REQUIREMENTS, KeyEvidence, shortfalls
from keys.jws import compact_jws
from keys.mechanisms import mechanism_name
from keys.mechanisms import requirements as mechanism_requirements
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET, KeyService, KeySetPolicy, RotationPolicy
from keys.signer import KeyRecord, Signer

__all__ = [
    "ACCESS_TOKEN_SET",
    "HSM_ONLY_REQUIREMENTS",
    "ID_TOKEN_SET",
    "CertificateError",
    "HSMError",
    "HSMOperationError",
    "HSMUnavailable",
    "InvalidKey",
    "KeyEvidence",
    "KeyNotFound",
    "KeyRecord",
    "KeyService",
    "KeyServiceError",
    "KeySetPolicy",
    "MechanismUnsupported",
    "NoSigningKey",
    "RotationPolicy",
    "SealingError",
    "Signer",
    "UnsupportedAlgorithm",
    "compact_jws",
    "mechanism_name",
    "mechanism_requirements",
    "shortfalls",
]
