"""Loopback benchmarks of the provider under the shipped gunicorn configuration.

    python bench/run.py [--duration 10] [--runs 3] [--connections 16] [--only NAME ...]
                        [--databases sqlite postgresql] [--password-cost 1024] [--quiet-only]

Every user-facing flow, measured with its bound, on both databases (about 20 minutes):

    python bench/run.py --duration 5 --runs 3 --only client_credentials introspect refresh code_exchange code_flow login

Each figure: ``wrk`` (keep-alive on, Lua scripts for the POSTs) against the app
served by ``gunicorn -c gunicorn.conf.py`` with 2 workers, ``--runs`` runs of
``--duration`` seconds; the median and range of req/s and the median p50/p99
latency are printed next to the figure's bound and ceiling and the ratios.

* The *bound* of a figure is the same request answered by bench/minimal
  (the least a Flask route can do for it: parse, authenticate, the reads and
  writes of the provider's own tables the flow needs, sign, answer; no ORM,
  no Authlib), served the same way on the same kind of database (a fresh one,
  migrated by the provider, SQLite with the provider's own pragmas: WAL,
  synchronous=NORMAL) and key backend.  Its own line follows the figure's.
  Every flow's figures and its bound are measured run by run in turn (so they
  share the machine's drift), the database-backed ones on every one of
  ``--databases``.  A line under each also gives the gunicorn workers' CPU
  time per successful answer (from /proc, per run) and the bound's over the
  figure's: a ratio of what the two processes spend, which other tenants of a
  shared machine disturb far less than req/s (wrk, the kernel's loopback and
  PostgreSQL are left out).  From two runs on it also gives the ratio run by
  run (each provider run over the bound's run beside it: their median and
  range), and from seven runs on a 90 % bootstrap interval of that median
  (fixed seed): a ratio whose interval reaches below a target has not been
  shown to meet it.
* The provider is measured twice (unless ``--quiet-only``): ``[quiet]``, logging
  at WARNING and no metrics, as the bound; and ``[SHIPPED]``, the configuration
  it ships with: the default LOG_LEVEL (INFO, the JSON access lines) and
  Prometheus metrics on.
* Only successful answers count: a 2xx (a 302 carrying a ``code`` in the code
  flow, a 303 for a login), counted by a Lua hook added to every wrk script.
  A run with any other answer, a socket error, or a worker replaced while it
  ran (its PIDs changed, or gunicorn's log says "Booting worker") is FAILED:
  the table prints the counts instead of a rate or a ratio, and the command
  exits non-zero.
* The *peer*: node oidc-provider (the version bench/peer/package.json pins,
  installed by ``npm ci`` into bench/.peer, or BENCH_PEER_DIR, on first use)
  configured as the provider is for its client_credentials figure (ES256
  software key, JWT access tokens, ``node:cluster`` with 2 workers: the fair
  pairing with 2 gunicorn workers; bench/peer/server.mjs), measured run by run
  with the software ES256 figure and its bound; its line reads like ours
  (req/s, its workers' CPU per request, the bound's over its own).  Skipped,
  with a note, where node or npm is missing (``--no-peer`` skips it anyway).
* The *ceiling* is measured in the same run: the framework's (a trivial
  Flask route) right before each run of each figure, the raw signing rate
  next to each client_credentials figure.

Login is measured at ``--password-cost`` (scrypt's N; small, so that the
figure shows the provider's own work) and at the production default 2**15.
Before a bound is measured, one request of it is checked: its access and ID
tokens verify against its keys and its refresh token refreshes (the provider's
responses are checked the same way); the figure's note says so.
Benchmarks print figures; they assert nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import http.client
import http.cookies
import json
import os
import random
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.backends import softhsm_environment  # noqa: E402
from bench.minimal.database import Database  # noqa: E402
from bench.minimal.seed import Accounts, seed_accounts, seed_codes, seed_refresh_tokens  # noqa: E402

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
    #: CPU time the serving workers spent per request, each run (see :func:`worker_cpu_seconds`).
    cpu_ms: list[float] = field(default_factory=list)
    #: Why runs failed (answers that were not successes, socket errors, a worker respawned): a figure
    #: with any is reported as FAILED, not as a rate.
    failures: list[str] = field(default_factory=list)

    def add(self, run: WrkRun) -> None:
        """One wrk run's figures."""
        self.rps.append(run.rps)
        self.p50_ms.append(run.p50_ms)
        self.p99_ms.append(run.p99_ms)
        self.errors += run.errors
        if run.errors:
            self.failures.append(run.describe_errors())

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def median(self) -> float:
        return statistics.median(self.rps) if self.rps else 0.0

    def columns(self) -> str:
        """req/s median (range), p50, p99 and errors, in the report's columns."""
        if self.failed:
            return f"{'FAILED':>20} {'':>8} {'':>8} {self.errors or '':>6}"
        if not self.rps:
            return f"{'-':>20} {'':>8} {'':>8} {'':>6}"
        spread = f"{self.median:.0f} ({min(self.rps):.0f}-{max(self.rps):.0f})"
        return (f"{spread:>20} {statistics.median(self.p50_ms):8.2f} {statistics.median(self.p99_ms):8.2f} "
                f"{self.errors or '':>6}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


@dataclass
class ScriptWithArgs:
    """A wrk Lua script and the arguments its ``init(args)`` receives."""

    path: Path
    args: list[str]


#: What counts as a success: a 2xx answer (the default), a 302 that carries a ``code`` (the code flow's
#: /authorize), a 303 (a login's redirect).  Lua expressions of ``status`` and ``headers``.
OK_2XX = "status >= 200 and status < 300"
OK_2XX_OR_CODE = ('(status >= 200 and status < 300) or (status == 302 and '
                  '(headers["Location"] or headers["location"] or ""):match("[?&]code=[^&]") ~= nil)')
OK_303 = "status == 303"

#: Appended to every wrk script: counts each thread's successes (``%(ok)s``) and the other answers by
#: status, and prints the totals when the run ends (wrk alone counts only statuses >= 400 as errors).
COUNT_LUA = """
local bench_threads = {}
local bench_setup = setup
function setup(thread)
  table.insert(bench_threads, thread)
  if bench_setup then bench_setup(thread) end
end
bench_ok = 0
bench_bad = {}
local bench_response = response
function response(status, headers, body)
  if %(ok)s then
    bench_ok = bench_ok + 1
  else
    local key = "s" .. status
    if status == 302 then key = "s302-without-code" end
    bench_bad[key] = (bench_bad[key] or 0) + 1
  end
  if bench_response then bench_response(status, headers, body) end
end
function done(summary, latency, requests)
  local ok, bad = 0, {}
  for _, thread in ipairs(bench_threads) do
    ok = ok + thread:get("bench_ok")
    for key, n in pairs(thread:get("bench_bad")) do bad[key] = (bad[key] or 0) + n end
  end
  local line = "bench-answers ok=" .. ok
  for key, n in pairs(bad) do line = line .. " " .. string.sub(key, 2) .. "=" .. n end
  io.write(line .. "\\n")
end
"""


@dataclass
class WrkRun:
    """One wrk run: its rate and latencies, the successful answers, and everything else."""

    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    #: Answers that were not successes, by status ("404", "302-without-code").
    bad: dict[str, int]
    socket_errors: dict[str, int]
    #: Set by the caller: what else invalidates the run (a worker respawned).
    invalid: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(self.bad.values()) + sum(self.socket_errors.values()) + len(self.invalid)

    def describe_errors(self) -> str:
        parts = [f"{self.ok} successes"]
        parts += [f"{n} answered {status}" for status, n in sorted(self.bad.items())]
        parts += [f"{n} socket {kind} errors" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts + self.invalid)


def wrk(url: str, *, duration: float, connections: int,
        script: Path | ScriptWithArgs | None = None, ok: str = OK_2XX) -> WrkRun:
    """One wrk run of ``script`` (or plain GETs), every answer checked against ``ok``."""
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
               "--timeout", "10s"]
    trailing: list[str] = []
    source = ""
    if isinstance(script, ScriptWithArgs):
        source = script.path.read_text()
        trailing = ["--", *script.args]
    elif script is not None:
        source = script.read_text()
    handle, counted = tempfile.mkstemp(suffix=".lua")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(source + COUNT_LUA % {"ok": ok})
        done = subprocess.run(command + ["-s", counted, url, *trailing], capture_output=True, text=True,
                              timeout=duration + 60)
    finally:
        os.unlink(counted)
    output = done.stdout
    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    answers = re.search(r"^bench-answers ok=(\d+)(.*)$", output, re.M)
    if requests is None or answers is None:
        raise RuntimeError(f"wrk printed no rate: {(output + done.stderr)[-2000:]}")
    bad = {status: int(n) for status, n in (item.split("=") for item in answers.group(2).split())}
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                             (int(value) for value in socket.groups()), strict=True)) if socket else {}
    return WrkRun(float(requests.group(1)), _latency(output, "50"), _latency(output, "99"), int(answers.group(1)),
                  bad, socket_errors)


