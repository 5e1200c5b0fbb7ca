"""The Device Authorization Grant (RFC 8628): codes, the user's decision, and polling.

* ``POST /device_authorization`` (§3.1): the client authenticates as at the
  token endpoint and must be registered for the grant; the scope it gets is
  the core's rule (:func:`~oidc.oauth2.scopes.allowed_scope`), as at
  ``/authorize``.  The answer (§3.2) holds a ``device_code`` (256 random bits,
  stored as a keyed hash, as codes are), a ``user_code`` of
  :data:`USER_CODE_LENGTH` characters from :data:`USER_CODE_ALPHABET`
  (§6.1: consonants only, no vowels to spell words with, no digits to confuse
  with letters), shown ``XXXX-XXXX`` and also stored as a keyed hash, the
  verification URIs, ``expires_in`` (``DEVICE_CODE_LIFETIME``) and
  ``interval`` (``DEVICE_POLL_INTERVAL``).
* **The user's decision** (§3.3): the page at ``/device`` takes the user code
  (normalised: case, dashes and spaces do not matter), the user signs in and
  approves or denies; one conditional UPDATE records the decision, so a
  request is decided once.  Entering codes is rate-limited
  (:class:`oidc.accounts.throttle.UserCodeThrottle`).
* **Polling** (§3.4, §3.5): ``authorization_pending`` until the user decides,
  ``slow_down`` to a device that polls sooner than its interval allows (and
  the interval, remembered per device code, raised by :data:`SLOW_DOWN_STEP`
  seconds), ``access_denied``, ``expired_token``.  Once approved, the tokens
  are built as for a code exchange (an ID token with ``openid``, a refresh
  token by client policy) and the device code is claimed by one conditional
  UPDATE just before the commit: of two polls racing with one approved code,
  on any worker of any instance, exactly one gets tokens; the other, and any
  later poll, ``invalid_grant``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import AuthorizationPendingError, ExpiredTokenError, SlowDownError

from oidc import hashing, queries, urls
from oidc.db import db
from oidc.models import Client, DeviceAuthorization
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.records import session_active
from oidc.oauth2.resources import resolve_audience
from oidc.oauth2.scopes import allowed_scope
from oidc.oauth2.security_profile import is_fapi2
from oidc.state import current_state
from oidc.vocabulary import AUTH_METHODS, DEVICE_CODE_GRANT_TYPE

#: RFC 8628 §6.1: base-20 consonants, no vowels (no words), no digits (no O/0, I/1).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
#: 20^8 ≈ 2^34.6 codes: with the page rate-limited, guessing a live one is hopeless (§5.1).
USER_CODE_LENGTH = 8
#: Seconds added to a device's polling interval each time it polls too soon (§3.5).
SLOW_DOWN_STEP = 5
#: A poll up to this many seconds early is still on time (network delays vary).
POLL_LEEWAY = 1
#: Longest user code read from a form: the code, its dash and the spaces a person types around it.
MAX_USER_CODE_INPUT = 32
#: What the user is told of a code that is wrong, expired, or already used.
UNKNOWN_USER_CODE = "That code is not valid or has expired. Check the code shown on your device and try again."
#: What the user is told when the request was decided, expired or used while the page was open.
UNUSABLE = "This device sign-in request has expired or was already answered. Start again on your device."


def format_user_code(code: str) -> str:
    """How a user code is shown: ``XXXX-XXXX``."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_user_code(value: object) -> str | None:
    """The user code a person typed (any case, with dashes and spaces), or None if it cannot be one."""
    if not isinstance(value, str) or len(value) > MAX_USER_CODE_INPUT:
        return None
    code = "".join(ch for ch in value if ch not in "- \t").upper()
    if len(code) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in code):
        return None
    return code


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


# -- the device authorization endpoint (§3.1, §3.2) ----------------------------------------------


def authenticate(server: Any, oauth_request: Any) -> Client:
    """The client of a device authorization request, authenticated as at the token endpoint (§3.1)."""
    methods = ["private_key_jwt"] if current_state().settings.fapi2 else list(AUTH_METHODS)
    client: Client = server.authenticate_client(oauth_request, methods, endpoint="device_authorization")
    if is_fapi2(client) and client.auth_method != "private_key_jwt":
        raise InvalidClientError(status_code=401,
                                 description="The FAPI 2.0 profile requires private_key_jwt client authentication.")
    if not client.check_grant_type(DEVICE_CODE_GRANT_TYPE):
        raise UnauthorizedClientError("The client is not registered for the device authorization grant.")
    return client


