"""Interactions: an authorization request kept on the server while the user logs in and consents.

``/authorize`` validates a request once
(:func:`oidc.oauth2.authorization.validate_authorization_request`).  When the
user must log in or consent, the validated request is stored here, under a
fresh random id, and the browser carries only that id through the login and
consent pages (node oidc-provider's "interaction" and its ``uid``): the login
URL is short, the consent form holds nothing but the id and its CSRF token,
and resuming reads the request back instead of trusting, and validating
again, parameters that went through the browser.

* **What it keeps**: the parameters the provider reads
  (:data:`~oidc.oauth2.authorization.READ_PARAMETERS`), each at most
  ``MAX_AUTHORIZATION_PARAMETER_LENGTH`` and all of them ``MAX_REQUEST_LENGTH`` (longer
  requests are refused before any row is written), and what validation made
  of them (redirect URI, scope, audience); never the other parameters a
  browser sends.
* **The id** is 256 random bits; only its keyed hash is stored
  (:data:`oidc.hashing.INTERACTION`), as for codes, so the table alone lets
  nobody resume an interaction.
* **Bound to the browser**: the web layer keeps a random *binding* in the
  signed session cookie and the row holds its keyed hash.  An id copied into
  another browser finds no interaction there.
* **Short-lived**: :data:`INTERACTION_LIFETIME`, also when it came from a
  pushed request: the ``request_uri``'s ``expires_in`` bounds its use at
  ``/authorize`` (RFC 9126 §2.2), not the login and consent it started, which
  would otherwise have to fit in ``PAR_LIFETIME`` (60 s).  The pushed request
  is claimed with the interaction, so it is still used once.
* **The login made for it** (``sid``, ``auth_time``): a login made at the
  login page for this interaction answers ``prompt=login`` and ``max_age``
  (OIDC Core §3.1.2.1) when the request resumes, instead of asking again;
  the consent page records the login it was shown to, and only that login may
  answer it.
* **Single use**: claimed by one conditional ``UPDATE`` (as codes and pushed
  requests are) when the authorization response is sent, a code or an error
  alike; a replayed consent form finds it used.

``prompt=none`` requests never make one (OIDC Core §3.1.2.1: no interaction
with the user at all).  Unknown, expired, used and other browsers'
interactions are one :class:`~oidc.oauth2.errors.ErrorPage`, never a redirect:
the client's redirect URI is not to be trusted on the word of a browser.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.datastructures import MultiDict

from oidc import hashing, queries
from oidc.db import db
from oidc.models import Interaction
from oidc.oauth2.authorization import AuthorizationRequest, restore_authorization_request
from oidc.oauth2.client_cache import current_client_cache
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.logins import AuthenticatedUser
from oidc.state import current_state
from oidc.text import bounded_text

#: Seconds a user has to log in and consent: the time a person takes, not much more
#: (the request's ``state`` and ``nonce`` belong to a client waiting for the answer).
INTERACTION_LIFETIME = 600
#: Longest id or binding looked up (ours are 43 characters); longer ones are unknown at once.
MAX_ID_LENGTH = 64
#: What the user is told of an interaction that cannot be used, whatever the reason.
UNUSABLE = "This sign-in request has expired or was already used. Please go back to the application and start again."

@dataclass
class Pending:
    """An interaction waiting for its user, as its browser knows it: its id, its row and the request it holds."""

    id: str
    row: Interaction
    authorization: AuthorizationRequest

    def is_for(self, login: AuthenticatedUser | None) -> bool:
        """Whether ``login`` is the login this interaction is for (made for it, or shown its consent page)."""
        return login is not None and login.sid is not None and login.sid == self.row.sid


def _hasher() -> hashing.KeyedHasher:
    return current_state().hasher(hashing.INTERACTION)


def start(authorization: AuthorizationRequest, binding: str, login: AuthenticatedUser | None = None) -> Pending:
    """Keep the validated ``authorization`` for the browser holding ``binding`` (the caller commits).

    ``login``: the login it is for already (the consent page's), if any.
    """
    state = current_state()
    interaction_id = hashing.random_token(32)
    moment = state.clock.now()
    expires_at = moment + INTERACTION_LIFETIME  # a pushed request's own expiry was checked at /authorize
    row = Interaction(
        interaction_hash=_hasher().hash(interaction_id), binding_hash=_hasher().hash(binding),
        client_pk=authorization.client.id, pushed_pk=authorization.pushed.id if authorization.pushed else None,
        parameters=authorization.read_parameters(), redirect_uri=authorization.redirect_uri,
        scope=authorization.scope, audience=authorization.audience, created_at=moment, expires_at=expires_at,
    )
    queries.add(row)
    pending = Pending(interaction_id, row, authorization)
    if login is not None:
        record_login(pending, login)
    return pending


def load(interaction_id: object, binding: object) -> Pending:
    """The interaction ``interaction_id`` of the browser holding ``binding``, with its request.

    :class:`ErrorPage` when it is unknown, another browser's, expired or used,
    when its pushed request was used meanwhile, or when its client was disabled.
    Nothing is written.
    """
    unusable = ErrorPage("invalid_request", UNUSABLE)
    interaction_id = bounded_text(interaction_id, MAX_ID_LENGTH)
    binding = bounded_text(binding, MAX_ID_LENGTH)
    if interaction_id is None or binding is None:
        raise unusable
    hasher = _hasher()
    found = queries.find_interaction(hasher.candidates(interaction_id))
    if found is None or not hasher.verify(binding, found[0].binding_hash):
        raise unusable
    row, client_id = found
    if row.used_at is not None or row.expires_at <= current_state().clock.now():
        raise unusable
    pushed = queries.pushed_request_by_pk(row.pushed_pk) if row.pushed_pk is not None else None
    if row.pushed_pk is not None and (pushed is None or pushed.used_at is not None):
        raise unusable
    client = current_client_cache().get(client_id)  # enabled clients only
    if client is None:
        raise ErrorPage("invalid_client", "The client is not known to this provider.")
    authorization = restore_authorization_request(MultiDict(row.parameters), client, row.redirect_uri, row.scope,
                                                  list(row.audience), pushed)
    return Pending(interaction_id, row, authorization)


def record_login(interaction: Pending, login: AuthenticatedUser) -> None:
    """``login`` is the one this interaction is for from now on (the caller commits).

    A new interaction's row is still pending in the session and takes the values
    with it; a stored one is updated with one Core statement, not a flush.
    """
    row = interaction.row
    if row.id is None:
        row.sid, row.auth_time = login.sid, login.auth_time
        return
    queries.record_interaction_login(row.id, login.sid, login.auth_time)
    set_committed_value(row, "sid", login.sid)
    set_committed_value(row, "auth_time", login.auth_time)


def claim(interaction: Pending) -> None:
    """Mark the interaction used, in the response's transaction; :class:`ErrorPage` if another request did."""
    if not queries.claim_interaction(interaction.row.id, current_state().clock.now()):
        raise ErrorPage("invalid_request", UNUSABLE)


def use_up(interaction: Pending) -> bool:
    """After a refusal sent to the client: the interaction is used all the same (committed).

    False when another request used it first (then that one answered the client).
    """
    db.session.rollback()
    try:
        claim(interaction)
    except ErrorPage:
        db.session.rollback()
        return False
    db.session.commit()
    return True
