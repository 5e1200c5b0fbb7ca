"""Grant families: issuing, rotating and revoking the tokens of one authorization.

Every token issued from one authorization belongs to a *grant family*
(``grant_id``): the authorization code, the refresh tokens it led to through
rotation, and every access token issued on the way.  A replayed code or a
reused refresh token revokes the whole family at once (RFC 6749 §4.1.2,
RFC 9700 §4.14.2).

Nothing here commits except :func:`revoke_family_now`: the token endpoint
commits once, after the response is ready, so a failed request leaves the
database as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError

from oidc import hashing, queries
from oidc.db import db
from oidc.models import Client, User
from oidc.oauth2 import dpop, security_profile
from oidc.oauth2.jwt import Signed, issue_access_token
from oidc.oauth2.mtls import ClientCertificate
from oidc.oauth2.records import AuthorizationCodeRecord, RefreshTokenRecord, TokenWrites, UserRecord
from oidc.observability import audit
from oidc.state import State, current_state
from oidc.text import bounded_text
from oidc.vocabulary import CERTIFICATE_THUMBPRINT


@dataclass
class AuthContext:
    """What the token builders need to know about the authorization behind a token."""

    grant_id: str | None
    audience: list[str]
    auth_time: int | None = None
    sid: str | None = None
    nonce: str | None = None
    #: Thumbprint of the DPoP key the access token is bound to (RFC 9449 §6), if any.
    jkt: str | None = None
    #: When the family's first refresh token was issued (None: now, a new family).
    family_issued_at: int | None = None
    #: ``x5t#S256`` of the client certificate the access token is bound to (RFC 8705 §3), if any;
    #: set by :func:`issue_tokens`.
    certificate_thumbprint: str | None = None


@dataclass(slots=True)
class Issued:
    """What one token response issued, as its audit line names it: identifiers, never a token."""

    access_token: Signed
    id_token: Signed | None = None
    refresh_token: bool = False


def proof_jkt(request: Any) -> str | None:
    """The key thumbprint of the token request's verified DPoP proof (``request.dpop``), if it sent one."""
    proof = request.dpop
    return proof.jkt if proof is not None else None


def default_audience(state: State | None = None) -> list[str]:
    """The configured default audience of access tokens (``state``: the app's, when the caller has it)."""
    return [current_state(state).settings.access_token_default_audience]


def is_client_token(claims: dict[str, Any]) -> bool:
    """Whether a verified access token was issued to a client for itself (client_credentials).

    Such tokens have the client as subject (RFC 9068 §2.2) and no row unless revoked.
    """
    return bool(claims.get("client_id")) and claims.get("sub") == claims.get("client_id")


def issue_tokens(request: Any, *, user: User | UserRecord | None, scope: str, context: AuthContext,
                 include_refresh_token: bool, writes: TokenWrites | None = None) -> dict[str, Any]:
    """A token response body for ``request`` (the OAuth 2.0 request, with its client and DPoP proof):
    a JWT access token (and the family's first refresh token).

    The rows of a grant family's tokens go to ``writes``, for :func:`write_tokens`
    once every token of the response is signed; what was issued goes to ``request.issued``.

    A client registered with ``dpop_bound_access_tokens`` gets tokens only for a
    request with a DPoP proof (RFC 9449 §5.2); one registered with
    ``tls_client_certificate_bound_access_tokens`` only for a request with a client
    certificate (RFC 8705 §3); under the FAPI 2.0 profile, one or the other.
    """
    client: Client = request.client
    # The request's (an IssuerRequest's): the profile, the tokens' issuer, clock and settings.
    state: State = request.app_state
    if context.jkt is None and security_profile.requires_dpop(client):
        raise dpop.InvalidDPoPProof(description="This client's token requests need a DPoP proof.")
    context.certificate_thumbprint = _certificate_binding(request, client, context, state)
    proof = request.dpop
    if (proof is not None and security_profile.is_fapi2(client, state)
            and not security_profile.signing_algorithms_allowed(proof.alg)):
        raise dpop.InvalidDPoPProof(description="The FAPI 2.0 profile allows DPoP proofs signed with "
                                                "PS256, ES256 or EdDSA only.")
    lifetime = state.settings.access_token_lifetime
    subject = user.subject if user is not None else client.client_id
    extra: dict[str, Any] = {"auth_time": context.auth_time} if context.auth_time is not None else {}
    if context.jkt is not None:
        extra["cnf"] = {"jkt": context.jkt}  # RFC 9449 §6.1
    if context.certificate_thumbprint is not None:
        extra.setdefault("cnf", {})[CERTIFICATE_THUMBPRINT] = context.certificate_thumbprint  # RFC 8705 §3.1
    access = issue_access_token(
        state, client_id=str(client.client_id), subject=str(subject), scope=scope, audience=context.audience,
        lifetime=lifetime, extra=extra or None,
    )
    claims = access.claims
    if context.grant_id is not None:
        # Tokens of a grant family get a row, so that a replayed code or a reused
        # refresh token can revoke them.  A client_credentials token has no family:
        # it is verified from its signature alone and gets a row only if revoked,
        # so issuing one writes nothing to the database.
        assert writes is not None, "a grant family's tokens are written with the response"
        writes.access_tokens.append({
            "jti": claims["jti"], "grant_id": context.grant_id, "client_pk": client.id,
            "user_pk": user.id if user is not None else None, "scope": scope,
            "issued_at": claims["iat"], "expires_at": claims["exp"], "revoked_at": None,
        })
    token_type = dpop.TOKEN_TYPE if context.jkt is not None else "Bearer"
    body: dict[str, Any] = {"access_token": access.token, "token_type": token_type, "expires_in": lifetime,
                            "scope": scope}
    request.issued = Issued(access)
    if include_refresh_token and user is not None and context.grant_id is not None:
        assert writes is not None
        body["refresh_token"] = new_refresh_token(client, user, scope, context, writes, state=state)
        request.issued.refresh_token = True
    return body


