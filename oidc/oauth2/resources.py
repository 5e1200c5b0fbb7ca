"""Resource indicators (RFC 8707): the audience of an access token."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from oidc.oauth2.families import default_audience


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this client may get tokens for."""

    error = "invalid_target"


def resolve_audience(client: Any, resources: list[str], redirect_uri: str | None = None) -> list[str]:
    """The access token audience: the requested ``resource`` values, each registered
    for the client, or the configured default audience."""
    if not resources:
        return default_audience()
    allowed = set(client.audiences) | set(default_audience())
    for resource in resources:
        if resource not in allowed:
            raise InvalidTargetError("the requested resource is not registered for this client",
                                     redirect_uri=redirect_uri)
    return list(dict.fromkeys(resources))
