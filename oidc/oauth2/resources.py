"""Resource indicators (RFC 8707): the audience of an access token."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from oidc import urls
from oidc.oauth2.families import default_audience
from oidc.state import State, current_state


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """RFC 8707 §2: the requested resource is not one this client may get tokens for."""

    error = "invalid_target"


def admin_audience() -> str:
    """The resource indicator of this provider's admin API: its URL (RFC 8707 §2, RFC 9068 §4)."""
    return urls.absolute(current_state().settings.issuer, urls.ADMIN)


def resolve_audience(client: Any, resources: list[str], redirect_uri: str | None = None,
                     state: State | None = None) -> list[str]:
    """The access token audience: the requested ``resource`` values, each registered
    for the client, or the configured default audience.  The admin API is a resource
    only for clients registered as allowed to ask for it (``admin_api``).
    ``state``: the app's, when the caller has it."""
    if not resources:
        return default_audience(state)
    allowed = set(client.audiences) | set(default_audience(state))
    admin = admin_audience()
    if client.admin_api:
        allowed.add(admin)
    else:
        allowed.discard(admin)
    for resource in resources:
        if resource not in allowed:
            raise InvalidTargetError("the requested resource is not registered for this client",
                                     redirect_uri=redirect_uri)
    return list(dict.fromkeys(resources))
