"""DPoP proofs (RFC 9449 §4) for the tests, built with joserfc and plain JSON, and RFC 7638 thumbprints by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey

#: The members of each key type that enter its RFC 7638 thumbprint.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key() -> ECKey:
    return ECKey.generate_key("P-256")


def public_jwk(key: Any) -> dict[str, Any]:
    return key.as_dict(private=False)


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return b64url(hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest())


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def proof(key: Any, *, htm: str = "POST", htu: str, iat: int, jti: str | None = None, access_token: str | None = None,
          nonce: str | None = None, alg: str = "ES256", typ: str = "dpop+jwt", jwk: dict[str, Any] | None = None,
          claims: dict[str, Any] | None = None) -> str:
    """A proof signed by ``key`` carrying ``jwk`` (the public ``key`` by default)."""
    payload: dict[str, Any] = {"htm": htm, "htu": htu, "iat": iat, "jti": jti or uuid.uuid4().hex}
    if access_token is not None:
        payload["ath"] = ath(access_token)
    if nonce is not None:
        payload["nonce"] = nonce
    payload.update(claims or {})
    header = {"typ": typ, "alg": alg, "jwk": jwk if jwk is not None else public_jwk(key)}
    return jws.serialize_compact(header, json.dumps(payload).encode(), key, algorithms=[alg])


def unsigned_proof(*, htu: str, iat: int, jwk: dict[str, Any]) -> str:
    """An ``alg: none`` proof (which no server may accept)."""
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": jwk}
    payload = {"htm": "POST", "htu": htu, "iat": iat, "jti": uuid.uuid4().hex}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."
