"""CPU time per request of the hot endpoints, in one process, without HTTP.

    python bench/inprocess.py [--calls 1500] [--windows 7] [--backend softhsm|software] [--only NAME ...]
                              [--profile NAME] [--bound] [--profile-bound NAME]
    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=DIR/callgrind.out.%p \
        python bench/inprocess.py --instructions DIR [--calls 300] [--bound] [--only NAME ...]

BENCH_DATABASE_URL (an empty database) replaces the throw-away SQLite file, e.g. to
measure on PostgreSQL.  A run leaves its clients and users there: drop and create the
database again before the next run (its ``clients create`` would refuse the same names).

NAME: trivial health jwks client_credentials introspect introspect_jwt refresh authorize authorize_jarm
      code_exchange login

``authorize_jarm`` is ``authorize`` with ``response_mode=query.jwt`` (the code in a
JARM response, signed with the ID token key set), ``introspect_jwt`` is
``introspect`` with ``Accept: application/token-introspection+jwt`` (RFC 9701);
when a pair is measured, the CPU each adds per request is printed after the table.

The app is called as a WSGI application with a prepared request, so the
figure is the provider's own cost (Flask, the hooks, Authlib, the database,
the signature) without gunicorn, sockets or the load generator.  Each figure
is the best of ``--windows`` windows of ``--calls`` calls, in process CPU
time, which other processes on a shared machine disturb far less than wall
time.  A trivial Flask route is measured the same way, for scale.
``--bound`` measures bench/minimal's route for each flow too, in the same
process, on the same database (its own client and user rows) and key
backend, and prints the bound's CPU over the provider's: the ratio
bench/run.py reports from the workers' CPU, without HTTP, gunicorn or the
load of other processes.  ``--profile NAME`` prints the cProfile of one endpoint, in CPU time (by
cumulative time; PROFILE_SORT=tottime and PROFILE_LINES=N change the listing,
PROFILE_DUMP=FILE keeps the raw profile for pstats); ``--profile-bound NAME``
the bound's.

``--instructions DIR`` counts instructions instead of CPU time, under
callgrind (started as above, with the real interpreter, not a shell shim):
the count of ``--calls`` calls of each endpoint, instrumentation switched on
for them only (``callgrind_control``), divided by the calls; the heap is
collected and frozen (``gc.freeze``) before each endpoint's calls, so that a
full collection does not land in one figure's window and not in another's.
Callgrind slows the calls fifty-fold: the codes of ``code_exchange`` are made
before its calls and live 60 seconds, so keep its ``--calls`` small (60) there,
and read each figure's status (a 400 means they expired).  The key snapshot and
the client cache are refreshed every 250 s and 3600 s then (:data:`STEADY_REFRESH`).  Unlike CPU
time it does not depend on what else the machine runs, so a change can be
judged on a busy machine: same count, same work.  Start both sides of a
comparison with ``PYTHONHASHSEED=0``: string hashes change with the seed, and
with them the interpreter's cache hits, which moves a count by 1-2 %.
Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
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
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.backends import softhsm_environment  # noqa: E402

ENDPOINTS = ["trivial", "health", "jwks", "client_credentials", "introspect", "introspect_jwt", "refresh",
             "authorize", "authorize_jarm", "code_exchange", "login"]
#: The signed-response variants, and the plain request each adds its signature to.
SIGNED_VARIANTS = {"authorize_jarm": "authorize", "introspect_jwt": "introspect"}
REDIRECT_URI = "http://127.0.0.1:1/cb"


def environment(workdir: Path, backend: str) -> dict[str, str]:
    """Settings of a throw-away deployment: SQLite, and a new SoftHSM2 token when asked for."""
    database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}"
    env = {"DATABASE_URL": database_url, "SECRETS_SYSTEM": secrets.token_urlsafe(32),
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
        self.headers: dict[str, str] = {}

    def with_body(self, body: bytes) -> Call:
        """The same request with another body, without building its environ again (cheap)."""
        other = object.__new__(Call)
        other.wsgi, other.body, other.status, other.headers = self.wsgi, body, "", {}
        other.environ = {**self.environ, "CONTENT_LENGTH": str(len(body))}
        return other

    def __call__(self) -> bytes:
        environ = dict(self.environ)
        environ["wsgi.input"] = io.BytesIO(self.body)

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            self.status = status
            self.headers = dict(headers)

        result = self.wsgi(environ, start_response)
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()


class Chain:
    """Calls that each need a value from the previous response: a refresh token rotates, a code is used once.

    ``make`` builds the next call from the previous response body (None for the first).
    """

    def __init__(self, make: Callable[[bytes | None], Call]) -> None:
        self.make = make
        self.next = make(None)
        self.status = ""

    def __call__(self) -> bytes:
        body = self.next()
        self.status = self.next.status
        self.next = self.make(body)
        return body


class CodeExchange:
    """``/token`` with a code, the code made by an ``/authorize`` call outside the measured time."""

    def __init__(self, authorize: Call, token: Callable[[str], Call]) -> None:
        self.authorize, self.token, self.status = authorize, token, ""
        self.pending: list[str] = []

    def prepare(self, count: int) -> None:
        from urllib.parse import parse_qs, urlsplit

        for _ in range(count):
            self.authorize()
            location = self.authorize.headers.get("Location", "")
            self.pending.append(parse_qs(urlsplit(location).query)["code"][0])

    def __call__(self) -> bytes:
        call = self.token(self.pending.pop())
        body = call()
        self.status = call.status
        return body


def cpu_microseconds(call: Any, calls: int, windows: int) -> float:
    if isinstance(call, CodeExchange):
        call.prepare(min(200, calls))
    for _ in range(min(200, calls)):
        call()
    best = float("inf")
    for _ in range(windows):
        if isinstance(call, CodeExchange):
            call.prepare(calls)
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def instructions_per_call(call: Any, calls: int, name: str, out_dir: Path) -> float:
    """Instructions per call of ``call`` under callgrind: ``calls`` calls with instrumentation on, then a dump."""
    pid = str(os.getpid())

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, pid], check=True, capture_output=True, timeout=120)

    if isinstance(call, CodeExchange):
        call.prepare(calls)
    for _ in range(min(50, calls)):  # warm: caches filled, statements prepared
        call()
    if isinstance(call, CodeExchange):
        call.prepare(calls)
    # The objects made so far out of the collector's way: a full collection of the whole heap landing in
    # one window and not in another would move the count by more than a change worth measuring.
    gc.collect()
    gc.freeze()
    control("--zero")
    control("--instr=on")
    for _ in range(calls):
        call()
    control("--instr=off")
    control("--dump=" + name)
    for dump in sorted(out_dir.glob(f"callgrind.out.{pid}.*"), key=lambda path: path.stat().st_mtime, reverse=True):
        text = dump.read_text(errors="replace")
        if f"desc: Trigger: dump {name}\n" in text:
            totals = next(line for line in text.splitlines() if line.startswith("totals:"))
            return int(totals.split()[1]) / calls
    raise RuntimeError(f"no callgrind dump {name!r} in {out_dir}: run under valgrind --tool=callgrind")


#: With ``--instructions``: the key snapshot and the client cache refreshed as seldom as the settings allow.
#: Callgrind runs a request some fifty times slower, so at the defaults (10 s, 5 s) a refresh falls in
#: the counted calls fifty times as often as served, and a varying number of times (20-70 k instructions
#: per request from one run to the next).
STEADY_REFRESH = {"KEYS_REFRESH_SECONDS": "250", "CLIENT_CACHE_SECONDS": "3600"}


def prepare(workdir: Path, backend: str, *, steady: bool = False) -> dict[str, Call]:
    env = environment(workdir, backend)
    if steady:
        env.update(STEADY_REFRESH)
    os.environ.update(env)
    from flask import Flask

    from oidc.app import create_app
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

    flows = user_flows(app)

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
        "introspect_jwt": Call(app, "POST", "/introspect", f"token={access_token}".encode(),
                               {"Authorization": basic, "Accept": "application/token-introspection+jwt"}),
        **flows,
    }


def user_flows(app: Any) -> dict[str, Any]:
    """Refresh, the code flow's two requests and a login, for a first-party client and a signed-in user."""
    import hashlib
    import re
    from urllib.parse import urlencode

    password = secrets.token_urlsafe(16)
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "create", "bench", "--password-stdin"],
                   cwd=ROOT, env=os.environ, input=password + "\n", capture_output=True, text=True, check=True)
    created = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "clients", "create", "--json",
                              "--name", "bench-rp", "--redirect-uri", REDIRECT_URI,
                              "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                              "--scope", "openid offline_access", "--first-party", "--refresh-always"],
                             cwd=ROOT, env=os.environ, capture_output=True, text=True, check=True)
    client = json.loads(created.stdout)
    basic = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize_path = "/authorize?" + urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})

    # A browser without a session: /authorize, the login page of its interaction, the login.
    browser = app.test_client()
    login_page = browser.get(authorize_path).headers["Location"]
    interaction = login_page.split("interaction=")[1].split("&")[0]
    page = browser.get(login_page).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page)
    assert csrf is not None
    login_form = urlencode({"csrf_token": csrf.group(1), "username": "bench", "password": password,
                            "interaction": interaction}).encode()
    origin = {"Origin": "http://127.0.0.1:8000"}
    pre_login_cookie = "; ".join(f"{c.key}={c.value}" for c in browser._cookies.values())
    signed_in = browser.post("/login", data=login_form,
                             headers={**origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert signed_in.status_code == 303, signed_in.status_code
    cookie = "; ".join(f"{c.key}={c.value}" for c in browser._cookies.values())

    authorize = Call(app, "GET", authorize_path, headers={"Cookie": cookie})
    authorize_jarm = Call(app, "GET", authorize_path + "&response_mode=query.jwt", headers={"Cookie": cookie})

    token_call, refresh_call = token_calls(app, {"Authorization": basic}, authorize, verifier)

    return {
        "refresh": Chain(refresh_call),
        "authorize": authorize,
        "authorize_jarm": authorize_jarm,
        "code_exchange": CodeExchange(authorize, token_call),
        # The pre-login cookie (it holds the CSRF token's key) each time: every call is a new login
        # for the same interaction, answered 303 to /authorize/resume.
        "login": Call(app, "POST", "/login", login_form, {**origin, "Cookie": pre_login_cookie}),
    }


def token_calls(app: Any, headers: dict[str, str], authorize: Call,
                verifier: str) -> tuple[Callable[[str], Call], Callable[[bytes | None], Call]]:
    """The code exchange of a code, and the refresh after a previous token response (the first one
    after a code of ``authorize``), as prepared calls to ``app``'s /token."""
    code_template = Call(app, "POST", "/token", b"grant_type=authorization_code", headers)
    refresh_template = Call(app, "POST", "/token", b"grant_type=refresh_token", headers)

    def token_call(code: str) -> Call:
        return code_template.with_body((f"grant_type=authorization_code&redirect_uri={quote(REDIRECT_URI, safe='')}"
                                        f"&code_verifier={verifier}&code={code}").encode())

    def refresh_call(previous: bytes | None) -> Call:
        if previous is None:
            authorize()
            previous = token_call(authorize.headers["Location"].split("code=")[1].split("&")[0])()
        refresh = json.loads(previous)["refresh_token"]
        return refresh_template.with_body(f"grant_type=refresh_token&refresh_token={refresh}".encode())

    return token_call, refresh_call


#: The flows bench/minimal has a route for.
BOUNDED = ["client_credentials", "introspect", "refresh", "authorize", "code_exchange", "login"]


def bound_flows(password_cost: int) -> dict[str, Any]:
    """bench/minimal's routes on the provider's database (its own client and user rows), as :class:`Call`s.

    Its keys are software keys whatever ``--backend`` says (one PKCS#11 context per process: the
    provider's), so compare the two with ``--backend software``.  PASSWORD_HASH_COST in the
    environment sets both sides' scrypt cost (the login figure), 2**15 by default.
    """
    import hashlib
    from urllib.parse import urlencode

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bench.minimal.database import Database
    from bench.minimal.seed import seed_accounts
    from bench.minimal.tokens import b64url

    client_id, secret, password = "bench-minimal", secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    database = Database(os.environ["DATABASE_URL"])
    try:
        seed_accounts(database, client_id=client_id, redirect_uri=REDIRECT_URI, username="bench-minimal",
                      password=password, password_cost=password_cost)
    finally:
        database.close()
    introspection_key = ec.generate_private_key(ec.SECP256R1())
    os.environ.update(
        BENCH_BACKEND="software", BENCH_ALG="ES256",
        BENCH_CLIENT_ID=client_id, BENCH_CLIENT_SECRET=secret, BENCH_REDIRECT_URI=REDIRECT_URI,
        BENCH_DATABASE_URL=os.environ["DATABASE_URL"], BENCH_HASH_KEY=secrets.token_urlsafe(32),
        BENCH_PUBLIC_KEY=introspection_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    from bench.minimal.app import app
    from bench.minimal.tokens import Signer

    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    # The introspected token: an ES256 JWT of the bound's introspection key, with a jti it has no row for.
    signer = Signer("software", "ES256", "introspect", "at+jwt")
    signer.key = type(signer.key)(_es256_signer(introspection_key), {})
    now = int(time.time())
    token = signer.jwt({"iss": "http://127.0.0.1:8000", "sub": client_id, "aud": "http://127.0.0.1:8000",
                        "client_id": client_id, "iat": now, "exp": now + 3600, "jti": secrets.token_urlsafe(18),
                        "scope": "api"})

    verifier = secrets.token_urlsafe(48)
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    authorize_path = "/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid offline_access",
        "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    login_form = urlencode({"username": "bench-minimal", "password": password, "next": authorize_path}).encode()
    login = Call(app, "POST", "/login", login_form)
    login()
    cookie = login.headers["Set-Cookie"].split(";")[0]
    authorize = Call(app, "GET", authorize_path, headers={"Cookie": cookie})
    token_call, refresh_call = token_calls(app, basic, authorize, verifier)

    return {
        "client_credentials": Call(app, "POST", "/token", b"grant_type=client_credentials&scope=api", basic),
        "introspect": Call(app, "POST", "/introspect", f"token={token}".encode(), basic),
        "refresh": Chain(refresh_call),
        "authorize": authorize,
        "code_exchange": CodeExchange(authorize, token_call),
        "login": login,
    }


def _es256_signer(private_key: Any) -> Callable[[bytes], bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def profile_calls(target: Any, calls: int) -> None:
    """cProfile of ``calls`` calls of one target, in CPU time (other processes do not count)."""
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    if isinstance(target, CodeExchange):
        target.prepare(calls)
    for _ in range(calls):
        target()
    profile.disable()
    if os.environ.get("PROFILE_DUMP"):
        profile.dump_stats(os.environ["PROFILE_DUMP"])
    order, lines = os.environ.get("PROFILE_SORT", "cumulative"), int(os.environ.get("PROFILE_LINES", "40"))
    pstats.Stats(profile).sort_stats(order).print_stats(lines)


def measure_cpu(args: argparse.Namespace, calls: dict[str, Any], bounds: dict[str, Any]) -> None:
    trivial = 0.0
    figures: dict[str, float] = {}
    for name in ENDPOINTS:
        if args.only and name != "trivial" and name not in args.only:
            continue
        figure = figures[name] = cpu_microseconds(calls[name], args.calls, args.windows)
        trivial = trivial or figure
        print(f"{name:20} {figure:8.1f} us CPU/request  {figure / trivial:5.1f}x trivial  "
              f"({calls[name].status}, {args.backend})", flush=True)
        if args.bound and name in bounds:
            bound = cpu_microseconds(bounds[name], args.calls, args.windows)
            print(f"{'  bound':20} {bound:8.1f} us CPU/request  bound/provider {bound / figure:5.2f}  "
                  f"({bounds[name].status})", flush=True)
    for variant, plain in SIGNED_VARIANTS.items():
        if variant in figures and plain in figures:
            print(f"{variant:20} adds {figures[variant] - figures[plain]:8.1f} us CPU/request to {plain} "
                  f"(one signature with the ID token key set and building the JWT)")


def count_instructions(args: argparse.Namespace, calls: dict[str, Any], bounds: dict[str, Any]) -> None:
    for name in ENDPOINTS:
        if args.only and name != "trivial" and name not in args.only:
            continue
        figure = instructions_per_call(calls[name], args.calls, name, args.instructions)
        print(f"{name:20} {figure / 1e6:8.3f} M instructions/request  ({calls[name].status}, {args.backend})",
              flush=True)
        if args.bound and name in bounds:
            bound = instructions_per_call(bounds[name], args.calls, "bound-" + name, args.instructions)
            print(f"{'  bound':20} {bound / 1e6:8.3f} M instructions/request  bound/provider {bound / figure:5.2f}  "
                  f"({bounds[name].status})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1500, help="calls per window")
    parser.add_argument("--windows", type=int, default=7, help="windows per figure (the best is kept)")
    parser.add_argument("--backend", choices=["softhsm", "software"],
                        default="softhsm" if shutil.which("softhsm2-util") else "software")
    parser.add_argument("--profile", choices=ENDPOINTS, help="print the cProfile of one endpoint")
    parser.add_argument("--only", nargs="+", choices=ENDPOINTS, metavar="NAME",
                        help="measure these endpoints only (and the trivial route, for scale)")
    parser.add_argument("--bound", action="store_true",
                        help="measure bench/minimal's route of each flow too, and the ratio bound/provider")
    parser.add_argument("--profile-bound", choices=BOUNDED, help="print the cProfile of one of the bound's routes")
    parser.add_argument("--instructions", type=Path, metavar="DIR",
                        help="count instructions per request under callgrind (its --callgrind-out-file directory)")
    args = parser.parse_args()
    if args.bound and args.backend != "software":
        # The bound signs with software keys whatever the backend (bound_flows): beside a provider
        # signing on SoftHSM2, its ratio would measure SoftHSM2, not the provider.
        parser.error("--bound compares like with like only with --backend software")
    workdir = Path(tempfile.mkdtemp(prefix="oidc-inprocess-"))
    try:
        calls = prepare(workdir, args.backend, steady=args.instructions is not None)
        bounds = bound_flows(int(os.environ.get("PASSWORD_HASH_COST", "32768"))) \
            if args.bound or args.profile_bound else {}
        if args.instructions:
            count_instructions(args, calls, bounds)
        else:
            measure_cpu(args, calls, bounds)
        if args.profile:
            profile_calls(calls[args.profile], args.calls)
        if args.profile_bound:
            profile_calls(bounds[args.profile_bound], args.calls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
