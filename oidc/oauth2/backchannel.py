"""OpenID Connect Back-Channel Logout 1.0: logout tokens owed, and the workers that send them.

When a login session ends (:mod:`oidc.oauth2.logins`: the browser's sign-out,
RP-initiated logout, a new password, a disabled user), every client that got
tokens in it and registered a ``backchannel_logout_uri`` is owed a logout
token (§2.5).  What is owed is a row of an outbox (``backchannel_logouts``),
written in the very transaction that ends the session: the logout page signs
nothing and waits for no client, and a row written survives a restart.

Each server worker runs a :class:`Sender` (a thread started after fork, see
gunicorn.conf.py) that finds due rows, claims each with one conditional
``UPDATE`` (a lease, as codes are claimed: of several workers and instances one
wins), signs the logout token with the ID token key set through the key service,
and POSTs it (§2.5) with a short timeout, following no redirect and reading a
bounded response.  A failure is retried with exponential backoff until
``BACKCHANNEL_LOGOUT_RETRY_WINDOW`` after the logout, then given up.  A worker
that dies holding a lease leaves the row to be claimed again once the lease
ends: a receiver may, rarely, see one token twice; its ``jti`` is the same.
"""

from __future__ import annotations

import http.client
import logging
import math
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask
from sqlalchemy import event

from keys import KeyServiceError
from oidc import queries
from oidc.db import db
from oidc.hashing import random_token
from oidc.oauth2.jwt import Signed, sign_jwt
from oidc.observability import audit, metrics
from oidc.settings import Settings
from oidc.state import current_state, state_of
from oidc.urls import is_loopback_http, split_url
from oidc.vocabulary import ID_TOKEN_SET, LOGOUT_TOKEN_EVENT, LOGOUT_TOKEN_TYP

#: Seconds a logout token is valid: long enough for a slow receiver, short against replay (§2.4).
LOGOUT_TOKEN_LIFETIME = 120
#: The most of a receiver's response read (its body is never used; §2.8 defines none).
MAX_RESPONSE_BYTES = 16384
#: Rows one worker claims at a time, and the logout tokens it sends at once.
BATCH = 32
CONCURRENCY = 4
#: Statuses of a receiver that took the logout (§2.8: 200; 204 from receivers that say nothing).
SUCCESS_STATUSES = frozenset((200, 204))

_EXTENSION = "oidc.backchannel"
logger = logging.getLogger(__name__)


# -- owing logout tokens (in the transaction that ends the sessions) ---------------------------


def owe_logout_tokens(sids: list[str]) -> int:
    """Write a logout token owed to each client told of the end of the login sessions ``sids``, in the
    current transaction; the running sender of this process is woken once it commits.  How many."""
    if not sids:
        return 0
    owed = queries.backchannel_clients_of_sessions(sids)
    if not owed:
        return 0
    moment = current_state().clock.now()
    queries.insert_backchannel_logouts([
        {"client_pk": row.client_pk, "sid": row.sid, "subject": row.subject, "jti": random_token(18),
         "created_at": moment, "next_attempt_at": moment, "attempts": 0, "claimed_until": 0, "claim": None,
         "delivered_at": None, "gave_up_at": None, "last_error": None}
        for row in owed
    ])
    sender = running_sender()
    if sender is not None:
        # Woken after the commit: before it, the rows are not visible to the sender's connection.
        event.listen(db.session(), "after_commit", sender.wake_after_commit, once=True)
    return len(owed)


# -- the logout token --------------------------------------------------------------------------


def logout_token(row: Any, settings: Settings, moment: int) -> Signed:
    """The logout token of an outbox row (§2.4), signed with the ID token key set.

    ``sub`` always; ``sid`` when the client registered ``backchannel_logout_session_required``;
    never a ``nonce`` (§2.4: it would let the token be mistaken for an ID token).
    """
    claims: dict[str, Any] = {
        "iss": settings.issuer, "aud": row.client_id, "iat": moment, "exp": moment + LOGOUT_TOKEN_LIFETIME,
        "jti": row.jti, "sub": row.subject, "events": {LOGOUT_TOKEN_EVENT: {}},
    }
    if row.backchannel_logout_session_required:
        claims["sid"] = row.sid
    return sign_jwt(ID_TOKEN_SET, claims, LOGOUT_TOKEN_TYP)


def allowed_uri(uri: str, *, development: bool) -> bool:
    """Whether logout tokens may be sent to ``uri``: https, or http on a loopback host in development mode."""
    parts = split_url(uri)
    if parts is None:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    return development and is_loopback_http(parts)


def post_logout_token(uri: str, token: str, *, timeout: float, development: bool) -> str | None:
    """POST ``logout_token`` to a client's back-channel logout URI (§2.5); None when it took it, else why not.

    No redirect is followed (a 3xx is a failure), at most :data:`MAX_RESPONSE_BYTES`
    of the response are read, and every socket operation times out after ``timeout``.
    """
    if not allowed_uri(uri, development=development):
        return "refused: the URI is not https"
    parts = urlsplit(uri)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=urlencode({"logout_token": token}), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
            "User-Agent": "oidc-hsm back-channel logout"})
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError and TimeoutError are OSErrors
        return f"network: {type(exc).__name__}"
    finally:
        connection.close()
    if status in SUCCESS_STATUSES:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


