"""The key service: signing keys on a PKCS#11 HSM or sealed in SQL, and the JWKS.

This package knows nothing about OAuth or Flask.  Its one contract with the
token builders (see :class:`keys.service.KeyService`)::

    signer = service.signer("openid.id-token")
    signer.kid, signer.alg
    signature = signer.sign(signing_input)
    service.jwks_document()
    service.public_key(kid)
"""

from keys.errors import (
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
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET, KeyService, KeySetPolicy, RotationPolicy
from keys.signer import KeyRecord, Signer

__all__ = [
    "ACCESS_TOKEN_SET",
    "ID_TOKEN_SET",
    "HSMError",
    "HSMOperationError",
    "HSMUnavailable",
    "InvalidKey",
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
]
