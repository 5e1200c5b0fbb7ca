"""What a validated authorization request needs next (OIDC Core §3.1.2.1 and §11).

:func:`next_step` is the whole decision of ``/authorize`` once the request is
valid, written once and free of HTTP: from the request, the browser's login
and the time it returns one step, and the web layer only shows the page or
sends the response that step names.

* :class:`Login`: no login, or not one that answers the request: ``prompt=login``,
  ``max_age`` exceeded, or an ``id_token_hint`` naming someone else.
* :class:`SelectAccount`: ``prompt=select_account``: the user chooses even when signed in.
* :class:`Consent`: the user must approve the client for the scope.
* :class:`Respond`: the code goes to the client.
* :class:`Refuse`: an error goes to the client (``prompt=none`` where the user
  would have to act, a malformed ``max_age`` or ``id_token_hint``).

The device authorization grant's page (RFC 8628 §3.3) asks the same question
of a device's request, which has no ``prompt``, ``max_age`` or hint.

A login made for this request (at its login page, or already shown its account
choice or consent page) is what ``prompt=login``, ``max_age`` and
``select_account`` asked for: asking again would never end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError

from oidc.models import Client
from oidc.oauth2 import consents
from oidc.oauth2.logins import AuthenticatedUser


class Request(Protocol):
    """What the decision reads of a request: an authorization request
    (:class:`~oidc.oauth2.authorization.AuthorizationRequest`) or a device's
    (:class:`~oidc.oauth2.device.DeviceRequest`)."""

    @property
    def client(self) -> Client: ...

    @property
    def scope(self) -> str: ...

    @property
    def prompts(self) -> set[str]: ...

    def max_age(self) -> int | None: ...

    def id_token_hint_subject(self) -> str | None: ...


@dataclass(frozen=True)
class Login:
    """The user must sign in (again) before the request can go on."""


@dataclass(frozen=True)
class SelectAccount:
    """The user chooses the account: continue as ``login``, or switch."""

    login: AuthenticatedUser


@dataclass(frozen=True)
class Consent:
    """``login`` must approve the client for the request's scope."""

    login: AuthenticatedUser


@dataclass(frozen=True)
class Respond:
    """The authorization response for ``login`` goes to the client."""

    login: AuthenticatedUser


@dataclass(frozen=True)
class Refuse:
    """``error`` goes to the client's redirect URI."""

    error: OAuth2Error


Step = Login | SelectAccount | Consent | Respond | Refuse

#: Whether a user approved a client for every scope of a scope set (remembered consent).
Remembered = Callable[[int, Client, str], bool]


def needs_consent(authorization: Request, login: AuthenticatedUser,
                  remembered: Remembered = consents.has_consented) -> bool:
    """Whether ``login`` must be asked to approve the request (first-party clients and remembered consent skip it)."""
    if "consent" in authorization.prompts:
        return True
    if "offline_access" in authorization.scope.split():
        # OIDC Core §11: the OP MUST always obtain consent to a refresh token for
        # offline access; neither a remembered consent nor a first-party client is that.
        return True
    client: Client = authorization.client
    return not (client.first_party or remembered(login.user.id, client, authorization.scope))


def next_step(authorization: Request, login: AuthenticatedUser | None, now: int, *,
              for_this_request: bool = False, remembered: Remembered = consents.has_consented) -> Step:
    """What ``authorization`` needs next, for the browser signed in as ``login`` (or no one) at ``now``.

    ``for_this_request``: ``login`` was made for this request's interaction, or
    already shown its account choice or consent page.  ``remembered`` looks up
    remembered consent (only asked when nothing else decides).
    """
    try:
        max_age = authorization.max_age()
        hinted_subject = authorization.id_token_hint_subject()
    except OAuth2Error as error:
        return Refuse(error)
    prompts = authorization.prompts
    # OIDC Core §3.1.2.1: an id_token_hint naming someone else than the signed-in
    # user is login_required with prompt=none, and a new login otherwise.
    other_user = (login is not None and not for_this_request and hinted_subject is not None
                  and hinted_subject != login.user.subject)
    if login is None or other_user or (not for_this_request and (
            "login" in prompts or (max_age is not None and now - login.auth_time > max_age))):
        if "none" in prompts:  # OIDC Core §3.1.2.1: no interaction with the user at all
            return Refuse(LoginRequiredError())
        return Login()
    # OIDC Core §3.1.2.1 select_account: the user chooses the account even when signed in;
    # a login made for this request, or the choice made on its page, is that choice.
    if "select_account" in prompts and not for_this_request:
        return SelectAccount(login)
    if needs_consent(authorization, login, remembered):
        if "none" in prompts:
            return Refuse(ConsentRequiredError())
        return Consent(login)
    return Respond(login)
