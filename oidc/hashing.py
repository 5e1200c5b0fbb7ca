"""Secrets at rest: keyed hashes for high-entropy values, a slow hash for passwords.

* Client secrets, authorization codes, refresh tokens, pushed request URIs,
  interaction ids and device codes are random 256-bit values.  A device's
  user code (RFC 8628 §6.1) has about 34 bits: its keyed hash still makes a
  copy of the database useless for guessing one, and guessing at the page is
  rate-limited and bounded by the code's short life.  They are stored as HMAC-SHA256
  under a key derived (HKDF) from the system secrets, so a copy of the
  database alone is useless, and checking one costs a microsecond: the token
  endpoint is never CPU-bound on it.
* The HMAC key of each purpose is a *hashing key* stored in the database
  (``hashing_keys``), sealed under the system secrets like a software signing
  key: rotating a system secret re-seals it (``flask keys reseal``) and every
  stored hash keeps verifying after the old secret is dropped.  A hashing key
  is made once, on first use, equal to the key earlier versions derived from
  the first system secret, so hashes written before it existed still verify;
  the keys derived from every listed system secret are still tried after it.
* User passwords are low-entropy and get scrypt (RFC 7914) with a random salt,
  through werkzeug's ``generate_password_hash``; the cost is a setting
  (``PASSWORD_HASH_COST``, scrypt's N).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from werkzeug.security import check_password_hash, generate_password_hash

from keys import MIN_SECRET_LENGTH
from keys import b64url as b64url  # the one encoder (re-exported: PKCE, keyed hashes, DPoP)

_SALT = b"oidc-hsm/oidc/v1"

#: The purposes keyed hashes are made for; each has a key of its own.
CLIENT_SECRET = "client secret"
CODE = "code"
REFRESH_TOKEN = "refresh token"
REQUEST_URI = "request uri"
#: An interaction's id and its browser binding (:mod:`oidc.oauth2.interactions`).
INTERACTION = "interaction"
#: The RFC 7591 initial access tokens an operator hands out, and the RFC 7592 registration access tokens.
INITIAL_ACCESS_TOKEN = "initial access token"
REGISTRATION_ACCESS_TOKEN = "registration access token"
#: A device code (256 random bits) and its user code (RFC 8628: :mod:`oidc.oauth2.device`).
DEVICE_CODE = "device code"
USER_CODE = "user code"
PURPOSES = (CLIENT_SECRET, CODE, REFRESH_TOKEN, REQUEST_URI, INTERACTION, INITIAL_ACCESS_TOKEN,
            REGISTRATION_ACCESS_TOKEN, DEVICE_CODE, USER_CODE)


def derive_key(secret: str, purpose: bytes) -> bytes:
    """A 256-bit key for ``purpose`` from one system secret (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose).derive(secret.encode("utf-8"))


