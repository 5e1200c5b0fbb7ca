"""The Device Authorization Grant (RFC 8628) served by gunicorn: a device, a browser, two instances.

* A device client written from RFC 8628 §3.1-§3.5 with plain ``requests`` (it
  knows nothing of this provider but the discovery document) polls while a
  browser (``requests``, through the real pages) approves; its ID token is
  verified with PyJWT against the published JWK Set.  SQLite and PostgreSQL.
* Chromium over HTTPS, through the TLS-terminating proxy: the code page (a
  wrong code, then the link of ``verification_uri_complete``), the sign-in,
  the confirmation and the "return to your device" page, each checked with
  axe-core, its CSP and its console, as tests/test_pages.py checks the others.
* Two instances on one PostgreSQL: one approved device code polled on both at
  the same moment is redeemed exactly once.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urljoin

import jwt
import pytest
import requests

from live_flows import TIMEOUT, UserAgent, add_client, race, register
from oidc_fixtures import PASSWORD, hidden_fields, serve_with_gunicorn
from serving import Gunicorn, free_port

pytest_plugins = ["oidc_fixtures"]
pytestmark = pytest.mark.e2e

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_CLIENT: dict[str, Any] = {"name": "Living Room TV", "auth_method": "none", "grant_types": [GRANT, "refresh_token"],
                 "scope": "openid profile offline_access"}
#: Polling every second keeps the tests short (the default is 5 s).
FAST = {"DEVICE_POLL_INTERVAL": "1"}


class DeviceClient:
    """A device following RFC 8628 to the letter: discovery, §3.1 request, §3.4 polling, §3.5 errors."""

    def __init__(self, issuer: str, client_id: str, *, verify: Any = True, base_url: str | None = None) -> None:
        self.client_id = client_id
        self.verify = verify
        self.session = requests.Session()
        self.session.trust_env = False
        metadata = self.session.get((base_url or issuer) + "/.well-known/openid-configuration", verify=verify,
                                    timeout=TIMEOUT).json()
        assert metadata["issuer"] == issuer and GRANT in metadata["grant_types_supported"]
        self.metadata = metadata
        self.base_url = base_url
        self.errors: list[str] = []

    def _url(self, name: str) -> str:
        url = str(self.metadata[name])
        return url if self.base_url is None else self.base_url + url[len(self.metadata["issuer"]):]

    def authorize(self, scope: str) -> dict[str, Any]:
        response = self.session.post(self._url("device_authorization_endpoint"), verify=self.verify, timeout=TIMEOUT,
                                     data={"client_id": self.client_id, "scope": scope})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def poll_once(self, device_code: str) -> requests.Response:
        return self.session.post(self._url("token_endpoint"), verify=self.verify, timeout=TIMEOUT,
                                 data={"grant_type": GRANT, "device_code": device_code, "client_id": self.client_id})

    def wait_for_tokens(self, grant: dict[str, Any], deadline: float = 60) -> dict[str, Any]:
        """Poll every ``interval`` seconds, 5 more after each ``slow_down`` (§3.5), until tokens or a final error."""
        interval = grant.get("interval", 5)
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            time.sleep(interval)
            response = self.poll_once(grant["device_code"])
            if response.status_code == 200:
                return dict(response.json())
            error = response.json()["error"]
            self.errors.append(error)
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise AssertionError(f"the device was refused: {error}")
        raise AssertionError("no tokens before the deadline")


def approve(browser: UserAgent, verification_uri_complete: str, *, decision: str = "approve") -> requests.Response:
    """The user's side: open the link, confirm the code, sign in when asked, answer; the last page."""
    page = browser.get(verification_uri_complete)
    assert page.status_code == 200, page.text
    code = verification_uri_complete.split("user_code=")[1]
    response = browser.post("/device", data={**dict(hidden_fields(page.text)), "user_code": code})
    for _ in range(6):
        if response.status_code in (302, 303):
            response = browser.get(urljoin(response.url, response.headers["Location"]))
        elif 'action="/login"' in response.text:
            form = {**dict(hidden_fields(response.text)), "username": "alice", "password": PASSWORD}
            response = browser.post("/login", data=form)
        elif 'action="/device/confirm"' in response.text:
            assert "Living Room TV" in response.text and code in response.text
            return browser.post("/device/confirm", data={**dict(hidden_fields(response.text)), "decision": decision})
        else:
            break
    raise AssertionError(f"unexpected page {response.status_code}: {response.text[:300]}")


def verified_id_token(issuer: str, client_id: str, token: str, *, verify: Any = True) -> dict[str, Any]:
    """Verified with PyJWT against the published JWK Set (not our code)."""
    jwks = requests.get(issuer + "/.well-known/jwks.json", verify=verify, timeout=TIMEOUT).json()
    header = jwt.get_unverified_header(token)
    key = next(jwt.PyJWK(key) for key in jwks["keys"] if key["kid"] == header["kid"])
    return dict(jwt.decode(token, key=key, algorithms=[header["alg"]], audience=client_id, issuer=issuer))


