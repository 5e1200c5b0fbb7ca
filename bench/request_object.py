"""CPU time a signed request object (RFC 9101) adds to a pushed authorization request.

    python bench/request_object.py [--calls 400] [--windows 5] [--algs PS256 ES256 EdDSA RS256]

``POST /par`` with the authorization request in plain form parameters, then the
same request as a ``request`` object signed by the client (PyJWT, outside the
measured time) with each algorithm: the difference is what verifying the object
(its header, the client's key, the signature, the claims) costs, in process CPU
time, in one process, without HTTP (``bench/inprocess.py``'s harness; software
keys: no private key of the provider is used to verify a client's object).
``ALG verify`` is the verification alone (``request_object.resolve``, with the cost of
a request context around it), the figure the difference estimates without the noise of
the whole request.
Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inprocess import Call, cpu_microseconds, environment  # noqa: E402

REDIRECT_URI = "https://rp.example.test/cb"
ISSUER = "http://127.0.0.1:8000"


def _keys(alg: str) -> tuple[Any, dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    if alg in ("PS256", "RS256"):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**jwk, "kid": alg.lower(), "use": "sig"}


def prepare(workdir: Path, algs: list[str]) -> dict[str, Call]:
    import jwt

    os.environ.update(environment(workdir, "software"))
    from oidc.accounts.clients import create_client
    from oidc.app import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    app = create_app()
    upgrade_schema(app)
    state_of(app).key_service()
    keys = {alg: _keys(alg) for alg in algs}
    with app.app_context():
        client, secret = create_client(name="bench", redirect_uris=[REDIRECT_URI], scope="openid",
                                       jwks={"keys": [jwk for _, jwk in keys.values()]})
        client_id = client.client_id
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
              "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"}
    calls: dict[str, Any] = {"plain": Call(app, "POST", "/par", urlencode(params).encode(), basic)}
    now = int(time.time())
    claims = {"iss": client_id, "aud": ISSUER, "nbf": now, "exp": now + 3600, **params}
    for alg, (private, jwk) in keys.items():
        token = jwt.encode(claims, private, algorithm=alg,
                           headers={"kid": jwk["kid"], "typ": "oauth-authz-req+jwt"})
        calls[alg] = Call(app, "POST", "/par", urlencode({"request": token}).encode(), basic)
        calls[f"{alg} verify"] = _resolve_only(app, client_id, token)
    # Plain once more, last: how far the figures drift with the rows written meanwhile.
    calls["plain, last"] = calls["plain"]
    return calls


def _resolve_only(app: Any, client_id: str, token: str) -> Any:
    """The verification alone (:func:`oidc.oauth2.request_object.resolve`), in a request context."""
    from oidc.oauth2 import request_object
    from oidc.oauth2.client_cache import current_client_cache

    class Resolve:
        status = "verified"

        def __call__(self) -> None:
            with app.test_request_context("/par", base_url=ISSUER):
                request_object.resolve(token, current_client_cache().get(client_id))

    return Resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="calls per window")
    parser.add_argument("--windows", type=int, default=5, help="windows per figure (the best is kept)")
    parser.add_argument("--algs", nargs="+", default=["PS256", "ES256", "EdDSA", "RS256"],
                        choices=["PS256", "ES256", "EdDSA", "RS256"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # joserfc's note on the EdDSA name (RFC 9864), once per call
    workdir = Path(tempfile.mkdtemp(prefix="oidc-request-object-"))
    try:
        calls = prepare(workdir, args.algs)
        # Windows taken in turn (plain, each alg, plain, ...): the machine's drift touches every figure alike.
        best = {name: float("inf") for name in calls}
        for _ in range(args.windows):
            for name, call in calls.items():
                best[name] = min(best[name], cpu_microseconds(call, args.calls, 1))
        for name, figure in best.items():
            added = "" if name.startswith("plain") or "verify" in name else (
                f"  {figure - best['plain']:+7.1f} us for the signed object")
            print(f"/par {name:8} {figure:8.1f} us CPU/request{added}  ({calls[name].status})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
