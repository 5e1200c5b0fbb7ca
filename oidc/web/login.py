"""``/login``: the sign-in page, rate-limited against guessing.

Failed logins are limited per client address, per address and account, and
(loosely) per account, by :class:`oidc.accounts.throttle.LoginThrottle`: each
attempt is counted atomically *before* the password is checked and given back
once it succeeds, so parallel attempts cannot pass a check that has not yet
counted them.  A wrong username and a wrong password get the same message,
after the same amount of work (:func:`oidc.accounts.users.authenticate`).

Reached from ``/authorize``, the page carries the id of the interaction that
waits for the login (:mod:`oidc.oauth2.interactions`) and nothing else; the
login is recorded on it and the browser sent back to ``/authorize/resume``.
Reached from the device page (``device=1``), it names the application of the
device's request this browser entered the code of, and sends the browser back
to that page.  Visited directly, it signs the user in and says so.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, Response, current_app, make_response, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from oidc import urls
from oidc.accounts.throttle import LoginThrottle
from oidc.accounts.users import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, authenticate
from oidc.db import db
from oidc.models import User
from oidc.oauth2 import interactions
from oidc.oauth2.interactions import Pending
from oidc.observability import audit, metrics
from oidc.settings import Settings
from oidc.state import current_state
from oidc.web.authorize import load_interaction
from oidc.web.device import pending_request
from oidc.web.origin import EXPIRED_FORM, csrf_token_valid, same_origin
from oidc.web.session import sign_in

bp = Blueprint("login", __name__)

GENERIC_LOGIN_ERROR = "Invalid username or password."
LOCKED_OUT_ERROR = "Too many failed attempts. Please wait a while and try again."
#: Seconds a rate-limited browser is told to wait.
RETRY_AFTER_SECONDS = "60"


class LoginForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    username = StringField("Username", validators=[DataRequired(), Length(max=MAX_USERNAME_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    interaction = HiddenField()
    device = HiddenField()


def _page(form: LoginForm, interaction: Pending | None, error: str | None = None, status: int = 200, *,
          credentials_refused: bool = True) -> Response:
    """The sign-in page, naming the application the interaction is for (if any).

    ``credentials_refused``: the error is about what was typed (the fields are
    marked invalid and the page says why we do not say which); an expired form
    or a lock-out is not, and leaves the fields as they were.
    """
    client = interaction.authorization.client if interaction is not None else None
    if client is None and form.device.data == "1":
        pending = pending_request()
        client = pending.client if pending is not None else None
    return make_response(render_template("login.html", form=form, error=error, client=client,
                                         credentials_refused=bool(error) and credentials_refused), status)


@bp.route(urls.LOGIN, methods=["GET", "POST"])
def login() -> WerkzeugResponse:
    interaction_id = request.values.get("interaction")
    interaction = load_interaction(interaction_id) if interaction_id else None
    form = LoginForm()
    if request.method == "GET":
        form.interaction.data = interaction_id or ""
        form.device.data = "1" if interaction is None and request.args.get("device") == "1" else ""
        # OIDC Core §3.1.2.1: login_hint of the request, or of a link to this page.
        hint = (interaction.authorization.params.get("login_hint") if interaction is not None
                else request.args.get("login_hint")) or ""
        if hint and len(hint) <= MAX_USERNAME_LENGTH:
            form.username.data = hint
        return _page(form, interaction)

    if not same_origin(request, current_state().settings):
        return _page(form, interaction, EXPIRED_FORM, 400, credentials_refused=False)
    attempt = throttle(current_app).attempt(request.remote_addr or "", request.form.get("username", ""))
    if attempt is None:
        return too_many_attempts(interaction)
    if not form.validate_on_submit():
        if not csrf_token_valid(request, form):
            attempt.cancel()  # not a guess: the form had expired
            return _page(form, interaction, EXPIRED_FORM, 400, credentials_refused=False)
        metrics.login_failed("invalid_credentials")
        return _page(form, interaction, GENERIC_LOGIN_ERROR, 401)

    user = authenticate(form.username.data, form.password.data)
    if user is None:
        audit.record("login.failed", "login failed", remote_addr=request.remote_addr)
        metrics.login_failed("invalid_credentials")
        form.password.data = ""
        return _page(form, interaction, GENERIC_LOGIN_ERROR, 401)
    attempt.cancel()  # only failures count

    subject = user.subject  # (read before the commit expires the object)
    signed_in = sign_in(user)
    if interaction is not None:
        # The login made for this interaction: prompt=login and max_age are answered by it.
        interactions.record_login(interaction, signed_in)
    db.session.commit()  # the session row (and the interaction's login) in one transaction
    audit.record("login.succeeded", "login", sub=subject)
    return _signed_in(form, interaction, user)


def _signed_in(form: LoginForm, interaction: Pending | None, user: User) -> WerkzeugResponse:
    """Where a login goes: back to its interaction, to the device page it came from, or the signed-in page."""
    if interaction is not None:
        return redirect(url_for("authorize.resume", interaction=interaction.id), code=303)
    if form.device.data == "1":
        return redirect(url_for("device.confirm"), code=303)
    return make_response(render_template("signed_in.html", user=user))


def too_many_attempts(interaction: Pending | None) -> Response:
    audit.record("login.rate_limited", "login refused: too many failed attempts", remote_addr=request.remote_addr)
    metrics.login_failed("rate_limited")
    form = LoginForm(formdata=None)
    form.interaction.data = interaction.id if interaction is not None else ""
    form.device.data = request.form.get("device", "")
    response = _page(form, interaction, LOCKED_OUT_ERROR, 429, credentials_refused=False)
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


_THROTTLE = "oidc.login_throttle"


def throttle(app: Flask) -> LoginThrottle:
    return cast(LoginThrottle, app.extensions[_THROTTLE])


def init_app(app: Flask, settings: Settings) -> LoginThrottle:
    """Register the login page and this app's failed-login throttle."""
    app.register_blueprint(bp)
    app.extensions[_THROTTLE] = login_throttle = LoginThrottle(settings)
    return login_throttle
