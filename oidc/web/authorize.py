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
from oidc.oauth2.parameters import ParameterError, request_parameters
from oidc.observability import audit
from oidc.state import current_state, now
from oidc.web.errors import error_page
from oidc.web.origin import same_origin
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


def _finish(authorization: AuthorizationRequest, login: AuthenticatedUser | None) -> Any:
    """Issue the code (or the access_denied error) to the client."""
    try:
        result = authorization.respond(login)
    except ErrorPage as page:  # its pushed request was used meanwhile
        db.session.rollback()
        return error_page(page.error, page.description)
    except ErrorRedirect as refusal:
        authorization.consume()
        return _response(refusal.response)
    db.session.commit()
    return _response(result)


def _refused(authorization: AuthorizationRequest, result: tuple[int, str, list[tuple[str, str]]]) -> Response:
    """An error response to the client: a pushed request it came from is used up by it too."""
    authorization.consume()
    return _response(result)


def _login_redirect(authorization: AuthorizationRequest, params: Any) -> WerkzeugResponse:
    """To the login page, then back to this same request (for a pushed one: its request_uri)."""
    target = urls.AUTHORIZE + "?" + urlencode(list(params.items(multi=True)))
    query = {"next": target}
    if authorization.params.get("login_hint"):  # the pushed one, for a pushed request
        query["login_hint"] = authorization.params["login_hint"]
    return redirect(urls.LOGIN + "?" + urlencode(query), code=302)


def _consent_page(authorization: AuthorizationRequest, login: AuthenticatedUser, params: Any) -> str:
    # The request's own parameters, as sent: for a pushed request its client_id and
    # request_uri, so the decision resumes that request (RFC 9126 §4) and uses it up.
    hidden = [(key, value) for key, value in params.items(multi=True) if key not in ("csrf_token", "decision")]
    scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in authorization.scope.split()]
    switch_next = urls.AUTHORIZE + "?" + urlencode(hidden)  # "Not you?": sign in again, same request
    return render_template("consent.html", form=ConsentForm(), client=authorization.client, scopes=scopes,
                           hidden=hidden, user=login.user, switch_next=switch_next)


def _needs_consent(authorization: AuthorizationRequest, login: AuthenticatedUser) -> bool:
    client: Client = authorization.client
    if "consent" in authorization.prompts:
        return True
    if "offline_access" in authorization.scope.split():
        # OIDC Core §11: the OP MUST always obtain consent to a refresh token for
        # offline access; neither a remembered consent nor a first-party client is that.
        return True
    return not (client.first_party or consents.has_consented(login.user.id, client, authorization.scope))


def _parameters() -> Any:
    """The request's parameters (body of a POST, query of a GET), or the error page."""
    try:
        return request_parameters(request)
    except ParameterError as exc:
        return error_page("invalid_request", str(exc))


@bp.route(urls.AUTHORIZE, methods=["GET", "POST"])
def authorize() -> Any:
    params = _parameters()
    if isinstance(params, tuple):
        return params
    authorization = _validate(params)
    if not isinstance(authorization, AuthorizationRequest):
        return authorization
    try:
        max_age = authorization.max_age()
        hinted_subject = authorization.id_token_hint_subject()
    except ErrorRedirect as refusal:
        return _refused(authorization, refusal.response)
    prompts = authorization.prompts

    login = current_login()
    fresh = request.method == "GET" and take_fresh_login(request.query_string)
    # OIDC Core §3.1.2.1: an id_token_hint naming someone else than the signed-in
    # user is login_required with prompt=none, and a new login otherwise.
    other_user = (login is not None and not fresh and hinted_subject is not None
                  and hinted_subject != login.user.subject)
    needs_login = login is None or other_user or (not fresh and (
        "login" in prompts or (max_age is not None and now() - login.auth_time > max_age)))
    if needs_login:
        if "none" in prompts:
            return _refused(authorization, authorization.error(LoginRequiredError))
        return _login_redirect(authorization, params)
    assert login is not None
    if _needs_consent(authorization, login):
        if "none" in prompts:
            return _refused(authorization, authorization.error(ConsentRequiredError))
        return _consent_page(authorization, login, params)
    return _finish(authorization, login)


@bp.post(urls.CONSENT)
def consent() -> Any:
    """The user's decision; the request is validated again from the posted parameters."""
    params = _parameters()
    if isinstance(params, tuple):
        return params
    form = ConsentForm()
    if not same_origin(request, current_state().settings) or not form.validate_on_submit():
        return error_page("invalid_request", "The consent form has expired. Please start again.")
    for name, values in params.lists():
        if len(values) > 1 and name != "resource":  # RFC 6749 §3.1; RFC 8707 repeats resource
            return error_page("invalid_request", f"The {name} parameter is repeated.")
    authorization = _validate(params)
    if not isinstance(authorization, AuthorizationRequest):
        return authorization
    login = current_login()
    if login is None:
        return error_page("login_required", "Your session has ended. Please start again.")
    client = authorization.client
    if params.get("decision") != "approve":
        audit.record("consent.denied", "consent denied", sub=login.user.subject, client_id=client.client_id)
        return _finish(authorization, None)
    scope = consents.normalized_scope(authorization.scope)
    consents.record_consent(login.user.id, client, scope)
    audit.record("consent.granted", "consent granted", sub=login.user.subject, client_id=client.client_id,
                 scope=scope)
    return _finish(authorization, login)
