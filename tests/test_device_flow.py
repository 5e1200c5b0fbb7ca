"""The Device Authorization Grant (RFC 8628) through the app: the endpoint, the page, polling.

Every test runs on SQLite and PostgreSQL: the decision and the redemption of a
device code are conditional UPDATEs whose effect is the database's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from oidc_fixtures import PASSWORD, Provider, hidden_fields, jwt_parts, verify_jws

pytest_plugins = ["oidc_fixtures"]
pytestmark = pytest.mark.both_databases

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


def device_client(op: Provider, **kwargs: Any) -> tuple[str, str | None]:
    kwargs.setdefault("name", "Living Room TV")
    kwargs.setdefault("auth_method", "none")
    kwargs.setdefault("grant_types", [GRANT, "refresh_token"])
    kwargs.setdefault("scope", "openid profile email offline_access")
    return op.add_client(**kwargs)


def start(op: Provider, client_id: str, secret: str | None = None, **data: Any) -> Any:
    data.setdefault("scope", "openid profile offline_access")
    if secret is None:
        return op.post("/device_authorization", data={"client_id": client_id, **data})
    return op.post("/device_authorization", data=data, auth=(client_id, secret))


def poll(op: Provider, client_id: str, device_code: str, secret: str | None = None) -> Any:
    data = {"grant_type": GRANT, "device_code": device_code}
    if secret is None:
        return op.post("/token", data={**data, "client_id": client_id})
    return op.post("/token", data=data, auth=(client_id, secret))


def enter_code(browser: Provider, user_code: str) -> Any:
    page = browser.get("/device")
    return browser.post("/device", data={**dict(hidden_fields(page.text)), "user_code": user_code})


def decide(browser: Provider, user_code: str, decision: str = "approve") -> Any:
    """Enter the code, sign in when asked, and answer the confirmation page; the last response."""
    response = enter_code(browser, user_code)
    assert response.status_code == 303 and response.headers["Location"].endswith("/device/confirm"), response.text
    response = browser.get("/device/confirm")
    if response.status_code == 302:
        assert response.headers["Location"] == "/login?device=1"
        response = browser.login(login_url=response.headers["Location"])
        assert response.status_code == 303 and response.headers["Location"].endswith("/device/confirm")
        response = browser.get("/device/confirm")
    assert response.status_code == 200, response.text
    assert 'action="/device/confirm"' in response.text
    return browser.post("/device/confirm", data={**dict(hidden_fields(response.text)), "decision": decision})


def test_a_device_signs_in_with_the_user_on_another_browser(op: Provider) -> None:
    op.add_user()
    client_id, _ = device_client(op)
    response = start(op, client_id)
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert set(body) == {"device_code", "user_code", "verification_uri", "verification_uri_complete",
                         "expires_in", "interval"}
    assert USER_CODE.match(body["user_code"])
    assert body["verification_uri"] == "https://op.example.test/device"
    assert body["verification_uri_complete"] == f"https://op.example.test/device?user_code={body['user_code']}"
    assert body["expires_in"] == 600 and body["interval"] == 5
    with op.app.app_context():
        from oidc.models import DeviceAuthorization

        row = DeviceAuthorization.query.one()
        assert body["device_code"] not in (row.device_code_hash, row.user_code_hash)  # stored hashed

    pending = poll(op, client_id, body["device_code"])
    assert (pending.status_code, pending.json["error"]) == (400, "authorization_pending")

    # The page: the code typed in lower case, with spaces instead of the dash.
    browser = op.new_browser()
    typed = body["user_code"].lower().replace("-", " ")
    page = browser.get("/device", query_string={"user_code": body["user_code"]})
    assert page.status_code == 200 and f'value="{body["user_code"]}"' in page.text
    response = enter_code(browser, typed)
    assert response.status_code == 303
    confirm = browser.get("/device/confirm")
    assert confirm.headers["Location"] == "/login?device=1"
    login_page = browser.get("/login?device=1")
    assert "Living Room TV" in login_page.text  # the login page names the application
    signed_in = browser.login(login_url="/login?device=1")
    assert signed_in.headers["Location"].endswith("/device/confirm")
    confirm = browser.get("/device/confirm")
    assert "Living Room TV" in confirm.text and body["user_code"] in confirm.text
    done = browser.post("/device/confirm", data={**dict(hidden_fields(confirm.text)), "decision": "approve"})
    assert done.status_code == 200 and "return to your device" in done.text

    op.clock.advance(5)
    tokens = poll(op, client_id, body["device_code"])
    assert tokens.status_code == 200, tokens.json
    assert tokens.headers["Cache-Control"] == "no-store"
    assert {"access_token", "id_token", "refresh_token", "token_type", "expires_in"} <= set(tokens.json)
    id_claims = verify_jws(op.jwks(), tokens.json["id_token"])
    assert id_claims["aud"] == client_id and id_claims["iss"] == "https://op.example.test"
    assert id_claims["preferred_username"] == "alice" and "nonce" not in id_claims and "sid" in id_claims
    access = verify_jws(op.jwks(), tokens.json["access_token"])
    assert access["client_id"] == client_id and access["scope"] == "openid profile offline_access"
    assert jwt_parts(tokens.json["access_token"])[0]["typ"] == "at+jwt"

    # Single use: the device code is spent; the refresh token works.
    again = poll(op, client_id, body["device_code"])
    assert (again.status_code, again.json["error"]) == (400, "invalid_grant")
    refreshed = op.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens.json["refresh_token"],
                                        "client_id": client_id})
    assert refreshed.status_code == 200, refreshed.json
    # The page cannot decide it again.
    assert enter_code(op.new_browser(), body["user_code"]).status_code == 400


def test_polling_too_fast_slows_the_device_down_and_the_interval_is_remembered(op: Provider) -> None:
    client_id, _ = device_client(op)
    device_code = start(op, client_id).json["device_code"]
    assert poll(op, client_id, device_code).json["error"] == "authorization_pending"
    assert poll(op, client_id, device_code).json["error"] == "slow_down"  # interval now 10 s
    op.clock.advance(5)
    assert poll(op, client_id, device_code).json["error"] == "slow_down"  # 15 s
    op.clock.advance(14)
    assert poll(op, client_id, device_code).json["error"] == "authorization_pending"
    op.clock.advance(9)
    assert poll(op, client_id, device_code).json["error"] == "slow_down"
    with op.app.app_context():
        from oidc.models import DeviceAuthorization

        assert DeviceAuthorization.query.one().poll_interval == 20


def test_a_denied_device_gets_access_denied(op: Provider) -> None:
    op.add_user()
    client_id, _ = device_client(op)
    body = start(op, client_id).json
    done = decide(op.new_browser(), body["user_code"], "deny")
    assert done.status_code == 200 and "You denied" in done.text
    denied = poll(op, client_id, body["device_code"])
    assert (denied.status_code, denied.json["error"]) == (400, "access_denied")


def test_a_device_approved_in_a_login_that_ended_gets_no_tokens(op: Provider) -> None:
    op.add_user()
    client_id, _ = device_client(op)
    body = start(op, client_id).json
    browser = op.new_browser()
    assert decide(browser, body["user_code"]).status_code == 200
    page = browser.get("/logout")
    signed_out = browser.post("/logout", data={**dict(hidden_fields(page.text)), "confirm": "yes"})
    assert signed_out.status_code == 200 and "signed out" in signed_out.text  # before the device polls
    refused = poll(op, client_id, body["device_code"])
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_grant"), refused.json


def test_an_expired_device_code_and_its_user_code(op: Provider) -> None:
    op.add_user()
    client_id, _ = device_client(op)
    body = start(op, client_id).json
    op.clock.advance(600)
    assert poll(op, client_id, body["device_code"]).json["error"] == "expired_token"
    page = enter_code(op.new_browser(), body["user_code"])
    assert page.status_code == 400 and "not valid or has expired" in page.text


def test_a_wrong_code_on_the_page_is_a_message_and_guessing_is_rate_limited(make_app: Any,
                                                                           provisioned_database_url: str,
                                                                           system_secret: str, admin_key: str) -> None:
    from conftest import software_env

    op = Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                            "DEVICE_USER_CODE_RATE_LIMIT": "3/minute"}))
    op.add_user()
    client_id, _ = device_client(op)
    body = start(op, client_id).json
    browser = op.new_browser()
    for wrong in ("BCDF-GHJK", "not a code", "x" * 100):
        page = enter_code(browser, wrong)
        assert page.status_code == 400 and 'role="alert"' in page.text and "not valid or has expired" in page.text
        assert 'aria-invalid="true"' in page.text
    limited = enter_code(browser, body["user_code"])  # even the right code, once the limit is reached
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    op.clock.advance(61)  # (the counters' window is in real time: the test's clock does not move it)


def test_the_endpoint_refuses_what_rfc_8628_and_6749_refuse(op: Provider) -> None:
    code_client, _ = op.add_client(auth_method="none")  # not registered for the device grant
    refused = start(op, code_client)
    assert (refused.status_code, refused.json["error"]) == (400, "unauthorized_client")
    confidential, secret = device_client(op, auth_method="client_secret_basic", grant_types=[GRANT])
    assert secret is not None
    wrong = start(op, confidential, "not-the-secret")
    assert (wrong.status_code, wrong.json["error"]) == (401, "invalid_client")
    ok = start(op, confidential, secret, scope="openid")
    assert ok.status_code == 200
    assert start(op, confidential, secret, scope="admin").json["error"] == "invalid_scope"
    assert op.post("/device_authorization", data="scope=openid",
                   content_type="application/json", auth=(confidential, secret)).json["error"] == "invalid_request"
    # Polling: another client's code, a missing code, an unknown one.
    other, _ = device_client(op)
    assert poll(op, other, ok.json["device_code"]).json["error"] == "invalid_grant"
    assert op.post("/token", data={"grant_type": GRANT, "client_id": other}).json["error"] == "invalid_request"
    assert poll(op, other, "nope").json["error"] == "invalid_grant"
    assert poll(op, code_client, "nope").json["error"] == "unauthorized_client"


def test_discovery_advertises_the_endpoint_and_the_grant(op: Provider) -> None:
    document = op.get("/.well-known/openid-configuration").json
    assert document["device_authorization_endpoint"] == "https://op.example.test/device_authorization"
    assert GRANT in document["grant_types_supported"]


def test_the_confirmation_answers_only_the_login_it_was_shown_to_and_only_from_our_page(op: Provider) -> None:
    op.add_user()
    op.add_user("bob")
    client_id, _ = device_client(op)
    body = start(op, client_id).json
    browser = op.new_browser()
    enter_code(browser, body["user_code"])
    browser.login(login_url="/login?device=1")
    confirm = browser.get("/device/confirm")
    fields = dict(hidden_fields(confirm.text))
    cross_site = browser.post("/device/confirm", data={**fields, "decision": "approve"},
                              headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 400
    browser.login("bob", PASSWORD)  # another login in the same browser since the page was shown
    switched = browser.post("/device/confirm", data={**fields, "decision": "approve"})
    assert switched.status_code == 400 and poll(op, client_id, body["device_code"]).json["error"] == "authorization_pending"


def test_a_form_too_large_is_the_413_page_on_the_device_and_login_pages(op: Provider) -> None:
    for path, field in (("/device", "user_code"), ("/login", "username")):
        response = op.post(path, data={field: "x" * 70_000})
        assert response.status_code == 413 and response.mimetype == "text/html", path
