"""The least a Flask route can do to answer a token or an introspection request.

* ``POST /token`` (client_credentials): parse the form, check one client's
  secret from the Basic header, build the RFC 9068 claims and sign them
  through the same backend as the provider (keys.hsm or keys.software).
* ``POST /introspect``: check the client the same way, verify an ES256 access
  token's signature (cryptography, public key from BENCH_PUBLIC_KEY), look its
  ``jti`` up in the ``access_tokens`` table of a migrated SQLite database
  (BENCH_SQLITE), answer RFC 7662 JSON.

No Authlib, no ORM, no hooks, no logging.  Served under the shipped gunicorn
settings (bench/trivial.conf.py), it shows how much of the framework ceiling
any Flask endpoint doing that work can reach; bench/run.py prints it under
the provider's figure.  It is a measuring stick, not an endpoint to deploy.

Environment: BENCH_BACKEND (softhsm or software), BENCH_ALG, BENCH_CLIENT_ID,
BENCH_CLIENT_SECRET, for SoftHSM the provider's HSM_* settings, and for
introspection BENCH_PUBLIC_KEY (PEM) and BENCH_SQLITE (a file path).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flask import Flask, Response, request

from bench.backends import make_signer

app = Flask(__name__)
ALG = os.environ.get("BENCH_ALG", "ES256")
CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "bench")
CLIENT_SECRET = os.environ.get("BENCH_CLIENT_SECRET", "")
HEADER = base64.urlsafe_b64encode(json.dumps({"alg": ALG, "kid": "bench", "typ": "at+jwt"}).encode()).rstrip(b"=")

# Made on first use, in the worker: a PKCS#11 session does not survive fork, nor a SQLite connection.
_sign: Callable[[bytes], bytes] | None = None
_database: sqlite3.Connection | None = None
_public_key: Any = None


def sign(data: bytes) -> bytes:
    global _sign
    if _sign is None:
        _sign = make_signer(os.environ.get("BENCH_BACKEND", "software"), ALG, f"bench.minimal.{os.getpid()}")
    return _sign(data)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _client_error() -> Response | None:
    """invalid_client unless the Basic header carries the one client's credentials."""
    try:
        client_id, _, secret = base64.b64decode(request.headers.get("Authorization", "")[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return _json({"error": "invalid_client"}, 401)
    if client_id != CLIENT_ID or not hmac.compare_digest(secret, CLIENT_SECRET):
        return _json({"error": "invalid_client"}, 401)
    return None


@app.post("/token")
def token() -> Response:
    if request.form.get("grant_type") != "client_credentials":
        return _json({"error": "unsupported_grant_type"}, 400)
    refused = _client_error()
    if refused is not None:
        return refused
    now = int(time.time())
    claims = {"iss": request.host_url.rstrip("/"), "sub": CLIENT_ID, "aud": request.host_url.rstrip("/"),
              "client_id": CLIENT_ID, "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(18),
              "scope": request.form.get("scope", "")}
    signing_input = HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    jwt = signing_input + b"." + _b64(sign(signing_input))
    return _json({"access_token": jwt.decode(), "token_type": "Bearer", "expires_in": 300, "scope": claims["scope"]})


def _verified_claims(token: str) -> dict[str, Any] | None:
    """Claims of an ES256 JWS signed by BENCH_PUBLIC_KEY's private key, or None."""
    global _public_key
    if _public_key is None:
        _public_key = serialization.load_pem_public_key(os.environ["BENCH_PUBLIC_KEY"].encode())
    try:
        header, payload, signature = token.split(".")
        raw = _unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        _public_key.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(_unb64(payload))
    except (ValueError, InvalidSignature):
        return None
    return claims if isinstance(claims, dict) else None


@app.post("/introspect")
def introspect() -> Response:
    global _database
    refused = _client_error()
    if refused is not None:
        return refused
    claims = _verified_claims(request.form.get("token", ""))
    if claims is None or not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        return _json({"active": False})
    if _database is None:
        _database = sqlite3.connect(os.environ["BENCH_SQLITE"])
    row = _database.execute("SELECT revoked_at FROM access_tokens WHERE jti = ?", (str(claims.get("jti")),)).fetchone()
    if row is not None and row[0] is not None:
        return _json({"active": False})
    return _json({"active": True, **claims, "token_type": "Bearer"})