def backoff(attempts: int, settings: Settings) -> int:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, at most the maximum."""
    initial = settings.backchannel_logout_retry_initial_seconds
    return int(min(initial * 2 ** min(attempts - 1, 30), settings.backchannel_logout_retry_max_seconds))


# -- the sender ------------------------------------------------------------------------------


class Sender:
    """One process's sender of owed logout tokens: a thread that polls the outbox, and a few that send.

    It polls every ``BACKCHANNEL_LOGOUT_POLL_SECONDS`` (rows written by other
    processes, retries coming due) and at once when this process ended a session.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self, *, poll: bool = True) -> None:
        """Start the sending threads and (``poll``) the thread that polls; without it, :meth:`deliver_due` is
        called by hand (tests, the benchmark)."""
        self._pool = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="backchannel-send")
        if poll:
            self._thread = threading.Thread(target=self._run, name="backchannel-logout", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def wake_after_commit(self, _session: Any) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and wait for the attempts under way (tests, tools)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _run(self) -> None:
        poll = state_of(self.app).settings.backchannel_logout_poll_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                found = self.deliver_due()
            except Exception:  # a database outage, say: log, wait, poll again; never let the thread die
                logger.exception("back-channel logout: the outbox could not be read")
                found = 0
            if found < BATCH:
                self._wake.wait(poll)

    def deliver_due(self) -> int:
        """Send the logout tokens due now, each claimed just before its attempt (waiting for every attempt);
        how many were due."""
        with self.app.app_context():
            state = current_state()
            with db.engine.connect() as connection:
                due = queries.due_backchannel_logouts(connection, state.clock.now(), BATCH)
        assert self._pool is not None, "started"
        for future in [self._pool.submit(self.attempt, row_id) for row_id in due]:
            future.result()
        return len(due)

    def attempt(self, row_id: int) -> None:
        """Claim a due row and make one attempt at it, its outcome recorded (delivered, retried later, or
        given up); nothing when another worker or instance claimed it first."""
        with self.app.app_context():
            try:
                claim = _claim(row_id)
                if claim is not None:
                    _attempt(row_id, claim)
            except Exception:  # a claimed row's lease ends and it is tried again; the thread goes on
                logger.exception("back-channel logout: an attempt failed unexpectedly")


def _claim(row_id: int) -> str | None:
    """Claim a due row for one attempt (committed at once); the claim's value, or None if it is not ours.

    Claimed as a thread is free to send it, not when it was found due, so the lease
    covers one attempt: a connect and a read, each bounded by the timeout, and the signature.
    """
    state = current_state()
    moment = state.clock.now()
    until = moment + 2 * math.ceil(state.settings.backchannel_logout_timeout) + 30
    claim = random_token(16)
    with db.engine.begin() as connection:
        return claim if queries.claim_backchannel_logout(connection, row_id, moment, until, claim) else None


def _attempt(row_id: int, claim: str) -> None:
    state = current_state()
    settings = state.settings
    with db.engine.connect() as connection:
        row = queries.claimed_backchannel_logout(connection, row_id, claim)
    if row is None:
        return
    fields = {"client_id": row.client_id, "sub": row.subject, "jti": row.jti, "attempt": row.attempts}
    uri = row.backchannel_logout_uri
    error: str | None
    if not uri:
        error = "the client no longer has a back-channel logout URI"
    else:
        try:
            token = logout_token(row, settings, state.clock.now())
            error = post_logout_token(uri, token.token, timeout=settings.backchannel_logout_timeout,
                                      development=settings.development)
        except KeyServiceError:
            error = "signing: the ID token key set is unavailable"
    moment = state.clock.now()
    if error is None:
        with db.engine.begin() as connection:
            queries.finish_backchannel_logout(connection, row_id, claim, delivered_at=moment, gave_up_at=None,
                                              error=None)
        metrics.backchannel_logout("sent", state.clock.time() - row.created_at)
        audit.record("logout.backchannel.sent", "logout token delivered", **fields)
        return
    next_attempt = moment + backoff(row.attempts, settings)
    if not uri or next_attempt > row.created_at + settings.backchannel_logout_retry_window:
        with db.engine.begin() as connection:
            queries.finish_backchannel_logout(connection, row_id, claim, delivered_at=None, gave_up_at=moment,
                                              error=error[:200])
        metrics.backchannel_logout("given_up")
        audit.record("logout.backchannel.given_up", "logout token given up", level=logging.WARNING,
                     error=error, **fields)
        return
    with db.engine.begin() as connection:
        queries.retry_backchannel_logout(connection, row_id, claim, next_attempt, error[:200])
    metrics.backchannel_logout("failed")
    audit.record("logout.backchannel.failed", "logout token not delivered, to be retried", error=error,
                 retry_at=next_attempt, **fields)


def start_sender(app: Flask) -> Sender:
    """Start this process's sender (once; a server worker, after fork)."""
    sender: Sender | None = app.extensions.get(_EXTENSION)
    if sender is None:
        sender = app.extensions[_EXTENSION] = Sender(app)
        sender.start()
    return sender


def stop_sender(app: Flask) -> None:
    sender: Sender | None = app.extensions.pop(_EXTENSION, None)
    if sender is not None:
        sender.stop()


def running_sender() -> Sender | None:
    """This process's sender, if it runs one (a CLI command does not: the servers' senders poll)."""
    state = current_state()
    sender: Sender | None = state.app.extensions.get(_EXTENSION)
    return sender
