"""``/authorize`` (OIDC Core §3.1.2) and the consent page.

The protocol checks are :mod:`oidc.oauth2.authorization`'s; this view asks the
user what the request needs: a login (``prompt=login``, ``max_age``, no
session), then consent (remembered per user, client and scope set; first-party
clients skip it).  ``prompt=none`` turns either into an error to the client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Blueprint, Response, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as WerkzeugResponse

from oidc import urls
from oidc.accounts import consents
from oidc.accounts.sessions import AuthenticatedUser
from oidc.db import db
from oidc.models import Client
from oidc.oauth2.authorization import AuthorizationRequest, ErrorRedirect, validate_authorization_request
from oidc.oauth2.errors import ErrorPage
from oidc.observability import audit
from oidc.state import now
from oidc.web.errors import error_page
from oidc.web.session import current_login, take_fresh_login

bp = Blueprint("authorize", __name__)

#: How the consent page words each scope (English message ids; the template translates them).
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in and know who you are",
    "profile": "See your name and username",
    "email": "See your email address",
    "offline_access": "Keep access when you are not using the app",
}


class ConsentForm(FlaskForm):
    pass


def _response(result: tuple[int, str, list[tuple[str, str]]]) -> Response:
    status, body, headers = result
    return Response(body, status=status, headers=headers)


def _validate(params: Any) -> AuthorizationRequest | Any:
    """The validated request, or the response that refuses it."""
    try:
        return validate_authorization_request(params, current_login())
    except ErrorPage as page:
        return error_page(page.error, page.description)
    except ErrorRedirect as refusal:
        return _response(refusal.response)


def _finish(authorization: AuthorizationRequest, login: AuthenticatedUser | None) -> Response:
    """Issue the code (or the access_denied error) to the client."""
    try:
        result = authorization.respond(login)
    except ErrorRedirect as refusal:
        db.session.rollback()
        return _response(refusal.response)
    db.session.commit()
    return _response(result)


def _login_redirect() -> WerkzeugResponse:
    params = request.values
    target = urls.AUTHORIZE + "?" + urlencode(list(params.items(multi=True)))
    query = {"next": target}
    if params.get("login_hint"):
        query["login_hint"] = params["login_hint"]
    return redirect(urls.LOGIN + "?" + urlencode(query), code=302)


def _consent_page(authorization: AuthorizationRequest, login: AuthenticatedUser) -> str:
    hidden = [(key, value) for key, value in request.values.items(multi=True) if key not in ("csrf_token", "decision")]
    scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in authorization.scope.split()]
    switch_next = urls.AUTHORIZE + "?" + urlencode(hidden)  # "Not you?": sign in again, same request
    return render_template("consent.html", form=ConsentForm(), client=authorization.client, scopes=scopes,
                           hidden=hidden, user=login.user, switch_next=switch_next)


def _needs_consent(authorization: AuthorizationRequest, login: AuthenticatedUser) -> bool:
    client: Client = authorization.client
    if "consent" in authorization.prompts:
        return True
    return not (client.first_party or consents.has_consented(login.user.id, client, authorization.scope))


@bp.route(urls.AUTHORIZE, methods=["GET", "POST"])
def authorize() -> Any:
    authorization = _validate(request.values)
    if not isinstance(authorization, AuthorizationRequest):
        return authorization
    try:
        max_age = authorization.max_age()
    except ErrorRedirect as refusal:
        return _response(refusal.response)
    prompts = authorization.prompts

    login = current_login()
    fresh = request.method == "GET" and take_fresh_login(request.query_string)
    needs_login = login is None or (not fresh and (
        "login" in prompts or (max_age is not None and now() - login.auth_time > max_age)))
    if needs_login:
        if "none" in prompts:
            return _response(authorization.error(LoginRequiredError))
        return _login_redirect()
    assert login is not None
    if _needs_consent(authorization, login):
        if "none" in prompts:
            return _response(authorization.error(ConsentRequiredError))
        return _consent_page(authorization, login)
    return _finish(authorization, login)


@bp.post(urls.CONSENT)
def consent() -> Any:
    """The user's decision; the request is validated again from the posted parameters."""
    form = ConsentForm()
    if not form.validate_on_submit():
        return error_page("invalid_request", "The consent form has expired. Please start again.")
    authorization = _validate(request.form)
    if not isinstance(authorization, AuthorizationRequest):
        return authorization
    login = current_login()
    if login is None:
        return error_page("login_required", "Your session has ended. Please start again.")
    client = authorization.client
    if request.form.get("decision") != "approve":
        audit.record("consent.denied", "consent denied", sub=login.user.subject, client_id=client.client_id)
        return _finish(authorization, None)
    scope = consents.normalized_scope(authorization.scope)
    consents.record_consent(login.user.id, client, scope)
    audit.record("consent.granted", "consent granted", sub=login.user.subject, client_id=client.client_id,
                 scope=scope)
    return _finish(authorization, login)