def random_token(num_bytes: int = 32) -> str:
    """A URL-safe random string of ``num_bytes`` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(num_bytes)


def new_grant_id() -> str:
    """A new grant family's id: 128 random bits as 32 lowercase hex characters (the form of the ids
    made before as ``uuid.uuid4().hex``, whose UUID object cost more than the random bits)."""
    return secrets.token_hex(16)


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


#: base64url's two letters of its own as standard base64's (RFC 4648 §5).
_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
#: The last character an unpadded segment may end with, by the padding it lacks (1 or 2): the
#: characters whose unused low bits are zero (RFC 4648 §3.5, canonical encoding).
_CANONICAL_LAST = {1: b"AEIMQUYcgkosw048", 2: b"AQgw"}


def b64url_decode_strict(value: bytes) -> bytes:
    """The octets of unpadded, canonically encoded base64url ``value`` (RFC 7515 §2), else ``binascii.Error``.

    The checks of joserfc's ``urlsafe_b64decode`` (no ``+``, ``/`` or ``=``, no length of 4n+1, no
    non-zero unused bits in the last character, no character outside the alphabet), so that a JWS
    segment has exactly one encoding, with the alphabet translated by a table made once rather
    than by ``base64.b64decode``, which copies its input twice and builds the table per call.
    """
    pad = -len(value) % 4
    if (pad == 3 or b"+" in value or b"/" in value or b"=" in value
            or (pad and value[-1] not in _CANONICAL_LAST[pad])):
        raise binascii.Error("not canonical unpadded base64url")
    return binascii.a2b_base64(value.translate(_URL_TO_STANDARD) + b"=" * pad, strict_mode=True)


#: The characters of unpadded base64url (RFC 4648 §5, as RFC 7515 §2 uses it).
B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_b64url(value: str) -> bool:
    """Whether ``value`` is non-empty unpadded base64url text (what :func:`b64url` makes)."""
    return bool(value) and B64URL_ALPHABET.issuperset(value)


def derived_hash_keys(system_secrets: Iterable[str], purpose: str) -> list[bytes]:
    """The keyed-hash keys derived from each system secret (how earlier versions keyed every hash)."""
    secret_list = list(system_secrets)
    if not secret_list or any(len(secret) < MIN_SECRET_LENGTH for secret in secret_list):
        raise RuntimeError(f"SECRETS_SYSTEM must hold secrets of at least {MIN_SECRET_LENGTH} characters")
    return [derive_key(secret, b"keyed hash: " + purpose.encode()) for secret in secret_list]


class KeyedHasher:
    """HMAC-SHA256 of secrets: the first key hashes, every key is tried on look-up."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise RuntimeError("a keyed hasher needs a key")
        # An HMAC keyed once per key, copied for each value (hmac's documented use of copy()):
        # keying one afresh looks the digest up in OpenSSL and hashes the padded key each time.
        self._keyed = [hmac.new(key, digestmod=hashlib.sha256) for key in dict.fromkeys(keys)]

    @staticmethod
    def _digest(keyed: hmac.HMAC, value: str) -> str:
        mac = keyed.copy()
        mac.update(value.encode("utf-8"))
        return b64url(mac.digest())

    def hash(self, value: str) -> str:
        """The stored form of ``value`` (under the newest secret)."""
        return self._digest(self._keyed[0], value)

    def candidates(self, value: str) -> list[str]:
        """Every stored form ``value`` may have, newest secret first (for look-ups)."""
        return [self._digest(keyed, value) for keyed in self._keyed]

    def verify(self, value: str, stored: str | None) -> bool:
        """Constant-time check of ``value`` against a stored hash."""
        if not stored:
            return False
        matched = False
        for candidate in self.candidates(value):
            matched |= hmac.compare_digest(candidate.encode(), stored.encode())
        return matched


class PasswordHasher:
    """scrypt password hashes (werkzeug's format) at a configured cost.

    ``verify`` of a user that does not exist still computes one hash at the same
    cost, so a wrong username costs as much as a wrong password.
    """

    def __init__(self, cost: int) -> None:
        self.method = f"scrypt:{cost}:8:1"
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return generate_password_hash(password, method=self.method)

    def verify(self, password: str, stored: str | None) -> bool:
        if not stored:
            if self._dummy is None:
                self._dummy = self.hash(random_token(16))
            check_password_hash(self._dummy, password)
            return False
        if stored.startswith(_LEGACY_PREFIX):
            return _verify_legacy(password, stored)
        return check_password_hash(stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made at another cost or in the earlier format."""
        return not stored.startswith(self.method + "$")


#: The format of hashes written before werkzeug's: ``scrypt$N$r$p$salt$digest``.
#: They still verify, and are rewritten in the current format at the next login.
_LEGACY_PREFIX = "scrypt$"


def _verify_legacy(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(password.encode("utf-8"), salt=b64url_decode(salt), n=int(n), r=int(r),
                                  p=int(p), maxmem=132 * int(n) * int(r) * int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, b64url_decode(digest))
