"""What the audit chain costs a token request: CPU per client_credentials request with AUDIT_CHAIN off and on.

    python bench/audit_chain.py [--duration 5] [--runs 3] [--connections 16] [--databases sqlite postgresql]
                                [--backend software|softhsm]

Three deployments of the provider (gunicorn, the shipped gunicorn.conf.py, 2 workers, LOG_LEVEL=WARNING,
no metrics: bench/run.py's quiet configuration) on their own fresh databases: the audit chain off; on
with the default write delay (each worker queues a request's entry; its chainer thread inserts the
queue every AUDIT_WRITE_DELAY_SECONDS, sealed as it is written, and signs a checkpoint every
AUDIT_CHECKPOINT_ENTRIES); and on with AUDIT_WRITE_DELAY_SECONDS=0 (every token response one insert
committed before the response, sealed by a chainer later).  They are measured run by run in turn
(bench/run.py's measure_together, the order reversed every other run: they share the machine's
drift); per run, the workers' CPU time
(user + system, from /proc) per successful answer, split into the workers' main threads (the
requests) and their other threads (the chainer; the key service's and back-channel sender's threads,
idle here, in every deployment).  CPU time, not the rate: on a shared machine the rate follows the
neighbours, CPU time per request far less.  The cost is the median of the runs' ratios to the run of
the chain off just before (a pair shares the machine's state), next to the target: under 5 % more
CPU per request with the chain on.  At the end ``audit verify`` replays the chain the load wrote.

On PostgreSQL the chain's cost is also the database server's work (the chainer's inserts): when the
server runs on this host, its CPU time per request is printed too, and the cost with it counted.  It
is read from /proc as the CPU time of every process of the OS user that runs the server (its
backends, its background writers, and the backends that ended meanwhile): the server's work for
anything else during the run (other databases, other clients) is counted in it too.  A server this
host's /proc does not show (another host, a container) is not measured, and the output says so.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=DIR/callgrind.out.%p \
        python bench/audit_chain.py --instructions DIR [--calls 2000] [--databases ...] [--backend ...]

counts instructions instead, in one process without HTTP (bench/inprocess.py's way): the same
request with the chain off and on, every thread counted, so the chainer's writes, hashes and
checkpoint signatures are in the figure.  Load on the machine does not move it, and without HTTP
and gunicorn in the denominator it is the larger of the two ratios.

    python bench/audit_chain.py --cpu-in-process [--calls 1500] [--windows 8] [--databases ...] [--backend ...]

measures CPU time instead of counting instructions, in one process without HTTP: the process's CPU
clock (every thread: the chainer's writes at the default AUDIT_WRITE_DELAY_SECONDS are in it) over
windows of ``--calls`` requests, the chain off and on in turn (the order swapped every window; a
chain-on window ends by writing what its chainer has not written yet, so none of its writes fall in
the next window); the cost is the median of the windows' paired ratios, with the chainer thread's
own CPU per request beside it, and on PostgreSQL the server's CPU time per request (over all the
windows of each).  Steadier than the served figure (no wrk, no sockets, no second worker) and,
without HTTP and gunicorn in the denominator, the larger of the two ratios.

Prints figures next to their bound; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    measured_run,
    worker_times,
    wrk,
)

#: The target: the chain costs a token request less than this much more CPU.
TARGET = 0.05
BODY = "grant_type=client_credentials&scope=api"


#: The variants: (name, environment).  The chain's write delay: the default, entries queued and written
#: sealed by each worker's chainer thread; 0, each request's entry committed before its response.
VARIANTS = (
    ("audit chain off", {}),
    ("audit chain ON, default AUDIT_WRITE_DELAY_SECONDS", {"AUDIT_CHAIN": "true"}),
    ("audit chain ON, AUDIT_WRITE_DELAY_SECONDS=0", {"AUDIT_CHAIN": "true", "AUDIT_WRITE_DELAY_SECONDS": "0"}),
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


def thread_seconds(url: str) -> tuple[float, float]:
    """CPU seconds so far of the workers serving ``url``: their main threads, and their other threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for pid in worker_times(url) or {}:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / ticks
            if int(tid) == pid:
                main += seconds
            else:
                other += seconds
    return main, other


@dataclass
class ServerClock:
    """The CPU time of a PostgreSQL server that runs on this host (see :func:`server_clock`)."""

    #: The OS user that runs it: every process of this user is counted.
    user: str
    uid: int

    def seconds(self) -> float:
        """CPU seconds so far of every process of the server's user (user and system time, and that of
        its ended children, which the parent collected: fields 14-17 of /proc/PID/stat)."""
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != self.uid:
                    continue
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            total += sum(int(value) for value in fields[11:15])
        return total / os.sysconf("SC_CLK_TCK")

    def describe(self) -> str:
        return (f"every process of OS user {self.user} on this host, so its work for anything else meanwhile "
                "too")


