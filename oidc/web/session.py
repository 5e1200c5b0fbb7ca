"""The browser's cookies: the login session's, the interaction binding's, and Flask's session.

Three cookies, each ``HttpOnly``, ``SameSite=Lax``, ``Secure`` and ``__Host-`` when
the issuer is https, and signed with keys derived from ``SECRETS_SYSTEM`` (each
with its own salt):

* the **login cookie** carries the ``sid`` of a server-side login session and
  nothing else; the login itself is a row (:mod:`oidc.accounts.sessions`), so
  ending the row ends the session everywhere;
* the **binding cookie** carries this browser's interaction binding, which ties
  the authorization requests waiting on the server for this browser's login or
  consent to this browser (:mod:`oidc.oauth2.interactions`);
* **Flask's session** carries the pages' state: a form's CSRF token, the device
  request whose code the browser entered.

Kept apart (as node oidc-provider keeps its session and interaction cookies),
a signed-in browser's authorization request checks one HMAC over a ``sid`` and
opens nothing else: no JSON, no timestamp, no state it does not use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, cast

from flask import Flask, Response, session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature, Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes
from itsdangerous.signer import HMACAlgorithm
from werkzeug.sansio.http import parse_cookie

from oidc.accounts import sessions
from oidc.hashing import random_token
from oidc.models import User
from oidc.oauth2.logins import AuthenticatedUser, end_login

#: Flask's session's key of the device request this browser entered the code of (:mod:`oidc.web.device`).
DEVICE_REQUEST = "device_request"
#: What a new login keeps of Flask's session: what the login was made to finish.
_KEPT_ON_SIGN_IN = (DEVICE_REQUEST,)
#: :attr:`BrowserSession.login` before :func:`current_login`'s first reading.
_UNREAD = object()


@lru_cache(maxsize=16)
def _derived_key(secret_key: bytes, salt: bytes, key_derivation: str, digest_method: Any) -> bytes:
    return Signer(secret_key, salt=salt, key_derivation=key_derivation, digest_method=digest_method).derive_key()


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


class _DerivedOnceValueSigner(Signer):
    """itsdangerous's signer, its HMAC key derived once per secret key and salt.

    itsdangerous derives the key again (an HMAC of the salt) for every
    signature, and Flask's serializer makes a signer for each cookie it opens
    or signs.  Its signatures are :class:`_OneShotHMAC`'s, made once per digest method.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("algorithm") is None:
            kwargs["algorithm"] = _one_shot_hmac(kwargs.get("digest_method") or Signer.default_digest_method)
        super().__init__(*args, **kwargs)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return _derived_key(key, self.salt, self.key_derivation, self.digest_method)


class _DerivedOnceSigner(_DerivedOnceValueSigner, TimestampSigner):
    """itsdangerous's timestamp signer (Flask's session's), its key derived once (:class:`_DerivedOnceValueSigner`)."""


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


def sent_cookies(request: Any) -> dict[str, str]:
    """``request.cookies``, read from the one ``Cookie`` header a WSGI environ holds.

    Werkzeug's ``request.cookies`` joins every value of the ``Cookie`` header, which it
    finds by walking every header of the environ (and naming each); the environ holds at most
    one, ``HTTP_COOKIE`` (PEP 3333).  It is parsed by the same function, into the same kind of dict.
    """
    cookies: dict[str, str] = parse_cookie(request.environ.get("HTTP_COOKIE"), cls=request.dict_storage_class)
    return cookies


@dataclass(frozen=True)
class BrowserCookies:
    """The names, attributes and lifetime of the login and binding cookies (``app.config``, read once)."""

    login: str
    binding: str
    #: Path, Domain, Secure, HttpOnly and SameSite: Flask's session cookie's, from the one rule
    #: (:func:`oidc.settings.flask_config`), for every cookie of the browser.
    attributes: dict[str, Any]
    #: Max-Age of the login cookie: the login session's lifetime (the row's expiry is what counts).
    login_max_age: int

    @classmethod
    def of(cls, app: Flask) -> BrowserCookies:
        interface = SecureCookieSessionInterface()
        attributes = {"path": interface.get_cookie_path(app), "domain": interface.get_cookie_domain(app),
                      "secure": interface.get_cookie_secure(app), "httponly": interface.get_cookie_httponly(app),
                      "samesite": interface.get_cookie_samesite(app)}
        return cls(login=app.config["LOGIN_COOKIE_NAME"], binding=app.config["BINDING_COOKIE_NAME"],
                   attributes=attributes, login_max_age=int(app.permanent_session_lifetime.total_seconds()))


