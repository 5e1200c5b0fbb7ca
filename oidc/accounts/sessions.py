"""Login sessions: a server-side row per browser login.

The browser only carries the session's ``sid`` (in the signed session cookie,
see :mod:`oidc.web.session`); ending the row ends the login everywhere.  The
``sid`` goes into ID tokens (OpenID Connect Front/Back-Channel Logout's ``sid``)
and into the codes and refresh tokens the login leads to.  Ending a login,
with the grants that end with it, is the protocol core's
(:mod:`oidc.oauth2.logins`).
"""

from __future__ import annotations

from oidc import queries
from oidc.hashing import random_token
from oidc.models import User
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.records import session_active, user_of_row
from oidc.state import current_state
from oidc.text import column_text

#: Longest login session id looked up (ours are 32 characters).
MAX_SID_LENGTH = 64


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