def server_clock(database_url: str | None) -> ServerClock | None:
    """The clock of the PostgreSQL server behind ``database_url`` when it runs on this host (the backend
    that answers a connection is a ``postgres`` process in this host's /proc); None for SQLite, or for a
    server elsewhere (another host, a container), whose CPU time is then not measured."""
    if not database_url or not database_url.startswith("postgres"):
        return None
    import psycopg

    with psycopg.connect(database_url) as connection:
        backend = Path("/proc", str(connection.info.backend_pid))
        try:
            if (backend / "comm").read_text().strip() != "postgres":
                return None
            uid = backend.stat().st_uid
        except OSError:
            return None
    return ServerClock(pwd.getpwuid(uid).pw_name, uid)


@dataclass
class Split:
    """Per run, the share of the workers' CPU time spent outside their main threads, and the database
    server's CPU time per successful answer (when it is measured)."""

    other_share: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)


def measure(args: argparse.Namespace, loads: list[Load],
            server: ServerClock | None) -> tuple[list[Figure], list[Split]]:
    """bench/run.py's measure_together, with each run's CPU time split by thread, and the order of the
    deployments reversed every other run: a drift within a round (the machine's, or what one run
    leaves the next) then weighs on each variant alike instead of always on the later one."""
    figures, splits = [Figure(load.name) for load in loads], [Split() for _ in loads]
    for load in loads:  # warm-up
        wrk(load.url, duration=min(2.0, args.duration), connections=args.connections, script=load.script)
    for run in range(args.runs):
        round_ = list(zip(loads, figures, splits, strict=True))
        for load, figure, split in round_ if run % 2 == 0 else reversed(round_):
            before = thread_seconds(load.url)
            server_before = server.seconds() if server is not None else 0.0
            answered = measured_run(load.url, args, load.script, load.ok, figure)
            server_spent = server.seconds() - server_before if server is not None else 0.0
            after = thread_seconds(load.url)
            spent = (after[0] - before[0]) + (after[1] - before[1])
            split.other_share.append((after[1] - before[1]) / spent if spent > 0 else 0.0)
            if server is not None and answered.ok and not answered.errors:
                split.server_ms.append(server_spent * 1000 / answered.ok)
    return figures, splits


def cpu(figure: Figure, split: Split) -> str:
    if figure.failed or not figure.cpu_ms:
        return "FAILED: " + "; ".join(figure.failures)
    median = statistics.median(figure.cpu_ms)
    others = statistics.median(split.other_share) * median
    server = f"; database server {statistics.median(split.server_ms):.3f} ms" if split.server_ms else ""
    return (f"{median:.3f} ms CPU/request ({min(figure.cpu_ms):.3f}-{max(figure.cpu_ms):.3f}; of which other "
            f"threads {others:.3f} ms{server}), {figure.median:.0f} req/s")


def extra(off: list[float], on: list[float]) -> tuple[float, list[float]]:
    """The median of the runs' ratios (each run to the off run just before it), and each ratio."""
    ratios = [b / a - 1 for a, b in zip(off, on, strict=False)]
    return statistics.median(ratios), ratios


def in_process(workdir: Path, backend: str, database_url: str | None, env: dict[str, str]) -> tuple[Any, Any]:
    """The provider as a WSGI app in this process, and a prepared client_credentials request to it."""
    from bench.inprocess import Call, environment
    from oidc.app import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    for name in [name for name in os.environ if name.startswith("AUDIT_")]:
        del os.environ[name]
    os.environ.update(environment(workdir, backend), **env)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    app = create_app()
    upgrade_schema(app)
    created = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "clients", "create", "--json",
                              "--name", "bench", "--grant-type", "client_credentials", "--scope", "api"],
                             cwd=ROOT, env=os.environ, capture_output=True, text=True, check=True, timeout=120)
    state_of(app).key_service()
    return app, Call(app, "POST", "/token", BODY.encode(), {"Authorization": basic(json.loads(created.stdout))})


