"""The browser session: a signed cookie carrying the ``sid`` of a server-side login session.

The cookie is ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the issuer is
https, and signed with a key derived from ``SECRETS_SYSTEM``; the login itself
is a row (:mod:`oidc.accounts.sessions`), so ending the row ends the session
everywhere.  It also carries the browser's interaction binding, which ties the
authorization requests waiting on the server for this browser's login or
consent to this browser (:mod:`oidc.oauth2.interactions`).
"""

from __future__ import annotations

import hmac
import json
from functools import lru_cache
from typing import Any, cast

from flask import Flask, Response, g, session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes
from itsdangerous.signer import HMACAlgorithm
from werkzeug.sansio.http import parse_cookie

from oidc.accounts import sessions
from oidc.hashing import random_token
from oidc.models import User
from oidc.oauth2.logins import AuthenticatedUser, end_login

#: The session cookie's key of this browser's interaction binding.
_BINDING = "interaction_binding"
#: The session cookie's key of the device request this browser entered the code of (:mod:`oidc.web.device`).
DEVICE_REQUEST = "device_request"
#: What a new login keeps of the cookie: what the login was made to finish.
_KEPT_ON_SIGN_IN = (_BINDING, DEVICE_REQUEST)
#: The per-request cache of :func:`current_login` before its first reading.
_UNREAD = object()


@lru_cache(maxsize=16)
def _derived_key(secret_key: bytes, salt: bytes, key_derivation: str, digest_method: Any) -> bytes:
    return TimestampSigner(secret_key, salt=salt, key_derivation=key_derivation, digest_method=digest_method).derive_key()


class _OneShotHMAC(HMACAlgorithm):
    """itsdangerous's HMAC signature, computed by the standard library's one-shot ``hmac.digest``.

    itsdangerous builds an ``hmac.HMAC`` object around Flask's digest function
    for each signature (Python code around two hash objects); ``hmac.digest``
    with the digest's name is OpenSSL's HMAC in one call, and the same bytes.
    """

    def __init__(self, digest_method: Any) -> None:
        super().__init__(digest_method)
        self.digest_name: str = digest_method().name

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, self.digest_name)


