"""Logins as the protocol core sees them: the grant's user, and ending a login with its grants.

A login session is a row (``login_sessions``) whose ``sid`` goes into ID tokens
and into the codes and refresh tokens the login leads to.  Starting and finding
one is the account services' business (:mod:`oidc.accounts.sessions`); ending
one is the core's, because it revokes the grants that end with the login
(OIDC Core §11): the browser's logout, RP-initiated logout and the account
services all end logins here.
"""

from __future__ import annotations

from oidc import queries
from oidc.db import db
from oidc.models import User
from oidc.oauth2.families import revoke_grants
from oidc.oauth2.records import UserRecord
from oidc.state import current_state


class AuthenticatedUser:
    """The resource owner of an authorization request, with its login session."""

    def __init__(self, user: User | UserRecord, sid: str | None, auth_time: int) -> None:
        self.user = user
        self.sid = sid
        self.auth_time = auth_time

    def get_user_id(self) -> int:
        return self.user.id


def end_login(sid: object) -> None:
    """End the login session ``sid`` and the grants it made without offline_access (committed;
    OIDC Core §11); nothing when it has ended already."""
    if not isinstance(sid, str):
        return
    row = queries.login_session_by_sid(sid)
    if row is not None and row.ended_at is None:
        row.ended_at = current_state().clock.now()
        revoke_grants(sids=[sid], include_offline=False)
        db.session.commit()


def end_logins_of(user: User, *, include_offline: bool = False) -> None:
    """End every open login session of ``user`` and the grants of the user that end with a login
    (every grant with ``include_offline``), in the current transaction."""
    moment = current_state().clock.now()
    queries.end_login_sessions_of(user.id, moment)
    revoke_grants(user_pk=user.id, include_offline=include_offline)
