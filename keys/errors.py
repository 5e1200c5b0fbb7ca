"""Errors of the key service.  Each names what is wrong, never a secret."""

from __future__ import annotations


class KeyServiceError(Exception):
    """Base class for every error raised by :mod:`keys`."""


class UnsupportedAlgorithm(KeyServiceError):
    """The requested algorithm is not one we sign with (HS*, none, unknown)."""


class InvalidKey(KeyServiceError):
    """A key given to us (an imported JWK, a key on the token) is unusable."""


class KeyNotFound(KeyServiceError):
    """No such key set or key id."""


class NoSigningKey(KeyServiceError):
    """A key set has no key that may sign now."""


class SealingError(KeyServiceError):
    """A sealed private key could not be opened or the system secret is unusable."""


class HSMError(KeyServiceError):
    """The PKCS#11 module, slot or token cannot be used."""