def start(client: Client, form: Any) -> dict[str, Any]:
    """Store a new device authorization request of ``client``; the response body (§3.2). The caller commits."""
    if form.get("client_id", client.client_id) != client.client_id:
        raise InvalidRequestError("client_id does not match the authenticated client.")
    scope = allowed_scope(client, form.get("scope"))
    if scope is None:
        raise InvalidScopeError("The client is not registered for the requested scope.")
    audience = resolve_audience(client, form.getlist("resource"))
    state = current_state()
    settings = state.settings
    device_code = hashing.random_token(32)
    user_hasher = state.hasher(hashing.USER_CODE)
    user_code = new_user_code()
    while queries.find_device_by_user_code(user_hasher.candidates(user_code)) is not None:
        user_code = new_user_code()  # (a live or expired code has it: one in 20^8)
    moment = state.clock.now()
    queries.add(DeviceAuthorization(
        device_code_hash=state.hasher(hashing.DEVICE_CODE).hash(device_code), user_code_hash=user_hasher.hash(user_code),
        client_pk=client.id, scope=scope, audience=audience, poll_interval=settings.device_poll_interval,
        created_at=moment, expires_at=moment + settings.device_code_lifetime,
    ))
    shown = format_user_code(user_code)
    verification_uri = urls.absolute(settings.issuer, urls.DEVICE)
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={shown}",
        "expires_in": settings.device_code_lifetime,
        "interval": settings.device_poll_interval,
    }


# -- the user's decision (§3.3) -------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRequest:
    """A device's pending request as the sign-in and consent steps see it (:func:`oidc.oauth2.steps.next_step`).

    It has no ``prompt``, ``max_age`` or ``id_token_hint``: the device sent none.
    """

    row_id: int
    client: Client
    scope: str
    user_code: str
    expires_at: int

    @property
    def prompts(self) -> set[str]:
        return set()

    def max_age(self) -> int | None:
        return None

    def id_token_hint_subject(self) -> str | None:
        return None


def _pending(row: DeviceAuthorization | None) -> DeviceRequest | None:
    """The request of ``row`` while the user may still decide it (undecided, unexpired, its client enabled)."""
    if row is None or row.approved_at is not None or row.denied_at is not None or row.used_at is not None:
        return None
    if row.expires_at <= current_state().clock.now():
        return None
    client = queries.client_by_pk(row.client_pk)
    if client is None or client.disabled:
        return None
    return DeviceRequest(row.id, client, row.scope, "", row.expires_at)


def find_pending(user_code: object) -> DeviceRequest | None:
    """The undecided, unexpired request whose user code a person typed, or None."""
    code = normalize_user_code(user_code)
    if code is None:
        return None
    request = _pending(queries.find_device_by_user_code(current_state().hasher(hashing.USER_CODE).candidates(code)))
    return None if request is None else DeviceRequest(request.row_id, request.client, request.scope,
                                                       format_user_code(code), request.expires_at)


def pending_by_id(row_id: object, user_code: object) -> DeviceRequest | None:
    """The request a browser is deciding (its row id and the code it entered, kept in its signed cookie)."""
    if not isinstance(row_id, int) or not isinstance(user_code, str):
        return None
    request = find_pending(user_code)
    return request if request is not None and request.row_id == row_id else None


def approve(request: DeviceRequest, login: AuthenticatedUser) -> bool:
    """Record ``login``'s approval (the caller commits); False when it was decided or expired meanwhile."""
    return queries.approve_device(request.row_id, current_state().clock.now(), user_pk=login.user.id, sid=login.sid,
                                  auth_time=login.auth_time, grant_id=hashing.new_grant_id())


def deny(request: DeviceRequest) -> bool:
    """Record the user's denial (the caller commits); False when it was decided or expired meanwhile."""
    return queries.deny_device(request.row_id, current_state().clock.now())


# -- polling at the token endpoint (§3.4, §3.5) -------------------------------------------------------


def poll(device_code: str, client: Client) -> DeviceAuthorization:
    """The approved request of ``device_code`` for ``client``, ready for its tokens; else the error of §3.5.

    A poll of a pending request is recorded (committed at once: the refusal
    that follows must not undo it), and one that came too soon raises the
    interval instead.
    """
    row = None
    if len(device_code) <= queries.MAX_SECRET_LENGTH:
        row = queries.find_device_by_code(current_state().hasher(hashing.DEVICE_CODE).candidates(device_code))
    if row is None or row.client_pk != client.id:
        raise InvalidGrantError("The device_code is unknown or was issued to another client.")
    if row.used_at is not None:
        raise InvalidGrantError("The device_code was already used.")
    moment = current_state().clock.now()
    if row.expires_at <= moment:
        raise ExpiredTokenError()
    if row.denied_at is not None:
        raise AccessDeniedError()
    if row.approved_at is not None:
        if row.sid is not None and not _login_on(row.sid, moment):
            # OIDC Core §11, as for a code: the login ended (logout, password change) before the tokens went out.
            raise InvalidGrantError("The login session in which the device was approved has ended.")
        return row
    row_id = row.id
    on_time = queries.pace_device_poll(row_id, moment, POLL_LEEWAY)
    if not on_time:
        queries.slow_device_polling(row_id, moment, SLOW_DOWN_STEP)
    db.session.commit()
    if not on_time:
        raise SlowDownError()
    raise AuthorizationPendingError()


def _login_on(sid: str, moment: int) -> bool:
    login = queries.find_login(sid)
    return login is not None and session_active(login, moment)


def claim(row: DeviceAuthorization) -> None:
    """Mark the approved device code redeemed, in the response's transaction; ``invalid_grant`` if another poll did."""
    if not queries.claim_device_code(row.id, current_state().clock.now()):
        db.session.rollback()
        raise InvalidGrantError("The device_code was already used.")
