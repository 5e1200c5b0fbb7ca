"""Security profiles: the default rules, the FAPI 2.0 Security Profile (final), or FAPI 2.0 Message Signing.

``SECURITY_PROFILE=fapi2`` applies the FAPI 2.0 rules to every client; a
client registered with ``security_profile: fapi2`` gets them whatever the
provider-wide setting.  ``fapi2-message-signing`` (provider-wide or per client)
is the Security Profile plus FAPI 2.0 Message Signing's rules: request objects
signed (RFC 9101) at the pushed authorization request endpoint (§5.3.1) and
authorization responses as JARM JWTs (§5.4).  What the profile changes is listed in README.md
("The FAPI 2.0 profile"); each rule is enforced where its request is
validated (authorization, PAR, token endpoint, client authentication).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from oidc.settings import DEFAULT_PROFILE, FAPI2_MAX_CODE_LIFETIME, FAPI2_MESSAGE_SIGNING, FAPI2_PROFILES
from oidc.state import State, current_state
from oidc.urls import is_loopback_http
from oidc.vocabulary import FAPI2_ALGORITHMS


def profile_of(client: Any, state: State | None = None, *, known: str | None = None) -> str:
    """The profile that applies to ``client``: the stricter of its registration and ``SECURITY_PROFILE``
    (``state``: the app's, ``known``: the client's profile worked out already, when the caller has them)."""
    if known:
        return known
    registered = getattr(client, "security_profile", None) or DEFAULT_PROFILE
    provider = current_state(state).settings.security_profile
    if registered == provider:  # the usual case, asked several times a request: no ranking to do
        return provider
    return max(registered, provider, key=_STRICTNESS.index)


#: The profiles from the least strict to the strictest (each one's rules include the previous one's).
_STRICTNESS = (DEFAULT_PROFILE, *FAPI2_PROFILES)


def is_fapi2(client: Any, state: State | None = None, *, profile: str | None = None) -> bool:
    """Whether the FAPI 2.0 Security Profile applies to ``client`` (provider-wide or by registration).

    ``state``: the app's, ``profile``: the client's (:func:`profile_of`), when the caller has them.
    """
    return profile_of(client, state, known=profile) in FAPI2_PROFILES


def requires_jarm(client: Any, *, profile: str | None = None) -> bool:
    """Whether ``client``'s authorization responses must be JARM JWTs (FAPI 2.0 Message Signing §5.4.1 clause 1).

    ``profile``: the client's (:func:`profile_of`), when the caller has it.
    """
    return profile_of(client, known=profile) == FAPI2_MESSAGE_SIGNING


def requires_par(client: Any, state: State | None = None, *, profile: str | None = None) -> bool:
    """Whether authorization requests of ``client`` must be pushed (RFC 9126 §5-6, FAPI 2.0 §5.3.2.2).

    ``profile``: the client's (:func:`profile_of`), ``state``: the app's, when the caller has them.
    """
    return (current_state(state).settings.require_pushed_authorization_requests
            or bool(getattr(client, "require_pushed_authorization_requests", False))
            or is_fapi2(client, state, profile=profile))


def requires_signed_request_object(client: Any, state: State | None = None, *, profile: str | None = None) -> bool:
    """Whether authorization requests of ``client`` must be signed request objects: RFC 9101 §10.5
    (``REQUIRE_SIGNED_REQUEST_OBJECT``, or the client's registration), or FAPI 2.0 Message Signing
    §5.3.1 clause 1 (at /par, where the profile sends every request).

    ``profile``: the client's (:func:`profile_of`), ``state``: the app's, when the caller has them.
    """
    return (current_state(state).settings.require_signed_request_object
            or bool(getattr(client, "require_signed_request_object", False))
            or profile_of(client, state, known=profile) == FAPI2_MESSAGE_SIGNING)


def requires_request_object_typ(client: Any) -> bool:
    """Whether a request object of ``client`` must name its type (``typ: oauth-authz-req+jwt``, RFC 9101 §10.8).

    Accepted, not required, under the default and FAPI 2.0 profiles; required under FAPI 2.0
    Message Signing, so that no other JWT of the client's is taken for a request.
    """
    return profile_of(client) == FAPI2_MESSAGE_SIGNING


def requires_dpop(client: Any) -> bool:
    """Whether token requests of ``client`` need a DPoP proof (RFC 9449 §5.2)."""
    return bool(getattr(client, "dpop_bound_access_tokens", False))


def requires_certificate_binding(client: Any) -> bool:
    """Whether access tokens of ``client`` are bound to its certificate (RFC 8705 §3.4)."""
    return bool(getattr(client, "tls_client_certificate_bound_access_tokens", False))


def requires_sender_constraint(client: Any, state: State | None = None) -> bool:
    """Whether access tokens of ``client`` must be sender-constrained, by DPoP or by mutual TLS
    (FAPI 2.0 §5.3.2.1 clause 1: either will do)."""
    return is_fapi2(client, state)


def code_lifetime(client: Any, state: State | None = None, *, profile: str | None = None) -> int:
    """Seconds an authorization code of ``client`` lives (at most 60 under the profile, §5.3.2.1 clause 9).

    ``profile``: the client's (:func:`profile_of`), ``state``: the app's, when the caller has them.
    """
    lifetime = current_state(state).settings.authorization_code_lifetime
    return min(lifetime, FAPI2_MAX_CODE_LIFETIME) if is_fapi2(client, state, profile=profile) else lifetime


def redirect_uri_allowed(uri: str) -> bool:
    """FAPI 2.0 §5.3.2.2 clause 7: https redirect URIs; http on loopback only in development mode."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.netloc:
        return True
    return current_state().settings.development and is_loopback_http(parts)


def signing_algorithms_allowed(*algorithms: str) -> bool:
    return all(alg in FAPI2_ALGORITHMS for alg in algorithms)


def rotates_refresh_tokens(client: Any, state: State | None = None) -> bool:
    """Refresh tokens are rotated (with reuse detection), except a confidential client's under the profile.

    FAPI 2.0 §5.3.2.1 clause 10 and its note: rotation gives a confidential
    client (which authenticates every refresh) no security, and a client that
    lost the response with the new token would be locked out.
    """
    return not (is_fapi2(client, state) and not client.is_public)
