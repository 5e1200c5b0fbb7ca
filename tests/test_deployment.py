"""Production-shaped runs: gunicorn on loopback, nginx with TLS in front,
PostgreSQL going away and coming back, two instances on one token."""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from serving import Gunicorn, free_port
from support import json_lines, missing
from tls_proxy import proxy_env, tls_proxy

pytestmark = pytest.mark.e2e


def _get(url: str, *, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
         timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()




# -- PostgreSQL stopped under a running instance ---------------------------------


@pytest.fixture
def private_postgres():
    from private_postgres import PrivatePostgres

    try:
        server = PrivatePostgres(free_port())
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        missing(f"a private PostgreSQL server ({exc})")
    server.start()
    yield server
    server.destroy()


def test_ready_turns_503_when_postgres_stops_and_recovers_by_itself(private_postgres, system_secret, admin_key, tmp_path):
    env = {"DATABASE_URL": private_postgres.url, "SECRETS_SYSTEM": system_secret, "ADMIN_API_KEYS": admin_key,
           "METRICS_BIND": ""}
    server = Gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log")
    auth = {"Authorization": f"Bearer {admin_key}"}
    try:
        server.wait_ready("/health/ready")
        assert _get(server.url + "/admin/keys", headers=auth)[0] == 200

        private_postgres.stop()
        status, _, body = _get(server.url + "/health/ready")
        assert status == 503
        document = json.loads(body)
        assert document["status"] == "unavailable"
        assert document["checks"]["database"]["reason"] == "database_unreachable"
        # A request that needs the database fails clearly, not with a trace.
        status, headers, body = _get(server.url + "/admin/keys", headers=auth)
        assert status == 503
        assert json.loads(body)["error"] == "temporarily_unavailable"
        assert headers.get("Retry-After")
        assert b"Traceback" not in body
        # Public keys are still served from memory.
        assert _get(server.url + "/.well-known/jwks.json")[0] == 200

        private_postgres.start()
        deadline = time.monotonic() + 30
        while _get(server.url + "/health/ready")[0] != 200:
            assert time.monotonic() < deadline, "did not recover after PostgreSQL came back"
            time.sleep(0.2)
        assert _get(server.url + "/admin/keys", headers=auth)[0] == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_an_idle_connection_is_pinged_and_replaced_after_a_restart_a_busy_one_is_not(private_postgres):
    """oidc.db.ping_idle_connections: no round trip per checkout, yet a restart while idle costs nothing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from oidc.db import ping_idle_connections

    def restart_after_use(engine: Any) -> None:
        with engine.connect() as connection:  # one pooled connection, then back to the pool
            assert connection.execute(text("SELECT 1")).scalar() == 1
        private_postgres.stop()
        private_postgres.start()
        time.sleep(0.3)

    idle = create_engine(private_postgres.url, pool_size=1)
    ping_idle_connections(idle, idle_seconds=0.2)
    restart_after_use(idle)
    with idle.connect() as connection:  # idle past the threshold: pinged, found dead, replaced
        assert connection.execute(text("SELECT 1")).scalar() == 1
    idle.dispose()

    busy = create_engine(private_postgres.url, pool_size=1)
    ping_idle_connections(busy, idle_seconds=3600)
    restart_after_use(busy)
    with pytest.raises(OperationalError), busy.connect() as connection:  # not pinged: this use fails...
        connection.execute(text("SELECT 1"))
    with busy.connect() as connection:  # ...and the pool, invalidated, reconnects for the next
        assert connection.execute(text("SELECT 1")).scalar() == 1
    busy.dispose()


# -- graceful reload and a killed worker under load -------------------------------------


class Load:
    """Bounded loopback load: a few threads making requests until stopped (at most 60 s)."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status = _get(self.url, timeout=10)[0]
                outcome = None if status == 200 else f"HTTP {status}"
            # An answer cut off mid-body by the killed worker is IncompleteRead (an HTTPException, not an
            # OSError): counted as that request's failure, and the thread goes on loading.
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def _workers(master: int) -> list[int]:
    output = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(pid) for pid in output.split()]


