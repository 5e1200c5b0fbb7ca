"""A real browser (Debian's headless Chromium, driven by Playwright) through the real pages.

The user signs in on the login page, allows the client on the consent page and
lands on the client's redirect URI with a code: on a plain-http issuer and as
deployed, through nginx terminating TLS on an https issuer.  The client's redirect URI is
intercepted by the browser (no server behind it).  Where Chromium or the
Playwright package is missing the test is skipped, except in CI (CI=true).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from oidc_fixtures import PASSWORD, pkce_pair, serve_with_gunicorn
from support import chromium_executable

pytestmark = pytest.mark.e2e

CALLBACK = "http://127.0.0.1:9/callback"



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_user_logs_in_consents_and_lands_on_the_redirect_uri_with_a_code(make_app: Any, base_env: dict[str, str],
                                                                          tmp_path: Path, scheme: str) -> None:
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with serve_with_gunicorn(make_app, base_env, tmp_path, tls=scheme == "https", name="Photo Printer",
                             redirect_uris=[CALLBACK]) as served:
        verifier, challenge = pkce_pair()
        state = "browser-state-é/&"
        url = served["issuer"] + "/authorize?" + urlencode({
            "response_type": "code", "client_id": served["client_id"], "redirect_uri": CALLBACK,
            "scope": "openid email", "state": state, "nonce": "n-0S6", "code_challenge": challenge,
            "code_challenge_method": "S256"})
        landed: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=served["chromium_args"])
            try:
                page = browser.new_page()
                page.set_default_timeout(15000)

                def arrive(route: Any) -> None:
                    landed.append(route.request.url)
                    route.fulfill(status=200, content_type="text/html", body="<h1>client callback</h1>")

                page.route(CALLBACK + "*", arrive)
                page.goto(url)
                page.fill("#username", "alice")
                page.fill("#password", "wrong password")
                page.click("#sign-in")
                assert "Invalid username or password." in page.content()
                page.fill("#username", "alice")
                page.fill("#password", PASSWORD)
                page.click("#sign-in")
                page.wait_for_selector("#approve")
                assert "Photo Printer" in page.content() and "email" in page.content()
                page.screenshot(path=str(tmp_path / "consent.png"))
                page.click("#approve")
                page.wait_for_url(CALLBACK + "*")
                cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
            finally:
                browser.close()

        assert len(landed) == 1
        query = parse_qs(urlsplit(landed[0]).query)
        assert query["state"] == [state] and query["code"][0]
        stem = "__Host-op_session" if scheme == "https" else "op_session"
        assert {stem, stem + "_binding"} <= set(cookies)  # the login cookie, and the binding the consent used
        for name, cookie in cookies.items():
            assert name.startswith(stem), name
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/", name
            assert cookie["secure"] is (scheme == "https"), name

        import requests

        tokens = requests.post(served["issuer"] + "/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": CALLBACK,
            "code_verifier": verifier}, auth=(served["client_id"], served["client_secret"]), timeout=10,
            verify=served["verify"])
        assert tokens.status_code == 200 and tokens.json()["id_token"]
