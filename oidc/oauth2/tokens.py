"""Any token of ours by its value, trying the hinted kind first (RFC 7662 §2.1, RFC 7009 §2.1).

Introspection and revocation accept access tokens and refresh tokens alike;
both kinds answer the same questions (whose, what scope, until when, still
good?), so both are wrapped in the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oidc import queries
from oidc.models import Client
from oidc.oauth2.bearer import AccessTokenInfo, load_access_token
from oidc.oauth2.families import find_refresh_grant, refresh_token_usable
from oidc.oauth2.jwt import MAX_TOKEN_LENGTH
from oidc.oauth2.records import RefreshTokenRecord, UserRecord
from oidc.state import State, current_state
from oidc.text import bounded_text

ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"


@dataclass
class RefreshTokenInfo:
    """A refresh token of ours with its standing (Authlib's TokenMixin)."""

    row: RefreshTokenRecord = field(repr=False)
    client: Client | None
    user: UserRecord

    @property
    def scope(self) -> str:
        return str(self.row.scope)

    @property
    def expires_at(self) -> int:
        return int(self.row.expires_at)

    @property
    def claims(self) -> dict[str, Any]:
        return {"iat": self.row.created_at}

    def check_client(self, client: Client) -> bool:
        return self.client is not None and self.client.id == client.id

    def is_expired(self, now: int | None = None) -> bool:
        """Whether it expired by ``now`` (the app's clock when not given)."""
        return self.expires_at <= (now if now is not None else current_state().clock.now())

    def is_revoked(self) -> bool:
        """Not usable as the refresh grant decides (:func:`refresh_token_usable`), or its client is disabled."""
        return not refresh_token_usable(self.row) or self.client is None or bool(self.client.disabled)

    def get_scope(self) -> str:
        return self.scope


AnyToken = AccessTokenInfo | RefreshTokenInfo


def load_refresh_token(value: str) -> RefreshTokenInfo | None:
    """The refresh token ``value`` as the grant reads it (with its user), and its client."""
    row = find_refresh_grant(value)
    if row is None:
        return None
    return RefreshTokenInfo(row=row, client=queries.client_by_pk(row.client_pk), user=row.user)


def kind_of(token: AnyToken) -> str:
    return ACCESS_TOKEN if isinstance(token, AccessTokenInfo) else REFRESH_TOKEN


def find_token(value: object, hint: str | None, caller: Client | None = None,
               state: State | None = None) -> AnyToken | None:
    """The token ``value``, whichever its kind, trying ``hint``'s kind first (``state``: the app's, when the
    caller has it)."""
    token = bounded_text(value, MAX_TOKEN_LENGTH)
    if token is None:
        return None
    # The two look-ups written out rather than as a list of closures made per call.
    found: AnyToken | None
    if hint == REFRESH_TOKEN:
        found = load_refresh_token(token)
        return found if found is not None else load_access_token(token, caller, state)
    found = load_access_token(token, caller, state)
    return found if found is not None else load_refresh_token(token)
