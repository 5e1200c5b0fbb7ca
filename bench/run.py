"""Loopback benchmarks of the provider under the shipped gunicorn configuration.

    python bench/run.py [--duration 10] [--runs 3] [--connections 16] [--only NAME ...]

Each figure: ``wrk`` (keep-alive on, Lua scripts for the POSTs) against the app
served by ``gunicorn -c gunicorn.conf.py`` with 2 workers, ``--runs`` runs of
``--duration`` seconds; the median and range of req/s and the median p50/p99
latency are printed next to the figure's ceiling and the ratio.  Every ceiling
is measured in the same run: the framework's (a trivial route) right before
each run of each figure, the raw signing rate next to each signing figure.
Each client_credentials figure, and introspection, is followed by the same
request against bench/minimal_token_app.py (parse, check a secret, sign or
verify and read one row; nothing else): the share of a ceiling that any Flask
route doing that work reaches.
Benchmarks print figures; they assert nothing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.backends import softhsm_environment  # noqa: E402

WORKERS = 2


# -- measuring ------------------------------------------------------------------

@dataclass
class Figure:
    name: str
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0
    note: str = ""
    #: The framework ceiling sampled right before each run (see :class:`Ceiling`).
    ceilings: list[float] = field(default_factory=list)

    def add(self, rps: float, p50_ms: float, p99_ms: float, errors: int) -> None:
        """One wrk run's figures."""
        self.rps.append(rps)
        self.p50_ms.append(p50_ms)
        self.p99_ms.append(p99_ms)
        self.errors += errors

    @property
    def median(self) -> float:
        return statistics.median(self.rps) if self.rps else 0.0

    def text(self) -> str:
        if not self.rps:
            return f"{'-':>8}"
        return (f"{self.median:8.0f} req/s ({min(self.rps):.0f}-{max(self.rps):.0f})  "
                f"p50 {statistics.median(self.p50_ms):6.2f} ms  p99 {statistics.median(self.p99_ms):6.2f} ms"
                + (f"  errors {self.errors}" if self.errors else ""))


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


@dataclass
class ScriptWithArgs:
    """A wrk Lua script and the arguments its ``init(args)`` receives."""

    path: Path
    args: list[str]


