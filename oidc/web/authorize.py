"""``/authorize`` (OIDC Core §3.1.2), its resumption after login, and the consent page.

The protocol checks are :mod:`oidc.oauth2.authorization`'s, made once, when the
request arrives; this view asks the user what the request needs: a login
(``prompt=login``, ``max_age``, no session), or the choice of the account
signed in (``prompt=select_account``), then consent (remembered per user,
client and scope set; first-party clients skip it).  ``prompt=none`` turns
a login or consent into an error to the client (and is never combined with
``select_account``: validation refuses it, so ``account_selection_required``
never arises with a single session per browser).  While the user logs in or consents, the
validated request waits on the server as an interaction
(:mod:`oidc.oauth2.interactions`): the login page and the consent form carry
only its id, the login page sends the browser back to ``/authorize/resume``,
and the consent form answers it.
"""

from __future__ import annotations

from typing import Any

from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as WerkzeugResponse

from oidc import urls
from oidc.accounts import consents
from oidc.db import db
from oidc.models import Client
from oidc.oauth2 import interactions
from oidc.oauth2.authorization import AuthorizationRequest, ErrorRedirect, validate_authorization_request
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.interactions import Pending
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.parameters import ParameterError, request_parameters
from oidc.observability import audit
from oidc.state import current_state, now
from oidc.web.errors import error_page
from oidc.web.origin import EXPIRED_FORM, form_posted_from_our_page
from oidc.web.pages import continue_request
from oidc.web.session import current_login, interaction_binding, presented_binding

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


class AccountChoiceForm(FlaskForm):
    pass


#: The account choice answered without its form (the words of the login page's expired form).


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


def load_interaction(interaction_id: object) -> Pending | Any:
    """This browser's interaction ``interaction_id``, or the error page (nothing written)."""
    try:
        interaction = interactions.load(interaction_id, presented_binding())
    except ErrorPage as page:
        return error_page(page.error, page.description)
    continue_request(interaction.authorization.params)
    return interaction


def _finish(authorization: AuthorizationRequest, login: AuthenticatedUser | None,
            interaction: Pending | None) -> Any:
    """Issue the code (or the access_denied error) to the client; the interaction is used up by it."""
    try:
        if interaction is not None:
            interactions.claim(interaction)
        result = authorization.respond(login)
    except ErrorPage as page:  # the interaction or its pushed request was used meanwhile
        db.session.rollback()
        return error_page(page.error, page.description)
    except ErrorRedirect as refusal:
        return _refused(authorization, refusal.response, interaction)
    db.session.commit()
    return _response(result)


def _refused(authorization: AuthorizationRequest, result: tuple[int, str, list[tuple[str, str]]],
             interaction: Pending | None = None) -> Any:
    """An error response to the client: the interaction and the pushed request it came from are used up by it too."""
    if interaction is not None and not interactions.use_up(interaction):
        return error_page("invalid_request", interactions.UNUSABLE)  # another request answered the client
    authorization.consume()
    return _response(result)


def _interaction(authorization: AuthorizationRequest, interaction: Pending | None,
                 login: AuthenticatedUser | None = None) -> Pending:
    """The interaction of this request: the one it was resumed from, or a new one for this browser
    (committed), for ``login`` when given (the consent page's)."""
    if interaction is None:
        interaction = interactions.start(authorization, interaction_binding(), login)
    elif login is not None and not interaction.is_for(login):
        interactions.record_login(interaction, login)
    db.session.commit()
    return interaction


def _login_redirect(authorization: AuthorizationRequest, interaction: Pending | None) -> WerkzeugResponse:
    """To the login page with the interaction's id only; the login sends the browser back to it."""
    interaction = _interaction(authorization, interaction)
    return redirect(url_for("login.login", interaction=interaction.id), code=302)


def _consent_page(authorization: AuthorizationRequest, login: AuthenticatedUser, interaction: Pending | None) -> str:
    """The consent page: its form carries the interaction's id and the CSRF token, nothing of the request."""
    interaction = _interaction(authorization, interaction, login)
    scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in authorization.scope.split()]
    return render_template("consent.html", form=ConsentForm(), client=authorization.client, scopes=scopes,
                           user=login.user, interaction=interaction.id)