def _wait_for_workers(master: int, count: int, exclude: frozenset[int] | set[int] = frozenset(),
                      timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [pid for pid in _workers(master) if pid not in exclude]
        if len(workers) >= count:
            return workers
        time.sleep(0.1)
    raise TimeoutError(f"expected {count} workers of {master}")


# gunicorn's process handling does not depend on the database: one is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigkilled_worker_and_graceful_reload_lose_only_in_flight_requests(hsm_env, tmp_path):
    server = Gunicorn({**hsm_env, "METRICS_BIND": ""}, workers=2, log_path=tmp_path / "gunicorn.log")
    try:
        server.wait_ready()
        master = server.process.pid
        workers = _wait_for_workers(master, 2)
        with Load(server.url + "/health/ready") as load:
            time.sleep(1.5)
            os.kill(workers[0], signal.SIGKILL)
            time.sleep(1.5)
            killed_failures = len(load.failures)
            _wait_for_workers(master, 2, exclude={workers[0]})
            os.kill(master, signal.SIGHUP)  # graceful reload: new workers, old ones finish
            time.sleep(3)
            _wait_for_workers(master, 2, exclude=set(workers))
            time.sleep(1)
        assert load.ok > 50
        # A sync worker has at most one request in flight: killing it may fail that one.
        assert killed_failures <= 1, load.failures
        assert len(load.failures) == killed_failures, load.failures
        assert _get(server.url + "/health/ready")[0] == 200
    finally:
        server.stop()


# -- two instances, one PostgreSQL, one token --------------------------------------------


# Several hosts share PostgreSQL, never an SQLite file.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_instances_on_one_database_and_token_provision_once(hsm_env, softhsm, token, tmp_path):
    env = {**hsm_env, "METRICS_BIND": ""}
    first = Gunicorn(env, workers=2, log_path=tmp_path / "a.log")
    second = Gunicorn(env, workers=2, log_path=tmp_path / "b.log")
    try:
        first.wait_ready("/health/ready")
        second.wait_ready("/health/ready")
        jwks_a = json.loads(_get(first.url + "/.well-known/jwks.json")[2])
        jwks_b = json.loads(_get(second.url + "/.well-known/jwks.json")[2])
    finally:
        first.stop()
        second.stop()
    assert jwks_a == jwks_b and len(jwks_a["keys"]) == 2
    private = [o for o in softhsm.list_objects(token) if o["kind"] == "Private Key Object"]
    assert sorted(o["label"] for o in private) == ["jwt.access-token", "openid.id-token"]


# -- behind nginx terminating TLS ---------------------------------------------------------


# The proxy's handling does not depend on the database: one is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_behind_nginx_with_tls(base_env, tmp_path):
    proxy_port = free_port()
    issuer = f"https://localhost:{proxy_port}"
    env = {**base_env, **proxy_env(issuer), "METRICS_BIND": ""}
    server = Gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log")
    server.wait_ready()
    proxy = tls_proxy(tmp_path / "nginx", proxy_port, server.port, wait_for="/.well-known/openid-configuration")
    try:
        certificate = proxy.__enter__()
        context = ssl.create_default_context(cafile=str(certificate.cert))
        status, _headers, body = _get(issuer + "/.well-known/openid-configuration", context=context)
        assert status == 200
        document = json.loads(body)
        assert document["issuer"] == issuer
        assert document["jwks_uri"] == issuer + "/.well-known/jwks.json"
        assert _get(document["jwks_uri"], context=context)[0] == 200

        # A client's own forwarded headers are replaced by the proxy's...
        _get(issuer + "/health/alive", context=context,
             headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "203.0.113.9"})
        # ...and sent straight to the app (not from the proxy) they are ignored.
        _get(server.url + "/health/alive", headers={"X-Forwarded-For": "198.51.100.7",
                                                    "X-Forwarded-Proto": "https"})
        document = json.loads(_get(issuer + "/.well-known/openid-configuration", context=context,
                                   headers={"X-Forwarded-Host": "evil.example"})[2])
        assert document["issuer"] == issuer
    finally:
        proxy.__exit__(None, None, None)
        server.stop()
    access = [line for line in json_lines(server.log()) if line.get("logger") == "oidc.access"]
    alive = [line for line in access if line.get("path") == "/health/alive"]
    # Through the proxy: the client's address is the proxy's X-Forwarded-For entry (one hop trusted).
    assert alive[0]["remote_addr"] == "127.0.0.1"
    # Direct: the spoofed X-Forwarded-For was dropped.
    assert alive[1]["remote_addr"] == "127.0.0.1"
    assert "198.51.100.7" not in server.log() and "evil.example" not in server.log()


_ACTION = re.compile(r'<form[^>]*\saction="([^"]*)"')


