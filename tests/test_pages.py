"""Every page in Chromium: phone and desktop widths, JavaScript on and off, light and dark.

Each runs twice: on a plain-http issuer (development) and as deployed, through
nginx terminating TLS on an https issuer (``__Host-`` Secure cookie, the
same-origin check of the forms live; Chromium trusts the throwaway certificate
by its pinned public key).  One gunicorn per scheme serves all of them.  Each page is checked with
axe-core (no violations; in the passes with JavaScript on, as axe needs it to
run — the pages have no script, so the document is the same either way), must
carry the CSP header, must log no console error (a CSP violation is one), and
is screenshotted into a temporary folder
(``PAGES_SCREENSHOT_DIR`` names another, e.g. ``docs/screenshots`` to refresh
the README's pictures).  Screenshots are looked at, not compared.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from oidc_fixtures import PASSWORD, pkce_pair, serve_with_gunicorn
from support import chromium_executable

pytestmark = pytest.mark.e2e

CALLBACK = "http://127.0.0.1:9/callback"
LOGO_ORIGIN = "https://photos.example.test"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
#: The client's logo, served by the browser's route (there is no network).
CLIENT_LOGO = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 56 56"><rect width="56" height="56" fill="#f97316"/>'
               b'<rect x="14" y="20" width="28" height="20" rx="4" fill="#fff"/><circle cx="28" cy="30" r="6" '
               b'fill="#f97316"/><rect x="22" y="15" width="12" height="6" rx="2" fill="#fff"/></svg>')


def _make_app(env: dict[str, str], **config: Any) -> Any:
    from oidc.app import create_app
    from oidc.schema import upgrade_schema

    app = create_app({"TESTING": True, **config}, env=env)
    upgrade_schema(app)
    return app


@pytest.fixture(scope="module", params=["http", "https"])
def served(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    import secrets
    import shutil

    # A folder of its own, not under pytest's basetemp (which pytest runs of other checkouts may prune).
    folder = Path(tempfile.mkdtemp(prefix="oidc-pages-served-"))
    try:
        yield from _serve(folder, secrets.token_urlsafe(32), secrets.token_urlsafe(32), tls=request.param == "https")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(folder: Path, system_secret: str, admin_key: str, *, tls: bool) -> Iterator[dict[str, Any]]:
    env = {"DATABASE_URL": f"sqlite:///{folder / 'oidc.sqlite3'}", "SECRETS_SYSTEM": system_secret,
           "ADMIN_API_KEYS": admin_key, "SERVICE_NAME": "Example Corp",
           # Each walk signs in wrongly once: the failed-login limits are not what is tested here.
           "LOGIN_RATE_LIMIT_PER_ACCOUNT": "1000/minute", "LOGIN_RATE_LIMIT_PER_ADDRESS": "1000/minute",
           "LOGIN_RATE_LIMIT_PER_ADDRESS_AND_ACCOUNT": "1000/minute"}
    with serve_with_gunicorn(_make_app, env, folder, tls=tls, name="Photo Printer", redirect_uris=[CALLBACK],
                             logo_uri=LOGO_ORIGIN + "/logo.png", policy_uri=LOGO_ORIGIN + "/privacy",
                             tos_uri=LOGO_ORIGIN + "/terms",
                             post_logout_redirect_uris=[]) as provider:
        yield provider


@pytest.fixture(scope="module")
def browser(served: dict[str, Any]) -> Iterator[Any]:
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=served["chromium_args"])
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = os.environ.get("PAGES_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="oidc-pages-")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _authorize_url(served: dict[str, Any], **extra: str) -> str:
    _verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": served["client_id"], "redirect_uri": CALLBACK,
              "scope": "openid profile email offline_access", "state": "s", "nonce": "n",
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return served["issuer"] + "/authorize?" + urlencode(params)


class Checker:
    """A browser context that checks each page it arrives on."""

    def __init__(self, browser: Any, served: dict[str, Any], screenshots: Path, *, viewport: dict[str, int],
                 javascript: bool, scheme: str = "light") -> None:
        self.context = browser.new_context(viewport=viewport, java_script_enabled=javascript, color_scheme=scheme,
                                           locale="en-US")
        self.page = self.context.new_page()
        self.page.set_default_timeout(15000)
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.route(LOGO_ORIGIN + "/logo.png", lambda route: route.fulfill(
            status=200, content_type="image/svg+xml", body=CLIENT_LOGO))
        self.page.route(CALLBACK + "*", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>callback</title>"))
        self.served = served
        self.screenshots = screenshots
        self.javascript = javascript
        self.suffix = f"{'phone' if viewport is PHONE else 'desktop'}-{scheme}-{'js' if javascript else 'nojs'}"
        self.responses: list[Any] = []
        self.page.on("response", lambda response: self.responses.append(response))

    def check(self, name: str, *, status: int | None = None) -> None:
        """The page now shown: its CSP, its accessibility, its console; then a screenshot."""
        page = self.page
        document = next(response for response in reversed(self.responses)
                        if response.request.resource_type == "document")
        if status is not None:
            assert document.status == status, (name, document.status)
        csp = document.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src" not in csp, csp
        assert page.evaluate("document.documentElement.lang") if self.javascript else 'lang="' in page.content()
        page.screenshot(path=str(self.screenshots / f"{name}-{self.suffix}.png"), full_page=True)
        if self.javascript:
            from axe_playwright_python.sync_playwright import Axe

            results = Axe().run(page)
            assert results.violations_count == 0, (name, results.generate_report())
        # Every asset the page uses came from the provider (or the browser's stand-in for the client logo).
        for response in self.responses:
            assert response.url.startswith((self.served["issuer"], LOGO_ORIGIN, CALLBACK)), response.url
        # Chromium reports the page's own (expected) error status on the console; nothing else may be there.
        expected = f"the server responded with a status of {status} "
        errors = [error for error in self.errors if not (status and status >= 400 and expected in error)]
        assert not errors, (name, errors)
        self.errors.clear()
        self.responses.clear()

    def close(self) -> None:
        self.context.close()


def _walk(checker: Checker) -> None:
    """Every page, in the order a user meets them."""
    page = checker.page
    served = checker.served
    page.goto(_authorize_url(served))
    page.wait_for_selector("#username")
    assert "Photo Printer" in page.content()
    checker.check("login", status=200)
    if checker.javascript:
        _check_focus(page)

    page.fill("#username", "alice")
    page.fill("#password", "not the password")
    page.click("#sign-in")
    page.wait_for_selector("#login-error")
    assert page.get_attribute("#password", "aria-describedby") == "login-error"
    assert "Invalid username or password." in page.inner_text("#login-error")
    checker.check("login-failed", status=401)

    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector("#approve")
    _check_session_cookie(checker)
    text = page.inner_text("main")
    assert "Keep access when you are not using the app" in text and "alice" in text
    assert page.get_attribute("a[href='https://photos.example.test/privacy']", "href")
    checker.check("consent", status=200)

    # "Not you?" goes to the login page of the same interaction.
    switch = page.get_attribute(".account-switch", "href")
    assert switch is not None and switch.startswith("/login?interaction=") and "&" not in switch

    page.goto(served["issuer"] + "/login")
    checker.check("login-plain", status=200)
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector(".account-name")
    checker.check("signed-in", status=200)

    # prompt=select_account with a session: the account choice.
    page.goto(_authorize_url(served, prompt="select_account"))
    page.wait_for_selector("#continue")
    assert "alice" in page.inner_text("main")
    checker.check("select-account", status=200)
    _walk_logout_and_errors(checker)


def _walk_logout_and_errors(checker: Checker) -> None:
    """The second half of :func:`_walk`: signing out, then the error pages."""
    page = checker.page
    served = checker.served
    page.goto(served["issuer"] + "/logout")
    page.wait_for_selector("#sign-out")
    assert "Sign out?" in page.content()
    checker.check("logout-confirm", status=200)
    page.click("#sign-out")
    page.wait_for_selector("h1")
    assert "You are signed out" in page.inner_text("h1")
    checker.check("logged-out", status=200)

    page.goto(served["issuer"] + "/authorize?" + urlencode({"client_id": "unknown", "response_type": "code",
                                                              "redirect_uri": CALLBACK, "scope": "openid"}))
    assert "not recognised" in page.inner_text("h1")
    checker.check("error-unknown-client", status=400)

    page.goto(_authorize_url(served, redirect_uri="https://evil.example.test/cb"))
    assert "return address" in page.inner_text("h1")
    checker.check("error-redirect-uri", status=400)

    # A consent form left open while the user signed out in another tab: an expired request.
    page.goto(_authorize_url(served))
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector("#approve")
    other_tab = checker.context.new_page()
    other_tab.goto(served["issuer"] + "/logout")
    other_tab.click("#sign-out")
    other_tab.wait_for_selector("h1")
    other_tab.close()
    checker.responses.clear()
    page.click("#approve")
    page.wait_for_selector("h1")
    assert "expired" in page.inner_text("h1")
    checker.check("error-expired", status=400)


def _check_session_cookie(checker: Checker) -> None:
    """Over https the session cookie is ``__Host-`` and Secure (RFC 6265bis §4.1.3.2), and the browser kept it."""
    cookies = {cookie["name"]: cookie for cookie in checker.context.cookies()}
    https = checker.served["issuer"].startswith("https://")
    cookie = cookies["__Host-op_session" if https else "op_session"]
    assert cookie["secure"] is https and cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"


def _check_focus(page: Any) -> None:
    """Keyboard order on the sign-in page (username has autofocus), and a visible focus ring on each stop."""
    def focused() -> str:
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        name = page.evaluate("document.activeElement.id || document.activeElement.className")
        assert outline not in ("none", ""), (name, outline)
        return str(name)

    order = [focused()]
    for key in ("Tab", "Tab", "Shift+Tab", "Shift+Tab", "Shift+Tab"):
        page.keyboard.press(key)
        order.append(focused())
    assert order == ["username", "password", "sign-in", "password", "username", "skip-link"], order


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_every_page_is_accessible_and_strictly_served(browser: Any, served: dict[str, Any], screenshots: Path,
                                                        viewport: dict[str, int], javascript: bool) -> None:
    checker = Checker(browser, served, screenshots, viewport=viewport, javascript=javascript)
    try:
        _walk(checker)
    finally:
        checker.close()


def test_dark_scheme_pages_are_accessible(browser: Any, served: dict[str, Any], screenshots: Path) -> None:
    checker = Checker(browser, served, screenshots, viewport=DESKTOP, javascript=True, scheme="dark")
    try:
        _walk(checker)
    finally:
        checker.close()


def test_unavailable_page_in_the_browser(browser: Any, served: dict[str, Any], screenshots: Path,
                                         tmp_path: Path) -> None:
    """The database-down page (rendered by an app whose database is unreachable), shown with the real assets."""
    app = _make_app_without_database(served["env"], tmp_path)
    response = app.test_client().get("/authorize?client_id=x&response_type=code", base_url=served["issuer"])
    assert response.status_code == 503 and response.mimetype == "text/html"
    for scheme in ("light", "dark"):
        checker = Checker(browser, served, screenshots, viewport=DESKTOP, javascript=True, scheme=scheme)
        try:
            checker.page.route(served["issuer"] + "/authorize?unavailable*", lambda route: route.fulfill(
                status=503, headers=dict(response.headers), body=response.get_data()))
            checker.page.goto(served["issuer"] + "/authorize?unavailable")
            assert "temporarily unavailable" in checker.page.inner_text("h1")
            checker.check("error-unavailable", status=503)
        finally:
            checker.close()


def _make_app_without_database(env: dict[str, str], tmp_path: Path) -> Any:
    from oidc.app import create_app

    # Nothing listens on port 9: the connection is refused at once.
    return create_app({"TESTING": True}, env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
