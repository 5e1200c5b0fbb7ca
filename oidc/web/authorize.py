"""``/authorize`` (OIDC Core §3.1.2), its resumption after login, and the consent page.

The protocol checks are :mod:`oidc.oauth2.authorization`'s, made once, when the
request arrives, and what the request needs next is
:func:`oidc.oauth2.steps.next_step`'s to decide: a login (``prompt=login``,
``max_age``, no session), the choice of the account signed in
(``prompt=select_account``), consent (remembered per user, client and scope
set; first-party clients skip it), the response, or an error to the client
(``prompt=none``, which validation never lets be combined with
``select_account``, so ``account_selection_required`` never arises with a
single session per browser).  These views only show the page or send the
response each step names; refusals raised by the core
(:class:`~oidc.oauth2.errors.ErrorPage`,
:class:`~oidc.oauth2.authorization.ErrorRedirect`) are turned into responses
by :mod:`oidc.web.errors`.  While the user logs in or consents, the
validated request waits on the server as an interaction
(:mod:`oidc.oauth2.interactions`): the login page and the consent form carry
only its id, the login page sends the browser back to ``/authorize/resume``,
and the consent form answers it.
"""

from __future__ import annotations

from typing import Any, assert_never

from flask import Blueprint, make_response, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from oidc import queries, urls
from oidc.db import db
from oidc.oauth2 import consents, interactions
from oidc.oauth2.authorization import AuthorizationRequest, ErrorRedirect, validate_authorization_request
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.interactions import Pending
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.parameters import ParameterError, request_parameters
from oidc.oauth2.steps import Consent, Login, Refuse, Respond, SelectAccount, next_step
from oidc.observability import audit
from oidc.state import current_state, now
from oidc.web.errors import core_response
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
#: What the consent and account choice forms say to a login other than the one they were shown to.
SESSION_ENDED = "Your session has ended. Please start again."


class ConsentForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    pass


class AccountChoiceForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    pass


def load_interaction(interaction_id: object) -> Pending:
    """This browser's interaction ``interaction_id``; :class:`ErrorPage` when it has none such (nothing written)."""
    interaction = interactions.load(interaction_id, presented_binding())
    continue_request(interaction.authorization.params)
    return interaction


def _finish(authorization: AuthorizationRequest, login: AuthenticatedUser | None,
            interaction: Pending | None) -> Response:
    """Issue the code (or the access_denied error) to the client; the interaction is used up by it.

    :class:`ErrorPage` (rolled back) when the interaction or its pushed request was used meanwhile.
    """
    try:
        if interaction is not None:
            interactions.claim(interaction)
        result = authorization.respond(login)
    except ErrorRedirect as refusal:
        return _refused(authorization, refusal.response, interaction)
    queries.commit_request()  # the code, with the claims made through the Session if any
    return core_response(result)


def _refused(authorization: AuthorizationRequest, result: tuple[int, str, list[tuple[str, str]]],
             interaction: Pending | None = None) -> Response:
    """An error response to the client: the interaction and the pushed request it came from are used up by it too."""
    if interaction is not None and not interactions.use_up(interaction):
        raise ErrorPage("invalid_request", interactions.UNUSABLE)  # another request answered the client
    authorization.consume()
    return core_response(result)


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


def _login_redirect(authorization: AuthorizationRequest, interaction: Pending | None) -> Response:
    """To the login page with the interaction's id only; the login sends the browser back to it."""
    interaction = _interaction(authorization, interaction)
    return redirect(url_for("login.login", interaction=interaction.id), code=302)


def _consent_page(authorization: AuthorizationRequest, login: AuthenticatedUser,
                  interaction: Pending | None) -> Response:
    """The consent page: its form carries the interaction's id and the CSRF token, nothing of the request."""
    interaction = _interaction(authorization, interaction, login)
    scopes = [(name, SCOPE_DESCRIPTIONS.get(name, name)) for name in authorization.scope.split()]
    return make_response(render_template("consent.html", form=ConsentForm(), client=authorization.client,
                                         scopes=scopes, user=login.user, interaction=interaction.id))


