"""Client authentication beyond Authlib's built-in methods: ``private_key_jwt``.

``client_secret_basic``, ``client_secret_post`` and ``none`` are Authlib's; the
secret check itself is :meth:`oidc.models.Client.check_client_secret` (a keyed
hash compared in constant time, never a slow hash).

``private_key_jwt`` (OIDC Core §9, RFC 7523): the client signs an assertion with
a key of its registered JWK Set.  Only asymmetric algorithms are accepted (a
client has no shared secret with us to use HS256 with), ``aud`` must name this
issuer or the endpoint, the assertion may live at most
``CLIENT_ASSERTION_MAX_LIFETIME`` seconds, and each ``jti`` is accepted once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from keys.algorithms import JWS_ALGORITHMS
from oidc.models import ClientAssertion, db, find_client, now

log = logging.getLogger(__name__)

#: Asymmetric JWS algs only (keys.algorithms): RFC 9864 Ed25519 next to the polymorphic EdDSA.
ASSERTION_ALGORITHMS = list(JWS_ALGORITHMS)


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self) -> None:
        super().__init__(validate_jti=True, leeway=0)

    def __call__(self, query_client: Any, request: Any) -> Any:
        self.leeway = current_app.config["CLIENT_ASSERTION_LEEWAY"]
        return super().__call__(query_client, request)

    def get_audiences(self) -> list[str]:
        issuer = current_app.config["OIDC_ISSUER"]
        return [issuer, f"{issuer}/token", f"{issuer}/introspect", f"{issuer}/revoke"]

    def resolve_client_public_key(self, client: Any) -> KeySet:
        if not client.jwks:
            raise InvalidClientError(description="The client has no registered JWK Set.")
        try:
            return KeySet.import_key_set(json.loads(client.jwks))
        except (ValueError, JoseError):
            raise InvalidClientError(description="The client's registered JWK Set is unusable.") from None

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError):
            raise InvalidClientError(description="The client assertion does not verify.") from None
        claims = token.claims
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp > now() + current_app.config["CLIENT_ASSERTION_MAX_LIFETIME"]:
            raise InvalidClientError(description="The client assertion lives too long.")
        self.verify_claims(claims)
        return claims

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        """Record ``jti`` for this client until the assertion expires; False if it was seen."""
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            return False
        client = find_client(claims["sub"], include_disabled=True)
        if client is None:
            return False
        # Committed at once: a replay must be refused even if this request fails later.
        db.session.add(ClientAssertion(client_pk=client.id, jti=jti, expires_at=int(claims["exp"])))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
        return True