def _relative_or_under(url: str, *prefixes: str) -> bool:
    """A same-origin relative reference (``/path``), or a URL under one of ``prefixes``."""
    url = html.unescape(url)
    if url.startswith("/") and not url.startswith("//"):
        return True
    return any(url == prefix or url.startswith(prefix.rstrip("/") + "/") or url.startswith(prefix + "?")
               for prefix in prefixes)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_pages_redirects_form_post_and_cookies_through_nginx(make_app, base_env, tmp_path):
    """The whole browser flow through the TLS proxy: every URL the browser is sent to is the
    issuer's or the client's registered one, the session cookie is Secure, HttpOnly and
    SameSite=Lax; a forwarded host sent straight to gunicorn changes nothing."""
    from live_flows import UserAgent, redeem, register
    from oidc_fixtures import hidden_fields, jwt_parts

    callback = "https://rp.example.test/callback"
    proxy_port = free_port()
    issuer = f"https://localhost:{proxy_port}"
    env = {**base_env, **proxy_env(issuer), "METRICS_BIND": "", "LOG_FORMAT": "json"}
    client = register(make_app, env, redirect_uris=[callback])
    server = Gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log")
    server.wait_ready()
    proxy = tls_proxy(tmp_path / "nginx", proxy_port, server.port, wait_for="/.well-known/openid-configuration")
    try:
        ca_file = proxy.__enter__().cert
        context = ssl.create_default_context(cafile=str(ca_file))
        status, _, body = _get(issuer + "/.well-known/openid-configuration", context=context)
        assert status == 200
        discovery = json.loads(body)
        assert discovery["issuer"] == issuer
        urls = {name: value for name, value in discovery.items()
                if name.endswith(("_endpoint", "_uri")) and isinstance(value, str)}
        assert {"authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"} <= set(urls)
        assert all(value.startswith(issuer + "/") for value in urls.values()), urls

        # A browser through the proxy: login, consent, back to the client.
        browser = UserAgent(issuer, verify=str(ca_file))
        flow = browser.code(client[0], callback)
        assert flow["location"].startswith(callback + "?")
        for response in browser.history:
            if "Location" in response.headers:
                assert _relative_or_under(response.headers["Location"], issuer, callback), response.headers
            for action in _ACTION.findall(response.text):
                assert _relative_or_under(action, issuer), action
        assert any('action="/login"' in response.text for response in browser.history)
        assert any('action="/authorize/consent"' in response.text for response in browser.history)
        session_cookies = [header for response in browser.history for header in browser.set_cookie_headers(response)
                           if header.startswith("__Host-op_session=") and "1970" not in header]
        assert session_cookies  # over https the cookie has the __Host- prefix (RFC 6265bis §4.1.3.2)
        for header in session_cookies:
            flags = {part.strip().lower() for part in header.split(";")[1:]}
            assert {"secure", "httponly", "samesite=lax", "path=/"} <= flags, header
            assert not any(flag.startswith("domain=") for flag in flags), header
        tokens = redeem(issuer, client, flow, callback, verify=str(ca_file))
        assert tokens.status_code == 200, tokens.text
        assert jwt_parts(tokens.json()["id_token"])[1]["iss"] == issuer

        # response_mode=form_post: the page posts to the registered redirect URI.
        params = {"response_type": "code", "client_id": client[0], "redirect_uri": callback, "scope": "openid",
                  "state": "fp-state", "response_mode": "form_post", "code_challenge": "E" * 43,
                  "code_challenge_method": "S256"}
        page = browser.authorize(params, callback=callback)
        assert page.status_code == 200, page.text[:300]
        assert [html.unescape(action) for action in _ACTION.findall(page.text)] == [callback]
        fields = dict(hidden_fields(page.text))
        assert fields["state"] == "fp-state" and fields["iss"] == issuer and fields["code"]

        # Straight to gunicorn (not from the proxy), with forwarded headers of the client's choosing.
        spoofed = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
                   "X-Forwarded-Port": "666", "X-Forwarded-Prefix": "/evil"}
        direct = UserAgent(server.url, headers=spoofed)
        direct.cookies = dict(browser.cookies)  # the signed-in session, replayed over plain http
        seen = [direct.get("/.well-known/openid-configuration"), direct.get("/login"),
                direct.get("/authorize?" + urllib.parse.urlencode({**params, "response_mode": "query"})),
                direct.get("/authorize?" + urllib.parse.urlencode(params)),
                direct.get("/authorize?" + urllib.parse.urlencode({**params, "prompt": "login"}))]
        assert json.loads(seen[0].text)["issuer"] == issuer
        assert seen[2].status_code == 302 and seen[2].headers["Location"].startswith(callback + "?")
        assert seen[4].status_code == 302 and seen[4].headers["Location"].startswith("/login?")
        anonymous = UserAgent(server.url, headers=spoofed)
        seen.append(anonymous.get("/authorize?" + urllib.parse.urlencode(params)))
        assert seen[-1].headers["Location"].startswith("/login?")
        for response in seen:
            shown = " ".join([response.text, response.headers.get("Location", ""),
                              *direct.set_cookie_headers(response)])
            for trace in ("evil.example", ":666", '"/evil', "/evil/", "http://localhost"):
                assert trace not in shown, (trace, response.url)
    finally:
        proxy.__exit__(None, None, None)
        server.stop()
    assert "evil.example" not in server.log()