def _certificate_binding(request: Any, client: Client, context: AuthContext, state: State) -> str | None:
    """The thumbprint to bind the access token to (RFC 8705 §3): the request's certificate when the client
    registered certificate-bound tokens, or under the FAPI 2.0 profile without DPoP; None otherwise."""
    bound = security_profile.requires_certificate_binding(client)
    constrained = security_profile.requires_sender_constraint(client, state) and context.jkt is None
    if not bound and not constrained:
        return None
    presented: ClientCertificate | None = request.client_certificate
    if presented is not None:
        return presented.thumbprint
    if bound:
        raise InvalidRequestError(description="This client's access tokens are bound to its certificate: "
                                              "send the token request over mutual TLS.")
    raise dpop.InvalidDPoPProof(description="This client's token requests need a DPoP proof or a client "
                                            "certificate (FAPI 2.0 sender-constrained tokens).")


def new_refresh_token(client: Client, user: User | UserRecord, scope: str, context: AuthContext,
                      writes: TokenWrites, *, state: State | None = None) -> str:
    """A new refresh token of the family (its keyed hash's row goes to ``writes``); its value
    (``state``: the app's, when the caller has it)."""
    state = current_state(state)
    value = hashing.random_token(32)
    issued = state.clock.now()
    family_issued_at = context.family_issued_at or issued
    # Idle lifetime from now, never past the family's absolute lifetime (RFC 9700 §4.14.2).
    expires_at = min(issued + state.settings.refresh_token_lifetime,
                     family_issued_at + state.settings.refresh_token_max_lifetime)
    writes.refresh_tokens.append({
        "token_hash": state.hasher(hashing.REFRESH_TOKEN).hash(value), "grant_id": context.grant_id,
        "client_pk": client.id, "user_pk": user.id, "scope": scope, "audience": context.audience,
        # RFC 9449 §5: a public client's refresh token is bound to its DPoP key
        # (a confidential client's is bound to its authentication already).
        "dpop_jkt": context.jkt if client.is_public else None,
        # RFC 8705 §4: likewise to its certificate.
        "certificate_thumbprint": context.certificate_thumbprint if client.is_public else None,
        "auth_time": context.auth_time or issued, "sid": context.sid, "created_at": issued,
        "expires_at": expires_at, "family_issued_at": family_issued_at, "rotated_at": None, "revoked_at": None,
    })
    return value


def write_tokens(writes: TokenWrites) -> None:
    """Insert the rows of a response's tokens, in the request's transaction (after its claim, if any)."""
    queries.insert_tokens(writes.access_tokens, writes.refresh_tokens)
    writes.access_tokens.clear()
    writes.refresh_tokens.clear()


def is_offline(scope: str) -> bool:
    """Whether a grant has offline access: it outlives the login that made it (OIDC Core §11)."""
    return "offline_access" in scope.split()


def refresh_token_usable(token: RefreshTokenRecord, state: State | None = None) -> bool:
    """Whether a refresh token can be exchanged now: the one rule of the grant and of introspection.

    Not revoked, not rotated, its user enabled, within its idle and absolute
    lifetimes (RFC 9700 §4.14.2), and, without ``offline_access``, its login
    session still on (OIDC Core §11).  The refresh grant uses it, and
    introspection reports ``active`` only when it holds (RFC 7662 §2.2).  Who
    presents the token (its client, its DPoP key) is checked by each caller
    (``state``: the app's, when the caller has it).
    """
    state = current_state(state)
    now = state.clock.now()
    family_issued_at = token.family_issued_at or token.created_at
    return (token.revoked_at is None and token.rotated_at is None and not token.user.disabled
            and token.expires_at > now and family_issued_at + state.settings.refresh_token_max_lifetime > now
            and (is_offline(token.scope) or token.session_active))


