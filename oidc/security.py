"""Secrets at rest: keyed hashes for high-entropy values, a slow hash for passwords.

* Client secrets, authorization codes and refresh tokens are random 256-bit
  values.  They are stored as HMAC-SHA256 under a key derived (HKDF) from the
  system secrets, so a copy of the database alone is useless, and checking one
  costs a microsecond: the token endpoint is never CPU-bound on it.
* With several ``SECRETS_SYSTEM`` secrets, the first one hashes new values and
  every one is tried on look-up, so prepending a new secret does not invalidate
  what was issued under the old one.
* User passwords are low-entropy and get scrypt (RFC 7914) with a random salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from keys.sealing import MIN_SECRET_LENGTH

_SALT = b"oidc-hsm/oidc/v1"


def derive_key(secret: str, purpose: bytes) -> bytes:
    """A 256-bit key for ``purpose`` from one system secret (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose).derive(secret.encode("utf-8"))


def random_token(num_bytes: int = 32) -> str:
    """A URL-safe random string of ``num_bytes`` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(num_bytes)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class KeyedHasher:
    """HMAC-SHA256 of secrets under keys derived from every system secret."""

    def __init__(self, system_secrets: Iterable[str], purpose: bytes) -> None:
        secret_list = list(system_secrets)
        if not secret_list or any(len(secret) < MIN_SECRET_LENGTH for secret in secret_list):
            raise RuntimeError(
                f"SECRETS_SYSTEM must hold secrets of at least {MIN_SECRET_LENGTH} characters"
            )
        self._keys = [derive_key(secret, b"keyed hash: " + purpose) for secret in secret_list]

    def _digest(self, key: bytes, value: str) -> str:
        return b64url(hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest())

    def hash(self, value: str) -> str:
        """The stored form of ``value`` (under the newest secret)."""
        return self._digest(self._keys[0], value)

    def candidates(self, value: str) -> list[str]:
        """Every stored form ``value`` may have, newest secret first (for look-ups)."""
        return [self._digest(key, value) for key in self._keys]

    def verify(self, value: str, stored: str | None) -> bool:
        """Constant-time check of ``value`` against a stored hash."""
        if not stored:
            return False
        matched = False
        for candidate in self.candidates(value):
            matched |= hmac.compare_digest(candidate.encode(), stored.encode())
        return matched


def hasher(purpose: str) -> KeyedHasher:
    """The app's keyed hasher for ``purpose`` ("client secret", "code", "refresh token")."""
    cache = current_app.extensions.setdefault("oidc.hashers", {})
    if purpose not in cache:
        system = [part.strip() for part in current_app.config["SECRETS_SYSTEM"].split(",") if part.strip()]
        cache[purpose] = KeyedHasher(system, purpose.encode())
    return cache[purpose]


# -- passwords ---------------------------------------------------------------------

#: scrypt cost: N=2^15, r=8, p=1 (32 MiB, ~50-100 ms), the RFC 7914 interactive-login level.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64url(salt)}${b64url(digest)}"


def _unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def verify_password(password: str, stored: str | None) -> bool:
    """Check ``password``; with no stored hash, spend the same time and fail."""
    if not stored:
        stored = _DUMMY_HASH
        password = password + "\x00never"
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                  maxmem=_SCRYPT_MAXMEM, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, _unb64(digest)) and stored is not _DUMMY_HASH


#: Verified when the user does not exist, so that a wrong username costs as much as a wrong password.
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
