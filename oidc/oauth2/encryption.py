"""Responses encrypted to a client (OIDC Core §10.2, OIDC Registration §2, JARM §2.2, RFC 9701 §6).

A client that registered ``<kind>_encrypted_response_alg`` (and ``_enc``) gets
its ``<kind>`` responses (``id_token``, ``userinfo``, ``authorization``,
``introspection``) as a compact JWE made with the public key it registered for
encryption: a key of its JWK Set with ``use: enc`` whose type fits the
algorithm (RSA for ``RSA-OAEP-256``, EC or X25519 for ``ECDH-ES``).  Only the
client's public key is used, so no key of this provider (and no HSM) takes part;
joserfc does the JOSE.  A signed response is signed first and encrypted then
(nested, ``cty: JWT``, RFC 7519 §5.2).
"""

from __future__ import annotations

import json
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from oidc.vocabulary import DEFAULT_ENCRYPTION_ENCODING, ENCRYPTION_ALGORITHMS, ENCRYPTION_ENCODINGS

#: Which key types each algorithm encrypts to (and for ECDH-ES, the curves).
_KEY_TYPES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "RSA-OAEP-256": {"RSA": None},
    "ECDH-ES": {"EC": ("P-256", "P-384", "P-521"), "OKP": ("X25519",)},
}


class EncryptionError(ValueError):
    """The client's registration names an encryption it has no usable key for; the message says what."""


def encryption_key(jwks: dict[str, Any] | None, alg: str) -> dict[str, Any] | None:
    """The first key of ``jwks`` registered for encryption (``use: enc``) with ``alg``, or None."""
    allowed = _KEY_TYPES.get(alg, {})
    for key in (jwks or {}).get("keys", []):
        if not isinstance(key, dict) or key.get("use") != "enc" or key.get("kty") not in allowed:
            continue
        curves = allowed[key["kty"]]
        if curves is not None and key.get("crv") not in curves:
            continue
        if key.get("alg", alg) != alg:
            continue
        return key
    return None


def check_registration(alg: Any, enc: Any, jwks: dict[str, Any] | None, kind: str) -> tuple[str | None, str | None]:
    """The ``(alg, enc)`` a client registers for ``kind``: ``enc`` defaults as OIDC Registration §2 says;
    :class:`EncryptionError` for an unknown algorithm, ``enc`` without ``alg``, or no key to encrypt to."""
    if alg is None:
        if enc is not None:
            raise EncryptionError(f"{kind}_encrypted_response_enc needs {kind}_encrypted_response_alg")
        return None, None
    if alg not in ENCRYPTION_ALGORITHMS:
        raise EncryptionError(f"{kind}_encrypted_response_alg: one of {', '.join(ENCRYPTION_ALGORITHMS)}")
    enc = DEFAULT_ENCRYPTION_ENCODING if enc is None else enc
    if enc not in ENCRYPTION_ENCODINGS:
        raise EncryptionError(f"{kind}_encrypted_response_enc: one of {', '.join(ENCRYPTION_ENCODINGS)}")
    if encryption_key(jwks, alg) is None:
        raise EncryptionError(f"{kind}_encrypted_response_alg {alg}: the client's jwks has no key with "
                              f"use 'enc' for it (RSA for RSA-OAEP-256, EC or X25519 for ECDH-ES)")
    return alg, enc


def registered(client: Any, kind: str) -> tuple[str, str] | None:
    """The ``(alg, enc)`` ``client`` registered for its ``kind`` responses, or None."""
    alg = getattr(client, f"{kind}_encrypted_response_alg", None)
    if not alg:
        return None
    return alg, getattr(client, f"{kind}_encrypted_response_enc", None) or DEFAULT_ENCRYPTION_ENCODING


def encrypt(client: Any, plaintext: str, alg: str, enc: str, *, nested: bool) -> str:
    """``plaintext`` as a compact JWE to ``client``'s encryption key (``cty: JWT`` when it is a JWT)."""
    jwks = json.loads(client.jwks) if client.jwks else None
    jwk = encryption_key(jwks, alg)
    if jwk is None:  # registration checks it; a key set replaced since then is the operator's to fix
        raise EncryptionError(f"client {client.client_id}: no encryption key for {alg}")
    key: RSAKey | ECKey | OKPKey = import_key(jwk)  # type: ignore[assignment]  # kty checked above
    header: dict[str, Any] = {"alg": alg, "enc": enc}
    if isinstance(jwk.get("kid"), str):
        header["kid"] = jwk["kid"]
    if nested:
        header["cty"] = "JWT"
    try:
        return jwe.encrypt_compact(header, plaintext, key, algorithms=[alg, enc])
    except (JoseError, ValueError) as exc:
        raise EncryptionError(f"client {client.client_id}: encryption failed ({type(exc).__name__})") from None


def seal(client: Any, kind: str, token: str) -> str:
    """A signed ``token`` as ``client`` registered its ``kind`` responses: as is, or encrypted (nested)."""
    pair = registered(client, kind)
    return token if pair is None else encrypt(client, token, *pair, nested=True)