def wrk(url: str, *, duration: float, connections: int,
        script: Path | ScriptWithArgs | None = None) -> tuple[float, float, float, int]:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
               "--timeout", "10s"]
    trailing: list[str] = []
    if isinstance(script, ScriptWithArgs):
        command += ["-s", str(script.path)]
        trailing = ["--", *script.args]
    elif script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(command + [url, *trailing], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        match = re.search(pattern, output)
        if match:
            errors += sum(int(value) for value in match.groups())
    return rps, _latency(output, "50"), _latency(output, "99"), errors


def measure(name: str, url: str, args: argparse.Namespace, script: Path | ScriptWithArgs | None = None,
            before_each: Callable[[], None] | None = None, ceiling: Ceiling | None = None) -> Figure:
    figure = Figure(name)
    if before_each is not None:
        before_each()
    wrk(url, duration=min(2.0, args.duration), connections=args.connections, script=script)  # warm-up
    for _ in range(args.runs):
        if before_each is not None:
            before_each()
        if ceiling is not None:
            figure.ceilings.append(ceiling.sample())
        figure.add(*wrk(url, duration=args.duration, connections=args.connections, script=script))
    return figure


def lua_post(directory: Path, name: str, body: str, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}",
             'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path = directory / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- running the provider ---------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Deployment:
    """A database, optionally a SoftHSM2 token, and gunicorn serving the app."""

    def __init__(self, workdir: Path, *, backend: str, id_alg: str = "RS256", at_alg: str = "ES256",
                 database_url: str | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.sqlite3'}",
            "SECRETS_SYSTEM": secrets.token_urlsafe(32),
            "OIDC_ISSUER": self.url,
            "ID_TOKEN_SIGNING_ALG": id_alg,
            "ACCESS_TOKEN_SIGNING_ALG": at_alg,
            "BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(WORKERS),
            "METRICS_BIND": "",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        if backend == "softhsm":
            self.env.update(softhsm_environment(workdir))
        self.flask("db", "upgrade", "-d", str(ROOT / "oidc" / "migrations"))
        self.process: subprocess.Popen | None = None

    def flask(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, input=stdin, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def create_client(self, *args: str) -> dict[str, Any]:
        return json.loads(self.flask("clients", "create", "--json", *args))

    def start(self, config: str = "gunicorn.conf.py", app: str = "app:app", ready: str = "/health/ready") -> None:
        """Serve ``app`` and wait until it answers at ``ready`` (any HTTP status)."""
        log = open(self.workdir / "gunicorn.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", config, app], cwd=ROOT,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + ready, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not start; see {self.workdir / 'gunicorn.log'}")

    def workers(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def post(url: str, data: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
    body = "&".join(f"{k}={urllib.request.quote(v, safe='')}" for k, v in data.items()).encode()
    request = urllib.request.Request(url, data=body, headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def basic(client: dict[str, Any]) -> str:
    return "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])


# -- scenarios ------------------------------------------------------------------------

Results = list  # of (Figure, ceiling req/s or None, ceiling name)

RAW_SIGN = """
import os, sys, time
sys.path.insert(0, os.environ["PYTHONPATH"])
from bench.backends import make_signer
sign = make_signer(sys.argv[2], sys.argv[1], "bench.raw")
data = b"x" * 400
rates = []
for _ in range(3):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < float(sys.argv[3]):
        sign(data); n += 1
    rates.append(n / (time.perf_counter() - start))
print(sorted(rates)[1])
"""


def raw_sign_rate(deployment: Deployment, backend: str, alg: str) -> float:
    """Median signatures/s of one process through ``backend`` (the app's own code path)."""
    out = subprocess.run([sys.executable, "-c", RAW_SIGN, alg, backend, "1.5"], env=deployment.env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip())


class Ceiling:
    """The framework's ceiling: a trivial route under the same gunicorn configuration.

    It is served for the whole run and sampled right before each run of every
    figure measured against it, so that a figure and its ceiling share the
    machine's state of the moment: this machine is shared, and its speed drifts
    by tens of percent within minutes.
    """

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.figure = Figure("ceiling: trivial Flask route, same gunicorn config")
        self.deployment = Deployment(workdir / "trivial", backend="software")
        self.deployment.start(config="bench/trivial.conf.py", app="bench.trivial_app:app", ready="/")
        wrk(self.deployment.url + "/", duration=min(2.0, args.duration), connections=args.connections)  # warm-up

    def sample(self) -> float:
        self.figure.add(*wrk(self.deployment.url + "/", duration=self.args.duration,
                             connections=self.args.connections))
        return self.figure.rps[-1]

    def stop(self) -> None:
        self.deployment.stop()


def framework(figure: Figure) -> float:
    """The ceiling a figure is compared with: the median of the samples taken next to its runs."""
    return statistics.median(figure.ceilings)


def client_credentials(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling | None,
                       backend: str, alg: str, database_url: str | None = None, label: str = "") -> Figure:
    deployment = Deployment(workdir / f"cc-{backend}-{alg}{label}", backend=backend, at_alg=alg,
                            database_url=database_url)
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    deployment.start()
    script = lua_post(deployment.workdir, "cc", "grant_type=client_credentials&scope=api",
                      {"Authorization": basic(client)})
    try:
        figure = measure(f"client_credentials {alg} via {backend}{label}", deployment.url + "/token", args, script,
                         ceiling=ceiling)
        raw = raw_sign_rate(deployment, backend, alg) * WORKERS if ceiling else 0.0
    finally:
        deployment.stop()
    if ceiling:
        bound = min(raw, framework(figure))
        results.append((figure, bound,
                        f"min(raw signing x{WORKERS} workers = {raw:.0f}, framework {framework(figure):.0f})"))
        minimal = minimal_token_route(args, workdir, ceiling, backend, alg)
        bound = min(raw, framework(minimal))
        results.append((minimal, bound,
                        f"min(raw signing x{WORKERS} workers = {raw:.0f}, framework {framework(minimal):.0f})"))
    return figure


def minimal_route(workdir: Path, name: str, backend: str, **settings: str) -> tuple[Deployment, dict[str, str]]:
    """bench/minimal_token_app.py served like the provider, with one client; and that client."""
    deployment = Deployment(workdir / f"minimal-{name}", backend=backend)
    client = {"client_id": "bench", "client_secret": secrets.token_urlsafe(32)}
    deployment.env.update(BENCH_BACKEND=backend, BENCH_CLIENT_ID=client["client_id"],
                          BENCH_CLIENT_SECRET=client["client_secret"], **settings)
    deployment.start(config="bench/trivial.conf.py", app="bench.minimal_token_app:app", ready="/token")
    return deployment, client


def minimal_token_route(args: argparse.Namespace, workdir: Path, ceiling: Ceiling, backend: str, alg: str) -> Figure:
    """The same request against bench/minimal_token_app.py: what any Flask route signing this way can reach."""
    deployment, client = minimal_route(workdir, f"{backend}-{alg}", backend, BENCH_ALG=alg)
    script = lua_post(deployment.workdir, "cc", "grant_type=client_credentials&scope=api",
                      {"Authorization": basic(client)})
    try:
        return measure(f"  minimal Flask token route, {alg} via {backend}", deployment.url + "/token", args,
                       script, ceiling=ceiling)
    finally:
        deployment.stop()


def minimal_introspection_route(args: argparse.Namespace, workdir: Path, ceiling: Ceiling) -> Figure:
    """Introspection against bench/minimal_token_app.py: verify ES256, one indexed SQLite read, JSON."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from keys.algorithms import get_algorithm
    from keys.software import signing_function

    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    deployment, client = minimal_route(workdir, "introspect", "software", BENCH_PUBLIC_KEY=public_pem,
                                       BENCH_SQLITE=str(workdir / "minimal-introspect" / "bench.sqlite3"))
    now = int(time.time())
    claims = {"iss": deployment.url, "sub": "bench", "aud": deployment.url, "client_id": "bench", "iat": now,
              "exp": now + 3600, "jti": secrets.token_urlsafe(18), "scope": "api"}
    segments = [base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                for part in ({"alg": "ES256", "kid": "bench", "typ": "at+jwt"}, claims)]
    signing_input = ".".join(segments)
    signature = signing_function(key, get_algorithm("ES256"))(signing_input.encode())
    token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    script = lua_post(deployment.workdir, "introspect", f"token={token}", {"Authorization": basic(client)})
    try:
        return measure("  minimal Flask introspection route (ES256)", deployment.url + "/introspect", args, script,
                       ceiling=ceiling)
    finally:
        deployment.stop()


def jwks_and_introspection(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling) -> None:
    deployment = Deployment(workdir / "jwks", backend="softhsm" if shutil.which("softhsm2-util") else "software")
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api",
                                      "--resource-server")
    deployment.start()
    try:
        jwks = measure("GET /.well-known/jwks.json", deployment.url + "/.well-known/jwks.json", args, ceiling=ceiling)
        results.append((jwks, framework(jwks), "framework"))
        token = post(deployment.url + "/token", {"grant_type": "client_credentials", "scope": "api"},
                     {"Authorization": basic(client)})["access_token"]
        script = lua_post(deployment.workdir, "introspect", f"token={token}", {"Authorization": basic(client)})
        introspect = measure("POST /introspect (JWT access token)", deployment.url + "/introspect", args, script,
                             ceiling=ceiling)
        results.append((introspect, framework(introspect), "framework"))
    finally:
        deployment.stop()
    minimal = minimal_introspection_route(args, workdir, ceiling)
    results.append((minimal, framework(minimal), "framework"))


def memory(args: argparse.Namespace, workdir: Path, results: Results, seconds: float = 60.0) -> None:
    deployment = Deployment(workdir / "memory", backend="softhsm" if shutil.which("softhsm2-util") else "software")
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    deployment.start()
    script = lua_post(deployment.workdir, "cc", "grant_type=client_credentials&scope=api",
                      {"Authorization": basic(client)})
    try:
        wrk(deployment.url + "/token", duration=3, connections=args.connections, script=script)
        workers = deployment.workers()
        before = {pid: rss_kib(pid) for pid in workers}
        rps = wrk(deployment.url + "/token", duration=seconds, connections=args.connections, script=script)[0]
        after = {pid: rss_kib(pid) for pid in workers}
    finally:
        deployment.stop()
    figure = Figure(f"memory: worker RSS over a {seconds:.0f} s client_credentials run")
    growth = [100.0 * (after[pid] - before[pid]) / before[pid] for pid in workers]
    figure.note = ", ".join(f"worker {pid}: {before[pid] / 1024:.1f} -> {after[pid] / 1024:.1f} MiB ({g:+.1f} %)"
                            for pid, g in zip(workers, growth, strict=False)) + f"  at {rps:.0f} req/s"
    results.append((figure, None, ""))


SEED_REFRESH = """
import os, sys, uuid
sys.path.insert(0, os.environ["PYTHONPATH"])
from oidc import create_app
from oidc.accounts.clients import get_client
from oidc.accounts.users import get_user
from oidc.db import db
from oidc.oauth2.families import AuthContext, default_audience, new_refresh_token
from oidc.state import now
app = create_app()
with app.app_context():
    client, user = get_client(sys.argv[1]), get_user(sys.argv[2])
    for _ in range(int(sys.argv[3])):
        context = AuthContext(grant_id=uuid.uuid4().hex, audience=default_audience(), auth_time=now())
        print(new_refresh_token(client, user, "openid offline_access", context))
    db.session.commit()
"""

REFRESH_LUA = """
local tokens = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    if n %% tonumber(args[2]) == id then table.insert(tokens, line) end
    n = n + 1
  end
end
function request()
  local token = table.remove(tokens)
  if token == nil then return wrk.format("GET", "/health/alive") end
  return wrk.format("POST", "/token", {["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "%(auth)s"}, "grant_type=refresh_token&refresh_token=" .. token)
end
function response(status, headers, body)
  local token = body:match('"refresh_token":%%s*"([^"]+)"')
  if token then table.insert(tokens, token) end
end
"""

CODE_FLOW_LUA = """
local codes = {}
function request()
  local code = table.remove(codes)
  if code == nil then
    return wrk.format("GET", "%(authorize)s", {["Cookie"] = "%(cookie)s"})
  end
  return wrk.format("POST", "/token", {["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "%(auth)s"}, "grant_type=authorization_code&redirect_uri=%(redirect)s&code_verifier=%(verifier)s&code=" .. code)
end
function response(status, headers, body)
  if status == 302 then
    local code = (headers["Location"] or headers["location"] or ""):match("[?&]code=([^&]+)")
    if code then table.insert(codes, code) end
  end
end
"""


def user_and_client(deployment: Deployment, *extra: str) -> dict[str, Any]:
    password = secrets.token_urlsafe(16)
    deployment.flask("users", "create", "bench", "--password-stdin", stdin=password + "\n")
    client = deployment.create_client("--name", "bench-rp", "--redirect-uri", "http://127.0.0.1:1/cb",
                                      "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                                      "--scope", "openid offline_access", "--first-party", "--refresh-always",
                                      *extra)
    client["password"] = password
    return client


def refresh_tokens(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling | None,
                   database_url: str | None = None, label: str = "") -> Figure:
    backend = "softhsm" if shutil.which("softhsm2-util") else "software"
    deployment = Deployment(workdir / f"refresh{label}", backend=backend, database_url=database_url)
    client = user_and_client(deployment)
    deployment.start()
    pool = deployment.workdir / "refresh-tokens.txt"
    script = deployment.workdir / "refresh.lua"
    script.write_text(REFRESH_LUA % {"auth": basic(client)})

    def reseed() -> None:  # a fresh pool per run: rotation consumes them
        out = subprocess.run([sys.executable, "-c", SEED_REFRESH, client["client_id"], "bench", "256"],
                             env=deployment.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        pool.write_text(out.stdout)

    try:
        figure = measure(f"refresh_token with rotation ({backend}){label}", deployment.url + "/token", args,
                         ScriptWithArgs(script, [str(pool), "2"]), before_each=reseed, ceiling=ceiling)
    finally:
        deployment.stop()
    if ceiling:
        results.append((figure, framework(figure), "framework"))
    return figure


def code_flow(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling) -> None:
    import hashlib
    import http.cookiejar

    backend = "softhsm" if shutil.which("softhsm2-util") else "software"
    deployment = Deployment(workdir / "code-flow", backend=backend)
    client = user_and_client(deployment)
    deployment.start()
    # Log in once, like a browser, to get a session cookie.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(deployment.url + "/login", timeout=10).read().decode()
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page)
    body = urllib.parse.urlencode({"csrf_token": csrf.group(1), "username": "bench", "password": client["password"],
                                   "next": ""}).encode()
    opener.open(urllib.request.Request(deployment.url + "/login", data=body), timeout=10).read()
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize = "/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": "http://127.0.0.1:1/cb",
        "scope": "openid", "state": "s", "nonce": "n", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    script = deployment.workdir / "code-flow.lua"
    script.write_text(CODE_FLOW_LUA % {"authorize": authorize, "cookie": cookie, "auth": basic(client),
                                       "redirect": urllib.parse.quote("http://127.0.0.1:1/cb", safe=""),
                                       "verifier": verifier})
    try:
        figure = measure("code flow: /authorize + /token (req/s; flows = half)", deployment.url + "/", args, script,
                         ceiling=ceiling)
    finally:
        deployment.stop()
    figure.note = f"about {figure.median / 2:.0f} complete flows/s (first-party client, existing session)"
    results.append((figure, framework(figure), "framework"))


def postgres_database(name: str) -> str:
    """A new, empty PostgreSQL database for a figure (BENCH_POSTGRES_URL's server)."""
    import psycopg

    server = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.rpartition("/")[0] + "/" + name


def drop_postgres_database(name: str) -> None:
    import psycopg

    server = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Seeded(Deployment):
    """A deployment whose database is filled by bench/seed.py before gunicorn starts."""

    seed_counts = ("100000", "100000", "1000000")

    def start(self, config: str = "gunicorn.conf.py", app: str = "app:app", ready: str = "/health/ready") -> None:
        clients, users, tokens = self.seed_counts
        subprocess.run([sys.executable, "bench/seed.py", "--clients", clients, "--users", users,
                        "--refresh-tokens", tokens], cwd=ROOT, env=self.env, check=True, timeout=3600)
        super().start(config, app, ready)


def scale(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    """client_credentials and refresh on a small and on a large database, SQLite and PostgreSQL."""
    global Deployment
    plain = Deployment
    for database in ("sqlite", "postgresql"):
        for size in ("small", "large"):
            name = f"oidc_bench_{database}_{size}"
            url = postgres_database(name) if database == "postgresql" else None
            Deployment = plain if size == "small" else Seeded  # type: ignore[misc]
            try:
                label = f" [{database}, {size} db]"
                cc = client_credentials(args, workdir, [], None, "softhsm" if shutil.which("softhsm2-util")
                                        else "software", "ES256", database_url=url, label=label)
                rt = refresh_tokens(args, workdir, [], None, database_url=url, label=label)
            finally:
                Deployment = plain  # type: ignore[misc]
                if url:
                    drop_postgres_database(name)
            if size == "small":
                small = {"cc": cc.median, "rt": rt.median}
                results.append((cc, None, ""))
                results.append((rt, None, ""))
            else:
                results.append((cc, small["cc"], "small-db figure"))
                results.append((rt, small["rt"], "small-db figure"))
            report(results)


def run_scenarios(args: argparse.Namespace, wanted: set[str], workdir: Path, results: Results) -> None:
    if wanted & {"jwks", "introspect", "client_credentials", "refresh", "code_flow"}:
        ceiling = Ceiling(args, workdir)
        results.append((ceiling.figure, None, "(sampled before each run of the figures below)"))
        try:
            run_with_ceiling(args, wanted, workdir, results, ceiling)
        finally:
            ceiling.stop()
    if "memory" in wanted:
        memory(args, workdir, results)
        report(results)
    if "scale" in wanted:
        scale(args, workdir, results)


def run_with_ceiling(args: argparse.Namespace, wanted: set[str], workdir: Path, results: Results,
                     ceiling: Ceiling) -> None:
    if "jwks" in wanted or "introspect" in wanted:
        jwks_and_introspection(args, workdir, results, ceiling)
        report(results)
    if "client_credentials" in wanted:
        backends = ["softhsm", "software"] if shutil.which("softhsm2-util") else ["software"]
        for backend in backends:
            for alg in ("ES256", "RS256"):
                client_credentials(args, workdir, results, ceiling, backend, alg)
                report(results)
    if "refresh" in wanted:
        refresh_tokens(args, workdir, results, ceiling)
        report(results)
    if "code_flow" in wanted:
        code_flow(args, workdir, results, ceiling)
        report(results)


def report(results: Results) -> None:
    print()
    print(f"{'figure':44} {'result':66} {'ceiling':>8} {'ratio':>6}")
    for figure, ceiling, ceiling_name in results:
        ratio = f"{figure.median / ceiling:6.2f}" if ceiling and figure.rps else "     -"
        ceiling_text = f"{ceiling:8.0f}" if ceiling else f"{'-':>8}"
        print(f"{figure.name:44} {figure.text():66} {ceiling_text} {ratio}  {ceiling_name}")
        if figure.note:
            print(f"{'':44} {figure.note}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--only", nargs="*", default=None, metavar="SCENARIO",
                        help="jwks introspect client_credentials refresh code_flow memory scale (default: all)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    wanted = set(args.only or ["jwks", "introspect", "client_credentials", "refresh", "code_flow", "memory",
                                "scale"])
    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-"))
    results: Results = []
    try:
        run_scenarios(args, wanted, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
