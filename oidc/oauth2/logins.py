"""Logins as the protocol core sees them: the grant's user, and ending a login with its grants.

A login session is a row (``login_sessions``) whose ``sid`` goes into ID tokens
and into the codes and refresh tokens the login leads to.  Starting and finding
one is the account services' business (:mod:`oidc.accounts.sessions`); ending
one is the core's, because it revokes the grants that end with the login
(OIDC Core §11): the browser's logout, RP-initiated logout and the account
services all end logins here, and each end owes the clients that got tokens in
the session a back-channel logout token (:mod:`oidc.oauth2.backchannel`),
written in the same transaction.
"""

from __future__ import annotations

from oidc import queries
from oidc.db import db
from oidc.models import User
from oidc.oauth2.backchannel import owe_logout_tokens
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
    # A conditional UPDATE: of two requests ending one session, one ends it and owes its logout tokens.
    if queries.end_login_session(sid, current_state().clock.now()):
        revoke_grants(sids=[sid], include_offline=False)
        owe_logout_tokens([sid])
        db.session.commit()


def end_logins_of(user: User, *, include_offline: bool = False) -> None:
    """End every open login session of ``user`` and the grants of the user that end with a login
    (every grant with ``include_offline``), in the current transaction, owing the logout tokens."""
    moment = current_state().clock.now()
    ended = [sid for sid in queries.open_login_sessions_of(user.id) if queries.end_login_session(sid, moment)]
    revoke_grants(user_pk=user.id, include_offline=include_offline)
    owe_logout_tokens(ended)
