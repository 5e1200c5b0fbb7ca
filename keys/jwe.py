"""Compact JWE decryption (RFC 7516 §5.2) with the content key decrypted where the private key lives.

joserfc does the JOSE: it parses the serialization, checks ``crit``, and decrypts
and authenticates the content (A256GCM, A128CBC-HS256: RFC 7518 §5).  The one
step it cannot do is the key's, since the private key never leaves its manager:
the RSAES-OAEP decryption of the JWE Encrypted Key (RFC 7518 §4.3), or for ECDH-ES
(§4.6) the ECDH shared secret with the sender's ephemeral key.  So each decryption
uses a joserfc registry of its own whose key-management algorithm
(:class:`ManagedKeyEncryption`, :class:`ManagedKeyAgreement`) hands that step to the
manager (``C_Decrypt`` with ``CKM_RSA_PKCS_OAEP``, or ``C_DeriveKey`` with
``CKM_ECDH1_DERIVE``, on a token); the Concat KDF over the shared secret is
cryptography's (:func:`concat_kdf`).

Before anything is decrypted the input is bounded and its header read here, so
that every refusal names what is wrong: the size, the number of parts, the
header, the ``alg``, ``enc`` or ``zip``, the ``kid``.  After that, one answer for
every failure (:class:`~keys.errors.DecryptionFailed`): a content key that does
not decrypt is replaced by a random one, so that it fails as an altered tag
does, and which of the two it was is not told (RFC 7516 §11.5).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwa import JWE_ENC_MODELS, ECDHESAlgKeyAgreement, JWEEncModel, JWEKeyEncryption
from joserfc.jwe import JWERegistry, Recipient
from joserfc.jwk import ECKey, Key, import_key

from keys.algorithms import CONTENT_ENCRYPTIONS, ENCRYPTION_ALGORITHMS
from keys.errors import DecryptionFailed, MalformedJWE, UnknownDecryptionKey, UnsupportedEncryption
from keys.signer import KeyRecord

#: Longest compact JWE accepted (a request object is a few kilobytes; this leaves room for a nested
#: JWS with a certificate chain in its header).
MAX_TOKEN_LENGTH = 64 * 1024
#: Longest base64url protected header accepted: alg, enc, kid, typ, cty and a few more fit in far less.
MAX_HEADER_LENGTH = 2048
#: joserfc's content encryption models of the accepted ``enc`` values.
_ENC_MODELS = {model.name: model for model in JWE_ENC_MODELS if model.name in CONTENT_ENCRYPTIONS}

#: The managed private key's step: decrypts a JWE encrypted key (RSAES-OAEP), or agrees on the ECDH
#: shared secret with an uncompressed ephemeral public point (ECDH-ES); None when it cannot.
KeyDecrypter = Callable[[bytes], "bytes | None"]


@dataclass(frozen=True)
class DecryptionKey:
    """A published decryption key (``use: enc``) and the manager's function that decrypts with it."""

    record: KeyRecord
    decrypt: KeyDecrypter


@dataclass(frozen=True)
class Header:
    """The protected header members this module decides on."""

    alg: str
    enc: str
    kid: str | None
    members: dict[str, Any]


class ManagedKeyEncryption(JWEKeyEncryption):
    """RSAES-OAEP whose decryption is the key manager's (joserfc's key-management model)."""

    key_types = ["RSA"]
    key_size = 2048

    def __init__(self, name: str, decrypt: KeyDecrypter, modulus_bytes: int, cek_bytes: int) -> None:
        self.name = name
        self.description = ENCRYPTION_ALGORITHMS[name].name
        self._decrypt = decrypt
        self._modulus_bytes = modulus_bytes
        self._cek_bytes = cek_bytes

    def encrypt_cek(self, cek: bytes, recipient: Recipient[Any]) -> bytes:
        raise NotImplementedError("this key service decrypts; encrypting to a client uses its public key")

    def decrypt_cek(self, recipient: Recipient[Any]) -> bytes:
        encrypted_key = recipient.encrypted_key or b""
        # RFC 8017 §7.1.2 step 1: a ciphertext of another length is refused before the key is asked.
        cek = self._decrypt(encrypted_key) if len(encrypted_key) == self._modulus_bytes else None
        if cek is None or len(cek) != self._cek_bytes:
            # RFC 7516 §11.5: continue with a random key; the content's authentication then fails,
            # exactly as for an altered ciphertext or tag.
            return os.urandom(self._cek_bytes)
        return cek


