"""Keyed hashes, the session cookie and signed JWTs of the minimal routes.

Stored secrets (refresh tokens, codes) are found by their keyed hash, as the
provider finds them: HMAC-SHA256 under BENCH_HASH_KEY, unpadded base64url, so
one indexed equality read of the provider's ``*_hash`` column finds the row.
The session cookie is the login session's ``sid`` and an HMAC of it under the
same key: checking it costs what checking a signed cookie costs, no more.

JWTs are signed through bench/backends.py (the provider's key backends).  The
keys are made in each worker on first use (a PKCS#11 session does not survive
fork) and, when BENCH_JWKS_DIR is set, their public JWKs written there, so
that a benchmark can check what the routes sign.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from bench.backends import SigningKey, make_signing_key

SESSION_COOKIE = "bench_session"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hash_key() -> bytes:
    return os.environ["BENCH_HASH_KEY"].encode()


@functools.cache
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def keyed_hash(value: str, key: bytes) -> str:
    """The stored form of a client secret, a refresh token or a code: an HMAC keyed once per key and
    copied for each value, the least it costs (as the provider's ``KeyedHasher``)."""
    mac = _keyed(key).copy()
    mac.update(value.encode())
    return b64url(mac.digest())


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def session_cookie(sid: str, key: bytes) -> str:
    return f"{sid}.{keyed_hash('session ' + sid, key)}"


def session_sid(cookie: str | None, key: bytes) -> str | None:
    """The ``sid`` of a cookie :func:`session_cookie` made, or None."""
    sid, _, mac = (cookie or "").partition(".")
    if not sid or not hmac.compare_digest(mac.encode(), keyed_hash("session " + sid, key).encode()):
        return None
    return sid


class Signer:
    """A key of this worker: signs compact JWSs with a fixed header."""

    def __init__(self, backend: str, alg: str, purpose: str, typ: str) -> None:
        kid = f"bench-{purpose}-{os.getpid()}"
        self.alg = alg
        self.key: SigningKey = make_signing_key(backend, alg, kid)
        self.header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": typ}, separators=(",", ":")).encode())
        directory = os.environ.get("BENCH_JWKS_DIR")
        if directory:
            Path(directory, kid + ".json").write_text(json.dumps({**self.key.public_jwk, "kid": kid, "alg": alg}))

    def jwt(self, claims: dict[str, Any]) -> str:
        signing_input = f"{self.header}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{signing_input}.{b64url(self.key.sign(signing_input.encode('ascii')))}"


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6 for an RS256/ES256 ID token: the left half of SHA-256."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16])
