"""The least a Flask route can do to answer a client_credentials request.

It parses the form, checks one client's secret from the Basic header, builds
the RFC 9068 claims and signs them through the same backend as the provider
(keys.hsm or keys.software), with no database, no Authlib, no hooks and no
logging.  Served under the shipped gunicorn settings (bench/trivial.conf.py),
it shows how much of the framework ceiling any Flask token endpoint signing
through that backend can reach; bench/run.py prints it next to the provider's
client_credentials figures.  It is a measuring stick, not a token endpoint.

Environment: BENCH_BACKEND (softhsm or software), BENCH_ALG, BENCH_CLIENT_ID,
BENCH_CLIENT_SECRET, and for SoftHSM the provider's HSM_* settings.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import time
from typing import Callable

from flask import Flask, Response, request

from bench.backends import make_signer

app = Flask(__name__)
ALG = os.environ.get("BENCH_ALG", "ES256")
CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "bench")
CLIENT_SECRET = os.environ.get("BENCH_CLIENT_SECRET", "")
HEADER = base64.urlsafe_b64encode(json.dumps({"alg": ALG, "kid": "bench", "typ": "at+jwt"}).encode()).rstrip(b"=")

_sign: Callable[[bytes], bytes] | None = None


def sign(data: bytes) -> bytes:
    """Sign with a key made on first use, in the worker (a PKCS#11 session does not survive fork)."""
    global _sign
    if _sign is None:
        _sign = make_signer(os.environ.get("BENCH_BACKEND", "software"), ALG, f"bench.minimal.{os.getpid()}")
    return _sign(data)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _error(code: str, status: int) -> Response:
    return Response(json.dumps({"error": code}), status, content_type="application/json")


@app.post("/token")
def token() -> Response:
    if request.form.get("grant_type") != "client_credentials":
        return _error("unsupported_grant_type", 400)
    try:
        client_id, _, secret = base64.b64decode(request.headers.get("Authorization", "")[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return _error("invalid_client", 401)
    if client_id != CLIENT_ID or not hmac.compare_digest(secret, CLIENT_SECRET):
        return _error("invalid_client", 401)
    now = int(time.time())
    claims = {"iss": request.host_url.rstrip("/"), "sub": client_id, "aud": request.host_url.rstrip("/"),
              "client_id": client_id, "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(18),
              "scope": request.form.get("scope", "")}
    signing_input = HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    jwt = signing_input + b"." + _b64(sign(signing_input))
    body = {"access_token": jwt.decode(), "token_type": "Bearer", "expires_in": 300, "scope": claims["scope"]}
    return Response(json.dumps(body), content_type="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
