"""The browser's three cookies (oidc.web.session): the login cookie, the binding cookie, Flask's session.

Over the https issuer of the ``op`` fixture, so every cookie is ``__Host-`` and Secure.
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from typing import Any

from flask.sessions import SecureCookieSessionInterface
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_fixtures import PASSWORD, REDIRECT_URI, Provider, hidden_fields, pkce_pair, query_of

LOGIN = "__Host-op_session"
BINDING = "__Host-op_session_binding"
STATE = "__Host-op_session_state"


def _set_cookies(response: Any) -> dict[str, Any]:
    """The cookies a response sets or deletes, by name (each a ``Morsel``)."""
    cookies: dict[str, Any] = {}
    for header in response.headers.getlist("Set-Cookie"):
        cookies.update(SimpleCookie(header))
    return cookies


def _authorize_params(client_id: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
            "state": "s", "nonce": "n", "code_challenge": pkce_pair()[1], "code_challenge_method": "S256"}


def _signed_in(op: Provider) -> tuple[str, dict[str, Any], Any]:
    """A first-party client, and a browser signed in through its /authorize: the login's response."""
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    started = op.get("/authorize", query_string=_authorize_params(client_id))
    assert started.status_code == 302 and started.headers["Location"].startswith("/login")
    page = op.get(started.headers["Location"])
    signed_in = op.post("/login", data={**dict(hidden_fields(page.text)), "username": "alice",
                                        "password": PASSWORD})
    assert signed_in.status_code == 303, signed_in.text[:300]
    return client_id, _set_cookies(started), signed_in


def _sids(op: Provider) -> list[str]:
    from oidc.models import LoginSession

    with op.app.app_context():
        return [row.sid for row in LoginSession.query.all()]


def test_a_login_sets_the_login_cookie_and_drops_the_pre_login_state(op: Provider) -> None:
    """The login cookie carries the new login session's sid (signed), lives as long as the login
    session, and has the __Host- attributes; the binding cookie (set by /authorize) lives for the
    browser's session; the pre-login state (the login form's CSRF token) is deleted, not carried
    over (no fixation through a cookie set before the login)."""
    _, started, signed_in = _signed_in(op)
    assert set(started) == {BINDING}
    binding = started[BINDING]
    assert binding["max-age"] == "" and binding["expires"] == ""  # the browser's session
    cookies = _set_cookies(signed_in)
    assert set(cookies) == {LOGIN, STATE}
    login = cookies[LOGIN]
    sid, _, signature = login.value.rpartition(".")
    assert _sids(op) == [sid] and signature
    assert login["max-age"] == str(8 * 3600)
    assert cookies[STATE].value == "" and cookies[STATE]["expires"].endswith("1970 00:00:00 GMT")
    for morsel in (login, binding, cookies[STATE]):
        assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
        assert morsel["domain"] == ""


def test_a_signed_in_authorization_reads_the_login_cookie_alone(op: Provider) -> None:
    """Signed in, /authorize answers with the code, sets no cookie, and says that it varies by Cookie."""
    client_id, _, _ = _signed_in(op)
    assert STATE not in {cookie.key for cookie in op.http._cookies.values()}
    response = op.get("/authorize", query_string=_authorize_params(client_id))
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])
    assert response.headers.getlist("Set-Cookie") == []
    assert "Cookie" in response.headers["Vary"]


def _authorize_with(op: Provider, client_id: str, cookies: dict[str, str]) -> Any:
    browser = op.new_browser()
    for name, value in cookies.items():
        browser.http.set_cookie(name, value, domain="op.example.test", secure=True)
    return browser.get("/authorize", query_string=_authorize_params(client_id))


def test_a_login_cookie_opens_only_as_it_was_signed(op: Provider) -> None:
    """A copy of the login cookie signs the other browser in; the same sid with its signature
    changed, unsigned, signed with another key, or sent as the binding cookie signs in nobody
    (each salt is its own key)."""
    client_id, _, signed_in = _signed_in(op)
    login = _set_cookies(signed_in)[LOGIN].value
    sid, _, signature = login.rpartition(".")
    assert "code" in query_of(_authorize_with(op, client_id, {LOGIN: login}).headers["Location"])
    other = secrets.token_urlsafe(32)
    with op.app.app_context():
        from oidc.web import session as browser_session

        interface = browser_session.CookieSessionInterface(browser_session.BrowserCookies.of(op.app))
        foreign = interface._signing(_app_with_key(op.app, other))
    assert foreign is not None
    changed = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for refused in ({LOGIN: f"{sid}.{changed}"}, {LOGIN: sid}, {LOGIN: foreign.login.sign(sid).decode()},
                    {BINDING: login}):
        response = _authorize_with(op, client_id, refused)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), refused


def _app_with_key(app: Any, key: str) -> Any:
    from flask import Flask

    other = Flask(__name__)
    other.config.update(app.config)
    other.secret_key = key
    other.config["SECRET_KEY_FALLBACKS"] = []
    return other


