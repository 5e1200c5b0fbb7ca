"""What a refresh or a code exchange reads: one row, with its user and login session, as plain records.

The two grants users wait on most read one credential, its user and the
state of the login behind it, and write three rows.  Through the ORM that
was three identity-map loads and a unit-of-work flush, several times the
cost of the SQL itself; here the credential is read with one SQLAlchemy Core
statement joined with ``users`` and ``login_sessions``
(:mod:`oidc.queries`) into frozen records, and the rows the response adds are
collected in :class:`TokenWrites` and inserted only after every signature is
made, so SQLite's write lock is never held while the HSM signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from oidc.queries import AnyRow


class UserRecord(NamedTuple):
    """A user as tokens, ID token claims and pages read them (read-only; changes go through the ORM).

    A named tuple rather than a frozen dataclass: as immutable, and made in half the
    instructions (a frozen dataclass sets each field through ``object.__setattr__``);
    every signed-in page, authorization request, refresh and code exchange makes one.
    """

    id: int
    subject: str
    username: str
    name: str | None
    email: str | None
    email_verified: bool
    updated_at: int
    disabled: bool


def user_of_row(row: AnyRow) -> UserRecord:
    """The ``user_pk`` and ``user_*`` columns of a joined row."""
    return UserRecord(id=row.user_pk, subject=row.user_subject, username=row.user_username, name=row.user_name,
                     email=row.user_email, email_verified=bool(row.user_email_verified),
                     updated_at=row.user_updated_at, disabled=bool(row.user_disabled))


def session_active(row: AnyRow, now: int) -> bool:
    """Whether the credential's login session (``sid``) is on: it exists, has not ended, has not expired."""
    return row.sid is not None and row.session_expires_at is not None and row.session_ended_at is None \
        and row.session_expires_at > now


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A refresh token row as the refresh grant uses it (Authlib's TokenMixin)."""

    id: int
    grant_id: str
    client_pk: int
    scope: str
    audience: list[str]
    auth_time: int
    sid: str | None
    created_at: int
    expires_at: int
    dpop_jkt: str | None
    certificate_thumbprint: str | None
    family_issued_at: int | None
    rotated_at: int | None
    revoked_at: int | None
    user: UserRecord
    #: Whether the login session ``sid`` was on when the row was read.
    session_active: bool

    @classmethod
    def from_row(cls, row: AnyRow, now: int) -> RefreshTokenRecord:
        return cls(id=row.id, grant_id=row.grant_id, client_pk=row.client_pk, scope=row.scope,
                   audience=list(row.audience), auth_time=row.auth_time, sid=row.sid, created_at=row.created_at,
                   expires_at=row.expires_at, dpop_jkt=row.dpop_jkt,
                   certificate_thumbprint=row.certificate_thumbprint, family_issued_at=row.family_issued_at,
                   rotated_at=row.rotated_at, revoked_at=row.revoked_at, user=user_of_row(row),
                   session_active=session_active(row, now))

    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client: Any) -> bool:
        client_pk: int = client.id
        return self.client_pk == client_pk


@dataclass(frozen=True, slots=True)
class AuthorizationCodeRecord:
    """An authorization code row as the code grant uses it (Authlib's AuthorizationCodeMixin)."""

    id: int
    grant_id: str
    client_pk: int
    redirect_uri: str
    redirect_uri_given: bool
    scope: str
    audience: list[str]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    dpop_jkt: str | None
    auth_time: int
    sid: str | None
    expires_at: int
    used_at: int | None
    user: UserRecord
    #: Whether the login session ``sid`` was on when the row was read.
    session_active: bool

    @classmethod
    def from_row(cls, row: AnyRow, now: int) -> AuthorizationCodeRecord:
        return cls(id=row.id, grant_id=row.grant_id, client_pk=row.client_pk, redirect_uri=row.redirect_uri,
                   redirect_uri_given=bool(row.redirect_uri_given), scope=row.scope, audience=list(row.audience),
                   nonce=row.nonce, code_challenge=row.code_challenge, code_challenge_method=row.code_challenge_method,
                   dpop_jkt=row.dpop_jkt, auth_time=row.auth_time, sid=row.sid, expires_at=row.expires_at,
                   used_at=row.used_at, user=user_of_row(row), session_active=session_active(row, now))

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri if self.redirect_uri_given else None

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class TokenWrites:
    """The rows one token response adds (access and refresh tokens), written once every token is signed."""

    access_tokens: list[dict[str, Any]] = field(default_factory=list)
    refresh_tokens: list[dict[str, Any]] = field(default_factory=list)
