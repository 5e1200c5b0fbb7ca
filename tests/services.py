"""The PostgreSQL and Redis servers a test run uses, found or started by ``tests/run.sh``.

    python tests/services.py start DIRECTORY   # prints the shell's ``export`` lines
    python tests/services.py stop DIRECTORY    # stops what ``start`` started there

For each server: a URL given in ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL`` is used
as it is; otherwise the default URL, if a server answers there; otherwise a
server of the run's own is started with its files in DIRECTORY, on 127.0.0.1
and a free port, and its URL exported.  ``TEST_SERVICES=private`` starts private
servers even where the defaults answer.  PostgreSQL runs with trust
authentication and without fsync, Redis without persistence.  A server that
cannot be started is an error with ``CI=true``; elsewhere a warning, and the
tests that need it are skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

#: Where the tests look when no URL is given.
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"

#: Server settings of a private PostgreSQL: throwaway data, and connections for the
#: suite's several processes (each gunicorn worker and test keeps a pool).
POSTGRES_SETTINGS = ["max_connections=300", "synchronous_commit=off", "full_page_writes=off"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def log(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_answers(url: str, timeout: float = 3) -> bool:
    """A PING to the Redis at ``url`` is answered with PONG."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_postgres(directory: str) -> str:
    from private_postgres import PrivatePostgres
    from serving import free_port

    server = PrivatePostgres(free_port(), parent=directory, settings=POSTGRES_SETTINGS)
    server.start()
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE test")
    return server.url.rpartition("/")[0] + "/test"


def start_redis(directory: str) -> str:
    from serving import free_port

    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(executable):
        raise RuntimeError("redis-server (Debian package redis-server) is not installed")
    home = os.path.join(directory, "redis")
    os.makedirs(home, exist_ok=True)
    port = free_port()
    subprocess.run(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", os.path.join(home, "redis.pid"), "--dir", home,
         "--logfile", os.path.join(home, "redis.log")],
        check=True, capture_output=True, timeout=30,
    )
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not redis_answers(url, timeout=1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis did not answer on port {port}")
        time.sleep(0.05)
    return url


def stop_redis(directory: str) -> None:
    home = os.path.join(directory, "redis")
    if not os.path.isdir(home):
        return
    pidfile = os.path.join(home, "redis.pid")
    deadline = time.monotonic() + 2  # the daemon writes its pid file just after forking
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with open(pidfile) as file:
            pid = int(file.read().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie left unreaped by a container's init does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


SERVERS = {
    # name: (variable, default URL, answers, start)
    "PostgreSQL": ("TEST_POSTGRES_URL", POSTGRES_URL, postgres_answers, start_postgres),
    "Redis": ("TEST_REDIS_URL", REDIS_URL, redis_answers, start_redis),
}


def start(directory: str) -> int:
    os.chmod(directory, 0o755)  # the PostgreSQL server runs as the postgres user when started by root
    private_only = os.environ.get("TEST_SERVICES", "") == "private"
    failed = False
    for name, (variable, default, answers, start_server) in SERVERS.items():
        if os.environ.get(variable):
            log(f"{name} at {variable}={os.environ[variable]}")
            continue
        if not private_only and answers(default):
            log(f"{name} at {default}")
            continue
        try:
            url = start_server(directory)
        except Exception as exc:  # reported, and fatal in CI
            detail = getattr(exc, "stderr", None)  # a failed command's own words
            reason = " ".join(filter(None, [str(exc), detail.decode(errors="replace").strip() if detail else ""]))
            if IN_CI:
                log(f"ERROR: {name} is required in CI and could not be started: {reason}")
                failed = True
            else:
                log(f"{name} could not be started, the tests that need it are skipped: {reason}")
            continue
        log(f"{name} started at {url}")
        print(f"export {variable}={shlex.quote(url)}")
    return 1 if failed else 0


def stop(directory: str) -> int:
    from private_postgres import destroy

    stop_redis(directory)
    for cluster in glob.glob(os.path.join(directory, "oidc-pg-*")):
        destroy(cluster)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    return {"start": start, "stop": stop}[argv[0]](argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
