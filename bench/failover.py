"""What several tokens buy: failover under load, and signatures spread over tokens.  Figures, never a test.

    python bench/failover.py [--runs 1] [--outage 4] [--threads 4] [--sign-seconds 2] [--sign-runs 5]

1. The failover drill: two SoftHSM2 tokens, each behind its own ``p11-kit server``
   and reached through its own copy of p11-kit's client module (HSM_TOKENS=A,B,
   every set HSM-only), gunicorn with the shipped gunicorn.conf.py and 2 workers,
   ``client_credentials`` from ``--threads`` client threads.  Token A's server is
   killed for ``--outage`` seconds, then stopped (SIGSTOP) as long; each time:
   the requests answered while A was down, those that failed (target: only the
   ones in flight on A, at most one per worker), and the seconds from A's return
   to its first signature again (rejoin).
2. ES256 signatures per second in one process from ``--threads`` threads, all on
   one token through p11-kit (its calls on the token's own thread, bounded by
   HSM_TOKEN_TIMEOUT_SECONDS, and in the callers' threads with it 0), then spread in
   turns over two: network HSMs are latency-bound, and each token has its own
   module lock and thread, so a second token signs while the first waits for its answer.

Prints medians and ranges next to the target; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backends import PIN, TOKEN_LABEL  # noqa: E402
from bench.run import Deployment  # noqa: E402
from tests.remote_token import P11KitServer, p11kit_client_library  # noqa: E402

SIGNING_INPUT = b"eyJhbGciOiJFUzI1NiIsImtpZCI6IjEiLCJ0eXAiOiJhdCtqd3QifQ." + b"A" * 300
SECOND_LABEL = "bench-b"
WORKERS = 2


def token_request(url: str, authorization: str) -> tuple[int, str | None]:
    """(status, kid of the access token's signature); status 0 when unanswered."""
    request = urllib.request.Request(
        f"{url}/token", data=b"grant_type=client_credentials&scope=api",
        headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.loads(response.read())["access_token"]
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            return response.status, header["kid"]
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, http.client.HTTPException):  # unanswered, or an answer cut off (IncompleteRead)
        return 0, None


def two_tokens(workdir: Path, env: dict[str, str]) -> tuple[dict[str, P11KitServer], dict[str, str]]:
    """A second token beside the deployment's, each behind its own p11-kit server; HSM_TOKENS settings."""
    client_library = p11kit_client_library()
    if client_library is None:
        raise SystemExit("p11-kit and p11-kit-modules are needed")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", SECOND_LABEL, "--pin", PIN, "--so-pin", PIN],
                   check=True, capture_output=True, env=env)
    servers: dict[str, P11KitServer] = {}
    settings = {"HSM_TOKENS": "A,B", "HSM_ONLY_KEY_SETS": "*"}
    for name, label in (("A", TOKEN_LABEL), ("B", SECOND_LABEL)):
        library = workdir / f"p11-kit-client-{name.lower()}.so"  # a copy: its own address (see README)
        shutil.copyfile(client_library, library)
        servers[name] = P11KitServer(provider=env["HSM_LIBRARY"], token_label=label,
                                     socket_path=workdir / f"{name.lower()}.sock", env=env)
        settings.update({f"HSM_{name}_LIBRARY": str(library), f"HSM_{name}_TOKEN_LABEL": label,
                         f"HSM_{name}_PIN": PIN,
                         f"HSM_{name}_MODULE_ENV": f"P11_KIT_SERVER_ADDRESS={servers[name].address}"})
    return servers, settings


def token_kids(env: dict[str, str], label: str) -> set[str]:
    output = subprocess.run(["pkcs11-tool", "--module", env["HSM_LIBRARY"], "--token-label", label, "--login",
                             "--pin", PIN, "--list-objects"], capture_output=True, text=True, env=env, check=True).stdout
    return {bytes.fromhex(line.split(":", 1)[1].strip()).decode() for line in output.splitlines()
            if line.strip().startswith("ID:")}