def test_the_binding_cookie_opens_only_as_it_was_signed(op: Provider) -> None:
    """An interaction waits for the browser whose binding cookie started it: the login cookie's
    value in its place (another salt) is no binding."""
    op.add_user()
    client_id, _ = op.add_client(first_party=True)
    started = op.get("/authorize", query_string=_authorize_params(client_id))
    interaction = query_of(started.headers["Location"])["interaction"][0]
    binding = _set_cookies(started)[BINDING].value
    value = binding.rpartition(".")[0]
    for cookies, works in (({BINDING: binding}, True), ({BINDING: value}, False), ({LOGIN: binding}, False)):
        browser = op.new_browser()
        for name, sent in cookies.items():
            browser.http.set_cookie(name, sent, domain="op.example.test", secure=True)
        page = browser.get(f"/login?interaction={interaction}")
        assert (page.status_code == 200) is works, (cookies, page.status_code)


def test_a_signed_in_browser_from_before_the_login_cookie_stays_signed_in(op: Provider) -> None:
    """A Flask session cookie of the login cookie's name holding the sid (as every browser held it
    before the login cookie had its own) signs the browser in, and is replaced by a login cookie."""
    client_id, _, signed_in = _signed_in(op)
    sid = _set_cookies(signed_in)[LOGIN].value.rpartition(".")[0]
    with op.app.test_request_context():
        serializer = SecureCookieSessionInterface().get_signing_serializer(op.app)
        assert serializer is not None
        legacy = serializer.dumps({"_permanent": True, "sid": sid, "interaction_binding": "x" * 43})
    response = _authorize_with(op, client_id, {LOGIN: legacy})
    assert "code" in query_of(response.headers["Location"])
    assert _set_cookies(response)[LOGIN].value.rpartition(".")[0] == sid
    with op.app.test_request_context():
        tampered = legacy[:-3] + ("A" if legacy[-3] != "A" else "B") + legacy[-2:]
    assert _authorize_with(op, client_id, {LOGIN: tampered}).headers["Location"].startswith("/login")


def test_a_rotated_system_secret_keeps_logins_until_the_old_one_is_dropped(make_app: Any, base_env: dict[str, str],
                                                                           system_secret: str) -> None:
    """SECRETS_SYSTEM "new,old": a login cookie signed under the old secret still opens, new ones
    are signed under the new; with the old one dropped, the old cookie signs in nobody."""
    before = Provider(make_app(base_env))
    client_id, _, signed_in = _signed_in(before)
    old_cookie = _set_cookies(signed_in)[LOGIN].value
    new_secret = secrets.token_urlsafe(32)
    during = Provider(make_app({**base_env, "SECRETS_SYSTEM": f"{new_secret},{system_secret}"}))
    resealed = during.app.test_cli_runner().invoke(args=["keys", "reseal"])  # the runbook's step
    assert resealed.exit_code == 0, resealed.output
    assert "code" in query_of(_authorize_with(during, client_id, {LOGIN: old_cookie}).headers["Location"])
    after = Provider(make_app({**base_env, "SECRETS_SYSTEM": new_secret}))
    assert _authorize_with(after, client_id, {LOGIN: old_cookie}).headers["Location"].startswith("/login")


def test_signing_out_deletes_every_cookie_of_the_browser(op: Provider) -> None:
    """RP-Initiated Logout: the login session ends, and the login, binding and state cookies are deleted."""
    client_id, _, _ = _signed_in(op)
    page = op.get("/logout")
    # The confirmation form (no id_token_hint) sets the state cookie (its CSRF token); the sign-out deletes it.
    signed_out = op.post("/logout", data={**dict(hidden_fields(page.text)), "confirm": "yes"})
    assert signed_out.status_code == 200 and "signed out" in signed_out.text
    deleted = _set_cookies(signed_out)
    assert set(deleted) == {LOGIN, BINDING, STATE}
    assert all(morsel.value == "" and morsel["secure"] for morsel in deleted.values())
    assert op.get("/authorize", query_string=_authorize_params(client_id)).headers["Location"].startswith("/login")


#: Cookie values a browser (or anyone) may send: printable latin-1 text, or pieces of a signed value.
_VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=";,"), max_size=80) | (
    st.lists(st.sampled_from(["", ".", "abc", "eyJzaWQiOiJ4In0", "A" * 43, "%FF", "\\", '"']), max_size=6)
    .map("".join))


def test_any_login_or_binding_cookie_value_signs_in_nobody_and_fails_nothing(op: Provider) -> None:
    """Whatever the login and binding cookies hold (unsigned, truncated, not UTF-8 once unquoted, a
    legacy-looking payload), /authorize sends the browser to the login page: no 500, no cookie kept."""
    op.add_user()
    client_id, _ = op.add_client(first_party=True)

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(login=_VALUES, binding=_VALUES)
    def check(login: str, binding: str) -> None:
        response = _authorize_with(op, client_id, {LOGIN: login, BINDING: binding})
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), (login, binding)
        assert LOGIN not in _set_cookies(response)

    check()
