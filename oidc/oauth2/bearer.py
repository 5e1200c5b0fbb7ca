"""Our access tokens, validated in one place: userinfo, introspection, revocation, the admin API.

An access token is a JWT of ours (RFC 9068: ``typ: at+jwt``, signed by a
published key, ``iss`` this issuer).  What it is worth also depends on the
database: a token of a grant family has a row (revoked with its family), a
client's own token (client_credentials) has none unless it was revoked, and a
disabled client or user makes every token it holds inactive.
:func:`load_access_token` finds all of that once; :meth:`AccessTokenInfo.is_active`
is the one rule every caller applies.

:class:`BearerProtector` is Authlib's ``ResourceProtector`` for our own
protected resources: the token in the ``Authorization`` header or, on a form
POST, in the body (RFC 6750 §2.1-2.2), never both; its errors carry the
RFC 6750 §3 ``WWW-Authenticate: Bearer`` challenge, with an ``error`` only when
a token was sent.

DPoP-bound tokens (``cnf.jkt``, RFC 9449) are accepted with the ``DPoP``
scheme only, with a proof of the bound key whose ``ath`` is the token's hash
(:class:`DPoPAccessTokenValidator`, registered beside the Bearer one); such a
token presented as ``Bearer`` is refused with the RFC 9449 §7.1
``WWW-Authenticate: DPoP`` challenge.

Certificate-bound tokens (``cnf`` ``x5t#S256``, RFC 8705 §3) are accepted only
from a request whose client certificate (:mod:`oidc.oauth2.mtls`) has that
thumbprint, whatever the scheme; otherwise ``invalid_token`` (401).
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, cast

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from flask import Response
from flask import request as flask_request
from werkzeug.exceptions import BadRequest

from oidc import queries
from oidc.models import Client, User
from oidc.oauth2 import dpop, mtls
from oidc.oauth2.families import is_client_token
from oidc.oauth2.jwt import InvalidToken, verify_own_jwt
from oidc.queries import AnyRow
from oidc.state import State, current_state
from oidc.vocabulary import ACCESS_TOKEN_SET, ACCESS_TOKEN_TYP, CERTIFICATE_THUMBPRINT


@dataclass
class AccessTokenInfo:
    """A verified access token of ours, with what the database says of it (Authlib's TokenMixin)."""

    claims: dict[str, Any]
    client: Client | None
    user: User | None
    scope: str
    expires_at: int
    revoked: bool
    row: AnyRow | None = field(default=None, repr=False)

    @property
    def is_client_token(self) -> bool:
        """Issued to a client for itself (client_credentials): no user behind it."""
        return self.row is None

    def check_client(self, client: Client) -> bool:
        return self.client is not None and self.client.id == client.id

    def is_expired(self, now: int | None = None) -> bool:
        """Whether it expired by ``now`` (the app's clock when not given)."""
        return self.expires_at <= (now if now is not None else current_state().clock.now())

    def is_revoked(self) -> bool:
        # A disabled client or user makes every token it holds inactive.
        return (self.revoked or self.client is None or bool(self.client.disabled)
                or (self.user is not None and bool(self.user.disabled)))

    def is_active(self) -> bool:
        return not self.is_expired() and not self.is_revoked()

    def get_scope(self) -> str:
        return self.scope

    @property
    def jkt(self) -> str | None:
        """The thumbprint of the DPoP key the token is bound to (RFC 9449 §6.1), if any."""
        cnf = self.claims.get("cnf")
        return cnf.get("jkt") if isinstance(cnf, dict) and isinstance(cnf.get("jkt"), str) else None

    @property
    def certificate_thumbprint(self) -> str | None:
        """The ``x5t#S256`` of the client certificate the token is bound to (RFC 8705 §3.1), if any."""
        cnf = self.claims.get("cnf")
        value = cnf.get(CERTIFICATE_THUMBPRINT) if isinstance(cnf, dict) else None
        return value if isinstance(value, str) else None

    def certificate_matches(self, request: Any) -> bool:
        """Whether ``request`` (Flask's) may present the token: unbound, or with the certificate it is bound to."""
        bound = self.certificate_thumbprint
        if bound is None:
            return True
        try:
            presented = mtls.certificate_of(request, current_state().settings.client_cert_header)
        except mtls.InvalidClientCertificate:
            return False
        return presented is not None and hmac.compare_digest(presented.thumbprint, bound)


def load_access_token(value: object, caller: Client | None = None, state: State | None = None) -> AccessTokenInfo | None:
    """The access token ``value`` if it is one of ours (expired or not), with its standing.

    ``caller`` is the client making the request: when the token is its own, as
    it mostly is, its client is not looked up again.  ``state``: the app's, when
    the caller has it (its keys, clock, issuer and engine).
    """
    if not isinstance(value, str):
        return None
    try:
        claims = verify_own_jwt(value, typ=ACCESS_TOKEN_TYP, key_set=ACCESS_TOKEN_SET, check_exp=False, state=state)
    except InvalidToken:
        return None
    row = queries.find_access_token_row(claims.get("jti"), state.engine() if state is not None else None)
    if row is None:
        if not is_client_token(claims) or not isinstance(claims.get("exp"), int):
            return None  # a user's token without its row: its grant or user is gone
        if caller is not None and caller.client_id == claims["client_id"]:
            client: Client | None = caller
        else:
            client = queries.find_client(claims["client_id"], include_disabled=True)
        return AccessTokenInfo(claims=claims, client=client, user=None, scope=str(claims.get("scope", "")),
                               expires_at=int(claims["exp"]), revoked=False)
    return AccessTokenInfo(
        claims=claims, client=queries.client_by_pk(row.client_pk),
        user=queries.user_by_pk(row.user_pk) if row.user_pk is not None else None,
        scope=row.scope, expires_at=row.expires_at, revoked=row.revoked_at is not None, row=row,
    )


def validate_access_token(value: object) -> AccessTokenInfo | None:
    """The access token ``value`` if it is ours and active now, else None (a DPoP-bound one: None, RFC 9449 §7.1;
    a certificate-bound one presented without its certificate: None, RFC 8705 §3)."""
    token = load_access_token(value)
    if token is None or not token.is_active() or token.jkt is not None:
        return None
    return token if token.certificate_matches(flask_request) else None


# -- protecting our own resources (RFC 6750) ----------------------------------------------


class OwnAccessTokenValidator(BearerTokenValidator):  # type: ignore[misc]  # the base class is untyped
    """Authlib's bearer validator over :func:`load_access_token`."""

    def authenticate_token(self, token_string: str) -> AccessTokenInfo | None:
        return load_access_token(token_string)

    def validate_token(self, token: AccessTokenInfo | None, scopes: Any, request: Any) -> None:
        if token is None or not token.is_active():
            raise InvalidTokenError("the access token is invalid, expired or revoked")
        if token.jkt is not None and self.TOKEN_TYPE == "bearer":
            raise DPoPChallenge(InvalidTokenError("the access token is DPoP-bound: use the DPoP scheme with a proof"))
        if not token.certificate_matches(request):
            raise InvalidTokenError("the access token is bound to a client certificate this request did not present")
        if self.scope_insufficient(token.get_scope(), scopes):
            raise InsufficientScopeError()


#: The credentials of the Bearer (RFC 6750 §2.1 ``b64token``) and DPoP (RFC 9449 §7.1) schemes:
#: ``token68`` (RFC 9110 §11.2).
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class MissingTokenError(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """No token (or another scheme) was sent: RFC 6750 §3.1, a challenge with no error code."""

    status_code = 401


class BearerProtector(ResourceProtector):  # type: ignore[misc]  # the base class is untyped
    """Bearer tokens for this provider's own resources (/userinfo, the admin API)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_token_validator(OwnAccessTokenValidator())
        self.register_token_validator(DPoPAccessTokenValidator())

    def parse_request_authorization(self, request: Any) -> tuple[Any, str]:
        header = request.headers.get("Authorization")
        in_body = None
        if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
            try:
                in_body = request.form.get("access_token")
            except BadRequest:  # a body that cannot be read (not UTF-8): RFC 6750 §3.1, with the challenge
                raise InvalidRequestError("the form body cannot be read") from None
        if header is not None and in_body is not None:
            raise InvalidRequestError("send the token in one place only")
        validator = self.get_token_validator("bearer")
        if header is not None:
            scheme, _, value = header.partition(" ")
            value = value.strip()
            if scheme.lower() not in ("bearer", "dpop") or not value:
                raise MissingTokenError()
            if not TOKEN68.fullmatch(value):
                # No token of ours has other characters; a DPoP proof's ath hashes the
                # token's ASCII octets (RFC 9449 §4.2), so this is checked before any proof.
                raise InvalidTokenError("the access token is malformed")
            if scheme.lower() == "dpop":
                return self.get_token_validator("dpop"), value
            return validator, value
        if in_body:
            return validator, in_body
        raise MissingTokenError()

    def validate_request(self, scopes: Any, request: Any, **kwargs: Any) -> AccessTokenInfo:
        """Authlib's, with a DPoP token's proof verified first and handed to the token's checks (RFC 9449 §7.1).

        The validators are shared by every request: the proof travels as an argument, not on them.
        """
        validator, token_string = self.parse_request_authorization(request)
        validator.validate_request(request)
        if isinstance(validator, DPoPAccessTokenValidator):
            kwargs["proof"] = validator.verify_proof(request, token_string)
        token: AccessTokenInfo | None = validator.authenticate_token(token_string)
        validator.validate_token(token, scopes, request, **kwargs)
        return cast(AccessTokenInfo, token)  # validate_token refuses a missing token

    def acquire_token(self, scopes: list[str] | None = None, **kwargs: Any) -> AccessTokenInfo:
        """The active token of this request, or an :class:`OAuth2Error` to answer with.

        Authlib's own wraps the request in a JSON request without a form; the
        body may carry the token here, so the Flask request is validated as is.
        Nothing reads Authlib's ``current_token``, so the token is not kept in ``flask.g``.
        """
        return self.validate_request(scopes, flask_request._get_current_object())  # type: ignore[attr-defined]


def challenge_response(error: OAuth2Error) -> Response:
    """The RFC 6750 §3 error response: JSON body and the ``WWW-Authenticate: Bearer`` challenge.

    For a DPoP refusal (RFC 9449 §7.1) the challenge is ``DPoP``, with the
    accepted ``algs``; with no token at all both schemes are offered.
    """
    settings = current_state().settings
    dpop_scheme = isinstance(error, DPoPChallenge | dpop.InvalidDPoPProof | dpop.UseDPoPNonce) or (
        flask_request.headers.get("Authorization", "")[:5].lower() == "dpop ")
    if isinstance(error, DPoPChallenge):
        error = error.cause
    parts = [f'realm="{settings.issuer}"']
    body: dict[str, Any] = {}
    if not isinstance(error, MissingTokenError):
        description = error.get_error_description()
        parts += [f'error="{error.error}"', f'error_description="{description}"']
        body = {"error": error.error, "error_description": description}
    status = 400 if isinstance(error, InvalidRequestError) else error.status_code
    if dpop_scheme:
        status = 401 if status == 400 else status
    response = Response(json.dumps(body), status=status, content_type="application/json")
    dpop_challenge = "DPoP " + ", ".join([*parts, f'algs="{" ".join(settings.dpop_signing_algs)}"'])
    if dpop_scheme:
        response.headers["WWW-Authenticate"] = dpop_challenge
    else:
        response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)
        if isinstance(error, MissingTokenError):
            response.headers.add("WWW-Authenticate", dpop_challenge)
    for name, value in dpop.nonce_headers():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


# -- DPoP-bound tokens (RFC 9449 §7) ---------------------------------------------------------


class DPoPChallenge(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """An error to answer with the ``WWW-Authenticate: DPoP`` challenge (RFC 9449 §7.1)."""

    def __init__(self, cause: OAuth2Error) -> None:
        super().__init__(error=cause.error, description=cause.get_error_description(), status_code=cause.status_code)
        self.cause = cause


class DPoPAccessTokenValidator(OwnAccessTokenValidator):
    """``Authorization: DPoP <token>`` with a ``DPoP`` proof of the token's key (RFC 9449 §7.1).

    The proof is checked first (:meth:`verify_proof`, which
    :meth:`BearerProtector.validate_request` calls before the token is read, so its
    ``jti`` is recorded before anything else), with ``htu`` the configured URL of the
    resource and ``ath`` the token's hash; then the token, which must be bound to the
    proof's key (:meth:`validate_token`, given that proof).
    """

    TOKEN_TYPE = "dpop"

    def verify_proof(self, request: Any, token_string: str) -> dpop.Proof:
        """The ``DPoP`` proof of a resource request (Flask ``request``) presenting ``token_string``."""
        try:
            return dpop.verify_proof(request.headers.getlist(dpop.SCHEME), method=request.method,
                                     url=current_state().settings.issuer + request.path, access_token=token_string)
        except (dpop.InvalidDPoPProof, dpop.UseDPoPNonce) as error:
            raise DPoPChallenge(error) from None

    def validate_token(self, token: AccessTokenInfo | None, scopes: Any, request: Any, *,  # type: ignore[override]
                       proof: dpop.Proof) -> None:
        try:
            super().validate_token(token, scopes, request)
        except OAuth2Error as error:
            raise DPoPChallenge(error) from None
        assert token is not None
        if token.jkt is None or proof.jkt != token.jkt:
            raise DPoPChallenge(InvalidTokenError("the access token is not bound to the key of the DPoP proof"))


def authenticate_request(scopes: list[str] | None = None) -> AccessTokenInfo | None:
    """The active access token of this request (Bearer or DPoP, as :class:`BearerProtector` checks), or None."""
    try:
        return _protector.acquire_token(scopes)
    except OAuth2Error:
        return None


_protector = BearerProtector()
