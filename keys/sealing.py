"""AES-256-GCM sealing of private keys at rest under the system secrets.

``SECRETS_SYSTEM`` lists one or more secrets: the first seals, every one opens.
Each secret is stretched to a 256-bit key with HKDF-SHA256; a short fingerprint
of that key is stored with the ciphertext so we know which secret opens a row
(and which rows still need re-sealing after a new secret was prepended).

The associated data binds a ciphertext to its key set, its kid and (format 2)
its public JWK: a sealed key copied onto another row, or a row whose public key
was replaced, fails authentication instead of opening.  Rows of format 1 (set
and kid only) still open; ``keys reseal`` rewrites them in format 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keys.errors import SealingError

#: A system secret shorter than this is refused at start-up.
MIN_SECRET_LENGTH = 32

_VERSION_1 = b"\x01"  # associated data: set and kid
_VERSION = b"\x02"  # associated data: set, kid and public JWK
_FINGERPRINT_SIZE = 8
_NONCE_SIZE = 12


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"oidc-hsm/keys/sealing/v1", info=info).derive(
        secret.encode("utf-8")
    )


@dataclass(frozen=True)
class _SealingKey:
    fingerprint: bytes
    aead: AESGCM


def associated_data(key_set: str, kid: str, public_jwk: dict[str, Any] | None = None) -> bytes:
    """The AEAD associated data of a row: its set, kid and (format 2) public JWK, unambiguously framed."""
    set_bytes, kid_bytes = key_set.encode("utf-8"), kid.encode("utf-8")
    data = len(set_bytes).to_bytes(4, "big") + set_bytes + len(kid_bytes).to_bytes(4, "big") + kid_bytes
    if public_jwk is not None:
        jwk_bytes = json.dumps(public_jwk, sort_keys=True, separators=(",", ":")).encode("utf-8")
        data += len(jwk_bytes).to_bytes(4, "big") + jwk_bytes
    return data


class Sealer:
    """Seals and opens private key bytes under the configured system secrets."""

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise SealingError("SECRETS_SYSTEM is not set: it is required to seal private keys at rest")
        for position, secret in enumerate(secrets, start=1):
            if len(secret) < MIN_SECRET_LENGTH:
                raise SealingError(
                    f"SECRETS_SYSTEM secret #{position} is {len(secret)} characters long; "
                    f"each secret must have at least {MIN_SECRET_LENGTH}"
                )
        self._keys = [
            _SealingKey(
                fingerprint=_derive(secret, b"fingerprint")[:_FINGERPRINT_SIZE],
                aead=AESGCM(_derive(secret, b"aes-256-gcm key")),
            )
            for secret in secrets
        ]

    @classmethod
    def from_setting(cls, value: str | None) -> Sealer:
        """Build from the comma-separated ``SECRETS_SYSTEM`` value."""
        secrets = [part.strip() for part in (value or "").split(",") if part.strip()]
        return cls(secrets)

    @property
    def current_fingerprint(self) -> bytes:
        return self._keys[0].fingerprint

    def seal(self, plaintext: bytes, *, key_set: str, kid: str, public_jwk: dict[str, Any]) -> bytes:
        key = self._keys[0]
        nonce = os.urandom(_NONCE_SIZE)
        ciphertext = key.aead.encrypt(nonce, plaintext, associated_data(key_set, kid, public_jwk))
        return _VERSION + key.fingerprint + nonce + ciphertext

    def is_current(self, sealed: bytes) -> bool:
        """Whether ``sealed`` was sealed under the first (newest) secret, in the current format."""
        return sealed[:1] == _VERSION and sealed[1 : 1 + _FINGERPRINT_SIZE] == self.current_fingerprint

    def open(self, sealed: bytes, *, key_set: str, kid: str, public_jwk: dict[str, Any]) -> bytes:
        """The plaintext of a row; ``public_jwk`` is the row's published key, bound in format 2.

        A format-1 row does not bind its public key: the caller must check that the
        private key it gets matches ``public_jwk`` (:class:`keys.software.SoftwareManager` does).
        """
        version = sealed[:1]
        if len(sealed) < 1 + _FINGERPRINT_SIZE + _NONCE_SIZE + 16 or version not in (_VERSION, _VERSION_1):
            raise SealingError(f"sealed key {key_set}/{kid} is malformed")
        aad = associated_data(key_set, kid, public_jwk if version == _VERSION else None)
        fingerprint = sealed[1 : 1 + _FINGERPRINT_SIZE]
        nonce = sealed[1 + _FINGERPRINT_SIZE : 1 + _FINGERPRINT_SIZE + _NONCE_SIZE]
        ciphertext = sealed[1 + _FINGERPRINT_SIZE + _NONCE_SIZE :]
        for key in self._keys:
            if key.fingerprint == fingerprint:
                try:
                    return key.aead.decrypt(nonce, ciphertext, aad)
                except InvalidTag:
                    raise SealingError(
                        f"sealed key {key_set}/{kid} failed authentication: it was altered "
                        "or belongs to another key set, kid or public key"
                    ) from None
        raise SealingError(
            f"sealed key {key_set}/{kid} was sealed under a secret that is not in SECRETS_SYSTEM"
        )
