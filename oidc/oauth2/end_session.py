"""RP-Initiated Logout 1.0: validating a logout request.

Authlib ships an ``EndSessionEndpoint`` (``authlib.oidc.rpinitiated``); this
module does not use it because its rules are looser than ours: it silently
ignores an unknown ``client_id`` or an unregistered ``post_logout_redirect_uri``
(we refuse both on an error page, §4: the OP must not redirect on an error,
and the RP's developer should learn why), it never redirects without an
``id_token_hint`` even once the user confirmed, and it verifies the hint
against the whole JWK Set without checking ``typ`` or ``iss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.common.urls import add_params_to_uri

from oidc.models import Client
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.jwt import ID_TOKEN, MAX_TOKEN_LENGTH, InvalidToken, verify_artefact
from oidc.queries import find_client


@dataclass
class EndSessionRequest:
    """A valid logout request: whose ID token hint, which client, where to go afterwards."""

    hint_claims: dict[str, Any] | None
    client: Client | None
    post_logout_redirect_uri: str | None
    state: str | None
    #: The parameters to carry through a confirmation form.
    params: dict[str, str]

    def hint_is_current(self, subject: str, sid: str | None) -> bool:
        """Whether the ID token hint was issued for the current login session: user ``subject``, session ``sid``.

        Only then is the request trusted without asking the user (§6).  A hint
        of any age verifies (§2: expired ID tokens are accepted), so one whose
        ``sid`` is not the current session's (an earlier login's, or none: a
        refreshed token after its session ended) is treated as suspect (§2).
        """
        return (self.hint_claims is not None and sid is not None and self.hint_claims.get("sub") == subject
                and self.hint_claims.get("sid") == sid)

    def redirect_location(self) -> str | None:
        """The post-logout redirect URI, with ``state`` (§3), or None."""
        if not self.post_logout_redirect_uri:
            return None
        if self.state is None:
            return self.post_logout_redirect_uri
        location: str = add_params_to_uri(self.post_logout_redirect_uri, [("state", self.state)])
        return location


def validate_end_session_request(params: Any) -> EndSessionRequest:
    """The logout request in ``params``, or :class:`ErrorPage`."""
    hint = params.get("id_token_hint")
    client_id = params.get("client_id")
    post_logout_uri = params.get("post_logout_redirect_uri")
    state = params.get("state")
    if any(value is not None and len(value) > MAX_TOKEN_LENGTH for value in (hint, client_id, post_logout_uri, state)):
        raise ErrorPage("invalid_request", "a parameter is too long")

    claims = _hinted_claims(hint) if hint else None
    client = _client(client_id, claims)
    if post_logout_uri:
        if client is None:
            raise ErrorPage("invalid_request", "post_logout_redirect_uri needs client_id or id_token_hint")
        if post_logout_uri not in client.post_logout_redirect_uris:  # exact match (§3)
            raise ErrorPage("invalid_request", "post_logout_redirect_uri is not registered for this client")
    carried = {name: value for name, value in (("id_token_hint", hint), ("client_id", client_id),
                                               ("post_logout_redirect_uri", post_logout_uri), ("state", state))
               if value}
    return EndSessionRequest(claims, client, post_logout_uri or None, state, carried)


def _hinted_claims(hint: str) -> dict[str, Any]:
    """The claims of the ID token in id_token_hint (expired or not), or :class:`ErrorPage`."""
    try:
        # An expired ID token is still a valid hint (§2).
        return verify_artefact(hint, ID_TOKEN, check_exp=False)
    except InvalidToken:
        raise ErrorPage("invalid_request", "id_token_hint is not an ID token issued by this provider") from None


def _client(client_id: str | None, claims: dict[str, Any] | None) -> Client | None:
    """The client named by ``client_id``, else the one audience of the hinted ID token; None when neither names one."""
    client = None
    if client_id:
        client = find_client(client_id)
        if client is None:
            raise ErrorPage("invalid_client", "unknown client_id")
    if claims is not None:
        aud = claims.get("aud")
        audiences: list[Any] = aud if isinstance(aud, list) else [aud]
        if client is not None and client.client_id not in audiences:
            raise ErrorPage("invalid_request", "client_id does not match the ID token's audience")
        if client is None and len(audiences) == 1 and isinstance(audiences[0], str):
            client = find_client(audiences[0])
    return client
