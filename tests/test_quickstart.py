"""The quickstart, end to end: ``quickstart/run.sh`` then a real browser through the demo RP.

The script runs as the README says, except that it uses this interpreter
instead of creating a virtual environment (``QUICKSTART_NO_VENV=1``), keeps its
state in a temporary directory and listens on free ports.  Headless Chromium
(Playwright) opens the demo relying party, clicks "Log in", signs in as the
demo user, consents, and lands back on the demo page, which shows the ID
token's claims, the access token's header and claims, and the signing keys.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from serving import ROOT, free_port
from support import chromium_executable, stop_process_group

pytestmark = pytest.mark.e2e


def _wait_for(url: str, process: subprocess.Popen, output: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up:\n{output.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)


def test_quickstart_then_log_in_through_the_demo_relying_party(tmp_path: Path) -> None:
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    provider_port, demo_port = free_port(), free_port()
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OIDC_", "HSM_", "DATABASE_URL", "SECRETS_SYSTEM", "ADMIN_API_KEYS",
                                  "SOFTHSM2_CONF", "BIND", "PROMETHEUS_MULTIPROC_DIR"))}
    env.update(QUICKSTART_NO_VENV="1", PYTHON=sys.executable, QUICKSTART_DIR=str(state),
               QUICKSTART_PORT=str(provider_port), DEMO_RP_PORT=str(demo_port), METRICS_BIND="",
               GUNICORN_WORKERS="1", LOG_FORMAT="json")
    output = tmp_path / "quickstart.out"
    with open(output, "wb") as sink:
        process = subprocess.Popen(["bash", str(ROOT / "quickstart" / "run.sh")], cwd=tmp_path, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        issuer = f"http://localhost:{provider_port}"
        demo = f"http://localhost:{demo_port}"
        _wait_for(f"http://127.0.0.1:{provider_port}/health/ready", process, output)
        _wait_for(f"http://127.0.0.1:{demo_port}/", process, output)
        printed = output.read_text()
        assert f"Provider:  {issuer}" in printed and f"Open:      {demo}" in printed
        assert re.search(r"Operator:  \S*oidc-hsm --help", printed)  # the installed console command
        assert "Signing keys: SoftHSM2 token 'oidc-quickstart'" in printed or "NOTICE: softhsm2" in printed
        demo_user = re.search(r"Demo user: (\S+) / (\S+)", printed)
        assert demo_user is not None, printed
        username, password = demo_user.groups()
        assert oct((state / "quickstart.env").stat().st_mode & 0o777) == "0o600"

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True,
                args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"])
            try:
                page = browser.new_page()
                page.set_default_timeout(20000)
                page.goto(demo + "/")
                page.click("#login")
                page.wait_for_selector("#username")
                assert page.url.startswith(issuer + "/login")
                page.fill("#username", username)
                page.fill("#password", password)
                page.click("#sign-in")
                page.wait_for_selector("#approve")
                assert "Demo app" in page.content()
                page.click("#approve")
                page.wait_for_selector("#id-token-claims")
                assert page.url.rstrip("/") == demo
                shown: dict[str, Any] = {
                    name: json.loads(page.inner_text(f"#{name}"))
                    for name in ("id-token-claims", "id-token-header", "access-token-header",
                                 "access-token-claims", "signing-keys")}
                assert "Demo User" in page.inner_text("#welcome")
            finally:
                browser.close()

        jwks = requests.get(f"{issuer}/.well-known/jwks.json", timeout=10).json()
    finally:
        stop_process_group(process)

    claims = shown["id-token-claims"]
    assert claims["iss"] == issuer and claims["email"] == "demo@example.com" and claims["name"] == "Demo User"
    assert shown["access-token-header"]["typ"] == "at+jwt"
    access = shown["access-token-claims"]
    assert access["iss"] == issuer and access["sub"] == claims["sub"] and access["client_id"] == claims["aud"]
    # The keys shown are the published keys that signed the two tokens.
    shown_kids = {key["kid"] for key in shown["signing-keys"]}
    assert {shown["id-token-header"]["kid"], shown["access-token-header"]["kid"]} == shown_kids
    published = {key["kid"]: key for key in jwks["keys"]}
    assert all(published[key["kid"]] == key for key in shown["signing-keys"])
    log = output.read_text()
    assert "Traceback" not in log and password not in log.split("Demo user:")[1].split("\n", 1)[1]
