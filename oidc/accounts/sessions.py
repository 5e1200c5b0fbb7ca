"""Login sessions: a server-side row per browser login.

The browser only carries the session's ``sid`` (in the signed session cookie,
see :mod:`oidc.web.session`); ending the row ends the login everywhere.  The
``sid`` goes into ID tokens (OpenID Connect Front/Back-Channel Logout's ``sid``)
and into the codes and refresh tokens the login leads to.
"""

from __future__ import annotations

from oidc import queries
from oidc.db import db
from oidc.hashing import random_token
from oidc.models import LoginSession, User
from oidc.oauth2.families import revoke_grants
from oidc.oauth2.records import UserRecord, session_active, user_of_row
from oidc.state import current_state
from oidc.text import column_text

#: Longest login session id looked up (ours are 32 characters).
MAX_SID_LENGTH = 64


class AuthenticatedUser:
    """The resource owner of an authorization request, with its login session."""

    def __init__(self, user: User | UserRecord, sid: str | None, auth_time: int) -> None:
        self.user = user
        self.sid = sid
        self.auth_time = auth_time

    def get_user_id(self) -> int:
        return self.user.id


def start_session(user: User) -> AuthenticatedUser:
    """A new login session (a new ``sid``: never reuse the pre-login session), in the caller's transaction."""
    state = current_state()
    moment = state.clock.now()
    sid = random_token(24)
    queries.insert_login_session({"sid": sid, "user_pk": user.id, "auth_time": moment,
                                  "expires_at": moment + state.settings.login_session_lifetime, "ended_at": None})
    return AuthenticatedUser(user, sid, moment)


def find_login(sid: object) -> AuthenticatedUser | None:
    """The login of session ``sid`` if it is still valid and its user enabled."""
    checked = column_text(sid, MAX_SID_LENGTH)
    if checked is None:
        return None
    row = queries.find_login(checked)  # the session with its user, in one read
    if row is None or not session_active(row, current_state().clock.now()) or row.user_disabled:
        return None
    return AuthenticatedUser(user_of_row(row), row.sid, row.auth_time)


def end_session(sid: object) -> None:
    """End the login session ``sid`` and the grants it made without offline_access (committed;
    OIDC Core §11); nothing when it has ended already."""
    if not isinstance(sid, str):
        return
    row = db.session.get(LoginSession, sid)
    if row is not None and row.ended_at is None:
        row.ended_at = current_state().clock.now()
        revoke_grants(sids=[sid], include_offline=False)
        db.session.commit()


def end_sessions_of(user: User, *, include_offline: bool = False) -> None:
    """End every open session of ``user`` and the grants of the user that end with a login
    (every grant with ``include_offline``), in the current transaction."""
    moment = current_state().clock.now()
    LoginSession.query.filter_by(user_pk=user.id, ended_at=None).update({"ended_at": moment})
    revoke_grants(user_pk=user.id, include_offline=include_offline)
