"""The provider's session cookie interface answers as Flask's own does (oidc.web.session)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import BadSignature
from werkzeug.test import EnvironBuilder

from oidc.web.session import CookieSessionInterface, sent_cookies

_KEY = "k" * 32


def _app(refresh_each_request: bool, fallbacks: list[str] | None = None) -> Flask:
    app = Flask(__name__)
    app.secret_key = _KEY
    app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh_each_request
    if fallbacks:
        app.config["SECRET_KEY_FALLBACKS"] = fallbacks
    return app


def _saved(interface: Any, app: Flask, cookie: str | None, touch: str, permanent: bool,
           vary: str | None) -> list[tuple[str, str]]:
    """The headers ``interface`` adds to a response after a request that did ``touch`` to its session."""
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    with app.test_request_context("/", headers=headers):
        session = interface.open_session(app, request)
        assert session is not None
        if touch != "none":
            session.accessed = True  # as the request context's ``session`` sets it on each use
        if touch == "read":
            session.get("sid")
        elif touch == "write":
            session["sid"] = "another"
        elif touch == "clear":
            session.clear()
        if permanent:
            session.permanent = True
        response = Response("", headers={"Vary": vary} if vary else {})
        interface.save_session(app, session, response)
        return [(name, value.split("; Expires=")[0]) for name, value in response.headers.items()]


@pytest.mark.parametrize("refresh_each_request", [False, True])
def test_the_cookie_and_vary_headers_are_flasks(refresh_each_request: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read, written, emptied or untouched; with a cookie or none; permanent or not; with a Vary
    header already or none: the same Set-Cookie and Vary headers as Flask's interface writes."""
    # A signed cookie carries its second of signing: both interfaces sign in the same second.
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: 1_765_000_000.0)
    app = _app(refresh_each_request)
    cookie = _signed_with(_KEY, {"sid": "abc"})
    ours, flasks = CookieSessionInterface(), SecureCookieSessionInterface()
    for sent, touch, permanent, vary in itertools.product(
            (cookie, None), ("none", "read", "write", "clear"), (False, True), (None, "Accept-Encoding", "Cookie")):
        assert _saved(ours, app, sent, touch, permanent, vary) == _saved(flasks, app, sent, touch, permanent, vary), (
            sent, touch, permanent, vary)


def test_cookies_signed_with_the_key_or_a_fallback_open_and_others_do_not() -> None:
    """The signer made once per key opens what Flask signs with the key or a fallback key, signs
    what Flask opens, and refuses a cookie signed with another key."""
    app = _app(False, fallbacks=["old" * 11])
    ours = CookieSessionInterface().get_signing_serializer(app)
    flasks = SecureCookieSessionInterface().get_signing_serializer(app)
    assert ours is not None and flasks is not None
    assert ours.loads(flasks.dumps({"sid": "a"})) == {"sid": "a"}
    assert flasks.loads(ours.dumps({"sid": "b"})) == {"sid": "b"}
    assert ours.loads(_signed_with("old" * 11, {"sid": "c"})) == {"sid": "c"}
    with pytest.raises(BadSignature):
        ours.loads(_signed_with("x" * 32, {"sid": "d"}))


#: What a session may hold: Flask's tagged types (tuples, bytes, a dict whose one key looks like a tag) among JSON's.
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.sampled_from([" t", " di", "sid", "x"]), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.text(max_size=10), _VALUES, max_size=4))
def test_any_session_opens_as_flask_opens_it(values: dict[str, Any]) -> None:
    """Whatever a session holds, the serializer made once opens Flask's cookie as Flask does, and
    Flask opens ours; a cookie with one character of its signature changed opens for neither."""
    app = _app(False)
    ours = CookieSessionInterface().get_signing_serializer(app)
    flasks = SecureCookieSessionInterface().get_signing_serializer(app)
    assert ours is not None and flasks is not None
    with app.app_context():
        cookie = flasks.dumps(values)
        assert ours.loads(cookie) == flasks.loads(cookie)
        assert flasks.loads(ours.dumps(values)) == flasks.loads(cookie)
        # (Not the last character: its low bits are base64 padding, which decoding drops.)
        tampered = cookie[:-5] + ("A" if cookie[-5] != "A" else "B") + cookie[-4:]
        for serializer in (ours, flasks):
            with pytest.raises(BadSignature):
                serializer.loads(tampered)
    for sent in (cookie, tampered):
        assert _opened(CookieSessionInterface(), app, sent) == _opened(SecureCookieSessionInterface(), app, sent)


def _opened(interface: Any, app: Flask, cookie: str) -> dict[str, Any]:
    """The session ``interface`` opens from ``cookie`` (empty when refused)."""
    with app.test_request_context("/", headers={"Cookie": f"session={cookie}"}):
        session = interface.open_session(app, request)
        assert session is not None
        return dict(session)


@pytest.mark.parametrize("age", [0, 3599, 3600, 3601, -2])
def test_a_cookie_opens_until_its_lifetime_is_over_as_flask_opens_it(age: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed ``age`` seconds ago (or in the future), with fallback keys configured: opened while
    Flask opens it, empty once it has expired, as Flask's; the age is checked on every opening."""
    app = _app(False, fallbacks=["old" * 11])
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600
    now = 1_765_000_000.0
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: now - age)
    cookie = _signed_with(_KEY, {"sid": "abc"})
    old = _signed_with("old" * 11, {"sid": "old"})
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: now)
    ours = CookieSessionInterface()
    for sent, sid in ((cookie, "abc"), (old, "old")):
        assert _opened(ours, app, sent) == _opened(SecureCookieSessionInterface(), app, sent)
        assert _opened(ours, app, sent) == ({"sid": sid} if 0 <= age <= 3600 else {})


def _signed_with(key: str, values: dict[str, str]) -> str:
    """A session cookie Flask signs with ``key`` alone."""
    serializer = SecureCookieSessionInterface().get_signing_serializer(_with_key(key))
    assert serializer is not None
    return serializer.dumps(values)


def _with_key(key: str) -> Flask:
    app = Flask(__name__)
    app.secret_key = key
    return app


def _joined(pairs: list[tuple[str, str]]) -> str:
    return "; ".join(f"{name}={value}" for name, value in pairs)


#: Cookie headers: any latin-1 text (as a WSGI environ holds it), or name=value pairs, some named ``session``.
_LATIN_1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF)
_COOKIE_HEADERS = st.text(_LATIN_1, max_size=60) | st.lists(
    st.tuples(st.sampled_from(["session", "other", " session", "a b", ""]), st.text(_LATIN_1, max_size=12)),
    max_size=4).map(_joined)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(header=_COOKIE_HEADERS)
def test_the_session_cookie_is_read_as_request_cookies_reads_it(header: str) -> None:
    """Whatever the Cookie header holds, the value read for each name is werkzeug's ``request.cookies``'s."""
    app = _app(False)
    environ = EnvironBuilder("/").get_environ()
    environ["HTTP_COOKIE"] = header
    request = app.request_class(environ)
    for name in ("session", "other", *request.cookies):
        assert sent_cookies(request).get(name) == request.cookies.get(name), (header, name)
    del environ["HTTP_COOKIE"]
    assert sent_cookies(app.request_class(environ)).get("session") is None
