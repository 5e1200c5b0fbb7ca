"""The cost of DPoP per token request: client_credentials with and without a proof, in one run.

    python bench/dpop.py [--duration 5] [--runs 3] [--connections 16] [--redis redis://127.0.0.1:6379/15]

One deployment as bench/run.py builds it (gunicorn, 2 workers, software ES256
keys, SQLite), one client.  The figures are measured alternately, run after
run, so both see the same state of a shared machine:

* ``client_credentials`` with HTTP Basic, no proof (a Bearer token);
* the same request with a fresh DPoP proof each (ES256, its own ``jti``), so
  the server verifies the proof, records its ``jti`` (an INSERT committed on
  its own connection, the default ``DPOP_JTI_STORAGE_URI=database``) and puts
  ``cnf.jkt`` in the token.

With ``--redis`` a second deployment records the ``jti`` in Redis instead and is
measured the same way.  The proofs are made before each run (wrk cannot sign):
each wrk thread takes every second proof of the file, so no proof is sent
twice; a run that outlives its proofs shows up as errors.  Benchmarks print
figures; they assert nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.run import WORKERS, Deployment, Figure, ScriptWithArgs, basic, report, wrk  # noqa: E402

#: More proofs per second of a run than the provider can answer on this hardware.
PROOFS_PER_SECOND = 3000

LUA = """
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
local proofs = {}
local position = 0
function init(args)
  for line in io.lines(args[1]) do proofs[#proofs + 1] = line end
  position = id + 1
end
function request()
  local proof = proofs[position] or "exhausted"
  position = position + 2
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = %s, ["DPoP"] = proof}, "grant_type=client_credentials&scope=api")
end
"""


def write_proofs(path: Path, htu: str, count: int) -> None:
    from joserfc import jws
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    now = int(time.time())
    with open(path, "w") as out:
        for _ in range(count):
            claims = {"htm": "POST", "htu": htu, "iat": now, "jti": uuid.uuid4().hex}
            out.write(jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=["ES256"]) + "\n")


def measure_pair(args: argparse.Namespace, deployment: Deployment, label: str) -> tuple[Figure, Figure]:
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    deployment.start()
    url = deployment.url + "/token"
    authorization = basic(client)
    plain_script = deployment.workdir / "cc.lua"
    plain_script.write_text('wrk.method = "POST"\nwrk.body = "grant_type=client_credentials&scope=api"\n'
                            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                            f'wrk.headers["Authorization"] = {json.dumps(authorization)}\n')
    dpop_script = deployment.workdir / "cc_dpop.lua"
    dpop_script.write_text(LUA % json.dumps(authorization))
    proofs = deployment.workdir / "proofs.txt"
    plain, bound = Figure(f"client_credentials ES256, Bearer{label}"), Figure(f"client_credentials ES256, DPoP{label}")
    try:
        # Warm-up, both ways.
        wrk(url, duration=2, connections=args.connections, script=plain_script)
        write_proofs(proofs, url, int(2 * PROOFS_PER_SECOND))
        wrk(url, duration=2, connections=args.connections, script=ScriptWithArgs(dpop_script, [str(proofs)]))
        for _ in range(args.runs):
            plain.add(*wrk(url, duration=args.duration, connections=args.connections, script=plain_script))
            write_proofs(proofs, url, int(args.duration * PROOFS_PER_SECOND))
            bound.add(*wrk(url, duration=args.duration, connections=args.connections,
                           script=ScriptWithArgs(dpop_script, [str(proofs)])))
    finally:
        deployment.stop()
    return plain, bound


def cost(plain: Figure, bound: Figure) -> str:
    """The difference in worker time per request ({WORKERS} workers, each busy all the time)."""
    if not plain.median or not bound.median:
        return "no figure"
    extra = WORKERS * 1000 * (1 / bound.median - 1 / plain.median)
    return f"DPoP costs {extra:+.2f} ms of worker time per request ({bound.median / plain.median:.0%} of the Bearer rate)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--redis", default=None, help="also measure with DPOP_JTI_STORAGE_URI set to this Redis URL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="oidc-bench-dpop-"))
    results: list = []
    try:
        plain, bound = measure_pair(args, Deployment(workdir / "database", backend="software"), "")
        bound.note = f"jti in the database; {cost(plain, bound)}"
        results += [(plain, None, ""), (bound, None, "")]
        if args.redis:
            deployment = Deployment(workdir / "redis", backend="software")
            deployment.env["DPOP_JTI_STORAGE_URI"] = args.redis
            plain, bound = measure_pair(args, deployment, ", jti in Redis")
            bound.note = cost(plain, bound)
            results += [(plain, None, ""), (bound, None, "")]
        report(results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
