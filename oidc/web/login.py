"""``/login``: the sign-in page, rate-limited against guessing.

Failed logins are limited per account and per client address (Flask-Limiter;
only failures count), and a wrong username and a wrong password get the same
message, after the same amount of work (:func:`oidc.accounts.users.authenticate`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from oidc import urls
from oidc.accounts.users import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, authenticate, normalize_username
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
    if not form.validate_on_submit():
        expired = bool(form.csrf_token.errors)
        if not expired:
            metrics.login_failed("invalid_credentials")
        return render_template("login.html", form=form,
                               error=EXPIRED_FORM_ERROR if expired else GENERIC_LOGIN_ERROR), 400 if expired else 401

    user = authenticate(form.username.data, form.password.data)
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


@bp.errorhandler(RateLimitExceeded)
def too_many_attempts(exc: RateLimitExceeded) -> Response:
    audit.record("login.rate_limited", "login refused: too many failed attempts", remote_addr=request.remote_addr)
    metrics.login_failed("rate_limited")
    form = LoginForm(formdata=None)
    form.next.data = safe_next(request.form.get("next")) or ""
    response = current_app.make_response((render_template("login.html", form=form, error=LOCKED_OUT_ERROR), 429))
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


# -- rate limits ---------------------------------------------------------------------------------


def _account_key() -> str:
    return "account:" + normalize_username(request.form.get("username", ""))[:MAX_USERNAME_LENGTH]


def _login_failed(response: Response) -> bool:
    return response.status_code == 401


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Register the login page with this app's own rate limiter on its view."""
    app.register_blueprint(bp)
    limiter = Limiter(key_func=get_remote_address, app=app, storage_uri=settings.ratelimit_storage_uri,
                      headers_enabled=False)
    view: Any = app.view_functions["login.login"]
    view = limiter.limit(settings.login_rate_limit_per_account, key_func=_account_key, methods=["POST"],
                         deduct_when=_login_failed, scope="login-account")(view)
    view = limiter.limit(settings.login_rate_limit_per_address, key_func=get_remote_address,
                         methods=["POST"], deduct_when=_login_failed, scope="login-address")(view)
    app.view_functions["login.login"] = view
    # Only the login view has limits, and its decorators check them.  Of the
    # hooks Flask-Limiter adds to every request, the check (for app-wide limits,
    # which we have none of) goes; the one that counts a failed login once the
    # response is known (deduct_when) and the one that clears its per-request
    # state move to this blueprint's requests.
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    _move_to_blueprint(app.after_request_funcs, getattr(Limiter, "_Limiter__inject_headers"))  # noqa: B009
    _move_to_blueprint(app.teardown_request_funcs, getattr(Limiter, "_Limiter__release_context"))  # noqa: B009
    return limiter


def _move_to_blueprint(hooks_by_scope: dict[str | None, list[Any]], method: Any) -> None:
    """Make the app-wide hook bound to ``method`` run on this blueprint's requests only."""
    hooks = hooks_by_scope[None]
    index = next((i for i, hook in enumerate(hooks)  # a functools.partial or a bound method
                  if method in (getattr(hook, "func", None), getattr(hook, "__func__", None))), None)
    if index is None:
        raise RuntimeError(f"Flask-Limiter registered no {method.__name__} hook: unsupported version")
    hooks_by_scope.setdefault(bp.name, []).append(hooks.pop(index))
