"""CPU time per request of the hot endpoints, in one process, without HTTP.

    python bench/inprocess.py [--calls 1500] [--windows 7] [--backend softhsm|software] [--profile NAME]

The app is called as a WSGI application with a prepared request, so the
figure is the provider's own cost (Flask, the hooks, Authlib, the database,
the signature) without gunicorn, sockets or the load generator.  Each figure
is the best of ``--windows`` windows of ``--calls`` calls, in process CPU
time, which other processes on a shared machine disturb far less than wall
time.  A trivial Flask route is measured the same way, for scale.
``--profile NAME`` prints the cProfile of one endpoint (by cumulative time).
Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.backends import softhsm_environment  # noqa: E402

ENDPOINTS = ["trivial", "health", "jwks", "client_credentials", "introspect"]


def environment(workdir: Path, backend: str) -> dict[str, str]:
    """Settings of a throw-away deployment: SQLite, and a new SoftHSM2 token when asked for."""
    env = {"DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}", "SECRETS_SYSTEM": secrets.token_urlsafe(32),
           "OIDC_ISSUER": "http://127.0.0.1:8000", "ACCESS_TOKEN_SIGNING_ALG": "ES256", "METRICS_BIND": "",
           "LOG_LEVEL": "WARNING"}
    if backend == "softhsm":
        env.update(softhsm_environment(workdir))
    return env


class Call:
    """One prepared request, replayed against a WSGI application."""

    def __init__(self, wsgi: Callable[..., Any], method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> None:
        from werkzeug.test import EnvironBuilder

        builder = EnvironBuilder(method=method, path=path, data=body, headers=headers or {},
                                 base_url="http://127.0.0.1:8000",
                                 content_type="application/x-www-form-urlencoded" if body else None)
        self.environ = builder.get_environ()
        self.environ["REMOTE_ADDR"] = "127.0.0.1"
        self.wsgi, self.body, self.status = wsgi, body, ""

    def __call__(self) -> bytes:
        environ = dict(self.environ)
        environ["wsgi.input"] = io.BytesIO(self.body)

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            self.status = status

        result = self.wsgi(environ, start_response)
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()


def cpu_microseconds(call: Call, calls: int, windows: int) -> float:
    for _ in range(min(200, calls)):
        call()
    best = float("inf")
    for _ in range(windows):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def prepare(workdir: Path, backend: str) -> dict[str, Call]:
    env = environment(workdir, backend)
    os.environ.update(env)
    from flask import Flask

    from oidc import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    app = create_app()
    upgrade_schema(app)
    created = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "clients", "create", "--json",
                              "--name", "bench", "--grant-type", "client_credentials", "--scope", "api",
                              "--resource-server"], cwd=ROOT, env=os.environ, capture_output=True, text=True,
                             check=True)
    client = json.loads(created.stdout)
    state_of(app).key_service()
    basic = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()

    trivial = Flask("trivial")
    trivial.add_url_rule("/", "index", lambda: "ok")
    token_request = Call(app, "POST", "/token", b"grant_type=client_credentials&scope=api", {"Authorization": basic})
    access_token = json.loads(token_request())["access_token"]
    return {
        "trivial": Call(trivial, "GET", "/"),
        "health": Call(app, "GET", "/health/alive"),
        "jwks": Call(app, "GET", "/.well-known/jwks.json"),
        "client_credentials": token_request,
        "introspect": Call(app, "POST", "/introspect", f"token={access_token}".encode(), {"Authorization": basic}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1500, help="calls per window")
    parser.add_argument("--windows", type=int, default=7, help="windows per figure (the best is kept)")
    parser.add_argument("--backend", choices=["softhsm", "software"],
                        default="softhsm" if shutil.which("softhsm2-util") else "software")
    parser.add_argument("--profile", choices=ENDPOINTS, help="print the cProfile of one endpoint")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="oidc-inprocess-"))
    try:
        calls = prepare(workdir, args.backend)
        trivial = 0.0
        for name in ENDPOINTS:
            figure = cpu_microseconds(calls[name], args.calls, args.windows)
            trivial = trivial or figure
            print(f"{name:20} {figure:8.1f} us CPU/request  {figure / trivial:5.1f}x trivial  "
                  f"({calls[name].status}, {args.backend})")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.calls):
                calls[args.profile]()
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
