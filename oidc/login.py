"""Login, the browser session, and RP-Initiated Logout.

The browser session is a server-side :class:`~oidc.models.LoginSession`; the
Flask session cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the issuer
is https, signed with a key derived from ``SECRETS_SYSTEM``) only carries its
``sid``.  Ending the row ends the session everywhere.

Failed logins are rate-limited per account and per client address
(Flask-Limiter; only failures count), and a wrong username and a wrong
password get the same message, after the same amount of work.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from oidc import metrics
from oidc.models import LoginSession, User, db, find_client, now
from oidc.oauth2.grants import AuthenticatedUser
from oidc.security import random_token, verify_password

bp = Blueprint("login", __name__)
audit = logging.getLogger("oidc.audit")

GENERIC_LOGIN_ERROR = "Invalid username or password."
LOCKED_OUT_ERROR = "Too many failed attempts. Please wait a while and try again."
_LIMITER = "oidc.limiter"


def normalize_username(value: str) -> str:
    return unicodedata.normalize("NFKC", value or "").strip().lower()


# -- the browser session ----------------------------------------------------------------


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
    if "oidc_login" in g:
        return g.oidc_login
    login = None
    sid = session.get("sid")
    if isinstance(sid, str):
        row = db.session.get(LoginSession, sid)
        if row is not None and row.ended_at is None and row.expires_at > now():
            user = db.session.get(User, row.user_pk)
            if user is not None and not user.disabled:
                login = AuthenticatedUser(user, row.sid, row.auth_time)
    g.oidc_login = login
    return login


def start_login(user: User) -> AuthenticatedUser:
    """A new login session (a new ``sid``: never reuse the pre-login session)."""
    moment = now()
    row = LoginSession(sid=random_token(24), user_pk=user.id, auth_time=moment,
                       expires_at=moment + current_app.config["LOGIN_SESSION_LIFETIME"])
    db.session.add(row)
    db.session.commit()
    session.clear()
    session.permanent = True
    session["sid"] = row.sid
    g.oidc_login = AuthenticatedUser(user, row.sid, row.auth_time)
    return g.oidc_login


def end_login() -> None:
    sid = session.get("sid")
    if isinstance(sid, str):
        row = db.session.get(LoginSession, sid)
        if row is not None and row.ended_at is None:
            row.ended_at = now()
            db.session.commit()
    session.clear()
    g.oidc_login = None


def request_fingerprint(query_string: bytes) -> str:
    """Identifies one authorization request, to know a login was made for it."""
    return hashlib.sha256(query_string).hexdigest()[:32]


def safe_next(value: str | None) -> str | None:
    """Only our own authorization endpoint is a valid place to go after login."""
    if not value or len(value) > 16384:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path != "/authorize" or value.startswith("//") or "\\" in value:
        return None
    return value


# -- login ---------------------------------------------------------------------------------


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


def _account_key() -> str:
    return "account:" + normalize_username(request.form.get("username", ""))[:255]


def _login_failed(response: Response) -> bool:
    return response.status_code == 401


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
        hint = request.args.get("login_hint", "")
        if hint and len(hint) <= 255:
            form.username.data = hint
        return render_template("login.html", form=form, error=None)

    if not form.validate_on_submit():
        error = "The form has expired. Please try again." if form.csrf_token.errors else GENERIC_LOGIN_ERROR
        status = 400 if form.csrf_token.errors else 401
        if status == 401:
            metrics.login_failed("invalid_credentials")
        return render_template("login.html", form=form, error=error), status

    username = normalize_username(form.username.data)
    user = User.query.filter_by(username=username).first()
    valid = verify_password(form.password.data, user.password_hash if user else None)
    if not valid or user is None or user.disabled:
        audit.info("login failed", extra={"event": "login.failed", "remote_addr": request.remote_addr})
        metrics.login_failed("invalid_credentials")
        form.password.data = ""
        return render_template("login.html", form=form, error=GENERIC_LOGIN_ERROR), 401

    target = safe_next(form.next.data)
    start_login(user)
    audit.info("login", extra={"event": "login.succeeded", "sub": user.subject})
    if target is None:
        return render_template("signed_in.html", user=user)
    # Tell /authorize that a login was just made for this request (prompt=login, max_age).
    session["fresh_login"] = request_fingerprint(urlsplit(target).query.encode("utf-8"))
    return redirect(target, code=303)


@bp.errorhandler(RateLimitExceeded)
def too_many_attempts(exc: RateLimitExceeded) -> Any:
    audit.info("login refused: too many failed attempts",
               extra={"event": "login.rate_limited", "remote_addr": request.remote_addr})
    metrics.login_failed("rate_limited")
    form = LoginForm(formdata=None)
    form.next.data = safe_next(request.form.get("next")) or ""
    response = current_app.make_response((render_template("login.html", form=form, error=LOCKED_OUT_ERROR), 429))
    response.headers["Retry-After"] = "60"
    return response


# -- RP-Initiated Logout 1.0 -------------------------------------------------------------------


class LogoutForm(FlaskForm):
    pass


def _error_page(description: str, error: str = "invalid_request") -> tuple[str, int]:
    return render_template("error.html", error=error, description=description), 400


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """End the session; then go back to the RP (an exact registered post-logout URI) or say so."""
    from authlib.common.urls import add_params_to_uri

    from oidc.oauth2.tokens import InvalidToken, verify_own_jwt

    params = request.values
    hint = params.get("id_token_hint")
    client_id = params.get("client_id")
    post_logout_uri = params.get("post_logout_redirect_uri")
    state = params.get("state")
    if any(value is not None and len(value) > 16384 for value in (hint, client_id, post_logout_uri, state)):
        return _error_page("a parameter is too long")

    claims = None
    if hint:
        try:
            # An expired ID token is still a valid hint (RP-Initiated Logout §2).
            claims = verify_own_jwt(hint, typ="jwt", check_exp=False)  # an ID token, not an access token
        except InvalidToken:
            return _error_page("id_token_hint is not an ID token issued by this provider")
    client = None
    if client_id:
        client = find_client(client_id)
        if client is None:
            return _error_page("unknown client_id", "invalid_client")
    if claims is not None:
        audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        if client is not None and client.client_id not in audiences:
            return _error_page("client_id does not match the ID token's audience")
        if client is None and len(audiences) == 1 and isinstance(audiences[0], str):
            client = find_client(audiences[0])
    if post_logout_uri:
        if client is None:
            return _error_page("post_logout_redirect_uri needs client_id or id_token_hint")
        if post_logout_uri not in client.post_logout_redirect_uris:
            return _error_page("post_logout_redirect_uri is not registered for this client")

    login = current_login()
    # Without a hint that names the signed-in user, ask first: a third party must
    # not be able to sign users out with a bare link (RP-Initiated Logout §6).
    hint_matches = claims is not None and login is not None and claims.get("sub") == login.user.subject
    if login is not None and not hint_matches:
        form = LogoutForm()
        if request.method == "GET" or not form.validate_on_submit() or request.form.get("confirm") != "yes":
            hidden = {k: v for k, v in (("id_token_hint", hint), ("client_id", client_id),
                                         ("post_logout_redirect_uri", post_logout_uri), ("state", state)) if v}
            return render_template("logout_confirm.html", form=form, hidden=hidden, client=client)
    if login is not None:
        end_login()
        audit.info("logout", extra={"event": "logout", "sub": login.user.subject})
    else:
        session.clear()
    if post_logout_uri:
        extra = [("state", state)] if state is not None else []
        return redirect(add_params_to_uri(post_logout_uri, extra) if extra else post_logout_uri, code=303)
    return render_template("logged_out.html")


# -- wiring ------------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Register the pages and attach this app's own rate limiter to the login view."""
    app.register_blueprint(bp)
    app.session_interface = CookieSessionInterface()
    limiter = Limiter(key_func=get_remote_address, app=app, storage_uri=app.config["RATELIMIT_STORAGE_URI"],
                      headers_enabled=False)
    view = app.view_functions["login.login"]
    view = limiter.limit(app.config["LOGIN_RATE_LIMIT_PER_ACCOUNT"], key_func=_account_key, methods=["POST"],
                         deduct_when=_login_failed, scope="login-account")(view)
    view = limiter.limit(app.config["LOGIN_RATE_LIMIT_PER_ADDRESS"], key_func=get_remote_address,
                         methods=["POST"], deduct_when=_login_failed, scope="login-address")(view)
    app.view_functions["login.login"] = view
    app.extensions[_LIMITER] = limiter
    # Only the login view has limits, and its decorators check them.  Of the
    # hooks Flask-Limiter adds to every request, the check (for app-wide limits,
    # which we have none of) goes; the one that counts a failed login once the
    # response is known (deduct_when) and the one that clears its per-request
    # state move to this blueprint's requests.
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    _move_to_blueprint(app.after_request_funcs, getattr(Limiter, "_Limiter__inject_headers"))
    _move_to_blueprint(app.teardown_request_funcs, getattr(Limiter, "_Limiter__release_context"))


def _move_to_blueprint(hooks_by_scope: dict[str | None, list[Any]], method: Any) -> None:
    """Make the app-wide hook bound to ``method`` run on this blueprint's requests only."""
    hooks = hooks_by_scope[None]
    index = next((i for i, hook in enumerate(hooks)  # a functools.partial or a bound method
                  if method in (getattr(hook, "func", None), getattr(hook, "__func__", None))), None)
    if index is None:
        raise RuntimeError(f"Flask-Limiter registered no {method.__name__} hook: unsupported version")
    hooks_by_scope.setdefault(bp.name, []).append(hooks.pop(index))