class ManagedKeyAgreement(ECDHESAlgKeyAgreement):
    """ECDH-ES in direct key agreement mode over P-256 whose ECDH is the key manager's (RFC 7518 §4.6)."""

    key_types = ["EC"]

    def __init__(self, agree: KeyDecrypter) -> None:
        super().__init__(None)
        self._agree = agree

    def decrypt_agreed_upon_key(self, enc: JWEEncModel, recipient: Recipient[Any]) -> bytes:
        headers = recipient.headers()
        epk = headers.get("epk")
        if not isinstance(epk, dict) or epk.get("kty") != "EC" or epk.get("crv") != "P-256" or "d" in epk:
            raise ValueError("'epk' is not a public P-256 key")
        ephemeral = ECKey.import_key(epk)  # the point is checked to be on the curve (cryptography)
        point = ephemeral.public_key.public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
        shared = self._agree(point)
        if shared is None:
            raise ValueError("no shared secret")
        return concat_kdf(shared, enc=headers["enc"], apu=headers.get("apu"), apv=headers.get("apv"),
                          bits=enc.cek_size)


def _length_prefixed(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def concat_kdf(shared: bytes, *, enc: str, apu: str | None, apv: str | None, bits: int) -> bytes:
    """The content key of ECDH-ES in direct key agreement mode (RFC 7518 §4.6.2): the Concat KDF of
    NIST SP 800-56A §5.8.1 with SHA-256 (cryptography's), over ``enc``, ``apu``, ``apv`` and the key length."""
    other_info = (_length_prefixed(enc.encode("ascii"))
                  + _length_prefixed(_b64decode(apu, "'apu'") if apu else b"")
                  + _length_prefixed(_b64decode(apv, "'apv'") if apv else b"")
                  + bits.to_bytes(4, "big"))
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=bits // 8, otherinfo=other_info).derive(shared)


def _b64decode(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedJWE(f"the JWE's {what} is not base64url") from None


def _header_members(segment: str) -> dict[str, Any]:
    try:
        members = json.loads(_b64decode(segment, "protected header"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedJWE("the JWE's protected header is not JSON") from None
    if not isinstance(members, dict):
        raise MalformedJWE("the JWE's protected header is not a JSON object")
    return members


def read_header(token: str) -> Header:
    """The protected header of compact JWE ``token``, bounded and checked (never decrypting anything)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedJWE(f"the JWE is {len(token)} characters long; at most {MAX_TOKEN_LENGTH} are accepted")
    parts = token.split(".")
    if len(parts) != 5:
        raise MalformedJWE(f"a compact JWE has 5 parts separated by '.', this has {len(parts)}")
    if len(parts[0]) > MAX_HEADER_LENGTH:
        raise MalformedJWE(f"the JWE's protected header is {len(parts[0])} characters long; "
                           f"at most {MAX_HEADER_LENGTH} are accepted")
    if not token.isascii() or any(not part.replace("-", "").replace("_", "").isalnum()
                                  for part in parts if part):
        raise MalformedJWE("the JWE has characters outside base64url")
    members = _header_members(parts[0])
    alg, enc, kid = members.get("alg"), members.get("enc"), members.get("kid")
    if not isinstance(alg, str) or not isinstance(enc, str):
        raise MalformedJWE("the JWE's protected header needs 'alg' and 'enc' strings")
    if kid is not None and not isinstance(kid, str):
        raise MalformedJWE("the JWE's 'kid' is not a string")
    if "zip" in members:
        raise UnsupportedEncryption("compressed JWEs ('zip') are not accepted")
    if enc not in CONTENT_ENCRYPTIONS:
        raise UnsupportedEncryption(f"'enc' {enc!r} is not accepted; use one of {', '.join(CONTENT_ENCRYPTIONS)}")
    _check_encrypted_key(alg, parts[1])
    return Header(alg=alg, enc=enc, kid=kid, members=members)


def _check_encrypted_key(alg: str, segment: str) -> None:
    if alg == "ECDH-ES" and segment:
        raise MalformedJWE("an ECDH-ES JWE has an empty encrypted key (RFC 7516 §5.2, step 10)")
    if alg != "ECDH-ES" and not segment:
        raise MalformedJWE("the JWE has no encrypted key (direct encryption is not accepted)")


def candidates(header: Header, keys: Sequence[DecryptionKey], key_set: str) -> list[DecryptionKey]:
    """The keys that may decrypt a JWE with ``header``: the one its ``kid`` names, else each of its ``alg``."""
    algs = sorted({key.record.alg for key in keys})
    if header.alg not in ENCRYPTION_ALGORITHMS or header.alg not in algs:
        raise UnsupportedEncryption(f"'alg' {header.alg!r} is not accepted by key set {key_set!r}; "
                                    f"use {' or '.join(algs) or 'nothing: it has no decryption key'}")
    if header.kid is not None:
        named = [key for key in keys if key.record.kid == header.kid]
        if not named:
            raise UnknownDecryptionKey(f"'kid' {header.kid!r} is not a published decryption key of {key_set!r}")
        if named[0].record.alg != header.alg:
            raise UnsupportedEncryption(f"key {header.kid!r} of {key_set!r} decrypts {named[0].record.alg}, "
                                        f"not {header.alg!r}")
        return named
    return [key for key in keys if key.record.alg == header.alg]


def _registry(header: Header, key: DecryptionKey, public: Key) -> JWERegistry:
    enc = _ENC_MODELS[header.enc]
    alg: ManagedKeyEncryption | ManagedKeyAgreement
    if header.alg == "ECDH-ES":
        alg = ManagedKeyAgreement(key.decrypt)
    else:
        rsa_key = public.public_key
        if not isinstance(rsa_key, rsa.RSAPublicKey):
            raise UnsupportedEncryption(f"key {key.record.kid!r} is not an RSA key")
        modulus_bytes = (rsa_key.key_size + 7) // 8
        alg = ManagedKeyEncryption(header.alg, key.decrypt, modulus_bytes, enc.cek_size // 8)
    registry = JWERegistry(algorithms=[header.alg, header.enc], strict_check_header=False)
    # An instance table: joserfc's registry table is class-wide, and the shared one must stay unchanged.
    registry.algorithms = {"alg": {header.alg: alg}, "enc": {header.enc: enc}, "zip": {}}
    registry.max_ciphertext_length = MAX_TOKEN_LENGTH
    registry.max_protected_header_length = MAX_HEADER_LENGTH
    return registry


def decrypt_compact(token: str, keys: Sequence[DecryptionKey], *, key_set: str) -> bytes:
    """The plaintext of compact JWE ``token``, decrypted with one of ``keys`` (see the module docstring)."""
    header = read_header(token)
    for key in candidates(header, keys, key_set):
        public = import_key({name: value for name, value in key.record.public_jwk.items()
                             if name in ("kty", "n", "e", "crv", "x", "y", "kid", "use", "alg")})
        try:
            result = jwe.decrypt_compact(token, public, registry=_registry(header, key, public))
        except (JoseError, ValueError, TypeError):
            continue
        if result.plaintext is not None:
            return result.plaintext
    raise DecryptionFailed(f"the JWE does not decrypt with {'key ' + repr(header.kid) if header.kid else 'any key'} "
                           f"of {key_set!r}: encrypted to another key, or altered")


__all__ = [
    "CONTENT_ENCRYPTIONS",
    "MAX_HEADER_LENGTH",
    "MAX_TOKEN_LENGTH",
    "DecryptionKey",
    "Header",
    "ManagedKeyAgreement",
    "ManagedKeyEncryption",
    "candidates",
    "concat_kdf",
    "decrypt_compact",
    "read_header",
]