class _Signers(NamedTuple):
    """The signers of one set of keys: Flask's session's, and the login and binding cookies'."""

    serializer: URLSafeTimedSerializer
    session: TimestampSigner
    login: Signer
    binding: Signer


class _Written(NamedTuple):
    """A cookie a response sets: its value, signed, and its Max-Age (None: for the browser's session)."""

    value: str
    signed: str
    max_age: int | None


def _value_signer(keys: list[Any], salt: str) -> Signer:
    """A signer of a bare value (a ``sid``, a binding) under ``keys`` (oldest first), HMAC-SHA256."""
    return _DerivedOnceValueSigner(keys, salt=salt, key_derivation="hmac", digest_method=hashlib.sha256,
                                   algorithm=_one_shot_hmac(hashlib.sha256))


class BrowserSession(SecureCookieSession):
    """Flask's session of the pages' state, and what this request reads and writes of the other cookies.

    It carries the request's cookies (parsed once), the signers of the app's keys,
    the login read from the login cookie, and the cookies the response sets or
    deletes (written by :meth:`CookieSessionInterface.save_session`).
    """

    def __init__(self, initial: Any = None, sent: dict[str, str] | None = None, signers: _Signers | None = None,
                 cookies: BrowserCookies | None = None) -> None:
        super().__init__(initial)
        self.sent: dict[str, str] = {} if sent is None else sent
        self.signers = signers
        self.cookies = cookies
        #: :func:`current_login`'s reading, once per request.
        self.login: object = _UNREAD
        #: The cookies the response sets (by name), or deletes (None).
        self.to_write: dict[str, _Written | None] = {}

    def _opened(self, name: str, signer: Signer) -> str | None:
        """The value of cookie ``name`` as this response leaves it: written by it, or sent and signed by ``signer``."""
        if name in self.to_write:
            written = self.to_write[name]
            return None if written is None else written.value
        value = self.sent.get(name)
        if value is None:
            return None
        try:
            return signer.unsign(value).decode("utf-8")
        except (BadSignature, UnicodeDecodeError):
            return None

    def login_sid(self) -> str | None:
        """The ``sid`` the login cookie carries, if it is one we signed."""
        if self.cookies is None or self.signers is None:
            return None
        name = self.cookies.login
        sid = self._opened(name, self.signers.login)
        if sid is None and name in self.sent and name not in self.to_write:
            sid = self._adopted_sid(self.sent[name])
        return sid

    def _adopted_sid(self, value: str) -> str | None:
        """The ``sid`` of a Flask session cookie of the same name, as browsers signed in before the login
        cookie had its own hold it: moved to a login cookie, so that upgrading signs nobody out.  (No such
        cookie opens once LOGIN_SESSION_LIFETIME has passed since the upgrade: then this can go.)"""
        assert self.signers is not None and self.cookies is not None
        try:
            opened = self.signers.serializer.loads(value, max_age=self.cookies.login_max_age)
        except BadSignature:
            return None
        sid = opened.get("sid") if isinstance(opened, dict) else None
        if not isinstance(sid, str):
            return None
        self.write_login(sid)
        return sid

    def write_login(self, sid: str | None) -> None:
        """Set the login cookie to ``sid`` with this response (delete it when None)."""
        assert self.signers is not None and self.cookies is not None
        self._write(self.cookies.login, sid, self.signers.login, self.cookies.login_max_age)

    def binding(self) -> str | None:
        """The interaction binding the binding cookie carries (or this response sets), if any."""
        if self.cookies is None or self.signers is None:
            return None
        return self._opened(self.cookies.binding, self.signers.binding)

    def write_binding(self, binding: str | None) -> None:
        """Set the binding cookie to ``binding`` with this response, for the browser's session (delete it when None)."""
        assert self.signers is not None and self.cookies is not None
        self._write(self.cookies.binding, binding, self.signers.binding, None)

    def _write(self, name: str, value: str | None, signer: Signer, max_age: int | None) -> None:
        if value is not None:
            self.to_write[name] = _Written(value, signer.sign(value).decode("ascii"), max_age)
        elif name in self.sent:
            self.to_write[name] = None
        else:
            self.to_write.pop(name, None)  # the browser has none to delete


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, free on requests that do not use it, and the login and binding cookies.

    API calls (token, introspection, JWKS) never carry a cookie; Flask would
    still build a signing serializer to open it, and read the cookie settings
    to save it.
    """

    serializer = _SessionJSON()
    session_class = BrowserSession

    def __init__(self, cookies: BrowserCookies | None = None) -> None:
        self.cookies = cookies
        self._signers: tuple[tuple[Any, ...], _Signers | None] | None = None

    def _signing(self, app: Flask) -> _Signers | None:
        # Flask builds a serializer for each request that carries the cookie and each that sets one,
        # and the serializer a signer for each cookie; they depend only on the keys (this interface
        # is its app's own), so they are built once per keys.
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._signers
        if cached is None or cached[0] != keys:
            serializer = super().get_signing_serializer(app)
            signers = None
            if serializer is not None:
                serializer.signer = _DerivedOnceSigner
                ordered = [*reversed(keys[1:]), keys[0]]  # itsdangerous signs with the last
                signers = _Signers(serializer, cast(TimestampSigner, serializer.make_signer()),
                                   _value_signer(ordered, "login session"), _value_signer(ordered, "interaction binding"))
            cached = self._signers = (keys, signers)
        return cached[1]

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        signers = self._signing(app)
        return None if signers is None else signers.serializer

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        """Flask's ``open_session``, the cookie opened by the signer made once per keys."""
        signers = self._signing(app)
        if signers is None:
            return None
        if "HTTP_COOKIE" not in request.environ:
            return BrowserSession(signers=signers, cookies=self.cookies)
        sent = sent_cookies(request)
        value = sent.get(self.get_cookie_name(app))
        if not value:
            return BrowserSession(sent=sent, signers=signers, cookies=self.cookies)
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            # ``serializer.loads`` with its one signer (Flask gives it no fallback signers; the
            # fallback keys are the signer's own), without the datetime of the signing time it
            # makes and throws away: the same checks (signature by any key, age), the same errors.
            opened = signers.serializer.load_payload(signers.session.unsign(value, max_age=max_age))
        except BadSignature:
            opened = None
        return BrowserSession(opened, sent=sent, signers=signers, cookies=self.cookies)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        to_write = getattr(session, "to_write", None)
        if to_write:  # signed in or out, or bound: rare, so written plainly
            self._write_cookies(to_write, response)
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

    def _write_cookies(self, to_write: dict[str, _Written | None], response: Response) -> None:
        assert self.cookies is not None
        attributes = self.cookies.attributes
        for name, written in to_write.items():
            if written is None:
                response.delete_cookie(name, **attributes)
            else:
                response.set_cookie(name, written.signed, max_age=written.max_age, **attributes)