def measure(name: str, url: str, args: argparse.Namespace, script: Path | ScriptWithArgs | None = None,
            before_each: Callable[[], None] | None = None, ceiling: Ceiling | None = None) -> Figure:
    """One figure alone (see :func:`measure_together`)."""
    return measure_together(args, ceiling, Load(name, url, script, before_each))[0]


@dataclass
class Load:
    """What one figure's wrk runs send, and what to do before each run (reseeding what they use up)."""

    name: str
    url: str
    script: Path | ScriptWithArgs | None = None
    before_each: Callable[[], object] | None = None
    #: What counts as a successful answer (a Lua expression, see :data:`OK_2XX`).
    ok: str = OK_2XX
    #: What was checked of its answers before it was measured (its figure's note).
    note: str = ""


#: gunicorn masters by the URL they serve, so a run can read its workers' CPU time.
SERVERS: dict[str, int] = {}
#: Their logs, so a run can tell whether a worker was booted while it ran.
SERVER_LOGS: dict[str, Path] = {}


def _server_of(url: str, table: dict[str, Any]) -> Any:
    return next((value for base, value in table.items() if url.startswith(base + "/")), None)


def worker_times(url: str) -> dict[int, float] | None:
    """User and system CPU time so far of each gunicorn worker serving ``url`` (children of its master)."""
    master = _server_of(url, SERVERS)
    if master is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    times = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # fields[1] is the parent pid, [11] and [12] utime and stime
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    return times


def worker_cpu_seconds(url: str) -> float | None:
    """User and system CPU time so far of the gunicorn workers serving ``url``, together."""
    times = worker_times(url)
    return None if times is None else sum(times.values())


def workers_booted(url: str) -> int:
    """How many times the log of the server of ``url`` says it booted a worker."""
    log = _server_of(url, SERVER_LOGS)
    return log.read_text(errors="replace").count("Booting worker") if log is not None else 0


def measured_run(url: str, args: argparse.Namespace, script: Path | ScriptWithArgs | None, ok: str,
                 figure: Figure) -> WrkRun:
    """One run of a figure: its rate, its workers' CPU time per successful answer, and whether a worker
    was replaced while it ran (its PIDs changed, or the log says it booted one), which invalidates it.
    The run itself is returned (its count of successful answers)."""
    booted, before = workers_booted(url), worker_times(url)
    run = wrk(url, duration=args.duration, connections=args.connections, script=script, ok=ok)
    after = worker_times(url)
    if before is not None and after is not None and set(before) != set(after):
        run.invalid.append(f"workers {sorted(before)} became {sorted(after)}")
    if workers_booted(url) != booted:
        run.invalid.append("the log says a worker was booted during the run")
    figure.add(run)
    if before is not None and after is not None and run.ok and not run.errors:
        figure.cpu_ms.append((sum(after.values()) - sum(before.values())) * 1000 / run.ok)
    return run