def _account_choice_page(authorization: AuthorizationRequest, login: AuthenticatedUser,
                         interaction: Pending | None) -> Response:
    """The account choice (``prompt=select_account``): continue as the signed-in user, or switch.

    The page is shown to ``login`` (recorded on the interaction, as the consent
    page's is): "Continue" posts the interaction's id (:func:`select_account`)
    and only that login may answer it; "Not you? Switch account" is the login
    page of the same interaction.
    """
    interaction = _interaction(authorization, interaction, login)
    return make_response(render_template("select_account.html", form=AccountChoiceForm(),
                                         client=authorization.client, user=login.user, interaction=interaction.id))


def _parameters() -> Any:
    """The request's parameters (body of a POST, query of a GET); :class:`ErrorPage` when unreadable."""
    try:
        # The request itself, not its context-local proxy: each attribute read through it is a look-up.
        return request_parameters(request._get_current_object())  # type: ignore[attr-defined]
    except ParameterError as exc:
        raise ErrorPage("invalid_request", str(exc)) from None


@bp.route(urls.AUTHORIZE, methods=["GET", "POST"])
def authorize() -> Response:
    """A new authorization request: validated here, once.

    Its login is read, and its code written when nothing else is written with it,
    in a Core transaction of its own (:class:`oidc.queries.CoreTransaction`),
    committed with the redirect: the ORM Session is not even begun on that path.
    """
    with queries.core_transaction():
        login = current_login()
        authorization = validate_authorization_request(_parameters(), login)
        return _proceed(authorization, None, login)


@bp.get(urls.AUTHORIZE_RESUME)
def resume() -> Response:
    """Back from the login page: the request its interaction holds, not validated again."""
    interaction = load_interaction(request.args.get("interaction"))
    return _proceed(interaction.authorization, interaction, current_login())


def _proceed(authorization: AuthorizationRequest, interaction: Pending | None,
             login: AuthenticatedUser | None) -> Response:
    """The page or response for what the request needs next (:func:`~oidc.oauth2.steps.next_step`),
    for the browser's ``login`` (:func:`~oidc.web.session.current_login`, read once by the view)."""
    continue_request(authorization.params)  # a pushed request's ui_locales are not in the URL
    step = next_step(authorization, login, now(),
                     for_this_request=interaction is not None and interaction.is_for(login))
    match step:
        case Refuse(error):
            return _refused(authorization, authorization.error(error), interaction)
        case Login():
            return _login_redirect(authorization, interaction)
        case SelectAccount(login):
            return _account_choice_page(authorization, login, interaction)
        case Consent(login):
            return _consent_page(authorization, login, interaction)
        case Respond(login):
            return _finish(authorization, login, interaction)
        case _:
            assert_never(step)


def _answering_login(form: FlaskForm, expired: str) -> tuple[Pending, AuthenticatedUser]:
    """The interaction a form of ours answers and the login it was shown to; :class:`ErrorPage` otherwise."""
    if not form_posted_from_our_page(request, form, current_state().settings):
        raise ErrorPage("invalid_request", expired)
    interaction = load_interaction(request.form.get("interaction"))
    login = current_login()
    if login is None or not interaction.is_for(login):  # signed out, or signed in again, since the page was shown
        raise ErrorPage("login_required", SESSION_ENDED)
    return interaction, login


@bp.post(urls.SELECT_ACCOUNT)
def select_account() -> Response:
    """"Continue" on the account choice page: the request goes on with the account it showed."""
    interaction, login = _answering_login(AccountChoiceForm(), EXPIRED_FORM)
    return _proceed(interaction.authorization, interaction, login)


@bp.post(urls.CONSENT)
def consent() -> Response:
    """The user's decision on the interaction the consent page was shown for."""
    interaction, login = _answering_login(ConsentForm(), "The consent form has expired. Please start again.")
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
