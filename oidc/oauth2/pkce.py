"""PKCE (RFC 7636) with ``S256`` only: required of public clients (RFC 9700 §2.1.1) and under the FAPI 2.0 profile."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge

from oidc.oauth2.security_profile import is_fapi2
from oidc.vocabulary import CODE_CHALLENGE_METHODS


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]  # the base class is untyped
    """Authlib's PKCE extension, refusing ``plain`` and requiring it of public clients."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = list(CODE_CHALLENGE_METHODS)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        request = grant.request
        data = request.payload.data
        challenge = data.get("code_challenge")
        method = data.get("code_challenge_method")
        # The profile is asked only of a request without a challenge: with one, neither rule can fail.
        if not challenge and request.client is not None:
            if request.client.is_public:
                raise InvalidRequestError("public clients must use PKCE with code_challenge_method=S256",
                                          redirect_uri=redirect_uri)
            if is_fapi2(request.client):
                raise InvalidRequestError("the FAPI 2.0 profile requires PKCE with code_challenge_method=S256",
                                          redirect_uri=redirect_uri)
        if challenge and method not in CODE_CHALLENGE_METHODS:
            # RFC 7636 §4.3: a missing method means "plain", which is refused.
            raise InvalidRequestError("code_challenge_method must be S256 ('plain' is not supported)",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)