class _DerivedOnceSigner(TimestampSigner):
    """itsdangerous's timestamp signer, its HMAC key derived once per secret key and salt.

    The serializer makes a signer for each cookie it opens or signs, and each
    signer derives its key again (an HMAC of the salt) for every signature.
    Its signatures are :class:`_OneShotHMAC`'s, made once per digest method.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("algorithm") is None:
            kwargs["algorithm"] = _one_shot_hmac(kwargs.get("digest_method") or TimestampSigner.default_digest_method)
        super().__init__(*args, **kwargs)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return _derived_key(key, self.salt, self.key_derivation, self.digest_method)


@lru_cache(maxsize=4)
def _one_shot_hmac(digest_method: Any) -> _OneShotHMAC:
    return _OneShotHMAC(digest_method)


class _SessionJSON(TaggedJSONSerializer):
    """Flask's session serializer, reading a cookie's JSON with ``json.loads`` itself.

    Flask's reads it through the app's JSON provider (a context-local look-up of
    the app, then the provider's ``loads``, which is ``json.loads``); writing is
    Flask's own.  A payload that is not JSON fails as before (itsdangerous's
    ``BadPayload``), and only a payload signed with the app's key is read.
    """

    def loads(self, value: str) -> Any:
        return self._untag_scan(json.loads(value))


def sent_cookie(request: Any, name: str) -> str | None:
    """``request.cookies.get(name)``, read from the one ``Cookie`` header a WSGI environ holds.

    Werkzeug's ``request.cookies`` joins every value of the ``Cookie`` header, which it
    finds by walking every header of the environ (and naming each); the environ holds at most
    one, ``HTTP_COOKIE`` (PEP 3333).  It is parsed by the same function, into the same kind of dict.
    """
    cookies = parse_cookie(request.environ.get("HTTP_COOKIE"), cls=request.dict_storage_class)
    value: str | None = cookies.get(name)
    return value


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, free on requests that do not use it.

    API calls (token, introspection, JWKS) never carry the session cookie;
    Flask would still build a signing serializer to open it, and read the
    cookie settings to save it.
    """

    serializer = _SessionJSON()

    def __init__(self) -> None:
        self._serializer: tuple[tuple[Any, ...], URLSafeTimedSerializer | None, TimestampSigner | None] | None = None

    def _signing(self, app: Flask) -> tuple[URLSafeTimedSerializer | None, TimestampSigner | None]:
        # Flask builds a serializer for each request that carries the cookie and each that sets one,
        # and the serializer a signer for each cookie; both depend only on the keys (this interface
        # is its app's own), so they are built once per keys.
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._serializer
        if cached is None or cached[0] != keys:
            serializer = super().get_signing_serializer(app)
            signer = None
            if serializer is not None:
                serializer.signer = _DerivedOnceSigner
                signer = cast(TimestampSigner, serializer.make_signer())
            cached = self._serializer = (keys, serializer, signer)
        return cached[1], cached[2]

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        return self._signing(app)[0]

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        """Flask's ``open_session``, the cookie opened by the signer made once per keys."""
        if app.secret_key and "HTTP_COOKIE" not in request.environ:
            return self.session_class()
        serializer, signer = self._signing(app)
        if serializer is None or signer is None:
            return None
        value = sent_cookie(request, self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            # ``serializer.loads`` with its one signer (Flask gives it no fallback signers; the
            # fallback keys are the signer's own), without the datetime of the signing time it
            # makes and throws away: the same checks (signature by any key, age), the same errors.
            return self.session_class(serializer.load_payload(signer.unsign(value, max_age=max_age)))
        except BadSignature:
            return self.session_class()

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not (session or session.modified or session.accessed):
            return  # never touched: no cookie to set or delete, no Vary to add
        # Flask sets the cookie when a session with values is to be set, deletes it when it was emptied.
        writes_cookie = self.should_set_cookie(app, session) if session else session.modified
        if not writes_cookie:
            # Read, not changed (a signed-in browser's usual request): no cookie to set or delete;
            # Flask would only add "Vary: Cookie", through ``response.vary``, which parses the header
            # and writes it back.  Absent, it is added as it would have written it.
            if session.accessed:
                if response.headers.getlist("Vary"):  # (``in`` raises and catches a KeyError when absent)
                    response.vary.add("Cookie")
                else:
                    response.headers.add("Vary", "Cookie")
            return
        super().save_session(app, session, response)


def current_login() -> AuthenticatedUser | None:
    """The signed-in user of this browser, if the session is still valid."""
    # flask.g: a per-request cache of the login behind the session cookie (browser state,
    # not an OAuth 2.0 request's), asked for by views, pages and templates alike; looked up
    # through its context-local proxy once, not once per use.
    request_globals = g._get_current_object()
    login: object = request_globals.get("oidc_login", _UNREAD)
    if login is _UNREAD:
        # The session object itself, as ``g`` above: a method called through the proxy is looked up through it.
        sid = session._get_current_object().get("sid")  # type: ignore[attr-defined]
        login = request_globals.oidc_login = sessions.find_login(sid)
    return cast(AuthenticatedUser | None, login)


def sign_in(user: User) -> AuthenticatedUser:
    """Start a login session for ``user`` in this browser (a new cookie, never the pre-login one).

    The session row is written in the request's transaction: the caller commits.

    The browser's interaction binding is kept: the login was made to finish one
    of its interactions.  The binding authenticates nothing (an interaction
    honours only the login it records, :mod:`oidc.oauth2.interactions`), so
    keeping it opens no session fixation.  So is the device request whose code
    the browser entered: only a login shown its confirmation page answers it.
    """
    login = sessions.start_session(user)
    kept = {key: session[key] for key in _KEPT_ON_SIGN_IN if key in session}
    session.clear()
    session.permanent = True
    session["sid"] = login.sid
    session.update(kept)
    g.oidc_login = login
    return login


def interaction_binding() -> str:
    """This browser's interaction binding (:mod:`oidc.oauth2.interactions`), made on first use.

    A random value in the signed session cookie: an interaction id works only
    in the browser whose cookie holds the binding its row names.
    """
    binding = session.get(_BINDING)
    if not isinstance(binding, str):
        binding = session[_BINDING] = random_token(32)
    return binding


def presented_binding() -> str | None:
    """The binding this browser holds, if any (never makes one: a look-up must not set a cookie)."""
    binding = session.get(_BINDING)
    return binding if isinstance(binding, str) else None


def sign_out() -> None:
    """End this browser's login session, if any."""
    end_login(session.get("sid"))
    session.clear()
    g.oidc_login = None


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessionInterface()
