"""The same-origin check of our forms, and the one referrer policy that makes browsers pass it.

A page that says ``<meta name="referrer" content="no-referrer">`` makes every
browser post its forms with ``Origin: null`` and no ``Referer`` (Fetch,
"append a request Origin header"), so over HTTPS nobody could sign in.  The
browser side of this is in tests/test_pages_browser.py (Chromium through the
TLS proxy); here each rule of :mod:`oidc.web.origin` on its own.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from oidc_fixtures import ISSUER, PASSWORD, Provider, hidden_fields

HTTP_ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def http_op(make_app: Any, provisioned_database_url: str, system_secret: str, admin_key: str) -> Provider:
    """A provider on a plain-http issuer (development)."""
    from conftest import software_env

    env = {**software_env(provisioned_database_url, system_secret, admin_key), "OIDC_ISSUER": HTTP_ISSUER}
    provider = Provider(make_app(env))
    provider.add_user()
    return provider


def _post_login(provider: Provider, issuer: str, headers: dict[str, str], password: str = PASSWORD) -> Any:
    page = provider.http.get("/login", base_url=issuer)
    fields = dict(hidden_fields(page.text))
    return provider.http.post("/login", base_url=issuer, headers=headers,
                              data={**fields, "username": "alice", "password": password})


def test_pages_state_one_referrer_policy_that_sends_our_origin(op: Provider) -> None:
    page = op.get("/login")
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert 'name="referrer"' not in page.text  # a <meta> would override the header (it did: no-referrer)


@pytest.mark.parametrize("headers, signed_in", [
    ({"Origin": ISSUER}, True),
    ({"Origin": "null", "Referer": ISSUER + "/login?interaction=x"}, True),
    ({"Referer": ISSUER + "/login"}, True),
    ({"Origin": "null"}, False),
    ({}, False),
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": "null", "Referer": "https://evil.example/login"}, False),
    ({"Origin": "null", "Referer": "http://[::1/login"}, False),
    ({"Origin": ISSUER.replace("https", "http")}, False),
])
def test_https_login_passes_only_from_our_origin(op: Provider, headers: dict[str, str], signed_in: bool) -> None:
    op.add_user()
    response = _post_login(op, ISSUER, headers)
    assert response.status_code == (200 if signed_in else 400)
    assert ("The form has expired" in response.text) is not signed_in


@pytest.mark.parametrize("headers, signed_in", [
    ({}, True),  # scripted clients on a development issuer send neither header
    ({"Origin": HTTP_ISSUER}, True),
    ({"Origin": "null", "Referer": HTTP_ISSUER + "/login"}, True),
    ({"Origin": "null"}, False),  # never on null alone: any sandboxed page of any site sends it
    ({"Origin": "http://evil.example"}, False),
])
def test_http_login_never_passes_on_a_null_origin_alone(http_op: Provider, headers: dict[str, str],
                                                        signed_in: bool) -> None:
    assert _post_login(http_op, HTTP_ISSUER, headers).status_code == (200 if signed_in else 400)


def test_a_refused_form_is_logged_on_one_line_without_secrets(op: Provider, caplog: pytest.LogCaptureFixture) -> None:
    op.add_user()
    with caplog.at_level(logging.WARNING, logger="oidc.web.origin"):
        response = _post_login(op, ISSUER, {"Origin": "null", "Referer": "https://evil.example/x?code=s3cr3t"})
    assert response.status_code == 400
    [record] = [record for record in caplog.records if record.name == "oidc.web.origin"]
    assert record.getMessage() == "form refused: Referer is another site's"
    assert record.referer_origin == "https://evil.example" and record.path == "/login"  # type: ignore[attr-defined]
    text = str(record.__dict__)
    assert "s3cr3t" not in text and PASSWORD not in text and "csrf" not in text.lower()


def test_an_expired_csrf_token_is_logged_with_its_reason(op: Provider, caplog: pytest.LogCaptureFixture) -> None:
    op.add_user()
    with caplog.at_level(logging.WARNING, logger="oidc.web.origin"):
        response = op.post("/login", data={"csrf_token": "forged", "username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert [r.getMessage() for r in caplog.records if r.name == "oidc.web.origin"] == [
        "form refused: The CSRF token is invalid."]


def test_the_expired_form_message_does_not_blame_the_password(op: Provider) -> None:
    op.add_user()
    expired = _post_login(op, ISSUER, {"Origin": "null"})
    assert "The form has expired. Please try again." in expired.text
    assert "aria-invalid" not in expired.text and "which one was wrong" not in expired.text
    wrong = _post_login(op, ISSUER, {"Origin": ISSUER}, password="wrong password")
    assert wrong.status_code == 401
    assert 'aria-invalid="true"' in wrong.text and "which one was wrong" in wrong.text


def test_consent_and_logout_forms_refuse_a_null_origin_alone(op: Provider) -> None:
    op.add_user()
    op.login()
    page = op.get("/logout")
    fields = dict(hidden_fields(page.text))
    refused = op.http.post("/logout", base_url=ISSUER, headers={"Origin": "null"}, data={**fields, "confirm": "yes"})
    assert refused.status_code == 200 and 'name="confirm"' in refused.text  # asked again, still signed in
    accepted = op.http.post("/logout", base_url=ISSUER, headers={"Origin": ISSUER}, data={**fields, "confirm": "yes"})
    assert accepted.status_code == 200 and 'name="confirm"' not in accepted.text
