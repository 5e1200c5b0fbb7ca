"""Client authentication: which method a client may use, its secret, and ``private_key_jwt``.

Authlib's :class:`ClientAuthentication` runs the methods; here it asks
:func:`auth_method_allowed` instead of a method on the client row, and
``client_secret_basic`` and ``client_secret_post`` are Authlib's own with the
secret checked by :func:`check_client_secret` (a keyed hash compared in
constant time, never a slow hash).  ``none`` is Authlib's.  The methods and
algorithms are listed once, in :mod:`oidc.vocabulary`.

``private_key_jwt`` (OIDC Core §9, RFC 7523): the client signs an assertion with
a key of its registered JWK Set, by value or at its ``jwks_uri``
(:func:`oidc.oauth2.client_keys.client_key_set`).  Only asymmetric algorithms are accepted (a
client has no shared secret with us to use HS256 with), ``aud`` must name this
issuer or the endpoint, the assertion may live at most
``CLIENT_ASSERTION_MAX_LIFETIME`` seconds, and each ``jti`` is accepted once.

``tls_client_auth`` and ``self_signed_tls_client_auth`` (RFC 8705 §2): the
``client_id`` in the body and the certificate the client presented to the
proxy (:mod:`oidc.oauth2.mtls`), offered only as ``CLIENT_CERT_HEADER`` and
``MTLS_CA_FILE`` allow (``Settings.mtls_auth_methods``).
"""

from __future__ import annotations

import datetime
from typing import Any

from authlib.oauth2.rfc6749 import authenticate_client
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from oidc import hashing, queries, urls
from oidc.db import db
from oidc.models import Client, ClientAssertion
from oidc.oauth2 import mtls
from oidc.oauth2.client_cache import current_client_cache
from oidc.oauth2.client_keys import ClientKeyError, client_key_set
from oidc.oauth2.security_profile import is_fapi2
from oidc.oauth2.token_request import basic_credentials
from oidc.queries import find_client
from oidc.state import State, current_state
from oidc.text import column_text
from oidc.vocabulary import ASSERTION_ALGORITHMS, FAPI2_ALGORITHMS, FAPI2_AUTH_METHODS

#: Longest client assertion ``jti`` recorded (the length of its column).
MAX_ASSERTION_JTI_LENGTH = 255


def check_client_secret(client: Client, client_secret: str, state: State | None = None) -> bool:
    """Whether ``client_secret`` is the client's (its keyed hash, compared in constant time;
    ``state``: the app's, when the caller has it)."""
    state = current_state(state)
    return state.hasher(hashing.CLIENT_SECRET).verify(client_secret, client.secret_hash)


def auth_method_allowed(client: Client, method: str, endpoint: str, state: State | None = None) -> bool:
    """Whether ``client`` may authenticate with ``method`` (its registered one) at ``endpoint``
    (``state``: the app's, when the caller has it).

    FAPI 2.0 §5.3.2.1 clause 4: confidential clients only, authenticating with private_key_jwt or MTLS.
    """
    return method == client.auth_method and (method in FAPI2_AUTH_METHODS or not is_fapi2(client, state))


class ClientAuthentication(authenticate_client.ClientAuthentication):  # type: ignore[misc]  # the base class is untyped
    """Authlib's, asking :func:`auth_method_allowed` and checking secrets with :func:`check_client_secret`."""

    def __init__(self, query_client: Any) -> None:
        super().__init__(query_client)
        self.register("client_secret_basic", _client_secret_basic)
        self.register("client_secret_post", _client_secret_post)
        self.register("tls_client_auth", _tls_client_auth)
        self.register("self_signed_tls_client_auth", _self_signed_tls_client_auth)

    def authenticate(self, request: Any, methods: list[str], endpoint: str) -> Any:
        state = request.app_state  # (an IssuerRequest's)
        for method in methods:
            client = self._methods[method](self.query_client, request)
            if not client or not auth_method_allowed(client, method, endpoint, state):
                continue
            # RFC 6749 §3.2.1: confidential clients MUST authenticate.
            if method == "none" and not auth_method_allowed(client, "none", "token", state):
                continue
            request.auth_method = method
            return client
        description = f"The client cannot authenticate with methods: {methods}"
        if "client_secret_basic" in methods:
            raise InvalidClientError(status_code=401, description=description)
        raise InvalidClientError(description=description)


def _client_secret_basic(query_client: Any, request: Any) -> Any:
    """Authlib's ``client_secret_basic``: the client id and secret in HTTP Basic (decoded by the precheck)."""
    client_id, client_secret = basic_credentials(request)
    if client_id and client_secret:
        client = _known_client(query_client, client_id, 401)
        if check_client_secret(client, client_secret, request.app_state):
            return client
    return None


def _client_secret_post(query_client: Any, request: Any) -> Any:
    """Authlib's ``client_secret_post``: the client id and secret in the form body."""
    client_id, client_secret = request.form.get("client_id"), request.form.get("client_secret")
    if client_id and client_secret:
        client = _known_client(query_client, client_id, 400)
        if check_client_secret(client, client_secret, request.app_state):
            return client
    return None


def _tls_client_auth(query_client: Any, request: Any) -> Any:
    """RFC 8705 §2.1: a certificate of a trusted CA whose subject DN or SAN is the client's registered one."""
    client, presented = _certificate_client(query_client, request, "tls_client_auth")
    if client is None or presented is None:
        return None
    settings = current_state().settings
    now = datetime.datetime.fromtimestamp(current_state().clock.now(), datetime.UTC)
    if not settings.mtls_ca_file or not mtls.chain_verifies(presented, settings.mtls_ca_file, now):
        raise InvalidClientError(description="The client certificate is not issued by a trusted CA, or not valid now.")
    if not mtls.matches_registration(client, presented.certificate):
        raise InvalidClientError(description="The client certificate is not the one registered for the client.")
    return client


