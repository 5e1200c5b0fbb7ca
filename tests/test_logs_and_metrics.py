"""What the provider tells its operator, under gunicorn: JSON logs and Prometheus metrics.

* Every flow (failed login, login, consent, code exchange, refresh,
  client_credentials, introspection, revocation, userinfo, logout, admin key
  generation) is run with JSON logs at DEBUG level; the captured output holds
  none of the secrets used, and holds the audit events (identifiers only).
* The metrics listener (``METRICS_BIND``) aggregates both workers: tokens
  issued by grant and client, token endpoint latency, signing latency by key
  set and backend, failed logins.  The provider's own port has no /metrics.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
import requests

from live_flows import UserAgent, add_client, introspect, redeem, refresh, register
from oidc_fixtures import PASSWORD, jwt_parts
from serving import Gunicorn, free_port
from support import json_lines

CALLBACK = "http://127.0.0.1:9/callback"
LOGGED_OUT = "http://127.0.0.1:9/logged-out"

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def _serve(make_app: Any, env: dict[str, str], tmp_path: Any, **extra: str) -> tuple[Gunicorn, dict[str, Any]]:
    port = free_port()
    env = {**env, "OIDC_ISSUER": f"http://127.0.0.1:{port}", "METRICS_BIND": "", **extra}
    client = register(make_app, env, redirect_uris=[CALLBACK], post_logout_redirect_uris=[LOGGED_OUT])
    service = add_client(make_app, env, grant_types=["client_credentials"], scope="api.read")
    server = Gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log", port=port)
    return server, {"client": client, "service": service, "env": env}




def _full_flows(url: str, setup: dict[str, Any]) -> dict[str, str]:
    """Every flow once; returns every secret used or obtained, by name."""
    client, service = setup["client"], setup["service"]
    admin_key = setup["env"]["ADMIN_API_KEYS"]
    used: dict[str, str] = {"password": PASSWORD, "client secret": client[1], "service client secret": service[1],
                            "system secret": setup["env"]["SECRETS_SYSTEM"], "admin api key": admin_key}
    if setup["env"].get("HSM_PIN"):
        used["hsm pin"] = setup["env"]["HSM_PIN"]
    browser = UserAgent(url)
    assert browser.login(password="not the password at all").status_code == 401

    flow = browser.code(client[0], CALLBACK)  # login + consent
    used |= {"authorization code": flow["code"], "pkce verifier": flow["verifier"],
             "session cookie": browser.cookies["op_session"]}
    tokens = redeem(url, client, flow, CALLBACK).json()
    used |= {"access token": tokens["access_token"], "refresh token": tokens["refresh_token"],
             "id token": tokens["id_token"]}

    refreshed = refresh(url, client, tokens["refresh_token"]).json()
    used |= {"refreshed access token": refreshed["access_token"],
             "refreshed refresh token": refreshed["refresh_token"], "refreshed id token": refreshed["id_token"]}

    userinfo = requests.get(url + "/userinfo", headers={"Authorization": f"Bearer {refreshed['access_token']}"},
                            timeout=10)
    assert userinfo.status_code == 200 and userinfo.json()["sub"]

    machine = requests.post(url + "/token", data={"grant_type": "client_credentials"}, auth=service, timeout=10)
    assert machine.status_code == 200, machine.text
    used["client_credentials access token"] = machine.json()["access_token"]

    assert introspect(url, client, refreshed["access_token"])["active"] is True
    assert introspect(url, client, refreshed["refresh_token"])["active"] is True
    assert introspect(url, service, machine.json()["access_token"])["active"] is True
    revoked = requests.post(url + "/revoke", data={"token": refreshed["refresh_token"],
                                                   "token_type_hint": "refresh_token"}, auth=client, timeout=10)
    assert revoked.status_code == 200
    assert introspect(url, client, refreshed["access_token"])["active"] is False

    generated = requests.post(url + "/admin/keys/jwt.access-token", json={"alg": "ES256"},
                              headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    assert generated.status_code == 201, generated.text

    logout = browser.get("/logout?" + urllib.parse.urlencode({
        "id_token_hint": refreshed["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "bye"}))
    assert logout.status_code == 303 and logout.headers["Location"].startswith(LOGGED_OUT)
    return used


def test_full_flows_log_audit_events_and_no_secret(make_app, hsm_env, tmp_path):
    _check_full_flow_logs(make_app, hsm_env, tmp_path)


def test_full_flows_log_no_secret_with_software_keys(make_app, base_env, tmp_path):
    """The same with software keys only, so it runs (and can fail) where SoftHSM is missing:
    no password, client secret, code, token or system secret in the logs (RFC 6749 §10.3, §10.5)."""
    _check_full_flow_logs(make_app, base_env, tmp_path)


def _check_full_flow_logs(make_app: Any, env: dict[str, str], tmp_path: Any) -> None:
    server, setup = _serve(make_app, env, tmp_path, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    try:
        server.wait_ready("/health/ready")
        used = _full_flows(server.url, setup)
        jwks = requests.get(server.url + "/.well-known/jwks.json", timeout=10).json()
    finally:
        server.stop()
    log = server.log()

    # No secret, in whole or (for JWTs) its signature or claims, anywhere in the output.
    leaked = []
    for name, value in used.items():
        assert value and len(value) >= 12, name
        pieces = [value] + (value.split(".")[1:] if value.count(".") == 2 else [])
        leaked += [name for piece in pieces if piece in log]
    assert not leaked, f"found in the logs: {sorted(set(leaked))}"

    lines = json_lines(log)
    assert len(lines) > 20 and all(isinstance(line.get("logger"), str) for line in lines)
    audit = [line for line in lines if line["logger"] == "oidc.audit"]
    events = {line["event"] for line in audit}
    assert {"login.failed", "login.succeeded", "consent.granted", "token.issued", "key.generated",
            "logout"} <= events, events
    client_id, service_id = setup["client"][0], setup["service"][0]
    _, id_claims = jwt_parts(used["id token"])
    login = next(line for line in audit if line["event"] == "login.succeeded")
    assert login["sub"] == id_claims["sub"]
    consent = next(line for line in audit if line["event"] == "consent.granted")
    assert consent["client_id"] == client_id and consent["sub"] == id_claims["sub"]
    assert set(consent["scope"].split()) == {"openid", "profile", "email", "offline_access"}

    kids = {key["kid"] for key in jwks["keys"]}
    issued = {line["grant_type"]: line for line in audit if line["event"] == "token.issued"}
    assert set(issued) == {"authorization_code", "refresh_token", "client_credentials"}
    for grant in ("authorization_code", "refresh_token"):
        assert issued[grant]["client_id"] == client_id and issued[grant]["sub"] == id_claims["sub"]
        assert issued[grant]["kid"] in kids and issued[grant]["id_token_kid"] in kids
        assert issued[grant]["refresh_token"] is True
    assert issued["client_credentials"]["client_id"] == service_id
    assert issued["client_credentials"]["sub"] == service_id
    assert issued["client_credentials"]["kid"] in kids and issued["client_credentials"]["refresh_token"] is False

    # The access log has every request, by path only (a query string can carry an id_token_hint).
    access = [line for line in lines if line["logger"] == "oidc.access"]
    paths = {line["path"] for line in access}
    assert {"/login", "/authorize", "/authorize/consent", "/token", "/userinfo", "/introspect", "/revoke",
            "/logout", "/admin/keys/jwt.access-token"} <= paths
    assert not any("?" in line["path"] for line in access)


# -- metrics -----------------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def test_metrics_listener_counts_tokens_signatures_and_failed_logins(make_app, hsm_env, tmp_path):
    metrics_port = free_port()
    server, setup = _serve(make_app, hsm_env, tmp_path, METRICS_BIND=f"127.0.0.1:{metrics_port}")
    client, service = setup["client"], setup["service"]
    try:
        server.wait_ready("/health/ready")
        browser = UserAgent(server.url)
        for _ in range(2):
            assert browser.login(password="wrong password, twice").status_code == 401
        tokens = redeem(server.url, client, browser.code(client[0], CALLBACK), CALLBACK).json()
        assert refresh(server.url, client, tokens["refresh_token"]).status_code == 200
        for _ in range(3):
            response = requests.post(server.url + "/token", data={"grant_type": "client_credentials"},
                                     auth=service, timeout=10)
            assert response.status_code == 200
        bad = requests.post(server.url + "/token", data={"grant_type": "client_credentials"},
                            auth=(service[0], "wrong secret"), timeout=10)
        assert bad.status_code == 401

        # Not on the provider's own port.
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            samples = _samples(response.read().decode())
    finally:
        server.stop()

    issued = "oidc_tokens_issued_total"
    assert _value(samples, issued, grant_type="authorization_code", client_id=client[0]) == 1
    assert _value(samples, issued, grant_type="refresh_token", client_id=client[0]) == 1
    assert _value(samples, issued, grant_type="client_credentials", client_id=service[0]) == 3
    assert _value(samples, issued) == 5

    latency = "oidc_token_request_duration_seconds_count"
    assert _value(samples, latency, grant_type="authorization_code", status="200") == 1
    assert _value(samples, latency, grant_type="refresh_token", status="200") == 1
    assert _value(samples, latency, grant_type="client_credentials", status="200") == 3
    assert _value(samples, latency, grant_type="client_credentials", status="401") == 1
    assert _value(samples, "oidc_token_request_duration_seconds_bucket", le="+Inf") == 6

    # One signature per token, plus each worker's start-up self-test (2 workers, one per set).
    signed = "oidc_signing_duration_seconds_count"
    assert _value(samples, signed, key_set="openid.id-token", backend="hsm") == 2 + 2
    assert _value(samples, signed, key_set="jwt.access-token", backend="hsm") == 5 + 2
    assert _value(samples, signed, backend="software") == 0
    assert _value(samples, "oidc_signing_duration_seconds_sum", backend="hsm") > 0

    assert _value(samples, "oidc_login_failures_total", reason="invalid_credentials") == 2
    assert _value(samples, "oidc_hsm_errors_total") == 0
    assert re.search(r"oidc_hsm_reconnects_total", "\n".join(name for name, _ in samples)) is not None


@pytest.mark.parametrize("level, logged", [("INFO", 1), ("WARNING", 0)])
def test_access_log_line_follows_the_log_level(make_app, base_env, caplog, level, logged):
    app = make_app({**base_env, "LOG_LEVEL": level})
    with caplog.at_level(level, logger="oidc.access"):
        assert app.test_client().get("/health/alive").status_code == 200
    lines = [record for record in caplog.records if record.name == "oidc.access"]
    assert len(lines) == logged
    if logged:
        assert (lines[0].method, lines[0].path, lines[0].status) == ("GET", "/health/alive", 200)


@pytest.mark.parametrize("keys", ["hsm", "software"])
def test_hsm_available_gauge_reports_the_workers_only(make_app, base_env, request, tmp_path, keys):
    """Under gunicorn (2 workers) the gauge is 1 while the HSM is healthy: the master, which never
    opens the HSM, exports no value of its own, nor does a worker without an HSM."""
    env = request.getfixturevalue("hsm_env") if keys == "hsm" else base_env
    metrics_port = free_port()
    server, _ = _serve(make_app, env, tmp_path, METRICS_BIND=f"127.0.0.1:{metrics_port}")
    try:
        server.wait_ready("/health/ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            samples = _samples(response.read().decode())
    finally:
        server.stop()
    available = {labels: value for (name, labels), value in samples.items() if name == "oidc_hsm_available"}
    assert available == ({(): 1.0} if keys == "hsm" else {}), available


def test_a_scrape_while_a_worker_creates_its_file_is_not_a_500(make_app, base_env, tmp_path):
    """prometheus-client creates a worker's sample file before it sizes it; a scrape in that moment
    read an empty file and failed as a whole (client_python issue 1199).  The empty file is skipped."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242424.db").write_bytes(b"")  # a worker caught between create and truncate
    metrics_port = free_port()
    server, _ = _serve(make_app, base_env, tmp_path, METRICS_BIND=f"127.0.0.1:{metrics_port}",
                       PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        server.wait_ready("/health/ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            samples = _samples(response.read().decode())
    finally:
        server.stop()
    assert any(name.startswith("oidc_") for name, _ in samples), samples  # the workers' samples, read