def count_instructions(args: argparse.Namespace) -> None:
    """Instructions per client_credentials request with the chain off and on, every thread of the process
    counted: the request's own work and the chainer's (its writes, hashes and checkpoint signatures).

    The chainer writes every 5 s here, not every AUDIT_WRITE_DELAY_SECONDS: under callgrind a request takes
    some 50 times longer, and 5 s then holds about as many entries per write as the default holds under load.
    What is still queued when the count ends is written inside it.
    """
    from bench.inprocess import STEADY_REFRESH, instructions_per_call
    from oidc import queries
    from oidc.state import state_of

    slow_writes = {"AUDIT_WRITE_DELAY_SECONDS": "5", "AUDIT_SEAL_SECONDS": "5"}
    warm = min(50, args.calls)  # instructions_per_call's warm-up calls
    for database in args.databases:
        figures = []
        for index, (name, env) in enumerate(VARIANTS[: min(args.variants, 2)]):
            with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory, \
                    fresh_database(database, f"bench_audit_instructions_{index}") as url:
                app, call = in_process(Path(directory), args.backend, url,
                                       {**STEADY_REFRESH, **env, **slow_writes} if env else dict(STEADY_REFRESH))
                trail = state_of(app).audit_trail
                if trail is not None:  # as each worker's chainer does once when it starts, before the count
                    queries.prepare_audit_writes(trail.engine())

                def request(call: Any = call, trail: Any = trail, counted: list[int] = [0]) -> bytes:  # noqa: B006
                    body = call()
                    counted[0] += 1
                    if trail is not None and counted[0] in (warm, warm + args.calls):
                        trail.write_queued()  # the warm-up's entries before the count, the last ones inside it
                    return body

                figure = instructions_per_call(request, args.calls, f"{database}-{index}", args.instructions)
                figures.append(figure)
                entries = ""
                if trail is not None:
                    trail.stop()
                    with app.app_context():
                        checked = trail.verify()
                    entries = (f", audit verify: {'ok' if checked.ok else 'FAILED'}, {checked.entries} entries, "
                               f"{checked.checkpoints} checkpoints")
                state_of(app).close()  # its chainer, handler, token session and connections end with the figure
                print(f"{database}, keys via {args.backend}, {name}: {figure / 1e6:.3f} M instructions/request "
                      f"({call.status}{entries})", flush=True)
        if len(figures) == 2:
            print(f"  instructions per request over the chain off: {figures[1] / figures[0] - 1:+.1%} "
                  f"(target: under +{TARGET:.0%})")


def cpu_in_process(args: argparse.Namespace) -> None:
    """CPU time per client_credentials request in one process, the chain off and on, window by window; and
    the database server's, when it runs on this host."""
    from oidc.state import state_of

    for database in args.databases:
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory, \
                fresh_database(database, "bench_audit_cpu_0") as off_url, \
                fresh_database(database, "bench_audit_cpu_1") as on_url:
            for name in ("off", "on"):
                (Path(directory) / name).mkdir()
            apps = [in_process(Path(directory) / name, args.backend, url, env)
                    for name, url, env in (("off", off_url, {}), ("on", on_url, {"AUDIT_CHAIN": "true"}))]
            for _, call in apps:
                for _ in range(300):  # warm: caches filled, statements prepared, the chainer started
                    call()
            trail = state_of(apps[1][0]).audit_trail
            assert trail is not None, "AUDIT_CHAIN=true makes the trail"
            server = server_clock(on_url)
            figures, chainer, server_seconds = _windows(args, [call for _, call in apps], trail, server)
            ratios = [on / off - 1 for off, on in zip(*figures, strict=True)]
            trail.stop()
            for app, _ in apps:
                state_of(app).close()
        print(f"\n{database}, keys via {args.backend}, {args.windows} windows of {args.calls} requests, one process")
        for name, figure in zip(("audit chain off", "audit chain ON, default AUDIT_WRITE_DELAY_SECONDS"), figures,
                                strict=True):
            print(f"  client_credentials, {name}: {statistics.median(figure):.3f} ms CPU/request "
                  f"({min(figure):.3f}-{max(figure):.3f})")
        print(f"    CPU per request over the chain off: {statistics.median(ratios):+.1%} (windows: "
              f"{', '.join(f'{ratio:+.1%}' for ratio in ratios)}; chainer thread {statistics.median(chainer):.4f} "
              f"ms/request; target: under +{TARGET:.0%})")
        if server is not None:
            # Per request over all the windows of each (a window's share is a few clock ticks).
            served = [seconds / (args.windows * args.calls) * 1e3 for seconds in server_seconds]
            totals = [statistics.median(figure) + ms for figure, ms in zip(figures, served, strict=True)]
            print(f"  the database server's CPU per request ({server.describe()}): chain off {served[0]:.4f} ms, "
                  f"on {served[1]:.4f} ms")
            print(f"    CPU per request over the chain off, the server's counted (the process's median, the "
                  f"server's over all the windows): {totals[1] / totals[0] - 1:+.1%}")
        elif database != "sqlite":
            print("  the database server's CPU: not measured (its processes are not on this host)")