def _self_signed_tls_client_auth(query_client: Any, request: Any) -> Any:
    """RFC 8705 §2.2: a certificate whose public key is in the client's registered JWK Set."""
    client, presented = _certificate_client(query_client, request, "self_signed_tls_client_auth")
    if client is None or presented is None:
        return None
    if not mtls.key_registered(client, presented.certificate):
        raise InvalidClientError(description="The client certificate's key is not in the client's JWK Set.")
    return client


def _certificate_client(query_client: Any, request: Any, method: str) -> tuple[Any, mtls.ClientCertificate | None]:
    """The client named by ``client_id`` in the body if it registered ``method`` (offered here), and the
    request's certificate; (None, None) when this method does not apply."""
    client_id = request.form.get("client_id")
    if not client_id or method not in current_state().settings.mtls_auth_methods:
        return None, None
    client = _known_client(query_client, client_id, 400)
    if client.auth_method != method:
        return None, None
    presented = request.client_certificate
    if presented is None:
        raise InvalidClientError(description="The client authenticates with a certificate, and sent none.")
    return client, presented


def _known_client(query_client: Any, client_id: str, status_code: int) -> Any:
    client = query_client(client_id)
    if not client:
        raise InvalidClientError(status_code=status_code, description="The client does not exist on this server.")
    return client


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]  # the base class is untyped
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self) -> None:
        super().__init__(validate_jti=True, leeway=0)

    def __call__(self, query_client: Any, request: Any) -> Any:
        self.leeway = current_state().settings.client_assertion_leeway
        return super().__call__(query_client, request)

    def authenticate_client(self, client: Any) -> Any:
        if auth_method_allowed(client, self.CLIENT_AUTH_METHOD, "token"):
            return client
        raise InvalidClientError(description=f"The client cannot authenticate with method: {self.CLIENT_AUTH_METHOD}")

    def get_audiences(self) -> list[str]:
        settings = current_state().settings
        if settings.client_assertion_accept_token_endpoint_audience:
            return [settings.issuer, urls.absolute(settings.issuer, urls.TOKEN)]
        return [settings.issuer]

    def extract_assertion(self, assertion: str) -> Any:
        """Authlib's, with every malformed header (``crit`` of the wrong type, …) invalid_client.

        Its claims are decoded here, unverified: json raises RecursionError for ones nested too deeply.
        """
        try:
            return super().extract_assertion(assertion)
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
            raise InvalidClientError(description="Invalid JWT assertion.") from None

    def resolve_client_public_key(self, client: Any) -> Any:
        """The client's keys (:func:`~oidc.oauth2.client_keys.client_key_set`), chosen by the assertion's ``kid``.

        A function of the JWS, so that a ``kid`` missing from a ``jwks_uri``'s cached set refreshes it.
        """
        if not client.jwks and not client.jwks_uri:
            raise InvalidClientError(description="The client has no registered JWK Set.")

        def key_set(jws: Any) -> KeySet:
            kid = jws.headers().get("kid")
            try:
                return client_key_set(client, kid=kid if isinstance(kid, str) else None)
            except ClientKeyError as exc:
                raise InvalidClientError(description=f"The client's keys are unusable: {exc}.") from None

        return key_set

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except (JoseError, ValueError, TypeError, KeyError, AttributeError):
            raise InvalidClientError(description="The client assertion does not verify.") from None
        claims = token.claims
        if not isinstance(claims.get("aud"), str) or claims["aud"] not in self.get_audiences():
            raise InvalidClientError(description="The client assertion's aud must be the issuer identifier.")
        exp = claims.get("exp")
        state = current_state()
        if not isinstance(exp, int) or exp > state.clock.now() + state.settings.client_assertion_max_lifetime:
            raise InvalidClientError(description="The client assertion lives too long.")
        try:
            self.verify_claims(claims)
        except (TypeError, ValueError):
            raise InvalidClientError(description="The client assertion's claims are malformed.") from None
        if (claims["aud"] != state.settings.issuer or token.header.get("alg") not in FAPI2_ALGORITHMS) and (
                is_fapi2(self._client(claims.get("sub")))):
            # FAPI 2.0 §5.3.2.1 clause 8: aud is the issuer, as a single string (whatever
            # CLIENT_ASSERTION_ACCEPT_TOKEN_ENDPOINT_AUDIENCE says); §5.4.1: PS256, ES256, EdDSA.
            raise InvalidClientError(description="Under the FAPI 2.0 profile the assertion's aud must be the issuer "
                                                 "and its alg PS256, ES256 or EdDSA.")
        return claims

    @staticmethod
    def _client(client_id: object) -> Any:
        """The enabled client from the per-process cache: the token request has just read it."""
        return current_client_cache().get(client_id)

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        """Record ``jti`` for this client until the assertion expires; False if it was seen."""
        if column_text(jti, MAX_ASSERTION_JTI_LENGTH) is None:
            return False
        client = find_client(claims["sub"], include_disabled=True)
        if client is None:
            return False
        # Committed at once: a replay must be refused even if this request fails later.
        leeway = current_state().settings.client_assertion_leeway
        queries.add(ClientAssertion(client_pk=client.id, jti=jti, expires_at=int(claims["exp"]) + leeway))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
        return True