def _account_choice_page(authorization: AuthorizationRequest, login: AuthenticatedUser,
                         interaction: Pending | None) -> str:
    """The account choice (``prompt=select_account``): continue as the signed-in user, or switch.

    The page is shown to ``login`` (recorded on the interaction, as the consent
    page's is): "Continue" posts the interaction's id (:func:`select_account`)
    and only that login may answer it; "Not you? Switch account" is the login
    page of the same interaction.
    """
    interaction = _interaction(authorization, interaction, login)
    return render_template("select_account.html", form=AccountChoiceForm(), client=authorization.client,
                           user=login.user, interaction=interaction.id)


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
    """A new authorization request: validated here, once."""
    params = _parameters()
    if isinstance(params, tuple):
        return params
    authorization = _validate(params)
    if not isinstance(authorization, AuthorizationRequest):
        return authorization
    return _proceed(authorization, None)


@bp.get(urls.AUTHORIZE_RESUME)
def resume() -> Any:
    """Back from the login page: the request its interaction holds, not validated again."""
    interaction = load_interaction(request.args.get("interaction"))
    if not isinstance(interaction, Pending):
        return interaction
    return _proceed(interaction.authorization, interaction)


def _proceed(authorization: AuthorizationRequest, interaction: Pending | None) -> Any:
    """Ask for what the request still needs (a login, then consent), or answer the client."""
    continue_request(authorization.params)  # a pushed request's ui_locales are not in the URL
    try:
        max_age = authorization.max_age()
        hinted_subject = authorization.id_token_hint_subject()
    except ErrorRedirect as refusal:
        return _refused(authorization, refusal.response, interaction)
    prompts = authorization.prompts

    login = current_login()
    # A login made for this interaction (or already shown its consent page) is what
    # prompt=login and max_age asked for: asking again would never end.
    fresh = interaction is not None and interaction.is_for(login)
    # OIDC Core §3.1.2.1: an id_token_hint naming someone else than the signed-in
    # user is login_required with prompt=none, and a new login otherwise.
    other_user = (login is not None and not fresh and hinted_subject is not None
                  and hinted_subject != login.user.subject)
    needs_login = login is None or other_user or (not fresh and (
        "login" in prompts or (max_age is not None and now() - login.auth_time > max_age)))
    if needs_login:
        if "none" in prompts:  # OIDC Core §3.1.2.1: no interaction with the user at all
            return _refused(authorization, authorization.error(LoginRequiredError), interaction)
        return _login_redirect(authorization, interaction)
    assert login is not None
    # OIDC Core §3.1.2.1 select_account: the user chooses the account even when signed in;
    # a login made for this interaction, or the choice made on its page, is that choice.
    if "select_account" in prompts and not fresh:
        return _account_choice_page(authorization, login, interaction)
    if _needs_consent(authorization, login):
        if "none" in prompts:
            return _refused(authorization, authorization.error(ConsentRequiredError), interaction)
        return _consent_page(authorization, login, interaction)
    return _finish(authorization, login, interaction)


@bp.post(urls.SELECT_ACCOUNT)
def select_account() -> Any:
    """"Continue" on the account choice page: the request goes on with the account it showed."""
    form = AccountChoiceForm()
    if not form_posted_from_our_page(request, form, current_state().settings):
        return error_page("invalid_request", EXPIRED_FORM)
    interaction = load_interaction(request.form.get("interaction"))
    if not isinstance(interaction, Pending):
        return interaction
    if not interaction.is_for(current_login()):  # signed out, or signed in again, since the page was shown
        return error_page("login_required", "Your session has ended. Please start again.")
    return _proceed(interaction.authorization, interaction)


@bp.post(urls.CONSENT)
def consent() -> Any:
    """The user's decision on the interaction the consent page was shown for."""
    form = ConsentForm()
    if not form_posted_from_our_page(request, form, current_state().settings):
        return error_page("invalid_request", "The consent form has expired. Please start again.")
    interaction = load_interaction(request.form.get("interaction"))
    if not isinstance(interaction, Pending):
        return interaction
    login = current_login()
    if not interaction.is_for(login):  # signed out, or signed in again, since the page was shown
        return error_page("login_required", "Your session has ended. Please start again.")
    assert login is not None
    authorization = interaction.authorization
    client = authorization.client
    if request.form.get("decision") != "approve":
        audit.record("consent.denied", "consent denied", sub=login.user.subject, client_id=client.client_id)
        return _finish(authorization, None, interaction)
    scope = consents.normalized_scope(authorization.scope)
    consents.record_consent(login.user.id, client, scope)
    audit.record("consent.granted", "consent granted", sub=login.user.subject, client_id=client.client_id,
                 scope=scope)
    return _finish(authorization, login, interaction)
