"""How much of the code one request goes through: modules touched and repeated work, traced.

    python bench/trace.py

Two journeys through the real app (in process, SQLite, software keys), each
traced with ``sys.setprofile`` after a warm-up journey (so imports and
per-process caches are not counted):

* one ``client_credentials`` token request;
* a browser's sign-in with the code flow: ``/authorize`` without a session,
  the login page, the login post, back to ``/authorize``, the consent page,
  the consent post, the redirect with the code.

Printed for each: requests, the project's modules whose code ran, calls of
``current_state()``, and the repeated work a review counted (interactions
loaded, Authlib grants built, consents looked up).  A figure of layout, not of
speed: fewer modules is a shorter path to read; nothing is asserted.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIRECT_URI = "http://127.0.0.1:1/cb"
ISSUER = "http://127.0.0.1:8000"
PASSWORD = "correct horse battery staple"
_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*>')
_ATTR = re.compile(r'(name|value)="([^"]*)"')
PROJECT = (str(ROOT / "oidc") + os.sep, str(ROOT / "keys") + os.sep)

#: (label, file suffix, function name): calls counted by name, wherever the code now lives.
COUNTED = [
    ("current_state()", "oidc/state.py", "current_state"),
    ("interactions loaded", "oidc/oauth2/interactions.py", "load"),
    ("consents looked up", "oidc/oauth2/consents.py", "has_consented"),
    ("Authlib grants built", "authlib/oauth2/rfc6749/grants/base.py", "__init__"),
]


class Trace:
    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.calls: Counter[str] = Counter()

    def __call__(self, frame: Any, event: str, _arg: Any) -> None:
        if event != "call":
            return
        filename = frame.f_code.co_filename
        if filename.startswith(PROJECT):
            self.modules.add(os.path.relpath(filename, ROOT))
        for label, suffix, name in COUNTED:
            if frame.f_code.co_name == name and filename.endswith(suffix):
                self.calls[label] += 1


@contextmanager
def traced() -> Iterator[Trace]:
    trace = Trace()
    sys.setprofile(trace)
    try:
        yield trace
    finally:
        sys.setprofile(None)


def _app(workdir: Path) -> tuple[Any, str, str, str, str]:
    from oidc.accounts.clients import create_client
    from oidc.app import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    env = {"DATABASE_URL": f"sqlite:///{workdir / 'trace.sqlite3'}", "SECRETS_SYSTEM": secrets.token_urlsafe(32),
           "OIDC_ISSUER": ISSUER, "LOG_LEVEL": "WARNING", "METRICS_BIND": "", "PASSWORD_HASH_COST": "256",
           "ACCESS_TOKEN_DEFAULT_AUDIENCE": "https://api.example.test"}
    app = create_app({"TESTING": True}, env=env)
    upgrade_schema(app)
    state_of(app).key_service()
    with app.app_context():
        service, service_secret = create_client(name="Service", grant_types=["client_credentials"],
                                                redirect_uris=[])
        web, web_secret = create_client(name="Web", redirect_uris=[REDIRECT_URI])
        return app, service.client_id, str(service_secret), web.client_id, str(web_secret)


def _hidden_fields(page: str) -> dict[str, str]:
    fields = {}
    for tag in _HIDDEN.findall(page):
        attrs = dict(_ATTR.findall(tag))
        if "name" in attrs:
            fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
    return fields


def client_credentials(app: Any, client_id: str, secret: str) -> Callable[[], int]:
    http = app.test_client()

    def journey() -> int:
        response = http.post("/token", base_url=ISSUER, data={"grant_type": "client_credentials"},
                             auth=(client_id, secret))
        assert response.status_code == 200, response.get_data(as_text=True)
        return 1

    return journey


def sign_in(app: Any, client_id: str) -> Callable[[], int]:
    from oidc.accounts.users import create_user

    # A new user for each journey, made beforehand: no consent remembered from the warm-up.
    usernames = [f"user{number}" for number in range(2)]
    with app.app_context():
        for username in usernames:
            create_user(username, PASSWORD, email=f"{username}@example.test")
    users = iter(usernames)

    def journey() -> int:
        username = next(users)
        http = app.test_client()
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                  "scope": "openid email", "state": "s", "nonce": "n",
                  "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
        headers = {"Origin": ISSUER}
        response = http.get("/authorize?" + urlencode(params), base_url=ISSUER)
        requests = 1
        while requests < 12:
            if response.status_code in (302, 303):
                location = response.headers["Location"]
                if location.startswith(REDIRECT_URI):
                    assert "code" in parse_qs(urlsplit(location).query), location
                    return requests
                response = http.get(location, base_url=ISSUER)
            elif 'action="/login"' in response.get_data(as_text=True):
                fields = _hidden_fields(response.get_data(as_text=True))
                response = http.post("/login", base_url=ISSUER, headers=headers,
                                     data={**fields, "username": username, "password": PASSWORD})
            elif 'action="/authorize/consent"' in response.get_data(as_text=True):
                fields = _hidden_fields(response.get_data(as_text=True))
                response = http.post("/authorize/consent", base_url=ISSUER, headers=headers,
                                     data={**fields, "decision": "approve"})
            else:
                raise AssertionError(f"unexpected page {response.status_code}: {response.get_data(as_text=True)[:300]}")
            requests += 1
        raise AssertionError("no code after 12 requests")

    return journey


def report(name: str, journey: Callable[[], int]) -> None:
    journey()  # warm-up: imports, compiled templates, per-process caches
    with traced() as trace:
        requests = journey()
    print(f"{name}: {requests} request(s), {len(trace.modules)} of the project's modules")
    for label, _, _ in COUNTED:
        print(f"  {label:<22} {trace.calls[label]}")
    if os.environ.get("TRACE_MODULES"):
        for module in sorted(trace.modules):
            print("   ", module)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="oidc-trace-") as directory:
        app, service_id, service_secret, web_id, _ = _app(Path(directory))
        report("client_credentials", client_credentials(app, service_id, service_secret))
        report("browser sign-in (code flow)", sign_in(app, web_id))


if __name__ == "__main__":
    main()
