"""What the audit chain costs a token request: CPU per client_credentials request with AUDIT_CHAIN off and on.

    python bench/audit_chain.py [--duration 5] [--runs 3] [--connections 16] [--databases sqlite postgresql]
                                [--backend software|softhsm]

Three deployments of the provider (gunicorn, the shipped gunicorn.conf.py, 2 workers, LOG_LEVEL=WARNING,
no metrics: bench/run.py's quiet configuration) on their own fresh databases: the audit chain off; on
(every token response one insert into audit_log before the response, each worker's chainer sealing
every AUDIT_SEAL_SECONDS and signing a checkpoint every AUDIT_CHECKPOINT_ENTRIES); and on with
AUDIT_WRITE_DELAY_SECONDS=0.05 (entries queued, written by the chainer thread in one insert per 50 ms).  They are measured
run by run in turn (bench/run.py's measure_together: they share the machine's drift); per run, the
workers' CPU time (user + system, from /proc) per successful answer, chainer included.  The target is
under 5 % more CPU per request with the chain on.  At the end ``audit verify`` replays the chain the
load wrote.

Prints figures next to their bound; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    Deployment,
    Figure,
    Load,
    basic,
    default_backend,
    fresh_database,
    lua_post,
    measure_together,
)

#: The target: the chain costs a token request less than this much more CPU.
TARGET = 0.05
BODY = "grant_type=client_credentials&scope=api"


#: The variants: (name, environment).  The chain's write delay: 0, each request's entry committed before
#: its response (the default); 0.05 s, entries queued and written by each worker's chainer thread.
VARIANTS = (
    ("audit chain off", {}),
    ("audit chain ON, AUDIT_WRITE_DELAY_SECONDS=0 (default)", {"AUDIT_CHAIN": "true"}),
    ("audit chain ON, AUDIT_WRITE_DELAY_SECONDS=0.05", {"AUDIT_CHAIN": "true", "AUDIT_WRITE_DELAY_SECONDS": "0.05"}),
)


@contextlib.contextmanager
def provider(workdir: Path, backend: str, database_url: str | None, name: str,
             env: dict[str, str]) -> Iterator[tuple[Deployment, Load]]:
    deployment = Deployment(workdir, backend=backend, database_url=database_url)
    deployment.env.update(env)
    client = deployment.create_client("--name", "bench", "--grant-type", "client_credentials", "--scope", "api")
    deployment.start()
    try:
        yield deployment, Load(f"client_credentials, {name}", deployment.url + "/token",
                               lua_post(deployment.workdir, "cc", BODY, {"Authorization": basic(client)}))
    finally:
        deployment.stop()


def cpu(figure: Figure) -> str:
    if figure.failed or not figure.cpu_ms:
        return "FAILED: " + "; ".join(figure.failures)
    return (f"{statistics.median(figure.cpu_ms):.3f} ms CPU/request ({min(figure.cpu_ms):.3f}-{max(figure.cpu_ms):.3f}),"
            f" {figure.median:.0f} req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--backend", default=default_backend(), choices=["software", "softhsm"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory:
        workdir = Path(directory)
        for database in args.databases:
            with contextlib.ExitStack() as stack:
                loads, deployments = [], []
                for index, (name, env) in enumerate(VARIANTS):
                    url = stack.enter_context(fresh_database(database, f"bench_audit_{index}"))
                    deployment, load = stack.enter_context(
                        provider(workdir / database / str(index), args.backend, url, name, env))
                    loads.append(load)
                    deployments.append(deployment)
                off, *ons = measure_together(args, None, *loads)
                verified = [subprocess.run([sys.executable, "-m", "flask", "--app", "app", "audit", "verify"],
                                           cwd=ROOT, env=deployment.env, capture_output=True, text=True, timeout=600)
                            for deployment in deployments[1:]]
            print(f"\n{database}, keys via {args.backend}, {args.runs} runs of {args.duration:g} s, "
                  f"{args.connections} connections, 2 workers")
            print(f"  {off.name}: {cpu(off)}")
            for on, checked in zip(ons, verified, strict=True):
                print(f"  {on.name}: {cpu(on)}")
                if off.cpu_ms and on.cpu_ms and not (off.failed or on.failed):
                    extra = statistics.median(on.cpu_ms) / statistics.median(off.cpu_ms) - 1
                    print(f"    CPU per request over the chain off: {extra:+.1%} (target: under +{TARGET:.0%})")
                print(f"    audit verify after the load: {(checked.stdout or checked.stderr).strip()[-300:]}")


if __name__ == "__main__":
    main()
