"""Security profiles: the default rules, or the FAPI 2.0 Security Profile (final).

``SECURITY_PROFILE=fapi2`` applies the FAPI 2.0 rules to every client; a
client registered with ``security_profile: fapi2`` gets them whatever the
provider-wide setting.  What the profile changes is listed in README.md
("The FAPI 2.0 profile"); each rule is enforced where its request is
validated (authorization, PAR, token endpoint, client authentication).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from oidc.settings import FAPI2, FAPI2_MAX_CODE_LIFETIME
from oidc.state import current_state
from oidc.urls import is_loopback_http
from oidc.vocabulary import FAPI2_ALGORITHMS


def is_fapi2(client: Any) -> bool:
    """Whether the FAPI 2.0 Security Profile applies to ``client`` (provider-wide or by registration)."""
    return current_state().settings.fapi2 or getattr(client, "security_profile", None) == FAPI2


def requires_par(client: Any) -> bool:
    """Whether authorization requests of ``client`` must be pushed (RFC 9126 §5-6, FAPI 2.0 §5.3.2.2)."""
    return (current_state().settings.require_pushed_authorization_requests
            or bool(getattr(client, "require_pushed_authorization_requests", False)) or is_fapi2(client))


def requires_signed_request_object(client: Any) -> bool:
    """Whether authorization requests of ``client`` must be signed request objects (RFC 9101 §10.5)."""
    return (current_state().settings.require_signed_request_object
            or bool(getattr(client, "require_signed_request_object", False)))


def requires_request_object_typ(client: Any) -> bool:
    """Whether a request object of ``client`` must name its type (``typ: oauth-authz-req+jwt``, RFC 9101 §10.8).

    Accepted, not required, under the default and FAPI 2.0 profiles; the FAPI 2.0 Message
    Signing profile (§5.3.1) requires it, and answers True here for its clients.
    """
    return False


def requires_dpop(client: Any) -> bool:
    """Whether token requests of ``client`` need a DPoP proof (RFC 9449 §5.2, FAPI 2.0 §5.3.2.1)."""
    return bool(getattr(client, "dpop_bound_access_tokens", False)) or is_fapi2(client)


def code_lifetime(client: Any) -> int:
    """Seconds an authorization code of ``client`` lives (at most 60 under the profile, §5.3.2.1 clause 9)."""
    lifetime = current_state().settings.authorization_code_lifetime
    return min(lifetime, FAPI2_MAX_CODE_LIFETIME) if is_fapi2(client) else lifetime


def redirect_uri_allowed(uri: str) -> bool:
    """FAPI 2.0 §5.3.2.2 clause 7: https redirect URIs; http on loopback only in development mode."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.netloc:
        return True
    return current_state().settings.development and is_loopback_http(parts)


def signing_algorithms_allowed(*algorithms: str) -> bool:
    return all(alg in FAPI2_ALGORITHMS for alg in algorithms)


def rotates_refresh_tokens(client: Any) -> bool:
    """Refresh tokens are rotated (with reuse detection), except a confidential client's under the profile.

    FAPI 2.0 §5.3.2.1 clause 10 and its note: rotation gives a confidential
    client (which authenticates every refresh) no security, and a client that
    lost the response with the new token would be locked out.
    """
    return not (is_fapi2(client) and not client.is_public)
