"""The key service: signing keys on a PKCS#11 HSM or sealed in SQL, and the JWKS.

This package knows nothing about OAuth or Flask, and it is the only surface the
provider imports (never ``keys.<module>``).  Its one contract with the token
builders (see :class:`keys.service.KeyService`)::

    signer = service.signer("openid.id-token")
    signer.kid, signer.alg
    signature = signer.sign(signing_input)   # compact_jws(signer, claims, typ) builds the JWS around it
    service.jwks_document()
    service.public_key(kid)

and, for a decryption set (``use: enc``), ``service.decrypt(key_set, compact_jwe)`` and
``service.decryption_algorithms(key_set)``.

Names, algorithms, errors and records are imported here at once; the service
and its managers (PKCS#11, SQLAlchemy, JOSE) on first use, so that reading a
key-set name or an algorithm does not load the HSM module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keys.algorithms import (
    ALGORITHMS,
    CONTENT_ENCRYPTIONS,
    EDDSA_ALGORITHMS,
    ENCRYPTION_ALGORITHMS,
    JWS_ALGORITHMS,
    Algorithm,
    get_algorithm,
    key_algorithm,
)
from keys.errors import (
    CertificateError,
    DecryptionError,
    DecryptionFailed,
    HSMError,
    HSMOperationError,
    HSMUnavailable,
    InvalidKey,
    KeyNotFound,
    KeyServiceError,
    MalformedJWE,
    MechanismUnsupported,
    NoDecryptionKey,
    NoSigningKey,
    SealingError,
    UnknownDecryptionKey,
    UnsupportedAlgorithm,
    UnsupportedEncryption,
    WrongKeyUse,
    reason_code,
)
from keys.evidence import HSM_ONLY_REQUIREMENTS, KeyEvidence, shortfalls
from keys.jws import b64url, compact_jws
from keys.names import ACCESS_TOKEN_SET, AUDIT_CHECKPOINT_SET, ID_TOKEN_SET, OWN_JWKS_SETS, REQUEST_OBJECT_SET
from keys.signer import KeyRecord, Signer

if TYPE_CHECKING:
    from keys.connection import module_environment
    from keys.hsm import HSMConfig, HSMManager
    from keys.locking import provisioning_lock
    from keys.mechanisms import mechanism_name, mechanism_requirements
    from keys.rotation import KeyStatus
    from keys.sealing import MIN_SECRET_LENGTH, Sealer
    from keys.service import Health, KeyService, KeySetPolicy, MechanismReport, RotationPolicy
    from keys.software import SoftwareManager
    from keys.store import KeyStore, define_key_certificates_table, define_signing_keys_table

#: Name -> the module that defines it, for the names imported on first use.
_LAZY = {
    "HSMConfig": "keys.hsm",
    "HSMManager": "keys.hsm",
    "provisioning_lock": "keys.locking",
    "mechanism_name": "keys.mechanisms",
    "mechanism_requirements": "keys.mechanisms",
    "module_environment": "keys.connection",
    "MIN_SECRET_LENGTH": "keys.sealing",
    "Sealer": "keys.sealing",
    "Health": "keys.service",
    "KeyService": "keys.service",
    "MechanismReport": "keys.service",
    "KeySetPolicy": "keys.service",
    "KeyStatus": "keys.rotation",
    "RotationPolicy": "keys.service",
    "SoftwareManager": "keys.software",
    "KeyStore": "keys.store",
    "define_key_certificates_table": "keys.store",
    "define_signing_keys_table": "keys.store",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead (and so catch a misspelt name)

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'keys' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


__all__ = [
    "ACCESS_TOKEN_SET",
    "ALGORITHMS",
    "AUDIT_CHECKPOINT_SET",
    "CONTENT_ENCRYPTIONS",
    "EDDSA_ALGORITHMS",
    "ENCRYPTION_ALGORITHMS",
    "HSM_ONLY_REQUIREMENTS",
    "ID_TOKEN_SET",
    "JWS_ALGORITHMS",
    "MIN_SECRET_LENGTH",
    "OWN_JWKS_SETS",
    "REQUEST_OBJECT_SET",
    "Algorithm",
    "CertificateError",
    "DecryptionError",
    "DecryptionFailed",
    "HSMConfig",
    "HSMError",
    "HSMManager",
    "HSMOperationError",
    "HSMUnavailable",
    "Health",
    "InvalidKey",
    "KeyEvidence",
    "KeyNotFound",
    "KeyRecord",
    "KeyService",
    "KeyServiceError",
    "KeySetPolicy",
    "KeyStatus",
    "KeyStore",
    "MalformedJWE",
    "MechanismReport",
    "MechanismUnsupported",
    "NoDecryptionKey",
    "NoSigningKey",
    "RotationPolicy",
    "Sealer",
    "SealingError",
    "Signer",
    "SoftwareManager",
    "UnknownDecryptionKey",
    "UnsupportedAlgorithm",
    "UnsupportedEncryption",
    "WrongKeyUse",
    "b64url",
    "compact_jws",
    "define_key_certificates_table",
    "define_signing_keys_table",
    "get_algorithm",
    "key_algorithm",
    "mechanism_name",
    "mechanism_requirements",
    "module_environment",
    "provisioning_lock",
    "reason_code",
    "shortfalls",
]
