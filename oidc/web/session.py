"""The browser session: a signed cookie carrying the ``sid`` of a server-side login session.

The cookie is ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the issuer is
https, and signed with a key derived from ``SECRETS_SYSTEM``; the login itself
is a row (:mod:`oidc.accounts.sessions`), so ending the row ends the session
everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Flask, Response, g, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from oidc.accounts import sessions
from oidc.accounts.sessions import AuthenticatedUser
from oidc.models import User


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, free on requests that do not use it.

    API calls (token, introspection, JWKS) never carry the session cookie;
    Flask would still build a signing serializer to open it, and read the
    cookie settings to save it.
    """

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if app.secret_key and "HTTP_COOKIE" not in request.environ:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not (session or session.modified or session.accessed):
            return  # never touched: no cookie to set or delete, no Vary to add
        super().save_session(app, session, response)


def current_login() -> AuthenticatedUser | None:
    """The signed-in user of this browser, if the session is still valid."""
    if "oidc_login" not in g:
        g.oidc_login = sessions.find_login(session.get("sid"))
    return g.oidc_login


def sign_in(user: User) -> AuthenticatedUser:
    """Start a login session for ``user`` in this browser (a new cookie, never the pre-login one)."""
    login = sessions.start_session(user)
    session.clear()
    session.permanent = True
    session["sid"] = login.sid
    g.oidc_login = login
    return login


def sign_out() -> None:
    """End this browser's login session, if any."""
    sessions.end_session(session.get("sid"))
    session.clear()
    g.oidc_login = None


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessionInterface()


# -- "a login was just made for this request" -----------------------------------------------
#
# prompt=login and max_age ask for a new login; after it the browser comes back
# to the same /authorize URL, which must then not ask again.  The login view
# marks the session with a fingerprint of that request; /authorize takes it once.


def request_fingerprint(query_string: bytes) -> str:
    """Identifies one authorization request, to know a login was made for it."""
    return hashlib.sha256(query_string).hexdigest()[:32]


def mark_fresh_login(query_string: bytes) -> None:
    session["fresh_login"] = request_fingerprint(query_string)


def take_fresh_login(query_string: bytes) -> bool:
    """Whether a login was just made for the request with this query string (forgotten once asked)."""
    fresh = session.get("fresh_login") == request_fingerprint(query_string)
    if fresh:
        session.pop("fresh_login", None)
    return fresh