def measure_together(args: argparse.Namespace, ceiling: Ceiling | None, *loads: Load) -> list[Figure]:
    """Figures measured run by run in turn (a provider figure, then its bound, then again).

    This machine's speed drifts by tens of percent within minutes; interleaved,
    a figure and its bound share that drift, and their ratio stays meaningful.
    Each run also records the workers' CPU time per request, which depends far
    less than req/s on what else the machine runs.
    """
    figures = [Figure(load.name) for load in loads]
    for load in loads:  # warm-up
        if load.before_each is not None:
            load.before_each()
        wrk(load.url, duration=min(2.0, args.duration), connections=args.connections, script=load.script,
            ok=load.ok)
    for _ in range(args.runs):
        for load, figure in zip(loads, figures, strict=True):
            if load.before_each is not None:
                load.before_each()
            if ceiling is not None:
                figure.ceilings.append(ceiling.sample())
            measured_run(load.url, args, load.script, load.ok, figure)
    return figures


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
                 database_url: str | None = None, shipped: bool = False) -> None:
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
        if shipped:  # the shipped logging (LOG_LEVEL's default, INFO: the JSON access lines) and metrics
            del self.env["LOG_LEVEL"]
            self.env["METRICS_BIND"] = f"127.0.0.1:{free_port()}"
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
        SERVERS[self.url] = self.process.pid
        SERVER_LOGS[self.url] = self.workdir / "gunicorn.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + ready, timeout=2):
                    pass
            except urllib.error.HTTPError:
                pass
            except OSError:
                time.sleep(0.2)
                continue
            # Every worker forked (not only the first that answered): a run must not see one boot.
            if len(self.workers()) >= WORKERS and workers_booted(self.url + "/") >= WORKERS:
                return
            time.sleep(0.2)
        log_tail = (self.workdir / "gunicorn.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"gunicorn did not start {WORKERS} workers within 60 s; its log ends:\n{log_tail}")

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
    body = "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in data.items()).encode()
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

@dataclass
class Row:
    """One line of the report: a figure, its ceiling, and (for a provider figure) its bound."""

    figure: Figure
    ceiling: float | None = None
    ceiling_name: str = ""
    #: The same request against bench/minimal under the same conditions (it gets a row of its own too).
    bound: Figure | None = None


Results = list[Row]

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
        measured_run(self.deployment.url + "/", self.args, None, OK_2XX, self.figure)
        return self.figure.rps[-1]

    def stop(self) -> None:
        self.deployment.stop()


def framework(figure: Figure) -> float:
    """The ceiling a figure is compared with: the median of the samples taken next to its runs."""
    return statistics.median(figure.ceilings)


def default_backend() -> str:
    return "softhsm" if shutil.which("softhsm2-util") else "software"


# -- checking what a route answers ------------------------------------------------------------

def call(base: str, method: str, path: str, form: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request, redirects not followed: status, headers, body."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    all_headers = dict(headers or {})
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        all_headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def token_problems(body: dict[str, Any], jwks: dict[str, Any]) -> list[str]:
    """What is wrong with a token response: a missing token, or a JWT whose signature does not verify."""
    from joserfc import jws
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    problems = []
    for name in ("access_token", "id_token"):
        try:
            jws.deserialize_compact(body[name], keys)
        except (KeyError, ValueError, JoseError) as exc:
            problems.append(f"{name}: {exc!r}")
    if "refresh_token" not in body:
        problems.append("no refresh_token")
    return problems


def check_token_response(base: str, auth: str, form: dict[str, str], jwks: Callable[[], dict[str, Any]]) -> str:
    """Redeem ``form`` at /token, verify both tokens, and refresh once with the refresh token answered."""
    problems: list[str] = []
    for attempt in ("first", "refresh"):
        status, _, body = call(base, "POST", "/token", form, {"Authorization": auth})
        if status != 200:
            return f"CHECK FAILED: {attempt} /token answered {status}: {body[:200]!r}"
        tokens = json.loads(body)
        problems += [f"{attempt}: {problem}" for problem in token_problems(tokens, jwks())]
        form = {"grant_type": "refresh_token", "refresh_token": tokens.get("refresh_token", "")}
    if problems:
        return "CHECK FAILED: " + "; ".join(problems)
    return "checked: access and ID tokens verify, the refresh token refreshes"


def code_from(status: int, headers: http.client.HTTPMessage) -> str | None:
    """The ``code`` of a 302 authorization response."""
    if status != 302:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(headers.get("Location", "")).query)
    return query.get("code", [None])[0]


def check_authorize(base: str, authorize: str, cookie: str, auth: str, verifier: str,
                    jwks: Callable[[], dict[str, Any]]) -> str:
    """One /authorize with ``cookie``, then :func:`check_token_response` of its code."""
    status, headers, body = call(base, "GET", authorize, headers={"Cookie": cookie})
    code = code_from(status, headers)
    if code is None:
        return f"CHECK FAILED: /authorize answered {status} {headers.get('Location')}: {body[:200]!r}"
    return check_token_response(base, auth, {"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": REDIRECT_URI, "code_verifier": verifier}, jwks)


def provider_jwks(deployment: Deployment) -> Callable[[], dict[str, Any]]:
    def jwks() -> dict[str, Any]:
        with urllib.request.urlopen(deployment.url + "/.well-known/jwks.json", timeout=10) as response:
            return json.load(response)
    return jwks


# -- databases ------------------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_database(kind: str, name: str) -> Iterator[str | None]:
    """A figure's database: None for SQLite (the deployment's own new file), else a new PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    url = postgres_database(name)
    try:
        yield url
    finally:
        drop_postgres_database(name)


# -- the bounds: bench/minimal --------------------------------------------------------------------

REDIRECT_URI = "http://127.0.0.1:1/cb"
USERNAME = "bench"


@dataclass
class MinimalRoutes:
    """bench/minimal served like the provider, on a database the provider migrated, with its
    client and user rows; what a benchmark needs to talk to it and to seed it."""

    deployment: Deployment
    client: dict[str, str]
    accounts: Accounts
    hash_key: bytes
    jwks_dir: Path

    @property
    def url(self) -> str:
        return self.deployment.url

    @property
    def workdir(self) -> Path:
        return self.deployment.workdir

    def database(self) -> Database:
        return Database(self.deployment.env["DATABASE_URL"])

    def jwks(self) -> dict[str, Any]:
        """The public keys the workers have made so far (each writes its own on first use)."""
        return {"keys": [json.loads(path.read_text()) for path in sorted(self.jwks_dir.glob("*.json"))]}

    def seed_refresh_tokens(self, count: int, path: Path) -> None:
        database = self.database()
        try:
            seed_refresh_tokens(database, self.accounts, self.hash_key, count, self.url, path)
        finally:
            database.close()

    def seed_codes(self, count: int, path: Path, verifier: str) -> None:
        database = self.database()
        try:
            seed_codes(database, self.accounts, self.hash_key, count, audience=self.url, redirect_uri=REDIRECT_URI,
                       verifier=verifier, path=path)
        finally:
            database.close()

    def stop(self) -> None:
        self.deployment.stop()


def minimal_route(workdir: Path, name: str, backend: str, database_url: str | None = None,
                  password_cost: int = 2**15, **settings: str) -> MinimalRoutes:
    """bench/minimal served like the provider (bench/trivial.conf.py), its rows seeded."""
    deployment = Deployment(workdir / f"minimal-{name}", backend=backend, database_url=database_url)
    client = {"client_id": "bench", "client_secret": secrets.token_urlsafe(32), "password": secrets.token_urlsafe(16)}
    hash_key = secrets.token_urlsafe(32)
    jwks_dir = deployment.workdir / "jwks"
    jwks_dir.mkdir()
    database = Database(deployment.env["DATABASE_URL"])
    try:
        accounts = seed_accounts(database, client_id=client["client_id"], redirect_uri=REDIRECT_URI, username=USERNAME,
                                 password=client["password"], password_cost=password_cost)
    finally:
        database.close()
    deployment.env.update(BENCH_BACKEND=backend, BENCH_CLIENT_ID=client["client_id"],
                          BENCH_CLIENT_SECRET=client["client_secret"], BENCH_REDIRECT_URI=REDIRECT_URI,
                          BENCH_DATABASE_URL=deployment.env["DATABASE_URL"], BENCH_HASH_KEY=hash_key,
                          BENCH_JWKS_DIR=str(jwks_dir), **settings)
    deployment.start(config="bench/trivial.conf.py", app="bench.minimal.app:app", ready="/token")
    return MinimalRoutes(deployment, client, accounts, hash_key.encode(), jwks_dir)


def framework_ceiling(figure: Figure) -> tuple[float, str]:
    return framework(figure), "framework"


def bound_rows(results: Results, figures: list[Figure], bound: Figure,
               ceiling_of: Callable[[Figure], tuple[float, str]] = framework_ceiling) -> None:
    """The provider's figures (quiet, then shipped) with their bound, and the bound's own line under them."""
    for figure in figures:
        results.append(Row(figure, *ceiling_of(figure), bound=bound))
    results.append(Row(bound, *ceiling_of(bound)))


#: The provider's configurations: quiet (LOG_LEVEL=WARNING, no metrics: what the bound does) and, unless
#: --quiet-only, the shipped one beside it (LOG_LEVEL's default INFO, one JSON access line per request,
#: and Prometheus metrics on).
QUIET, SHIPPED = " [quiet]", " [SHIPPED]"


def configurations(args: argparse.Namespace) -> list[bool]:
    """Whether each provider figure runs in the shipped configuration: quiet, then shipped."""
    return [False] if args.quiet_only else [False, True]


def config_label(shipped: bool) -> str:
    return SHIPPED if shipped else QUIET


# -- client_credentials, JWKS, introspection ----------------------------------------------------

@contextlib.contextmanager
def cc_provider(workdir: Path, backend: str, alg: str, database_url: str | None = None, label: str = "",
                shipped: bool = False, resource_server: bool = False) -> Iterator[tuple[Deployment, dict[str, Any]]]:
    """The provider with a client_credentials client, served until the block ends."""
    deployment = Deployment(workdir / f"cc-{backend}-{alg}{label}{'-shipped' if shipped else ''}", backend=backend,
                            at_alg=alg, database_url=database_url, shipped=shipped)
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api",
                                      *(["--resource-server"] if resource_server else []))
    deployment.start()
    try:
        yield deployment, client
    finally:
        deployment.stop()


def client_credentials(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling | None,
                       backend: str, alg: str, database_url: str | None = None, label: str = "") -> Figure:
    """client_credentials on the provider (quiet and shipped) and on its bound, run by run in turn."""
    body = "grant_type=client_credentials&scope=api"
    if ceiling is None:  # the scale scenario's: the provider's figure alone
        with cc_provider(workdir, backend, alg, database_url, label) as (deployment, client):
            script = lua_post(deployment.workdir, "cc", body, {"Authorization": basic(client)})
            return measure(f"client_credentials {alg} via {backend}{label}", deployment.url + "/token", args, script)
    with contextlib.ExitStack() as stack:
        loads = []
        raw = 0.0
        for shipped in configurations(args):
            deployment, client = stack.enter_context(cc_provider(workdir, backend, alg, database_url, label, shipped))
            loads.append(Load(f"client_credentials {alg} via {backend}{label}{config_label(shipped)}",
                              deployment.url + "/token",
                              lua_post(deployment.workdir, "cc", body, {"Authorization": basic(client)})))
            raw = raw or raw_sign_rate(deployment, backend, alg) * WORKERS
        if backend == "software" and alg == "ES256":  # the peer's configuration
            peer = stack.enter_context(peer_load(args, workdir))
            if peer is not None:
                loads.append(peer)
        minimal = minimal_route(workdir, f"{backend}-{alg}", backend, BENCH_ALG=alg)
        stack.callback(minimal.stop)
        loads.append(Load(f"  bound: minimal client_credentials, {alg} via {backend}", minimal.url + "/token",
                          lua_post(minimal.workdir, "cc", body, {"Authorization": basic(minimal.client)})))
        *figures, bound = measure_together(args, ceiling, *loads)
        for load, figure in zip(loads, figures, strict=False):
            figure.note = load.note or figure.note

    def signing_or_framework(figure: Figure) -> tuple[float, str]:
        return (min(raw, framework(figure)),
                f"min(raw signing x{WORKERS} workers = {raw:.0f}, framework {framework(figure):.0f})")

    bound_rows(results, figures, bound, signing_or_framework)
    return figures[0]


# -- the peer: node oidc-provider ---------------------------------------------------------------------

PEER_SOURCE = ROOT / "bench" / "peer"
PEER_FILES = ("package.json", "package-lock.json", "server.mjs")


def peer_directory() -> Path | None:
    """Where the peer is installed (BENCH_PEER_DIR, else bench/.peer, ignored by git): its pinned
    version, ``npm ci``-installed on first use.  None (and why, printed) without node or npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("peer skipped: node and npm are needed to run node oidc-provider", file=sys.stderr)
        return None
    directory = Path(os.environ.get("BENCH_PEER_DIR") or ROOT / "bench" / ".peer")
    directory.mkdir(parents=True, exist_ok=True)
    changed = False
    for name in PEER_FILES:
        source, target = PEER_SOURCE / name, directory / name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
            changed = changed or name != "server.mjs"
    if changed or not (directory / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=directory, check=True,
                       timeout=600)
    return directory


def peer_version(directory: Path) -> str:
    return str(json.loads((directory / "node_modules" / "oidc-provider" / "package.json").read_text())["version"])


@contextlib.contextmanager
def peer_server(workdir: Path, directory: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """node oidc-provider served by bench/peer/server.mjs (2 cluster workers) until the block ends:
    its URL and its client."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = {"client_id": "bench", "client_secret": secrets.token_urlsafe(32)}
    (workdir / "peer").mkdir(parents=True, exist_ok=True)
    log_path = workdir / "peer" / "node.log"
    env = {**os.environ, "PORT": str(port), "ISSUER": url, "CLIENT_ID": client["client_id"],
           "CLIENT_SECRET": client["client_secret"], "WORKERS": str(WORKERS), "NODE_ENV": "production"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(["node", "server.mjs"], cwd=directory, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    SERVERS[url], SERVER_LOGS[url] = process.pid, log_path
    try:
        deadline = time.monotonic() + 60
        while workers_booted(url + "/") < WORKERS or len(worker_times(url + "/") or {}) < WORKERS:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"node oidc-provider did not start; its log ends:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        while True:  # listening (each worker listens once it has imported the provider)
            try:
                call(url, "GET", "/.well-known/openid-configuration")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, client
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def check_peer_token(url: str, client: dict[str, str]) -> str:
    """One client_credentials token of the peer, verified against its JWKS (ES256, typ at+jwt)."""
    from joserfc import jws
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    status, _, body = call(url, "POST", "/token", {"grant_type": "client_credentials", "scope": "api"},
                           {"Authorization": basic(client)})
    if status != 200:
        return f"CHECK FAILED: /token answered {status}: {body[:200]!r}"
    _, _, jwks = call(url, "GET", "/jwks")
    try:
        token = jws.deserialize_compact(json.loads(body)["access_token"], KeySet.import_key_set(json.loads(jwks)))
    except (KeyError, ValueError, JoseError) as exc:
        return f"CHECK FAILED: the access token does not verify: {exc!r}"
    if token.headers().get("alg") != "ES256" or token.headers().get("typ") != "at+jwt":
        return f"CHECK FAILED: the access token's header is {token.headers()}"
    return "checked: its ES256 at+jwt access token verifies against its JWKS"


@contextlib.contextmanager
def peer_load(args: argparse.Namespace, workdir: Path) -> Iterator[Load | None]:
    """The peer's client_credentials load, served until the block ends; None when it is not measured."""
    directory = None if args.no_peer else peer_directory()
    if directory is None:
        yield None
        return
    with peer_server(workdir, directory) as (url, client):
        name = f"peer: node oidc-provider {peer_version(directory)}, client_credentials ES256 (software key)"
        script = lua_post(workdir / "peer", "cc", "grant_type=client_credentials&scope=api",
                          {"Authorization": basic(client)})
        yield Load(name, url + "/token", script, note=check_peer_token(url, client))


@contextlib.contextmanager
def minimal_introspection_route(workdir: Path) -> Iterator[Load]:
    """Introspection against bench/minimal: verify ES256, one indexed read, JSON; served until the block ends."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from keys.algorithms import get_algorithm
    from keys.software import signing_function

    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    minimal = minimal_route(workdir, "introspect", "software", BENCH_PUBLIC_KEY=public_pem)
    now = int(time.time())
    claims = {"iss": minimal.url, "sub": "bench", "aud": minimal.url, "client_id": "bench", "iat": now,
              "exp": now + 3600, "jti": secrets.token_urlsafe(18), "scope": "api"}
    segments = [base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                for part in ({"alg": "ES256", "kid": "bench", "typ": "at+jwt"}, claims)]
    signing_input = ".".join(segments)
    signature = signing_function(key, get_algorithm("ES256"))(signing_input.encode())
    token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    script = lua_post(minimal.workdir, "introspect", f"token={token}", {"Authorization": basic(minimal.client)})
    try:
        yield Load("  bound: minimal introspection (ES256)", minimal.url + "/introspect", script)
    finally:
        minimal.stop()


def jwks_and_introspection(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling,
                           wanted: set[str]) -> None:
    """The JWKS document, and introspection of a JWT access token (quiet and shipped) run by run in turn
    with its bound."""
    backend = default_backend()
    if "jwks" in wanted:
        with cc_provider(workdir, backend, "ES256", label="-jwks") as (deployment, _):
            jwks = measure("GET /.well-known/jwks.json", deployment.url + "/.well-known/jwks.json", args,
                           ceiling=ceiling)
        results.append(Row(jwks, framework(jwks), "framework"))
    if "introspect" not in wanted:
        return
    with contextlib.ExitStack() as stack:
        loads = []
        for shipped in configurations(args):
            deployment, client = stack.enter_context(
                cc_provider(workdir, backend, "ES256", label="-introspect", shipped=shipped, resource_server=True))
            token = post(deployment.url + "/token", {"grant_type": "client_credentials", "scope": "api"},
                         {"Authorization": basic(client)})["access_token"]
            loads.append(Load(f"POST /introspect (JWT access token){config_label(shipped)}",
                              deployment.url + "/introspect",
                              lua_post(deployment.workdir, "introspect", f"token={token}",
                                       {"Authorization": basic(client)})))
        loads.append(stack.enter_context(minimal_introspection_route(workdir)))
        *figures, bound = measure_together(args, ceiling, *loads)
    bound_rows(results, figures, bound)


# -- refresh, code exchange, code flow, login -------------------------------------------------------
#
# Each is measured on the provider, then its bound on bench/minimal, on a fresh
# database of the same kind and the same key backend (SoftHSM2 where installed).

SEED_REFRESH = """
import os, sys, uuid
sys.path.insert(0, os.environ["PYTHONPATH"])
from oidc.app import create_app
from oidc.accounts.clients import get_client
from oidc.accounts.users import get_user
from oidc.db import db
from oidc.oauth2.families import AuthContext, default_audience, new_refresh_token, write_tokens
from oidc.oauth2.records import TokenWrites
from oidc.state import now
app = create_app()
with app.app_context():
    client, user = get_client(sys.argv[1]), get_user(sys.argv[2])
    writes = TokenWrites()
    for _ in range(int(sys.argv[3])):
        context = AuthContext(grant_id=uuid.uuid4().hex, audience=default_audience(), auth_time=now())
        print(new_refresh_token(client, user, "openid offline_access", context, writes))
    write_tokens(writes)
    db.session.commit()
"""

#: Codes as the provider's authorization endpoint stores them (AuthorizationCodeGrant.save_authorization_code):
#: scope openid, a nonce, an S256 challenge of argv[4], and the sid of a login session of the user (as after a
#: login; a refresh token of a grant without offline_access lives only as long as its login session).
SEED_CODES = """
import hashlib, os, sys, uuid
sys.path.insert(0, os.environ["PYTHONPATH"])
from oidc import hashing
from oidc.app import create_app
from oidc.accounts.clients import get_client
from oidc.accounts.sessions import start_session
from oidc.accounts.users import get_user
from oidc.db import db
from oidc.models import AuthorizationCode
from oidc.oauth2.families import default_audience
from oidc.state import current_state
app = create_app()
with app.app_context():
    state = current_state()
    client, user = get_client(sys.argv[1]), get_user(sys.argv[2])
    hasher, moment = state.hasher(hashing.CODE), state.clock.now()
    challenge = hashing.b64url(hashlib.sha256(sys.argv[4].encode()).digest())
    sid = start_session(user).sid
    for _ in range(int(sys.argv[3])):
        code = hashing.random_token(32)
        db.session.add(AuthorizationCode(
            code_hash=hasher.hash(code), grant_id=uuid.uuid4().hex, client_pk=client.id, user_pk=user.id,
            redirect_uri=sys.argv[5], redirect_uri_given=True, scope="openid", audience=default_audience(),
            nonce="n", code_challenge=challenge, code_challenge_method="S256", auth_time=moment, sid=sid,
            created_at=moment, expires_at=moment + 600))
        print(code)
    db.session.commit()
"""

#: Single-use values (refresh tokens, codes) from a file (args[1]), split between wrk's threads (args[2]),
#: each sent once in the body ``%(body)s`` followed by the value.  An empty pool asks for a path no app
#: serves: errors, not a faster figure.  ``%(response)s`` may put an answer's value back (a rotated token).
POOL_LUA = """
local pool = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    if n %% tonumber(args[2]) == id then table.insert(pool, line) end
    n = n + 1
  end
end
function request()
  local value = table.remove(pool)
  if value == nil then return wrk.format("GET", "/bench-pool-exhausted") end
  return wrk.format("POST", "/token", {["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "%(auth)s"}, "%(body)s" .. value)
end
%(response)s
"""

#: Refresh tokens: each answer's new refresh token goes back into the pool.
_REFRESH_RESPONSE = """
function response(status, headers, body)
  local token = body:match('"refresh_token":%s*"([^"]+)"')
  if token then table.insert(pool, token) end
end"""


def refresh_lua(auth: str) -> str:
    """The refresh-token pool script for a client's Authorization header."""
    return POOL_LUA % {"auth": auth, "body": "grant_type=refresh_token&refresh_token=",
                       "response": _REFRESH_RESPONSE}


def code_exchange_lua(auth: str, redirect: str, verifier: str) -> str:
    """The code pool script: each code redeemed once with ``verifier``."""
    return POOL_LUA % {"auth": auth, "response": "",
                       "body": f"grant_type=authorization_code&redirect_uri={redirect}&code_verifier={verifier}&code="}


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

#: Codes seeded per run: more than the fastest route redeems in a run (an empty pool shows as errors).
CODES_PER_SECOND = 2000
#: The provider's default PASSWORD_HASH_COST.
PRODUCTION_PASSWORD_COST = 2**15


def user_and_client(deployment: Deployment, *extra: str) -> dict[str, Any]:
    password = secrets.token_urlsafe(16)
    deployment.flask("users", "create", USERNAME, "--password-stdin", stdin=password + "\n")
    client = deployment.create_client("--name", "bench-rp", "--redirect-uri", REDIRECT_URI,
                                      "--grant-type", "authorization_code", "--grant-type", "refresh_token",
                                      "--scope", "openid offline_access", "--first-party", "--refresh-always",
                                      *extra)
    client["password"] = password
    return client


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_path(client_id: str, challenge: str) -> str:
    return "/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})


def seed_with_provider(deployment: Deployment, script: str, *argv: str) -> list[str]:
    """Run a seeding script of the provider's own code in its environment; the values it prints."""
    out = subprocess.run([sys.executable, "-c", script, *argv], env=deployment.env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"seeding failed: {out.stderr[-2000:]}")
    return out.stdout.split()


def refresh_tokens(args: argparse.Namespace, workdir: Path, database_url: str | None = None,
                   label: str = "") -> Figure:
    """The provider's refresh figure alone, without ceiling or bound (the scale scenario's)."""
    backend = default_backend()
    deployment = Deployment(workdir / f"refresh{label}", backend=backend, database_url=database_url)
    client = user_and_client(deployment)
    deployment.start()
    pool = deployment.workdir / "refresh-tokens.txt"
    script = deployment.workdir / "refresh.lua"
    script.write_text(refresh_lua(basic(client)))

    def reseed() -> None:  # a fresh pool per run: rotation consumes them
        pool.write_text("\n".join(seed_with_provider(deployment, SEED_REFRESH, client["client_id"], USERNAME, "256")))

    try:
        return measure(f"refresh_token with rotation ({backend}){label}", deployment.url + "/token", args,
                       ScriptWithArgs(script, [str(pool), "2"]), before_each=reseed)
    finally:
        deployment.stop()


@contextlib.contextmanager
def provider_on(workdir: Path, name: str, database: str, backend: str, shipped: bool = False,
                **settings: str) -> Iterator[tuple[Deployment, dict[str, Any]]]:
    """The provider on a fresh database, with a user and a first-party client; served until the block ends."""
    name += "_shipped" if shipped else ""
    with fresh_database(database, f"oidc_bench_{name}") as url:
        deployment = Deployment(workdir / f"{name}-{database}", backend=backend, database_url=url, shipped=shipped)
        deployment.env.update(settings)  # (PASSWORD_HASH_COST: before the user's hash is made)
        client = user_and_client(deployment)
        deployment.start()
        try:
            yield deployment, client
        finally:
            deployment.stop()


@contextlib.contextmanager
def minimal_on(workdir: Path, name: str, database: str, backend: str,
               password_cost: int = PRODUCTION_PASSWORD_COST) -> Iterator[MinimalRoutes]:
    """bench/minimal on a fresh database of the same kind; served until the block ends."""
    with fresh_database(database, f"oidc_bench_{name}_minimal") as url:
        minimal = minimal_route(workdir, f"{name}-{database}", backend, url, password_cost)
        try:
            yield minimal
        finally:
            minimal.stop()


def refresh_scenario(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling,
                     database: str) -> None:
    """refresh_token with rotation: 256 families per run, each answer's refresh token used next."""
    backend = default_backend()
    with contextlib.ExitStack() as stack:
        loads, notes = [], []
        for shipped in configurations(args):
            deployment, client = stack.enter_context(provider_on(workdir, "refresh", database, backend, shipped))
            pool, script = deployment.workdir / "refresh-tokens.txt", deployment.workdir / "refresh.lua"
            script.write_text(refresh_lua(basic(client)))

            def seed_provider(count: int, deployment: Deployment = deployment, client: dict[str, Any] = client,
                              pool: Path = pool) -> None:
                pool.write_text("\n".join(seed_with_provider(deployment, SEED_REFRESH, client["client_id"], USERNAME,
                                                             str(count))))

            seed_provider(1)
            notes.append(check_token_response(deployment.url, basic(client), {
                "grant_type": "refresh_token", "refresh_token": pool.read_text().strip()}, provider_jwks(deployment)))
            loads.append(Load(f"refresh_token with rotation ({backend}) [{database}]{config_label(shipped)}",
                              deployment.url + "/token", ScriptWithArgs(script, [str(pool), "2"]),
                              functools.partial(seed_provider, 256)))
        minimal = stack.enter_context(minimal_on(workdir, "refresh", database, backend))
        minimal_pool, minimal_script = minimal.workdir / "refresh-tokens.txt", minimal.workdir / "refresh.lua"
        minimal_script.write_text(refresh_lua(basic(minimal.client)))
        minimal.seed_refresh_tokens(1, minimal_pool)
        minimal_checked = check_token_response(minimal.url, basic(minimal.client), {
            "grant_type": "refresh_token", "refresh_token": minimal_pool.read_text().strip()}, minimal.jwks)
        *figures, bound = measure_together(
            args, ceiling, *loads,
            Load(f"  bound: minimal refresh_token [{database}]", minimal.url + "/token",
                 ScriptWithArgs(minimal_script, [str(minimal_pool), "2"]),
                 lambda: minimal.seed_refresh_tokens(256, minimal_pool)))
    for figure, note in zip(figures, notes, strict=True):
        figure.note = note
    bound.note = minimal_checked
    bound_rows(results, figures, bound)


def code_exchange(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling,
                  database: str) -> None:
    """POST /token with codes seeded straight into the database, each redeemed once."""
    backend, verifier = default_backend(), secrets.token_urlsafe(48)
    count = int(CODES_PER_SECOND * max(args.duration, 2.0))
    redirect = urllib.parse.quote(REDIRECT_URI, safe="")
    exchange = {"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    with contextlib.ExitStack() as stack:
        loads, notes = [], []
        for shipped in configurations(args):
            deployment, client = stack.enter_context(
                provider_on(workdir, "code_exchange", database, backend, shipped))
            pool, script = deployment.workdir / "codes.txt", deployment.workdir / "code-exchange.lua"
            script.write_text(code_exchange_lua(basic(client), redirect, verifier))

            def seed_provider(n: int, deployment: Deployment = deployment, client: dict[str, Any] = client,
                              pool: Path = pool) -> None:
                pool.write_text("\n".join(seed_with_provider(deployment, SEED_CODES, client["client_id"], USERNAME,
                                                             str(n), verifier, REDIRECT_URI)))

            seed_provider(1)
            notes.append(check_token_response(deployment.url, basic(client),
                                              {**exchange, "code": pool.read_text().strip()},
                                              provider_jwks(deployment)))
            loads.append(Load(f"code exchange ({backend}) [{database}]{config_label(shipped)}",
                              deployment.url + "/token", ScriptWithArgs(script, [str(pool), "2"]),
                              functools.partial(seed_provider, count)))
        minimal = stack.enter_context(minimal_on(workdir, "code_exchange", database, backend))
        minimal_pool, minimal_script = minimal.workdir / "codes.txt", minimal.workdir / "code-exchange.lua"
        minimal_script.write_text(code_exchange_lua(basic(minimal.client), redirect, verifier))
        minimal.seed_codes(1, minimal_pool, verifier)
        minimal_checked = check_token_response(minimal.url, basic(minimal.client),
                                               {**exchange, "code": minimal_pool.read_text().strip()}, minimal.jwks)
        *figures, bound = measure_together(
            args, ceiling, *loads,
            Load(f"  bound: minimal code exchange [{database}]", minimal.url + "/token",
                 ScriptWithArgs(minimal_script, [str(minimal_pool), "2"]),
                 lambda: minimal.seed_codes(count, minimal_pool, verifier)))
    for figure, note in zip(figures, notes, strict=True):
        figure.note = note
    bound.note = minimal_checked
    bound_rows(results, figures, bound)


def login_form(base: str, path: str = "/login", cookie: str = "") -> tuple[str, str]:
    """GET the login page like a browser: the form's CSRF token and the session cookie that goes with it."""
    status, headers, body = call(base, "GET", path, headers={"Cookie": cookie} if cookie else None)
    page = body.decode()
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page)
    if status != 200 or csrf is None:
        raise RuntimeError(f"GET {path} answered {status} without a CSRF token")
    return csrf.group(1), cookie_of(headers, cookie)


def cookie_of(headers: http.client.HTTPMessage, sent: str = "") -> str:
    """The Cookie header a browser sends next: ``sent``'s cookies, updated by a response's Set-Cookie
    headers (a cookie set again is replaced, one expired is dropped)."""
    jar = {name: value for name, _, value in (pair.partition("=") for pair in sent.split("; ") if pair)}
    for header in headers.get_all("Set-Cookie") or []:
        for name, morsel in http.cookies.SimpleCookie(header).items():
            expired = morsel["max-age"] == "0" or morsel["expires"].endswith(" 1970 00:00:00 GMT")
            if expired:
                jar.pop(name, None)
            else:
                jar[name] = morsel.value
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def provider_login(deployment: Deployment, password: str, authorize: str) -> tuple[dict[str, str], str, str]:
    """A valid login form post for the interaction ``authorize`` starts; the Cookie header it goes with;
    and, after one such post, the signed-in session's Cookie header.

    Like a browser without a session: /authorize sends it to the login page
    with an interaction id, whose post answers 303 back to /authorize/resume.
    The post stays valid: its CSRF token, tied to the pre-login session cookie,
    is good for CSRF_TIME_LIMIT, and the interaction records each new login
    until it is used, however many times it is posted.
    """
    status, headers, _ = call(deployment.url, "GET", authorize)
    location = headers.get("Location", "")
    if status != 302 or "interaction=" not in location:
        raise RuntimeError(f"GET /authorize without a session answered {status} to {location!r}")
    interaction = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["interaction"][0]
    csrf, cookie = login_form(deployment.url, location, cookie_of(headers))
    form = {"csrf_token": csrf, "username": USERNAME, "password": password, "interaction": interaction}
    status, answer, body = call(deployment.url, "POST", "/login", form, {"Cookie": cookie, "Origin": deployment.url})
    if status != 303:
        raise RuntimeError(f"POST /login answered {status}: {body[:300]!r}")
    return form, cookie, cookie_of(answer, cookie)


def minimal_login(minimal: MinimalRoutes, form: dict[str, str]) -> str:
    """One login at bench/minimal; its session's Cookie header."""
    status, headers, body = call(minimal.url, "POST", "/login", form)
    if status != 303:
        raise RuntimeError(f"minimal POST /login answered {status}: {body[:200]!r}")
    return cookie_of(headers)


def code_flow_script(directory: Path, authorize: str, cookie: str, auth: str, verifier: str) -> Path:
    script = directory / "code-flow.lua"
    script.write_text(CODE_FLOW_LUA % {"authorize": authorize, "cookie": cookie, "auth": auth,
                                       "redirect": urllib.parse.quote(REDIRECT_URI, safe=""), "verifier": verifier})
    return script


def code_flow(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling, database: str) -> None:
    """GET /authorize with a session, then /token with its code, alternating; the bound is bench/minimal's
    /authorize and code exchange in the same alternation (the sum of their costs).  A 302 without a code
    is a failure."""
    backend = default_backend()
    verifier, challenge = pkce_pair()
    with contextlib.ExitStack() as stack:
        loads, notes = [], []
        for shipped in configurations(args):
            deployment, client = stack.enter_context(provider_on(workdir, "code_flow", database, backend, shipped))
            authorize = authorize_path(client["client_id"], challenge)
            cookie = provider_login(deployment, client["password"], authorize)[2]
            notes.append(check_authorize(deployment.url, authorize, cookie, basic(client), verifier,
                                         provider_jwks(deployment)))
            loads.append(Load(f"code flow: /authorize + /token ({backend}) [{database}]{config_label(shipped)}",
                              deployment.url + "/",
                              code_flow_script(deployment.workdir, authorize, cookie, basic(client), verifier),
                              ok=OK_2XX_OR_CODE))
        minimal = stack.enter_context(minimal_on(workdir, "code_flow", database, backend))
        minimal_authorize = authorize_path(minimal.client["client_id"], challenge)
        minimal_cookie = minimal_login(minimal, {"username": USERNAME, "password": minimal.client["password"],
                                                 "next": minimal_authorize})
        minimal_checked = check_authorize(minimal.url, minimal_authorize, minimal_cookie, basic(minimal.client),
                                          verifier, minimal.jwks)
        *figures, bound = measure_together(
            args, ceiling, *loads,
            Load(f"  bound: minimal /authorize + /token [{database}]", minimal.url + "/",
                 code_flow_script(minimal.workdir, minimal_authorize, minimal_cookie, basic(minimal.client), verifier),
                 ok=OK_2XX_OR_CODE))
    for figure, note in zip(figures, notes, strict=True):
        figure.note = f"{note}; {figure.median / 2:.0f} complete flows/s (first-party client, existing session)"
    bound.note = f"{minimal_checked}; {bound.median / 2:.0f} complete flows/s"
    bound_rows(results, figures, bound)


def login(args: argparse.Namespace, workdir: Path, results: Results, ceiling: Ceiling, database: str,
          cost: int) -> None:
    """POST /login of the right password (a 303 back to /authorize), with users hashed at scrypt N = ``cost``.

    The provider's form post is one made valid once: its CSRF token (tied to the
    pre-login session cookie sent with every post) stays valid for its lifetime,
    the Origin header is the issuer's, and successful logins give their throttle
    counts back, so every post is a full successful login (any answer but a 303 is a failure).
    """
    backend = default_backend()
    verifier, challenge = pkce_pair()
    with contextlib.ExitStack() as stack:
        loads, notes = [], []
        for shipped in configurations(args):
            deployment, client = stack.enter_context(provider_on(workdir, f"login_{cost}", database, backend, shipped,
                                                                 PASSWORD_HASH_COST=str(cost)))
            authorize = authorize_path(client["client_id"], challenge)
            form, cookie, session = provider_login(deployment, client["password"], authorize)
            notes.append(check_authorize(deployment.url, authorize, session, basic(client), verifier,
                                         provider_jwks(deployment)))
            loads.append(Load(f"login, scrypt N=2^{cost.bit_length() - 1} ({backend}) [{database}]"
                              f"{config_label(shipped)}", deployment.url + "/login",
                              lua_post(deployment.workdir, "login", urllib.parse.urlencode(form),
                                       {"Cookie": cookie, "Origin": deployment.url}), ok=OK_303))
        minimal = stack.enter_context(minimal_on(workdir, f"login_{cost}", database, backend, password_cost=cost))
        minimal_authorize = authorize_path(minimal.client["client_id"], challenge)
        minimal_form = {"username": USERNAME, "password": minimal.client["password"], "next": minimal_authorize}
        minimal_checked = check_authorize(minimal.url, minimal_authorize, minimal_login(minimal, minimal_form),
                                          basic(minimal.client), verifier, minimal.jwks)
        *figures, bound = measure_together(
            args, ceiling, *loads,
            Load(f"  bound: minimal login [{database}]", minimal.url + "/login",
                 lua_post(minimal.workdir, "login", urllib.parse.urlencode(minimal_form), {}), ok=OK_303))
    for figure, note in zip(figures, notes, strict=True):
        figure.note = f"{figure.median:.0f} logins/s; the session it made {note.replace('checked: ', 'authorizes, ')}"
    bound.note = f"{bound.median:.0f} logins/s; the session it made {minimal_checked.replace('checked: ', 'authorizes, ')}"
    bound_rows(results, figures, bound)


def memory(args: argparse.Namespace, workdir: Path, results: Results, seconds: float = 60.0) -> None:
    deployment = Deployment(workdir / "memory", backend=default_backend())
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    deployment.start()
    script = lua_post(deployment.workdir, "cc", "grant_type=client_credentials&scope=api",
                      {"Authorization": basic(client)})
    try:
        wrk(deployment.url + "/token", duration=3, connections=args.connections, script=script)
        workers = deployment.workers()
        before = {pid: rss_kib(pid) for pid in workers}
        run = wrk(deployment.url + "/token", duration=seconds, connections=args.connections, script=script)
        after = {pid: rss_kib(pid) for pid in workers}
    finally:
        deployment.stop()
    figure = Figure(f"memory: worker RSS over a {seconds:.0f} s client_credentials run")
    figure.add(run)
    rps = run.rps
    growth = [100.0 * (after[pid] - before[pid]) / before[pid] for pid in workers]
    figure.note = ", ".join(f"worker {pid}: {before[pid] / 1024:.1f} -> {after[pid] / 1024:.1f} MiB ({g:+.1f} %)"
                            for pid, g in zip(workers, growth, strict=False)) + f"  at {rps:.0f} req/s"
    results.append(Row(figure))


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
    """client_credentials and refresh on a small and on a large database, SQLite and PostgreSQL.

    Each figure has a database of its own (on SQLite a file in its own directory): a
    deployment's hashing keys are sealed under its own system secret, and a large one is
    seeded for its figure.
    """
    global Deployment
    plain = Deployment
    for database in args.databases:
        for size in ("small", "large"):
            names = {figure: f"oidc_bench_{database}_{size}_{figure}" for figure in ("cc", "rt")}
            urls = {figure: postgres_database(name) if database == "postgresql" else None
                    for figure, name in names.items()}
            Deployment = plain if size == "small" else Seeded  # type: ignore[misc]
            try:
                label = f" [{database}, {size} db]"
                cc = client_credentials(args, workdir, [], None, default_backend(), "ES256", database_url=urls["cc"],
                                        label=label)
                rt = refresh_tokens(args, workdir, database_url=urls["rt"], label=label)
            finally:
                Deployment = plain  # type: ignore[misc]
                for figure, url in urls.items():
                    if url:
                        drop_postgres_database(names[figure])
            if size == "small":
                small = {"cc": cc.median, "rt": rt.median}
                results.append(Row(cc))
                results.append(Row(rt))
            else:
                results.append(Row(cc, small["cc"], "small-db figure"))
                results.append(Row(rt, small["rt"], "small-db figure"))
            report(results)


# -- running and reporting ----------------------------------------------------------------------------

WITH_CEILING = ("jwks", "introspect", "client_credentials", "refresh", "code_exchange", "code_flow", "login")
SCENARIOS = (*WITH_CEILING, "memory", "scale")


def run_scenarios(args: argparse.Namespace, wanted: set[str], workdir: Path, results: Results) -> None:
    if wanted & set(WITH_CEILING):
        ceiling = Ceiling(args, workdir)
        results.append(Row(ceiling.figure, None, "(sampled before each run of the figures below)"))
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
        jwks_and_introspection(args, workdir, results, ceiling, wanted)
        report(results)
    if "client_credentials" in wanted:
        backends = ["softhsm", "software"] if shutil.which("softhsm2-util") else ["software"]
        for backend in backends:
            for alg in ("ES256", "RS256"):
                client_credentials(args, workdir, results, ceiling, backend, alg)
                report(results)
    for database in args.databases:
        run_on_database(args, wanted, workdir, results, ceiling, database)


def run_on_database(args: argparse.Namespace, wanted: set[str], workdir: Path, results: Results,
                    ceiling: Ceiling, database: str) -> None:
    """The scenarios of ``wanted`` whose figures depend on the database."""
    if "refresh" in wanted:
        refresh_scenario(args, workdir, results, ceiling, database)
        report(results)
    if "code_exchange" in wanted:
        code_exchange(args, workdir, results, ceiling, database)
        report(results)
    if "code_flow" in wanted:
        code_flow(args, workdir, results, ceiling, database)
        report(results)
    if "login" in wanted:
        for cost in dict.fromkeys((args.password_cost, PRODUCTION_PASSWORD_COST)):
            login(args, workdir, results, ceiling, database, cost)
            report(results)


def report(results: Results) -> None:
    """The table so far: one line per figure, a bound's line under its figure, notes indented below.

    A figure with a failed run (an answer that was not a success, a socket error, a worker replaced
    during the run) shows FAILED and why, never a rate or a ratio.
    """
    print()
    print("[quiet] = LOG_LEVEL=WARNING, no metrics, as the bound; [SHIPPED] = the default LOG_LEVEL INFO "
          "(JSON access lines) and metrics on; only successful answers count")
    print(f"{'figure':66} {'req/s (range)':>20} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'bound':>7} "
          f"{'/bound':>6} {'ceiling':>7} {'/ceil':>5}  ceiling is")
    for row in results:
        figure = row.figure
        bound = f"{row.bound.median:7.0f}" if row.bound and row.bound.rps and not row.bound.failed else f"{'':>7}"
        valid = not figure.failed and not (row.bound and row.bound.failed)
        to_bound = (f"{figure.median / row.bound.median:6.2f}" if valid and row.bound and row.bound.median
                    else f"{'':>6}")
        ceiling = f"{row.ceiling:7.0f}" if row.ceiling else f"{'-':>7}"
        to_ceiling = f"{figure.median / row.ceiling:5.2f}" if valid and row.ceiling and figure.rps else f"{'-':>5}"
        print(f"{figure.name:66} {figure.columns()} {bound} {to_bound} {ceiling} {to_ceiling}  {row.ceiling_name}")
        if figure.failed:
            for number, failure in enumerate(figure.failures, 1):
                print(f"{'':6}FAILED run {number}: {failure}")
        elif figure.cpu_ms:
            runs = (', '.join(f'{value:.2f}' for value in figure.cpu_ms) if len(figure.cpu_ms) <= 5
                    else f"{min(figure.cpu_ms):.2f}-{max(figure.cpu_ms):.2f} over {len(figure.cpu_ms)} runs")
            line = f"worker CPU per request: {statistics.median(figure.cpu_ms):.2f} ms ({runs})"
            if row.bound and row.bound.cpu_ms and not row.bound.failed:
                bound_ms = statistics.median(row.bound.cpu_ms)
                line += f"; bound {bound_ms:.2f} ms; bound/figure {bound_ms / statistics.median(figure.cpu_ms):.2f}"
                line += paired_ratios(figure.cpu_ms, row.bound.cpu_ms)
            print(f"{'':6}{line}")
        if figure.note:
            print(f"{'':6}{figure.note}")
    sys.stdout.flush()


def paired_ratios(figure_ms: list[float], bound_ms: list[float]) -> str:
    """The bound's CPU over the figure's run by run: each figure run beside the bound's run that followed it,
    which shared the machine's drift (:func:`measure_together`); the median of those ratios, and their range."""
    if len(figure_ms) != len(bound_ms) or len(figure_ms) < 2:
        return ""
    ratios = [bound / figure for figure, bound in zip(figure_ms, bound_ms, strict=True)]
    text = f"; run by run {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    if len(ratios) >= MIN_PAIRS_FOR_INTERVAL:
        low, high = median_interval(ratios)
        text += f", {INTERVAL_LEVEL:.0%} interval of that median {low:.2f}-{high:.2f}"
    return text


#: Pairs of runs below which no interval is printed (a bootstrap of three values says nothing).
MIN_PAIRS_FOR_INTERVAL = 7
#: The coverage of :func:`median_interval`.
INTERVAL_LEVEL = 0.90


def median_interval(values: list[float], *, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval (:data:`INTERVAL_LEVEL`) of the median of ``values``.

    How far the run-by-run median could move with other runs of the same machine: a ratio
    whose interval reaches below a target has not been shown to meet it.  A fixed seed, so
    the same runs always print the same interval.
    """
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = round(resamples * (1 - INTERVAL_LEVEL) / 2)
    return medians[tail], medians[resamples - 1 - tail]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--only", nargs="*", default=None, metavar="SCENARIO", choices=SCENARIOS,
                        help=" ".join(SCENARIOS) + " (default: all)")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"],
                        help="where refresh, code_exchange, code_flow, login and scale run (default: both)")
    parser.add_argument("--quiet-only", action="store_true",
                        help="measure the provider only as the bound runs (LOG_LEVEL=WARNING, no metrics), "
                             "not also in the shipped configuration beside it")
    parser.add_argument("--no-peer", action="store_true",
                        help="do not measure node oidc-provider beside the client_credentials figure")
    parser.add_argument("--password-cost", type=int, default=2**10,
                        help="scrypt N of the login figures besides the production 2**15 (default 2**10)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    wanted = set(args.only or SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-"))
    results: Results = []
    try:
        run_scenarios(args, wanted, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [row.figure.name.strip() for row in results if row.figure.failed]
    if failed:
        sys.exit(f"{len(failed)} figure(s) FAILED, not reported: {'; '.join(failed)}")


if __name__ == "__main__":
    main()