def revoke_grants(*, user_pk: int | None = None, sids: list[str] | None = None,
                  include_offline: bool) -> list[str]:
    """Revoke the grant families of a user (or of login sessions), in the current transaction.

    OIDC Core §11: a grant without ``offline_access`` ends with the login that
    made it; ``include_offline`` ends the offline ones too (disabling, a
    compromised account).  Returns the revoked families' ids.

    A family is found by any token of it still in use: its refresh tokens and,
    since a grant may have none (no ``offline_access`` on a client without
    ``refresh_always``, or no refresh_token grant), its access tokens (a user's)
    or its authorization code (a login session's: access tokens carry no sid).
    A family is offline when any of them has ``offline_access``: an access token
    narrowed on refresh (RFC 6749 §6) does not make its family an online one.
    """
    if user_pk is not None and sids is None:
        rows = queries.grants_of_user(user_pk, current_state().clock.now())
    elif sids is not None and user_pk is None:
        if not sids:
            return []
        rows = queries.grants_of_sessions(sids)
    else:
        raise ValueError("revoke the grants of a user or of login sessions, not both")
    offline: dict[str, bool] = {}
    for row in rows:
        grant_id = str(row.grant_id)  # never NULL: the access tokens read are a family's
        offline[grant_id] = offline.get(grant_id, False) or is_offline(row.scope)
    families = sorted(grant_id for grant_id, is_offline_family in offline.items()
                      if include_offline or not is_offline_family)
    for grant_id in families:
        revoke_family(grant_id)
    return families


def find_refresh_grant(value: object, state: State | None = None) -> RefreshTokenRecord | None:
    """The refresh token ``value`` with its user and login session, whatever its state (one read;
    ``state``: the app's, when the caller has it)."""
    checked = bounded_text(value, queries.MAX_SECRET_LENGTH)
    if checked is None:
        return None
    state = current_state(state)
    row = queries.find_refresh_grant(state.hasher(hashing.REFRESH_TOKEN).candidates(checked))
    return RefreshTokenRecord.from_row(row, state.clock.now()) if row is not None else None


def find_code_grant(value: object, state: State | None = None) -> AuthorizationCodeRecord | None:
    """The authorization code ``value`` with its user and login session, whatever its state (one read;
    ``state``: the app's, when the caller has it)."""
    checked = bounded_text(value, queries.MAX_SECRET_LENGTH)
    if checked is None:
        return None
    state = current_state(state)
    row = queries.find_code_grant(state.hasher(hashing.CODE).candidates(checked))
    return AuthorizationCodeRecord.from_row(row, state.clock.now()) if row is not None else None


def claim_refresh_token(token: RefreshTokenRecord, writes: TokenWrites, state: State | None = None) -> bool:
    """Mark ``token`` rotated, atomically, then insert the rows of ``writes`` (:func:`write_tokens`):
    False, and nothing written, when another request already did (``state``: the app's, when the caller has it)."""
    return _claimed(queries.claim_refresh_token, token.id, writes, state)


def claim_authorization_code(code: AuthorizationCodeRecord, writes: TokenWrites, state: State | None = None) -> bool:
    """Mark ``code`` used, atomically, then insert the rows of ``writes`` (:func:`write_tokens`):
    False, and nothing written, when another request already did (``state``: the app's, when the caller has it)."""
    return _claimed(queries.claim_authorization_code, code.id, writes, state)


def _claimed(claim: Callable[[int, int, list[dict[str, Any]], list[dict[str, Any]]], bool], row_id: int,
             writes: TokenWrites, state: State | None) -> bool:
    moment = current_state(state).clock.now()
    if not claim(row_id, moment, writes.access_tokens, writes.refresh_tokens):
        return False
    writes.access_tokens.clear()  # written with the claim
    writes.refresh_tokens.clear()
    return True


def require_claim(claimed: bool, grant_id: str, *, reason: str, description: str) -> None:
    """Refuse a code or refresh token a concurrent request claimed first, revoking its family.

    Of two requests racing with one credential exactly one claims it; the
    other is treated as a replay (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
    """
    if not claimed:
        revoke_family_now(grant_id, reason)
        raise InvalidGrantError(description)


def revoke_family(grant_id: str) -> None:
    """Revoke every refresh and access token of a grant family (in the current transaction)."""
    queries.revoke_family(grant_id, current_state().clock.now())


def revoke_family_now(grant_id: str, reason: str) -> None:
    """Revoke a family and commit at once: the refusal that follows must not undo it."""
    queries.rollback_core_transaction()
    db.session.rollback()
    revoke_family(grant_id)
    db.session.commit()
    audit.record("grant.revoked", "grant family revoked", level=logging.WARNING, grant_id=grant_id, reason=reason)


def prune_expired() -> dict[str, int]:
    """Delete rows nothing can use any more (expired codes, tokens, assertions, sessions, pushed requests, proof jtis)."""
    state = current_state()
    moment = state.clock.now()
    # Codes are kept a day past expiry so that a late replay still revokes what they issued, and at
    # least as long as a login session lasts: a logout finds the clients owed a logout token by them.
    counts = queries.prune_expired(moment, kept_until=moment - max(86400, state.settings.login_session_lifetime))
    db.session.commit()
    return counts