def _windows(args: argparse.Namespace, calls: list[Any], trail: Any,
             server: ServerClock | None) -> tuple[list[list[float]], list[float], list[float]]:
    """ms of CPU per request of each call (off, on) in each window, the order swapped every window (a
    chain-on window ends by writing what is still queued); the chainer thread's ms per request of the
    chain-on windows; and the database server's CPU seconds over the windows of each call (0 when it is
    not measured)."""
    figures: list[list[float]] = [[], []]
    chainer: list[float] = []
    server_seconds = [0.0, 0.0]
    for window in range(args.windows):
        for index in (0, 1) if window % 2 == 0 else (1, 0):
            chainer_before = _thread_seconds(trail._chainer)
            server_before = server.seconds() if server is not None else 0.0
            started = time.process_time()
            for _ in range(args.calls):
                calls[index]()
            if index == 1:  # what the chainer has not written yet, inside the window (not the next one's)
                trail.write_queued()
            figures[index].append((time.process_time() - started) / args.calls * 1e3)
            if server is not None:
                server_seconds[index] += server.seconds() - server_before
            if index == 1:
                chainer.append((_thread_seconds(trail._chainer) - chainer_before) / args.calls * 1e3)
    return figures, chainer, server_seconds


def _thread_seconds(thread: Any) -> float:
    """CPU seconds so far of a running thread (0 when it is not running)."""
    if thread is None or not thread.is_alive() or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per figure")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--backend", default=default_backend(), choices=["software", "softhsm"])
    parser.add_argument("--variants", type=int, default=len(VARIANTS), help="the first N variants only")
    parser.add_argument("--instructions", type=Path, metavar="DIR",
                        help="count instructions per request in one process under callgrind instead "
                             "(its --callgrind-out-file directory): the chain off and on by default")
    parser.add_argument("--cpu-in-process", action="store_true",
                        help="measure CPU time per request in one process instead (the chain off and on in turn)")
    parser.add_argument("--windows", type=int, default=8, help="with --cpu-in-process: windows per figure")
    parser.add_argument("--calls", type=int, help="requests counted: 2000 with --instructions, "
                                                  "1500 per window with --cpu-in-process")
    args = parser.parse_args()
    if args.instructions:
        args.calls = args.calls or 2000
        count_instructions(args)
        return
    if args.cpu_in_process:
        args.calls = args.calls or 1500
        cpu_in_process(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory:
        workdir = Path(directory)
        for database in args.databases:
            with contextlib.ExitStack() as stack:
                loads, deployments = [], []
                server = None
                for index, (name, env) in enumerate(VARIANTS[: args.variants]):
                    url = stack.enter_context(fresh_database(database, f"bench_audit_{index}"))
                    server = server or server_clock(url)  # (one server for all the variants' databases)
                    deployment, load = stack.enter_context(
                        provider(workdir / database / str(index), args.backend, url, name, env))
                    loads.append(load)
                    deployments.append(deployment)
                (off, *ons), (off_split, *on_splits) = measure(args, loads, server)
                verified = [subprocess.run([sys.executable, "-m", "flask", "--app", "app", "audit", "verify"],
                                           cwd=ROOT, env=deployment.env, capture_output=True, text=True, timeout=600)
                            for deployment in deployments[1:]]
            print(f"\n{database}, keys via {args.backend}, {args.runs} runs of {args.duration:g} s, "
                  f"{args.connections} connections, 2 workers")
            if server is not None:
                print(f"  database server CPU: {server.describe()}")
            elif database != "sqlite":
                print("  database server CPU: not measured (its processes are not on this host)")
            print(f"  {off.name}: {cpu(off, off_split)}")
            for on, split, checked in zip(ons, on_splits, verified, strict=True):
                print(f"  {on.name}: {cpu(on, split)}")
                if off.cpu_ms and on.cpu_ms and not (off.failed or on.failed):
                    median, ratios = extra(off.cpu_ms, on.cpu_ms)
                    runs = ", ".join(f"{ratio:+.1%}" for ratio in ratios)
                    print(f"    CPU per request over the chain off: {median:+.1%} (runs: {runs}; "
                          f"target: under +{TARGET:.0%})")
                    if len(off_split.server_ms) == len(off.cpu_ms) and len(split.server_ms) == len(on.cpu_ms):
                        median, _ = extra([a + b for a, b in zip(off.cpu_ms, off_split.server_ms, strict=True)],
                                          [a + b for a, b in zip(on.cpu_ms, split.server_ms, strict=True)])
                        print(f"    the same, the database server's CPU counted: {median:+.1%}")
                print(f"    audit verify after the load: {(checked.stdout or checked.stderr).strip()[-300:]}")


if __name__ == "__main__":
    main()
