"""The device authorization grant's endpoint and pages (RFC 8628); the protocol is :mod:`oidc.oauth2.device`'s.

* ``POST /device_authorization``: the client authenticates as at ``/token``
  (the same prechecks and client authentication); JSON in, JSON out.
* ``/device``: the page where the user types the code the device shows (or
  finds it filled in from ``verification_uri_complete``, still to be
  confirmed by a press, RFC 8628 §5.4).  Wrong codes are counted per client
  address (:class:`~oidc.accounts.throttle.UserCodeThrottle`) and answered
  with the page and a message, never an error response.
* ``/device/confirm``: the request a browser entered the code of, kept in its
  signed session cookie (its row id and the code), goes through the code
  flow's steps (:func:`~oidc.oauth2.steps.next_step`): sign in if needed
  (the login page comes back here), then approve or deny on a page naming the
  application and the code.  A device's request is always confirmed on the
  page, even for a first-party client or a remembered consent: the user must
  see that the code is the one on their device (§5.4, remote phishing).
"""

from __future__ import annotations

from typing import assert_never, cast

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import StringField

from oidc import urls
from oidc.accounts.throttle import UserCodeThrottle
from oidc.db import db
from oidc.oauth2 import consents, device
from oidc.oauth2.device import DeviceRequest
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.server import IssuerRequest, authorization_server
from oidc.oauth2.steps import Consent, Login, Refuse, Respond, SelectAccount, next_step
from oidc.oauth2.token_request import precheck
from oidc.observability import audit
from oidc.settings import Settings
from oidc.state import current_state, now
from oidc.web.authorize import SCOPE_DESCRIPTIONS, SESSION_ENDED
from oidc.web.errors import no_store
from oidc.web.origin import EXPIRED_FORM, csrf_token_valid, form_posted_from_our_page, same_origin
from oidc.web.session import DEVICE_REQUEST, current_login

bp = Blueprint("device", __name__)

#: The session cookie's keys: the request this browser entered the code of, and the login its page was shown to.
_PENDING = DEVICE_REQUEST
_SHOWN_TO = "device_shown_to"
TOO_MANY_CODES = "Too many wrong codes. Please wait a while and try again."
#: Seconds a rate-limited browser is told to wait.
RETRY_AFTER_SECONDS = "60"


class UserCodeForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    user_code = StringField("Code")


class DeviceConsentForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    pass


@bp.post(urls.DEVICE_AUTHORIZATION)
def device_authorization() -> Response:
    """RFC 8628 §3.1, §3.2: a new device code and user code for an authenticated client."""
    server = authorization_server()
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    try:
        problem = precheck(flask_request)
        if problem is not None:
            raise problem
        oauth_request = IssuerRequest(flask_request, current_state())
        oauth_request.dpop = None  # (a device code is not bound to a DPoP key)
        client = device.authenticate(server, oauth_request)
        body = device.start(client, request.form)
    except OAuth2Error as error:
        db.session.rollback()
        return server.handle_error_response(None, error)
    db.session.commit()
    audit.record("device.authorization", "device authorization started", client_id=client.client_id)
    return no_store(jsonify(body))


# -- the pages -----------------------------------------------------------------------------------


def pending_request() -> DeviceRequest | None:
    """The request this browser entered the code of, while it can still be decided."""
    pending = session.get(_PENDING)
    if not isinstance(pending, dict):
        return None
    return device.pending_by_id(pending.get("id"), pending.get("code"))


def _code_page(form: UserCodeForm, error: str | None = None, status: int = 200) -> Response:
    return make_response(render_template("device.html", form=form, error=error), status)


@bp.route(urls.DEVICE, methods=["GET", "POST"])
def enter_code() -> WerkzeugResponse:
    """The page where the user types the code shown on the device."""
    form = UserCodeForm()
    if request.method == "GET":
        given = request.args.get("user_code")
        code = device.normalize_user_code(given)
        form.user_code.data = device.format_user_code(code) if code is not None else ""
        return _code_page(form)
    if not same_origin(request, current_state().settings):
        return _code_page(form, EXPIRED_FORM, 400)
    attempt = throttle(current_app).attempt(request.remote_addr or "")
    if attempt is None:
        audit.record("device.rate_limited", "user code refused: too many wrong codes", remote_addr=request.remote_addr)
        response = _code_page(form, TOO_MANY_CODES, 429)
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    form.validate_on_submit()
    if not csrf_token_valid(request, form):
        attempt.cancel()  # not a guess: the form had expired
        return _code_page(form, EXPIRED_FORM, 400)
    found = device.find_pending(form.user_code.data)
    if found is None:
        audit.record("device.user_code_refused", "unknown user code", remote_addr=request.remote_addr)
        return _code_page(form, device.UNKNOWN_USER_CODE, 400)
    attempt.cancel()  # only wrong codes count
    session[_PENDING] = {"id": found.row_id, "code": found.user_code}
    session.pop(_SHOWN_TO, None)
    return redirect(url_for("device.confirm"), code=303)


def _pending_or_error() -> DeviceRequest:
    found = pending_request()
    if found is None:
        session.pop(_PENDING, None)
        raise ErrorPage("invalid_request", device.UNUSABLE)
    return found


@bp.get(urls.DEVICE_CONFIRM)
def confirm() -> WerkzeugResponse:
    """Sign in if needed, then the page to approve or deny the device's request."""
    found = _pending_or_error()
    step = next_step(found, current_login(), now(), remembered=lambda *_: False)
    match step:
        case Login():
            return redirect(url_for("login.login", device="1"), code=302)
        case SelectAccount(login) | Consent(login) | Respond(login):
            session[_SHOWN_TO] = login.sid
            scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in found.scope.split()]
            return make_response(render_template("device_confirm.html", form=DeviceConsentForm(), client=found.client,
                                                 scopes=scopes, user=login.user, user_code=found.user_code))
        case Refuse(error):  # (a device's request has no prompt, max_age or hint to refuse)
            raise ErrorPage("invalid_request", error.get_error_description() or device.UNUSABLE)
        case _:
            assert_never(step)


@bp.post(urls.DEVICE_CONFIRM)
def decide() -> WerkzeugResponse:
    """The user's answer on the page :func:`confirm` showed."""
    if not form_posted_from_our_page(request, DeviceConsentForm(), current_state().settings):
        raise ErrorPage("invalid_request", EXPIRED_FORM)
    found = _pending_or_error()
    login = current_login()
    if login is None or login.sid is None or session.get(_SHOWN_TO) != login.sid:
        raise ErrorPage("login_required", SESSION_ENDED)
    client = found.client
    approved = request.form.get("decision") == "approve"
    if not (device.approve(found, login) if approved else device.deny(found)):
        db.session.rollback()
        raise ErrorPage("invalid_request", device.UNUSABLE)
    if approved:
        consents.record_consent(login.user.id, client, consents.normalized_scope(found.scope))
    db.session.commit()
    session.pop(_PENDING, None)
    session.pop(_SHOWN_TO, None)
    audit.record("device.approved" if approved else "device.denied",
                 "device approved" if approved else "device denied", sub=login.user.subject,
                 client_id=client.client_id)
    return make_response(render_template("device_done.html", approved=approved, client=client))


_THROTTLE = "oidc.user_code_throttle"


def throttle(app: Flask) -> UserCodeThrottle:
    return cast(UserCodeThrottle, app.extensions[_THROTTLE])


def init_app(app: Flask, settings: Settings) -> None:
    """Register the endpoint and pages, and this app's user-code throttle."""
    app.register_blueprint(bp)
    app.extensions[_THROTTLE] = UserCodeThrottle(settings)
