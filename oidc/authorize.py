"""The authorization endpoint (OIDC Core §3.1.2) and the consent page.

Order of checks, and why:

1. ``client_id`` and ``redirect_uri`` first.  Until both are known good (the
   client exists, the URI is registered for it, compared as exact strings),
   every error is shown on an error page (HTTP 400) and never redirected: an
   open redirector would otherwise hand codes or errors to anyone.
2. Then Authlib's grant validates the rest (response type, scope, PKCE,
   nonce, prompt); its errors go back to the client's redirect URI, with
   ``state`` echoed byte for byte, in the requested response mode.
3. Then login (``prompt=login``, ``max_age``, no session), then consent
   (remembered per user, client and scope set; first-party clients skip it).
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Blueprint, Response, redirect, render_template, request, session
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError

from oidc.login import current_login, request_fingerprint
from oidc.models import Client, Consent, db
from oidc.oauth2.server import authorization_server

bp = Blueprint("authorize", __name__)
audit = logging.getLogger("oidc.audit")

#: Longest value of any single authorization request parameter, and of the whole request.
MAX_PARAMETER_LENGTH = 4096
MAX_REQUEST_LENGTH = 16384
#: Parameters that must not be repeated (RFC 6749 §3.1, OIDC Core §3.1.2.1).
SINGLE_VALUED = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
                 "prompt", "max_age", "login_hint", "code_challenge", "code_challenge_method")

SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in and know who you are",
    "profile": "Your name and username",
    "email": "Your email address",
    "offline_access": "Keep access while you are away (refresh tokens)",
}


class ConsentForm(FlaskForm):
    pass


def error_page(error: str, description: str) -> tuple[str, int]:
    return render_template("error.html", error=error, description=description), 400


def authorization_response(redirect_uri: str, params: list[tuple[str, str]], response_mode: str | None) -> Any:
    """``params`` delivered to the client in its response mode (query or form_post)."""
    if response_mode == "form_post":
        fields = "".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in params
        )
        body = (
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Continue</title></head>"
            "<body onload=\"document.forms[0].submit()\">"
            f'<form method="post" action="{html.escape(redirect_uri)}">{fields}'
            "<noscript><button type=\"submit\">Continue</button></noscript></form></body></html>"
        )
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                   ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-hashes' "
                    "'sha256-ePniVEkSivX/c7XWBGafqh8tSpiRrKiqYeqbG7N1TOE='; form-action *; frame-ancestors 'none'")]
        return 200, body, headers
    return 302, "", [("Location", add_params_to_uri(redirect_uri, params)), ("Cache-Control", "no-store")]


def _error_redirect(error: OAuth2Error, response_mode: str | None) -> Response:
    status, body, headers = authorization_response(error.redirect_uri, error.get_body(), response_mode)
    return Response(body, status=status, headers=headers)


def _check_client_and_redirect_uri(params: Any) -> tuple[Client | None, Any]:
    """The client, or an error page: the checks that must never lead to a redirect."""
    total = sum(len(key) + len(value) for key, values in params.lists() for value in values)
    if total > MAX_REQUEST_LENGTH or any(len(v) > MAX_PARAMETER_LENGTH for vs in params.listvalues() for v in vs):
        return None, error_page("invalid_request", "The request or one of its parameters is too long.")
    for name in ("client_id", "redirect_uri"):
        if len(params.getlist(name)) > 1:
            return None, error_page("invalid_request", f"The {name} parameter is repeated.")
    client_id = params.get("client_id")
    if not client_id:
        return None, error_page("invalid_request", "The client_id parameter is missing.")
    client = authorization_server().query_client(client_id)
    if client is None:
        return None, error_page("invalid_client", "The client is not known to this provider.")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        if client.get_default_redirect_uri() is None:
            return None, error_page("invalid_request", "The redirect_uri parameter is missing.")
    elif not client.check_redirect_uri(redirect_uri):
        return None, error_page("invalid_request", "The redirect_uri is not registered for this client.")
    return client, None


def _validated_grant(params: Any) -> tuple[Any, Any]:
    """Authlib's grant for this request, or the response for an invalid one."""
    client, problem = _check_client_and_redirect_uri(params)
    if problem is not None:
        return None, problem
    response_mode = params.get("response_mode")
    server = authorization_server()
    try:
        for name in SINGLE_VALUED:
            if len(params.getlist(name)) > 1:
                raise _redirectable(OAuth2Error(error="invalid_request",
                                                description=f"The {name} parameter is repeated."))
        grant = server.get_consent_grant(end_user=current_login())
    except OAuth2Error as error:
        if getattr(error, "redirect_uri", None) is None:
            return None, error_page(error.error or "invalid_request", error.get_error_description() or "")
        error.state = params.get("state")
        return None, _error_redirect(error, response_mode if response_mode in ("query", "form_post") else None)
    return grant, None


