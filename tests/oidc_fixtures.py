"""Fixtures and a small browser-less user agent for the OpenID Connect tests.

Load with ``pytest_plugins = ["oidc_fixtures"]``.  ``op`` is a provider on the
parametrized test database (SQLite and PostgreSQL) with software keys;
``hsm_op`` the same with keys on a fresh SoftHSM2 token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.datastructures import MultiDict

from support import stop_process_group

if TYPE_CHECKING:
    from oidc.models import Client, User

ISSUER = "https://op.example.test"
REDIRECT_URI = "https://rp.example.test/callback"
PASSWORD = "correct horse battery staple"

_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*>')
_ATTR = re.compile(r'(name|value)="([^"]*)"')


def registered_client(client_id: str) -> Client:
    """The client ``client_id``, enabled or not, which the test registered (in an app context)."""
    from oidc.accounts.clients import get_client

    client = get_client(client_id)
    assert client is not None, client_id
    return client


def registered_user(username: str) -> User:
    """The user ``username``, which the test added (in an app context)."""
    from oidc.accounts.users import get_user

    user = get_user(username)
    assert user is not None, username
    return user


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """(name, value) of every hidden input of an HTML page, unescaped."""
    fields = []
    for tag in _HIDDEN.findall(page):
        attrs = dict(_ATTR.findall(tag))
        if "name" in attrs:
            fields.append((attrs["name"], html.unescape(attrs.get("value", ""))))
    return fields


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def b64d(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(b64d(header)), json.loads(b64d(payload))


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


class Provider:
    """The app under test and a cookie-keeping test client talking to it."""

    def __init__(self, app: Any) -> None:
        from oidc.state import state_of

        self.app = app
        self.http = app.test_client()
        #: The app's clock: ``provider.clock.advance(seconds)`` moves time for the whole provider.
        self.clock = state_of(app).clock
        state_of(app).key_service()

    # -- plumbing -------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(path, base_url=ISSUER, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        # A browser on one of our pages sends its same-origin Referer (Referrer-Policy: same-origin),
        # which the CSRF check requires over HTTPS (WTF_CSRF_SSL_STRICT).
        from oidc.state import state_of

        referer = ("Referer", state_of(self.app).settings.issuer + "/")
        given = kwargs.pop("headers", {})
        if isinstance(given, dict):
            headers: Any = {referer[0]: referer[1], **given}
        else:  # a list of (name, value): a header sent twice
            headers = [referer, *given] if all(name != "Referer" for name, _ in given) else list(given)
        return self.http.post(path, base_url=ISSUER, headers=headers, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.http.delete(path, base_url=ISSUER, **kwargs)

    def new_browser(self) -> Provider:
        """Another user agent (its own cookies) on the same app."""
        other = Provider.__new__(Provider)
        other.app = self.app
        other.http = self.app.test_client()
        other.clock = self.clock
        return other

    def count(self, model_name: str) -> int:
        from oidc import models

        with self.app.app_context():
            return getattr(models, model_name).query.count()

    def checked_out_connections(self) -> int:
        """Connections of the app's pool checked out now (a request that ended must have given its back)."""
        from sqlalchemy import QueuePool

        from oidc.db import db

        with self.app.app_context():
            pool = db.engine.pool
            assert isinstance(pool, QueuePool)
            return pool.checkedout()

    # -- registration ----------------------------------------------------------------------

    def add_user(self, username: str = "alice", password: str = PASSWORD, **kwargs: Any) -> Any:
        from oidc.accounts.users import create_user

        kwargs.setdefault("email", f"{username}@example.test")
        kwargs.setdefault("name", username.title())
        with self.app.app_context():
            user = create_user(username, password, **kwargs)
            return user.subject

    def add_client(self, **kwargs: Any) -> tuple[str, str | None]:
        from oidc.accounts.clients import create_client

        kwargs.setdefault("name", "Example RP")
        if "authorization_code" in kwargs.get("grant_types", ["authorization_code"]):
            kwargs.setdefault("redirect_uris", [REDIRECT_URI])
        with self.app.app_context():
            client, secret = create_client(**kwargs)
            return client.client_id, secret

    # -- the browser side ----------------------------------------------------------------------

    def login(self, username: str = "alice", password: str = PASSWORD, login_url: str = "/login") -> Any:
        """Sign in on the login page at ``login_url`` (an interaction's, or the page visited directly)."""
        page = self.get(login_url)
        fields = dict(hidden_fields(page.text))
        return self.post("/login", data={**fields, "username": username, "password": password})

    def authorize(self, params: dict[str, Any], *, username: str = "alice", password: str = PASSWORD,
                  consent: str | None = "approve") -> Any:
        """Run /authorize like a browser: log in if asked, answer the consent page; the last response."""
        response = self.get("/authorize", query_string=params)
        for _ in range(6):
            if response.status_code in (302, 303) and response.headers["Location"].startswith("/login"):
                response = self.login(username, password, login_url=response.headers["Location"])
            elif response.status_code in (302, 303) and response.headers["Location"].startswith("/authorize"):
                response = self.get(response.headers["Location"])
            elif response.status_code == 200 and 'action="/authorize/consent"' in response.text and consent:
                data = MultiDict(hidden_fields(response.text))
                data.add("decision", consent)
                response = self.post("/authorize/consent", data=data)
            else:
                return response
        return response

    def code_flow(self, client_id: str, *, scope: str = "openid profile email offline_access",
                  extra: dict[str, Any] | None = None, pkce: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Authorize and return {'code', 'state', 'verifier', 'nonce', 'location'}."""
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": scope,
                  "state": state, "nonce": nonce}
        if pkce:
            params.update(code_challenge=challenge, code_challenge_method="S256")
        params.update(extra or {})
        response = self.authorize(params, **kwargs)
        assert response.status_code == 302, response.text[:500]
        location = response.headers["Location"]
        query = query_of(location)
        assert location.startswith(params["redirect_uri"] + "?"), location
        return {"code": query["code"][0], "state": query["state"][0], "verifier": verifier, "nonce": nonce,
                "location": location}

    def redeem(self, client_id: str, secret: str | None, flow: dict[str, Any], **extra: Any) -> Any:
        data = {"grant_type": "authorization_code", "code": flow["code"], "redirect_uri": REDIRECT_URI,
                "code_verifier": flow["verifier"], **extra}
        data = {key: value for key, value in data.items() if value is not None}
        if secret is None:
            data["client_id"] = client_id
            return self.post("/token", data=data)
        return self.post("/token", data=data, auth=(client_id, secret))

    def tokens(self, client_id: str, secret: str | None, **kwargs: Any) -> dict[str, Any]:
        flow = self.code_flow(client_id, **kwargs)
        response = self.redeem(client_id, secret, flow)
        assert response.status_code == 200, response.json
        return {**response.json, "_flow": flow}

    def jwks(self) -> dict[str, Any]:
        return self.get("/.well-known/jwks.json").json


@pytest.fixture
def op(make_app: Any, provisioned_database_url: str, system_secret: str, admin_key: str) -> Provider:
    """A provider with software keys (provisioned once per session) on the test database."""
    from conftest import software_env

    return Provider(make_app(software_env(provisioned_database_url, system_secret, admin_key)))


@pytest.fixture
def hsm_op(make_app: Any, hsm_env: dict[str, str]) -> Iterator[Provider]:
    yield Provider(make_app(hsm_env))


def verify_jws(jwks: dict[str, Any], token: str) -> dict[str, Any]:
    """Verify a JWS against a published JWK Set with ``cryptography`` (tests/jose_helpers.py)."""
    from jose_helpers import verify

    header, claims = jwt_parts(token)
    jwk = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    signing_input, _, signature = token.rpartition(".")
    verify(jwk, header["alg"], signing_input.encode(), b64d(signature))
    return claims


# -- the provider under gunicorn ----------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_with_gunicorn(make_app: Any, base_env: dict[str, str], tmp_path: Path, *, tls: bool = False,
                        client_certificates: bool = False, **client: Any) -> Iterator[dict[str, Any]]:
    """The provider under gunicorn (2 workers) on a free loopback port, with user alice and one client.

    With ``tls``, as deployed: nginx terminates TLS in front of it (tests/tls_proxy.py), the issuer
    is ``https://127.0.0.1:PORT``, one proxy hop is trusted, and the cookie is ``__Host-`` and Secure.
    With ``client_certificates`` too, nginx asks clients for TLS client certificates and forwards them
    (RFC 8705; the provider's CLIENT_CERT_HEADER is set, ``base_env`` may add MTLS_CA_FILE).
    Yields {"issuer", "client_id", "client_secret", "verify" (for requests), "certificate" (the
    proxy's, or None), "chromium_args", "env", "upstream" (gunicorn's own URL)}; everything is stopped on exit.
    """
    import requests

    from tls_proxy import CLIENT_CERT_ENV, chromium_args, proxy_env, throwaway_certificate, tls_proxy

    port = free_port()
    proxy_port = free_port() if tls else None
    issuer = f"https://127.0.0.1:{proxy_port}" if tls else f"http://127.0.0.1:{port}"
    env = {**base_env, "OIDC_ISSUER": issuer, "ACCESS_TOKEN_DEFAULT_AUDIENCE": "https://api.example.test",
           **(proxy_env(issuer) if tls else {}), **(CLIENT_CERT_ENV if client_certificates else {})}
    provider = Provider(make_app(env))  # migrates and provisions the keys
    provider.add_user()
    client_id, secret = provider.add_client(**client)
    process_env = {**os.environ, **env, "BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2", "METRICS_BIND": "",
                   "LOG_FORMAT": "text", "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log, contextlib.ExitStack() as stack:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                   cwd=REPO, env=process_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        stack.callback(stop_process_group, process, timeout=20)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        served: dict[str, Any] = {"issuer": issuer, "client_id": client_id, "client_secret": secret, "verify": True,
                  "certificate": None, "chromium_args": chromium_args(), "env": env,
                  "upstream": f"http://127.0.0.1:{port}"}
        if proxy_port is not None:
            certificate = stack.enter_context(tls_proxy(tmp_path / "nginx", proxy_port, port,
                                                        throwaway_certificate(tmp_path),
                                                        wait_for="/.well-known/openid-configuration",
                                                        client_certificates=client_certificates))
            served.update(verify=str(certificate.cert), certificate=certificate,
                          chromium_args=chromium_args(certificate))
        yield served
