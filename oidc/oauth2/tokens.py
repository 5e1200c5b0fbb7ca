"""JWTs this provider issues, signed through the key service only.

A JWS is ``b64url(header) . b64url(claims) . b64url(signer.sign(signing_input))``:
the private key never leaves the manager (HSM or sealed software key) that
holds it, and Authlib is never given a private key.

* ID tokens (OIDC Core §2) are signed with the ``openid.id-token`` key set.
* Access tokens are RFC 9068 JWTs (header ``typ: at+jwt``) signed with the
  ``jwt.access-token`` key set.

``at_hash`` (OIDC Core §3.1.3.6) is the left half of the hash of the access
token's ASCII octets, the hash being the one of the ID token's ``alg``:
SHA-256 for RS256/PS256/ES256, SHA-384 and SHA-512 likewise.  For ``EdDSA``
(RFC 8037), whose signature has no separate hash, the convention that OIDC
implementations follow (Authlib's ``create_half_hash``, Ory Fosite and others,
and the OpenID Foundation's resolution for Ed25519) is SHA-512, whose left
half is 32 bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import time
from typing import Any

from flask import current_app

from keys.algorithms import EDDSA_ALGORITHMS
from keys.errors import KeyServiceError
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET
from oidc.key_service import key_service
from oidc.security import b64url, random_token

ACCESS_TOKEN_TYP = "at+jwt"

_AT_HASH_FUNCTIONS = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}


def half_hash(value: str, alg: str) -> str:
    """``at_hash`` / ``c_hash`` of ``value`` for a JWS ``alg`` (EdDSA and Ed25519: SHA-512)."""
    function = hashlib.sha512 if alg in EDDSA_ALGORITHMS else _AT_HASH_FUNCTIONS[alg[-3:]]
    digest = function(value.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_jwt(key_set: str, claims: dict[str, Any], typ: str) -> tuple[str, str]:
    """A compact JWS of ``claims`` signed by the active key of ``key_set``; and its alg."""
    signer = key_service().signer(key_set)
    header = {"alg": signer.alg, "kid": signer.kid, "typ": typ}
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}".encode("ascii")
    signature = signer.sign(signing_input)
    return f"{signing_input.decode('ascii')}.{b64url(signature)}", signer.alg


def id_token_alg() -> str:
    """The alg the next ID token will carry (the active key's)."""
    return key_service().signer(ID_TOKEN_SET).alg


def issue_access_token(*, client_id: str, subject: str, scope: str, audience: list[str],
                       lifetime: int, extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """An RFC 9068 access token and its claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": current_app.config["OIDC_ISSUER"],
        "sub": subject,
        "aud": audience[0] if len(audience) == 1 else audience,
        "client_id": client_id,
        "iat": now,
        "exp": now + lifetime,
        "jti": random_token(18),
        "scope": scope,
    }
    if extra:
        claims.update(extra)
    token, _ = sign_jwt(ACCESS_TOKEN_SET, claims, ACCESS_TOKEN_TYP)
    return token, claims


def issue_id_token(claims: dict[str, Any], access_token: str | None) -> str:
    """Sign an ID token; ``at_hash`` is computed for the alg of the key that signs it."""
    signer_alg = id_token_alg()
    if access_token is not None:
        claims = {**claims, "at_hash": half_hash(access_token, signer_alg)}
    token, alg = sign_jwt(ID_TOKEN_SET, claims, "JWT")
    if alg != signer_alg:  # the active key changed in between: recompute for the key that signed
        claims = {**claims, "at_hash": half_hash(access_token, alg)} if access_token else claims
        token, _ = sign_jwt(ID_TOKEN_SET, claims, "JWT")
    return token


# -- verifying our own tokens ----------------------------------------------------------


class InvalidToken(Exception):
    """A token that is not one of ours, is malformed, or fails verification."""


def _b64decode(value: str) -> bytes:
    if not value or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for ch in value):
        raise InvalidToken("not base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@functools.lru_cache(maxsize=64)
def _public_key(jwk_json: str) -> Any:
    """Parsed public key of a published JWK; parsing costs more than verifying, so keep it."""
    from joserfc.jwk import import_key

    return import_key(json.loads(jwk_json))


def verify_own_jwt(token: str, *, typ: str | None, check_exp: bool = True, leeway: int = 0) -> dict[str, Any]:
    """Claims of a JWT that this issuer signed with a published key, or :class:`InvalidToken`.

    Verification uses the public keys of the key service's JWK Set (joserfc),
    restricted to the alg each key is published with.
    """
    from joserfc import jws
    from joserfc.errors import JoseError

    if not isinstance(token, str) or len(token) > 16384 or token.count(".") != 2:
        raise InvalidToken("not a compact JWS")
    try:
        header = json.loads(_b64decode(token.split(".", 1)[0]))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed header") from None
    if not isinstance(header, dict) or not isinstance(header.get("kid"), str):
        raise InvalidToken("no kid")
    if typ is not None and str(header.get("typ", "")).lower() not in (typ, "application/" + typ):
        raise InvalidToken("wrong typ")
    try:
        jwk = key_service().public_key(header["kid"])
    except KeyServiceError:
        raise InvalidToken("key service unavailable") from None
    if jwk is None or header.get("alg") != jwk.get("alg"):
        raise InvalidToken("unknown key")
    try:
        key = _public_key(json.dumps(jwk, sort_keys=True))
        result = jws.deserialize_compact(token, key, algorithms=[jwk["alg"]])
        claims = json.loads(result.payload)
    except (JoseError, ValueError):
        raise InvalidToken("bad signature") from None
    if not isinstance(claims, dict) or claims.get("iss") != current_app.config["OIDC_ISSUER"]:
        raise InvalidToken("wrong issuer")
    if check_exp:
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp + leeway <= time.time():
            raise InvalidToken("expired")
    return claims