def _redirectable(error: OAuth2Error) -> OAuth2Error:
    params = request.values
    error.redirect_uri = params.get("redirect_uri") or authorization_server().query_client(
        params.get("client_id")).get_default_redirect_uri()
    return error


def _finish(grant: Any, login: Any) -> Response:
    """Issue the code (or the access_denied error) to the client."""
    response_mode = request.values.get("response_mode")
    try:
        status, body, headers = grant.create_authorization_response(grant.redirect_uri, login)
    except OAuth2Error as error:
        db.session.rollback()
        error.redirect_uri = error.redirect_uri or grant.redirect_uri
        error.state = request.values.get("state")
        return _error_redirect(error, response_mode)
    db.session.commit()
    return Response(body, status=status, headers=headers)


def _fail(grant: Any, error_class: type[OAuth2Error]) -> Response:
    error = error_class(redirect_uri=grant.redirect_uri)
    error.state = request.values.get("state")
    return _error_redirect(error, request.values.get("response_mode"))


def _login_redirect() -> Response:
    params = request.values
    target = "/authorize?" + urlencode(list(params.items(multi=True)))
    query = {"next": target}
    if params.get("login_hint"):
        query["login_hint"] = params["login_hint"]
    return redirect("/login?" + urlencode(query), code=302)


def _consented(user_pk: int, client: Client, scope: str) -> bool:
    wanted = set(scope.split())
    return any(wanted <= set(row.scope.split()) for row in Consent.query.filter_by(user_pk=user_pk,
                                                                                  client_pk=client.id))


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    params = request.values
    grant, problem = _validated_grant(params)
    if problem is not None:
        return problem
    client: Client = grant.request.client
    prompts = set((params.get("prompt") or "").split())
    max_age = params.get("max_age")
    if max_age is not None:
        if not max_age.isdigit() or len(max_age) > 10:
            error = OAuth2Error(error="invalid_request", description="max_age must be a non-negative integer.",
                                redirect_uri=grant.redirect_uri)
            error.state = params.get("state")
            return _error_redirect(error, params.get("response_mode"))

    login = current_login()
    fresh = request.method == "GET" and session.get("fresh_login") == request_fingerprint(request.query_string)
    if fresh:
        session.pop("fresh_login", None)
    needs_login = login is None or (not fresh and (
        "login" in prompts or (max_age is not None and grant.request.payload.data.get("max_age") is not None
                               and _now() - login.auth_time > int(max_age))))
    if needs_login:
        if "none" in prompts:
            return _fail(grant, LoginRequiredError)
        return _login_redirect()

    scope = grant.request.scope or ""
    needs_consent = "consent" in prompts or not (client.first_party or _consented(login.user.id, client, scope))
    if needs_consent:
        if "none" in prompts:
            return _fail(grant, ConsentRequiredError)
        return _consent_page(client, scope, login)
    return _finish(grant, login)


def _now() -> int:
    from oidc.models import now

    return now()


def _consent_page(client: Client, scope: str, login: Any) -> Any:
    hidden = [(key, value) for key, value in request.values.items(multi=True) if key not in ("csrf_token", "decision")]
    scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in scope.split()]
    return render_template("consent.html", form=ConsentForm(), client=client, scopes=scopes, hidden=hidden,
                           user=login.user)


@bp.post("/authorize/consent")
def consent() -> Any:
    """The user's decision; the request is validated again from the posted parameters."""
    form = ConsentForm()
    if not form.validate_on_submit():
        return error_page("invalid_request", "The consent form has expired. Please start again.")
    grant, problem = _validated_grant(request.form)
    if problem is not None:
        return problem
    login = current_login()
    if login is None:
        return error_page("login_required", "Your session has ended. Please start again.")
    client = grant.request.client
    if request.form.get("decision") != "approve":
        audit.info("consent denied", extra={"event": "consent.denied", "sub": login.user.subject,
                                             "client_id": client.client_id})
        return _finish(grant, None)
    scope = " ".join(sorted(set((grant.request.scope or "").split())))
    if not _consented(login.user.id, client, scope):
        # Committed on its own: the same form submitted twice at once (a double
        # click) records one consent, and the second submission still gets its code.
        db.session.add(Consent(user_pk=login.user.id, client_pk=client.id, scope=scope))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
    audit.info("consent granted", extra={"event": "consent.granted", "sub": login.user.subject,
                                          "client_id": client.client_id, "scope": scope})
    return _finish(grant, login)