def drill(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    deployment = Deployment(workdir, backend="softhsm")
    for name in ("HSM_TOKEN_LABEL", "HSM_PIN"):
        deployment.env.pop(name)
    servers, settings = two_tokens(workdir, deployment.env)
    deployment.env.update(settings)
    for server in servers.values():
        server.start()
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    authorization = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    deployment.start()
    kids = dict.fromkeys(token_kids(deployment.env, TOKEN_LABEL), "A")
    results: list[tuple[float, int, str | None, float]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            asked = time.monotonic()
            status, kid = token_request(deployment.url, authorization)
            results.append((asked, status, kids.get(kid or "", "B" if status == 200 else None), time.monotonic()))

    def outage(lose: Callable[[], None], restore: Callable[[], None]) -> tuple[int, int, float]:
        lost = time.monotonic()
        lose()
        time.sleep(args.outage)
        back = time.monotonic()
        restore()
        deadline = back + 30
        while time.monotonic() < deadline and not any(t >= back and who == "A" for t, _, who, _ in results):
            time.sleep(0.05)
        rejoined = min((t for t, _, who, _ in results if t >= back and who == "A"), default=float("nan"))
        during = [status for asked, status, _, answered in results if lost <= asked and answered < back]
        return len(during), sum(status != 200 for status in during), rejoined - back

    threads = [threading.Thread(target=load, daemon=True) for _ in range(args.threads)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        killed = outage(servers["A"].kill, servers["A"].start)
        time.sleep(2.0)
        stopped = outage(servers["A"].pause, servers["A"].resume)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        deployment.stop()
        for server in servers.values():
            server.stop()
    return {
        "killed: requests while A down": killed[0], "killed: failed": killed[1], "killed: rejoin (s)": killed[2],
        "stopped: requests while A down": stopped[0], "stopped: failed": stopped[1],
        "stopped: rejoin (s)": stopped[2],
    }


def sign_rate(sign: Callable[[bytes], bytes], seconds: float, threads: int) -> float:
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(index: int) -> None:
        while time.perf_counter() < deadline:
            sign(SIGNING_INPUT)
            counts[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def sign_rates(workdir: Path, args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    from bench.backends import softhsm_environment

    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **softhsm_environment(workdir)}
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    servers, settings = two_tokens(workdir, env)
    for server in servers.values():
        server.start()
    from keys.algorithms import get_algorithm
    from keys.hsm import HSMConfig, HSMManager

    algorithm = get_algorithm("ES256")
    managers: dict[str, Any] = {}
    records: dict[str, Any] = {}
    try:
        for name in servers:
            address = settings[f"HSM_{name}_MODULE_ENV"].split("=", 1)[1]
            manager = HSMManager(HSMConfig(library=settings[f"HSM_{name}_LIBRARY"], pin=PIN, name=name,
                                           token_label=settings[f"HSM_{name}_TOKEN_LABEL"],
                                           module_env=(("P11_KIT_SERVER_ADDRESS", address),)))
            manager.open()
            managers[name] = manager
            records[name] = manager.generate("bench.ES256", "ES256", rsa_bits=2048)
        turns = itertools.cycle(["A", "B"])
        # The same token and key, its calls in the caller's thread (HSM_TOKEN_TIMEOUT_SECONDS=0).
        direct = HSMManager(dataclasses.replace(managers["A"].config, bounded_calls=False))
        direct.open()
        direct.records("bench.ES256")

        def one(data: bytes) -> bytes:
            return managers["A"].sign(records["A"], algorithm, data)

        def one_direct(data: bytes) -> bytes:
            return direct.sign(records["A"], algorithm, data)

        def spread(data: bytes) -> bytes:
            name = next(turns)
            return managers[name].sign(records[name], algorithm, data)

        ways = (("one token (A)", one), ("one token, HSM_TOKEN_TIMEOUT_SECONDS=0", one_direct),
                ("two tokens in turns (A, B)", spread))
        runs: dict[str, list[float]] = {label: [] for label, _ in ways}
        for _ in range(args.sign_runs):  # interleaved: a noisy machine's drift falls on each alike
            for label, sign in ways:
                runs[label].append(sign_rate(sign, args.sign_seconds, args.threads))
        figures = {label: (statistics.median(rates), min(rates), max(rates)) for label, rates in runs.items()}
        for manager in [direct, *managers.values()]:
            manager.close()
    finally:
        for server in servers.values():
            server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--outage", type=float, default=4.0, help="seconds token A is gone (killed, then stopped)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sign-seconds", type=float, default=2.0)
    parser.add_argument("--sign-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fo-") as directory:
        runs = [drill(Path(directory) / f"d{index}", args) for index in range(args.runs)]
        print(f"failover drill: token A of 2 lost for {args.outage:g} s (killed, then SIGSTOP), client_credentials "
              f"from {args.threads} threads, {WORKERS} workers, {args.runs} run(s) (median [min-max]); "
              f"target: failed <= {WORKERS} (those in flight on A)")
        for name in runs[0]:
            values = [run[name] for run in runs]
            print(f"  {name:34} {statistics.median(values):8.2f}  [{min(values):.2f}-{max(values):.2f}]")
        print(f"ES256 signatures/s in one process through p11-kit, {args.threads} threads "
              f"({args.sign_runs} interleaved runs of {args.sign_seconds:g} s, median [min-max]; "
              f"{os.cpu_count()} cores)")
        for name, (median, low, high) in sign_rates(Path(directory) / "r", args).items():
            print(f"  {name:34} {median:8.0f}  [{low:.0f}-{high:.0f}]")


if __name__ == "__main__":
    main()
