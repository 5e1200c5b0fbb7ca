"""A PostgreSQL server of the test's own, so a test can stop and start it.

Used where the point of the test is the database going away under a running
instance; the shared server on 5432 is never stopped.  ``tests/services.py``
starts one for the whole run where no server answers at the default URL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence

import psycopg


def _bindir() -> str | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def _run(bindir: str, tool: str, *args: str, timeout: float = 60) -> None:
    command = [os.path.join(bindir, tool), *args]
    if os.geteuid() == 0:
        # initdb and pg_ctl refuse to run as root: the server runs as the postgres user then.
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=timeout)


class PrivatePostgres:
    """A cluster in a new directory (under ``parent``), listening on 127.0.0.1:``port``.

    ``settings`` are extra ``-c name=value`` server settings.
    """

    def __init__(self, port: int, *, parent: str | None = None, settings: Sequence[str] = ()) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
        self.bindir = bindir
        self.port = port
        self.settings = list(settings)
        self.directory = tempfile.mkdtemp(prefix="oidc-pg-", dir=parent)
        self.data = os.path.join(self.directory, "data")
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        _run(self.bindir, tool, *args, timeout=timeout)

    def start(self) -> None:
        options = " ".join([f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
                            *(f"-c {setting}" for setting in self.settings)])
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.directory, "log"),
                  "-w", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise TimeoutError("private PostgreSQL did not start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        destroy(self.directory)


def destroy(directory: str) -> None:
    """Stop the server of a :class:`PrivatePostgres` directory (if it runs) and remove its files."""
    bindir = _bindir()
    data = os.path.join(directory, "data")
    if bindir is not None and os.path.exists(os.path.join(data, "postmaster.pid")):
        for mode in ("fast", "immediate"):
            try:
                _run(bindir, "pg_ctl", "-D", data, "-m", mode, "-w", "stop")
                break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                continue
    shutil.rmtree(directory, ignore_errors=True)
