"""Errors of the key service.  Each names what is wrong, never a secret."""

from __future__ import annotations


class KeyServiceError(Exception):
    """Base class for every error raised by :mod:`keys`."""


class UnsupportedAlgorithm(KeyServiceError):
    """The requested algorithm is not one we sign with (HS*, none, unknown)."""


class InvalidKey(KeyServiceError):
    """A key given to us (an imported JWK, a key on the token) is unusable."""


class CertificateError(KeyServiceError):
    """A certificate chain that cannot be attached to a key (names the certificate and what is wrong)."""


class KeyNotFound(KeyServiceError):
    """No such key set or key id."""


class NoSigningKey(KeyServiceError):
    """A key set has no key that may sign now."""


class WrongKeyUse(InvalidKey):
    """A key asked to do what its ``use`` forbids: a decryption key to sign, a signing key to decrypt, or
    a key of one use generated or imported into a set of the other."""


class NoDecryptionKey(KeyServiceError):
    """A key set has no published key that decrypts."""


class DecryptionError(KeyServiceError):
    """A JWE that this service will not or cannot decrypt (base class; the message names what is wrong)."""


class MalformedJWE(DecryptionError):
    """Not a compact JWE: wrong number of parts, bad base64url, a header that is not a JSON object, too large."""


class UnsupportedEncryption(DecryptionError):
    """The JWE's ``alg``, ``enc`` or ``zip`` is not one this key set accepts."""


class UnknownDecryptionKey(DecryptionError):
    """The JWE names (``kid``) a key that is not a published decryption key of the set."""


class DecryptionFailed(DecryptionError):
    """The JWE does not decrypt: encrypted to another key, or its encrypted key, ciphertext or tag altered.

    Deliberately not more precise (RFC 7516 §11.5): which step failed is not said.
    """


class SealingError(KeyServiceError):
    """A sealed private key could not be opened or the system secret is unusable."""


class HSMError(KeyServiceError):
    """The PKCS#11 module, slot or token cannot be used."""


class HSMUnavailable(HSMError):
    """The token cannot be reached now (device gone, module lost, token absent).

    Retryable: the manager probes the token again with bounded backoff, and
    ``retry_after`` says how many seconds until its next attempt.  ``reason``
    is a short code (never a path, label or secret) for readiness checks.
    """

    def __init__(self, message: str, *, retry_after: float = 1.0, reason: str = "hsm_unavailable") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class HSMOperationError(HSMError):
    """The token refused an operation for a reason a retry cannot change (our mistake).

    The message names the operation, the mechanism and the ``CKR_*`` code;
    ``code`` holds that code's name.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class MechanismUnsupported(HSMError):
    """The token offers no mechanism that can sign (or generate) for an algorithm."""


def reason_code(exc: KeyServiceError) -> str:
    """A fixed code for ``exc``, for unauthenticated readiness answers (its text may name paths and labels)."""
    if isinstance(exc, HSMUnavailable):
        return exc.reason
    if isinstance(exc, NoSigningKey):
        return "no_signing_key"
    if isinstance(exc, NoDecryptionKey):
        return "no_decryption_key"
    return "key_service_error"
