"""What a network HSM's outage costs, and what its network costs: figures, never a test.

    python bench/hsm_outage.py [--runs 3] [--outage 5] [--threads 4] [--sign-seconds 2]

1. The outage drill under ``client_credentials`` load: a SoftHSM2 token served by
   ``p11-kit server``, the provider (gunicorn, the shipped gunicorn.conf.py, 2
   workers, every set HSM-only) using p11-kit's client module; load from
   ``--threads`` client threads; the server's processes killed for ``--outage``
   seconds, then started again.  Per run: requests answered, failed requests
   (anything but 200) and of those any that were not a 503, and the seconds from
   the token's return to the first 200 and to the last failure (every worker healed).
2. Signatures per second in one process through p11-kit's client module next
   to SoftHSM2 loaded directly, the same token and the same key: the cost of a
   networked module (a Unix socket here; a real network adds its round trip).

Prints medians and ranges; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backends import PIN, TOKEN_LABEL  # noqa: E402
from bench.run import Deployment  # noqa: E402
from tests.remote_token import P11KitServer, p11kit_client_library  # noqa: E402

SIGNING_INPUT = b"eyJhbGciOiJFUzI1NiIsImtpZCI6IjEiLCJ0eXAiOiJhdCtqd3QifQ." + b"A" * 300


def token_request(url: str, authorization: str) -> int:
    request = urllib.request.Request(
        f"{url}/token", data=b"grant_type=client_credentials&scope=api",
        headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):  # unanswered, or an answer cut off (IncompleteRead)
        return 0


def drill(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    deployment = Deployment(workdir, backend="softhsm")
    client_library = p11kit_client_library()
    if client_library is None:
        raise SystemExit("p11-kit and p11-kit-modules are needed")
    server = P11KitServer(provider=deployment.env["HSM_LIBRARY"], token_label=TOKEN_LABEL,
                          socket_path=workdir / "p11-kit.sock", env=deployment.env)
    deployment.env.update({
        "HSM_LIBRARY": client_library, "P11_KIT_SERVER_ADDRESS": server.address, "HSM_ONLY_KEY_SETS": "*",
        "LOG_LEVEL": "INFO",
    })
    server.start()
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    authorization = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    deployment.start()
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status = token_request(deployment.url, authorization)
            results.append((time.monotonic(), status))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(args.threads)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        killed = time.monotonic()
        server.kill()
        time.sleep(args.outage)
        returned = time.monotonic()
        server.start()
        time.sleep(max(5.0, args.after))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        deployment.stop()
        server.stop()
    failed = [(t, status) for t, status in results if status != 200]
    after = [(t, status) for t, status in results if t >= returned]
    first_ok = next((t for t, status in after if status == 200), float("nan"))
    last_failure = max((t for t, status in after if status != 200), default=returned)
    return {
        "requests": len(results),
        "during outage": len([1 for t, _ in results if killed <= t < returned]),
        "failed": len(failed),
        "failed, not 503": len([1 for _, status in failed if status != 503]),
        "failed after the return": len([1 for t, status in failed if t >= returned]),
        "first 200 after return (s)": first_ok - returned,
        "last failure after return (s)": last_failure - returned,
    }


def sign_rate(sign, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            sign(SIGNING_INPUT)
        count += 10
    return count / (time.perf_counter() - start)


def sign_rates(workdir: Path, args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    from bench.backends import softhsm_environment

    workdir.mkdir(parents=True, exist_ok=True)
    env = softhsm_environment(workdir)
    os.environ.update(env)
    client_library = p11kit_client_library()
    assert client_library is not None
    server = P11KitServer(provider=env["HSM_LIBRARY"], token_label=TOKEN_LABEL,
                          socket_path=workdir / "p11-kit.sock", env={**os.environ, **env})
    os.environ["P11_KIT_SERVER_ADDRESS"] = server.address  # read by the client module at C_Initialize
    server.start()
    from keys.algorithms import get_algorithm
    from keys.hsm import HSMConfig, HSMManager

    figures: dict[str, tuple[float, float, float]] = {}
    try:
        direct = HSMManager(HSMConfig(library=env["HSM_LIBRARY"], pin=PIN, token_label=TOKEN_LABEL))
        remote = HSMManager(HSMConfig(library=client_library, pin=PIN, token_label=TOKEN_LABEL))
        direct.open()
        remote.open()
        for alg in ("ES256", "RS256"):
            record = direct.generate(f"bench.{alg}", alg, rsa_bits=2048)
            for name, manager in (("SoftHSM2 directly", direct), ("p11-kit client -> server -> SoftHSM2", remote)):
                manager.records(record.key_set)
                algorithm = get_algorithm(alg)

                def sign(data: bytes, manager=manager, algorithm=algorithm, record=record) -> bytes:
                    return manager.sign(record, algorithm, data)

                runs = [sign_rate(sign, args.sign_seconds) for _ in range(args.runs)]
                figures[f"{alg} {name}"] = (statistics.median(runs), min(runs), max(runs))
        remote.close()
        direct.close()
    finally:
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the token is gone")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after its return")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sign-seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as directory:
        runs = [drill(Path(directory) / f"drill-{index}", args) for index in range(args.runs)]
        print(f"outage drill: {args.outage:g} s without the token, client_credentials from {args.threads} "
              f"threads, 2 workers, {args.runs} runs (median [min-max])")
        for name in runs[0]:
            values = [run[name] for run in runs]
            print(f"  {name:32} {statistics.median(values):8.2f}  [{min(values):.2f}-{max(values):.2f}]")
        print(f"signatures/s in one process ({args.runs} runs of {args.sign_seconds:g} s, median [min-max])")
        for name, (median, low, high) in sign_rates(Path(directory) / "rates", args).items():
            print(f"  {name:48} {median:8.0f}  [{low:.0f}-{high:.0f}]")


if __name__ == "__main__":
    main()