@pytest.mark.both_databases
def test_an_rfc_8628_device_and_a_browser_under_gunicorn(make_app: Any, base_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    with serve_with_gunicorn(make_app, {**base_env, **FAST}, tmp_path, **DEVICE_CLIENT) as served:
        issuer, client_id = served["issuer"], served["client_id"]
        device = DeviceClient(issuer, client_id)
        grant = device.authorize("openid profile offline_access")
        assert grant["interval"] == 1 and grant["verification_uri"] == issuer + "/device"
        # The device polls in a thread of its own while the user signs in and approves.
        result: dict[str, Any] = {}
        polling = threading.Thread(target=lambda: result.update(device.wait_for_tokens(grant)), daemon=True)
        polling.start()
        time.sleep(2.5)  # a few authorization_pending answers first
        done = approve(UserAgent(issuer), grant["verification_uri_complete"])
        assert done.status_code == 200 and "return to your device" in done.text
        polling.join(timeout=30)
        assert result, device.errors
        assert device.errors and set(device.errors) <= {"authorization_pending", "slow_down"}
        claims = verified_id_token(issuer, client_id, result["id_token"])
        assert claims["preferred_username"] == "alice" and claims["sid"]
        assert result["token_type"].lower() == "bearer" and result["refresh_token"]
        # Spent: the next poll is invalid_grant; the refresh token works.
        assert device.poll_once(grant["device_code"]).json()["error"] == "invalid_grant"
        refreshed = requests.post(issuer + "/token", timeout=TIMEOUT, data={
            "grant_type": "refresh_token", "refresh_token": result["refresh_token"], "client_id": client_id})
        assert refreshed.status_code == 200, refreshed.text

        # Denied: the next poll says so.
        denied = device.authorize("openid")
        page = approve(UserAgent(issuer), denied["verification_uri_complete"], decision="deny")
        assert page.status_code == 200 and "You denied" in page.text
        assert device.poll_once(denied["device_code"]).json()["error"] == "access_denied"


# -- Chromium over HTTPS ----------------------------------------------------------------------------


def _make_app(env: dict[str, str], **config: Any) -> Any:
    from oidc.app import create_app
    from oidc.schema import upgrade_schema

    app = create_app({"TESTING": True, **config}, env=env)
    upgrade_schema(app)
    return app


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_device_pages_in_chromium(base_env: dict[str, str], tmp_path: Path, tls: bool) -> None:
    """On plain http and as deployed, over HTTPS through the TLS proxy."""
    from playwright.sync_api import sync_playwright
    from test_pages import PHONE, Checker

    from support import chromium_executable

    executable = chromium_executable()
    env = {**base_env, **FAST, "SERVICE_NAME": "Example Corp"}
    with serve_with_gunicorn(_make_app, env, tmp_path, tls=tls, **DEVICE_CLIENT) as served, \
            sync_playwright() as playwright:
        issuer = served["issuer"]
        device = DeviceClient(issuer, served["client_id"], verify=served["verify"])
        grant = device.authorize("openid profile offline_access")
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=served["chromium_args"])
        checker = Checker(browser, served, tmp_path, viewport=PHONE, javascript=True)
        try:
            page = checker.page
            page.goto(grant["verification_uri"])
            page.wait_for_selector("#user_code")
            checker.check("device-code", status=200)
            page.fill("#user_code", "bcdf ghjk")
            page.click("#continue")
            page.wait_for_selector("#code-error")
            assert page.get_attribute("#user_code", "aria-invalid") == "true"
            assert "not valid or has expired" in page.inner_text("#code-error")
            checker.check("device-code-wrong", status=400)

            page.goto(grant["verification_uri_complete"])
            assert page.input_value("#user_code") == grant["user_code"]
            page.click("#continue")
            page.wait_for_selector("#username")
            assert "Living Room TV" in page.inner_text("main")
            checker.check("device-login", status=200)
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_selector("#approve")
            assert page.inner_text("#user-code") == grant["user_code"]
            assert "Living Room TV" in page.inner_text("h1")
            checker.check("device-confirm", status=200)
            page.click("#approve")
            page.wait_for_selector("h1")
            assert "Device connected" in page.inner_text("h1")
            checker.check("device-done", status=200)
        finally:
            checker.close()
            browser.close()
        tokens = device.wait_for_tokens(grant, deadline=20)
        assert verified_id_token(issuer, served["client_id"], tokens["id_token"],
                                 verify=served["verify"])["preferred_username"] == "alice"


# -- two instances, one PostgreSQL ------------------------------------------------------------------

RACES = 4


@pytest.fixture
def instances(make_app: Any, base_env: dict[str, str], tmp_path: Any) -> Iterator[SimpleNamespace]:
    port_a = free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    env = {**base_env, **FAST, "OIDC_ISSUER": issuer, "METRICS_BIND": "", "LOG_FORMAT": "text"}
    register(make_app, env, redirect_uris=["http://127.0.0.1:9/callback"])
    client_id, _ = add_client(make_app, env, **DEVICE_CLIENT)
    a = Gunicorn(env, workers=1, log_path=tmp_path / "a.log", port=port_a)
    b = Gunicorn(env, workers=1, log_path=tmp_path / "b.log")
    try:
        a.wait_ready("/health/ready")
        b.wait_ready("/health/ready")
        yield SimpleNamespace(a=a.url, b=b.url, issuer=issuer, client_id=client_id)
    finally:
        for server in (a, b):
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_one_device_code_polled_on_two_instances_at_once_is_redeemed_once(instances: SimpleNamespace) -> None:
    device_a = DeviceClient(instances.issuer, instances.client_id)
    device_b = DeviceClient(instances.issuer, instances.client_id, base_url=instances.b)
    browser = UserAgent(instances.a)
    for _ in range(RACES):
        grant = device_a.authorize("openid offline_access")
        assert approve(browser, grant["verification_uri_complete"]).status_code == 200
        results = race(functools.partial(device_a.poll_once, grant["device_code"]),
                       functools.partial(device_b.poll_once, grant["device_code"]))
        statuses = sorted(response.status_code for response in results)
        assert statuses == [200, 400], [response.text for response in results]
        loser = next(response for response in results if response.status_code == 400)
        assert loser.json()["error"] == "invalid_grant"