def _browser() -> BrowserSession:
    """This request's :class:`BrowserSession` (the object itself, not the context-local proxy)."""
    return cast(BrowserSession, session._get_current_object())  # type: ignore[attr-defined]


def current_login() -> AuthenticatedUser | None:
    """The signed-in user of this browser, if the login cookie names a login session still valid."""
    browser = _browser()
    login = browser.login
    if login is _UNREAD:
        browser.accessed = True  # the response depends on the cookie: Flask's "Vary: Cookie"
        login = browser.login = sessions.find_login(browser.login_sid())
    return cast(AuthenticatedUser | None, login)


def sign_in(user: User) -> AuthenticatedUser:
    """Start a login session for ``user`` in this browser (a new login cookie, and Flask's session
    emptied of the pre-login state: a new cookie, never the pre-login one).

    The session row is written in the request's transaction: the caller commits.

    The browser's interaction binding is kept: the login was made to finish one
    of its interactions.  The binding authenticates nothing (an interaction
    honours only the login it records, :mod:`oidc.oauth2.interactions`), so
    keeping it opens no session fixation.  So is the device request whose code
    the browser entered: only a login shown its confirmation page answers it.
    """
    login = sessions.start_session(user)
    browser = _browser()
    kept = {key: browser[key] for key in _KEPT_ON_SIGN_IN if key in browser}
    browser.clear()
    browser.update(kept)
    browser.write_login(login.sid)
    browser.login = login
    return login


def interaction_binding() -> str:
    """This browser's interaction binding (:mod:`oidc.oauth2.interactions`), made on first use.

    A random value in a signed cookie: an interaction id works only in the
    browser whose cookie holds the binding its row names.
    """
    browser = _browser()
    binding = browser.binding()
    if binding is None:
        binding = random_token(32)
        browser.write_binding(binding)
    return binding


def presented_binding() -> str | None:
    """The binding this browser holds, if any (never makes one: a look-up must not set a cookie)."""
    return _browser().binding()


def sign_out() -> None:
    """End this browser's login session, if any, and forget what the browser holds: its login,
    its interaction binding and its pages' state."""
    browser = _browser()
    login = current_login()
    if login is not None:
        end_login(login.sid)
    browser.clear()
    browser.write_login(None)
    browser.write_binding(None)
    browser.login = None


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessionInterface(BrowserCookies.of(app))
