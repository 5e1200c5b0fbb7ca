"""``/login``: the sign-in page, rate-limited against guessing.

Failed logins are limited per client address, per address and account, and
(loosely) per account, by :class:`oidc.accounts.throttle.LoginThrottle`: each
attempt is counted atomically *before* the password is checked and given back
once it succeeds, so parallel attempts cannot pass a check that has not yet
counted them.  A wrong username and a wrong password get the same message,
after the same amount of work (:func:`oidc.accounts.users.authenticate`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from oidc import urls
from oidc.accounts.throttle import LoginThrottle
from oidc.accounts.users import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, authenticate
from oidc.observability import audit, metrics
from oidc.settings import Settings
from oidc.state import current_state
from oidc.web.origin import same_origin
from oidc.web.session import mark_fresh_login, sign_in

bp = Blueprint("login", __name__)

GENERIC_LOGIN_ERROR = "Invalid username or password."
LOCKED_OUT_ERROR = "Too many failed attempts. Please wait a while and try again."
EXPIRED_FORM_ERROR = "The form has expired. Please try again."
#: Seconds a rate-limited browser is told to wait.
RETRY_AFTER_SECONDS = "60"
MAX_NEXT_LENGTH = 16384


def safe_next(value: str | None) -> str | None:
    """Only our own authorization endpoint is a valid place to go after login."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path != urls.AUTHORIZE or value.startswith("//") or "\\" in value:
        return None
    return value


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=MAX_USERNAME_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    next = HiddenField()


@bp.route(urls.LOGIN, methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
        hint = request.args.get("login_hint", "")
        if hint and len(hint) <= MAX_USERNAME_LENGTH:
            form.username.data = hint
        return render_template("login.html", form=form, error=None)

    if not same_origin(request, current_state().settings):
        return render_template("login.html", form=form, error=EXPIRED_FORM_ERROR), 400
    attempt = throttle(current_app).attempt(request.remote_addr or "", request.form.get("username", ""))
    if attempt is None:
        return too_many_attempts()
    if not form.validate_on_submit():
        expired = bool(form.csrf_token.errors)
        if expired:
            attempt.cancel()  # not a guess: the form had expired
        else:
            metrics.login_failed("invalid_credentials")
        return render_template("login.html", form=form,
                               error=EXPIRED_FORM_ERROR if expired else GENERIC_LOGIN_ERROR), 400 if expired else 401

    user = authenticate(form.username.data, form.password.data)
    if user is not None:
        attempt.cancel()  # only failures count
    if user is None:
        audit.record("login.failed", "login failed", remote_addr=request.remote_addr)
        metrics.login_failed("invalid_credentials")
        form.password.data = ""
        return render_template("login.html", form=form, error=GENERIC_LOGIN_ERROR), 401

    target = safe_next(form.next.data)
    sign_in(user)
    audit.record("login.succeeded", "login", sub=user.subject)
    if target is None:
        return render_template("signed_in.html", user=user)
    # Tell /authorize that a login was just made for this request (prompt=login, max_age).
    mark_fresh_login(urlsplit(target).query.encode("utf-8"))
    return redirect(target, code=303)


def too_many_attempts() -> Response:
    audit.record("login.rate_limited", "login refused: too many failed attempts", remote_addr=request.remote_addr)
    metrics.login_failed("rate_limited")
    form = LoginForm(formdata=None)
    form.next.data = safe_next(request.form.get("next")) or ""
    response = current_app.make_response((render_template("login.html", form=form, error=LOCKED_OUT_ERROR), 429))
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


_THROTTLE = "oidc.login_throttle"


def throttle(app: Flask) -> LoginThrottle:
    return app.extensions[_THROTTLE]


def init_app(app: Flask, settings: Settings) -> LoginThrottle:
    """Register the login page and this app's failed-login throttle."""
    app.register_blueprint(bp)
    app.extensions[_THROTTLE] = login_throttle = LoginThrottle(settings)
    return login_throttle
