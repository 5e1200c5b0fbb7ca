"""A browser-less user agent (``requests``) for the provider served on loopback.

It drives the real pages: the login form (with its CSRF token), the consent
form, and follows the provider's redirects until the one that leaves for the
client's redirect URI.  Cookies are kept by hand, so that a ``Secure`` cookie
set by an https issuer can still be replayed to the app over plain http (to
talk to gunicorn directly, behind the proxy's back); every response is kept in
``history`` for tests that inspect redirects, pages and ``Set-Cookie`` headers.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

from oidc_fixtures import PASSWORD, hidden_fields, pkce_pair

TIMEOUT = 20


def register(make_app: Any, env: dict[str, str], *, username: str = "alice", password: str = PASSWORD,
             **client: Any) -> tuple[str, str | None]:
    """Migrate the database of ``env``, add a user and one client; (client_id, secret).

    Touches no PKCS#11: the key service is not started in the test process.
    """
    from oidc.accounts.clients import create_client
    from oidc.accounts.users import create_user

    app = make_app(env)
    client.setdefault("name", "Example RP")
    with app.app_context():
        create_user(username, password, email=f"{username}@example.test", name=username.title())
        registered, secret = create_client(**client)
        return registered.client_id, secret


def add_client(make_app: Any, env: dict[str, str], **client: Any) -> tuple[str, str | None]:
    from oidc.accounts.clients import create_client

    app = make_app(env)
    client.setdefault("name", "Another client")
    with app.app_context():
        registered, secret = create_client(**client)
        return registered.client_id, secret


class UserAgent:
    """One browser: its cookies, the pages it saw, and the way through login and consent."""

    def __init__(self, base_url: str, *, verify: Any = True, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        self.headers = dict(headers or {})
        self.cookies: dict[str, str] = {}
        self.history: list[requests.Response] = []
        self.http = requests.Session()
        self.http.trust_env = False

    def set_cookie_headers(self, response: requests.Response) -> list[str]:
        return list(response.raw.headers.getlist("Set-Cookie")) if response.raw is not None else []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        url = urljoin(self.base_url + "/", url)
        self.http.cookies.clear()  # the cookie jar would drop Secure cookies on http: ours is the dict
        headers = kwargs.pop("headers", self.headers)
        response = self.http.request(method, url, cookies=dict(self.cookies), headers=headers,
                                     allow_redirects=False, verify=self.verify, timeout=TIMEOUT, **kwargs)
        for header in self.set_cookie_headers(response):
            for name, morsel in SimpleCookie(header).items():
                expired = morsel["max-age"] == "0" or "1970" in morsel["expires"]
                if expired:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        self.history.append(response)
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        # Browsers send Origin with every form POST; the provider's forms check it.
        parts = urlsplit(urljoin(self.base_url + "/", url))
        headers = {"Origin": f"{parts.scheme}://{parts.netloc}", **self.headers, **kwargs.pop("headers", {})}
        return self.request("POST", url, headers=headers, **kwargs)

    def login(self, username: str = "alice", password: str = PASSWORD) -> requests.Response:
        page = self.get("/login")
        fields = dict(hidden_fields(page.text))
        return self.post("/login", data={**fields, "username": username, "password": password})

    def authorize(self, params: dict[str, str], *, callback: str, username: str = "alice",
                  password: str = PASSWORD, consent: str = "approve") -> requests.Response:
        """From /authorize through login and consent to the response that leaves for ``callback``."""
        response = self.get("/authorize?" + urlencode(params))
        for _ in range(8):
            if response.status_code in (302, 303):
                location = urljoin(response.url, response.headers["Location"])
                if location.startswith(callback):
                    return response
                response = self.get(location)
            elif response.status_code == 200 and 'action="/login"' in response.text:
                login_form = dict(hidden_fields(response.text)) | {"username": username, "password": password}
                response = self.post(urljoin(response.url, "/login"), data=login_form)
            elif response.status_code == 200 and 'action="/authorize/consent"' in response.text:
                consent_form = hidden_fields(response.text) + [("decision", consent)]
                response = self.post(urljoin(response.url, "/authorize/consent"), data=consent_form)
            else:
                return response  # an error page, or a form_post page
        raise AssertionError("too many steps through the provider's pages")

    def code(self, client_id: str, callback: str, *, scope: str = "openid profile email offline_access",
             **kwargs: Any) -> dict[str, str]:
        """Run the code flow with PKCE; {'code', 'verifier', 'state', 'nonce', 'location'}."""
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        response = self.authorize({"response_type": "code", "client_id": client_id, "redirect_uri": callback,
                                   "scope": scope, "state": state, "nonce": nonce, "code_challenge": challenge,
                                   "code_challenge_method": "S256"}, callback=callback, **kwargs)
        assert response.status_code == 302, (response.status_code, response.text[:500])
        location = response.headers["Location"]
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == [state], location
        return {"code": query["code"][0], "verifier": verifier, "state": state, "nonce": nonce,
                "location": location}


# -- the token endpoint, as a client ------------------------------------------------------------


def basic_auth(client: tuple[str, str | None]) -> tuple[str, str]:
    """HTTP Basic credentials of a confidential client (client_secret_basic)."""
    client_id, secret = client
    assert secret is not None, f"{client_id} has no secret"
    return client_id, secret


def redeem(base_url: str, client: tuple[str, str | None], flow: dict[str, str], callback: str,
           **kwargs: Any) -> requests.Response:
    return requests.post(base_url + "/token", data={
        "grant_type": "authorization_code", "code": flow["code"], "redirect_uri": callback,
        "code_verifier": flow["verifier"]}, auth=basic_auth(client), timeout=TIMEOUT, **kwargs)


def refresh(base_url: str, client: tuple[str, str | None], refresh_token: str, **kwargs: Any) -> requests.Response:
    return requests.post(base_url + "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                         auth=basic_auth(client), timeout=TIMEOUT, **kwargs)


def introspect(base_url: str, client: tuple[str, str | None], token: str, **kwargs: Any) -> dict[str, Any]:
    response = requests.post(base_url + "/introspect", data={"token": token}, auth=basic_auth(client), timeout=TIMEOUT,
                             **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def race(*calls: Callable[[], requests.Response], timeout: float = 30) -> list[requests.Response]:
    """Run ``calls`` at the same moment, one thread each (released together by a barrier)."""
    barrier = threading.Barrier(len(calls), timeout=timeout)
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert all(isinstance(result, requests.Response) for result in results), results
    return results
