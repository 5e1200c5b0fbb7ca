"""Tokens behind other PKCS#11 modules than plain SoftHSM2, as real deployments use them.

* :class:`P11KitServer`: a SoftHSM2 token served by ``p11-kit server`` on a Unix
  socket, used through p11-kit's client module (``p11-kit-client.so``) with
  ``P11_KIT_SERVER_ADDRESS``: the shape of a network HSM.  The server forks one
  ``p11-kit-remote`` per client connection, all in one process group, so the
  appliance "going away" is that group killed, and "hanging" is it stopped.
* :class:`OpenCryptoki`: openCryptoki's soft token (``pkcsslotd`` and the
  ``libpkcs11_sw`` slot), initialised non-interactively with ``pkcsconf``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Where p11-kit-modules puts the client module: Debian's multiarch directory
#: (/usr/lib/x86_64-linux-gnu/pkcs11/ on amd64), or the plain one elsewhere.
#: tests/run.sh asks :func:`p11kit_client_module` whether to install the package.
P11KIT_CLIENT_PATTERNS = [
    "/usr/lib/*-linux-gnu*/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
    "/usr/lib64/pkcs11/p11-kit-client.so",
]
OPENCRYPTOKI_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/opencryptoki/libopencryptoki.so.0",
    "/usr/lib/aarch64-linux-gnu/opencryptoki/libopencryptoki.so.0",
    "/usr/lib64/opencryptoki/libopencryptoki.so.0",
]


def p11kit_client_module() -> str | None:
    """Path of p11-kit's client module (Debian package p11-kit-modules), if installed."""
    return next((path for pattern in P11KIT_CLIENT_PATTERNS for path in sorted(glob.glob(pattern))), None)


def p11kit_client_library() -> str | None:
    """The client module, where the ``p11-kit`` command that serves it is installed too."""
    if shutil.which("p11-kit") is None:
        return None
    return p11kit_client_module()


class P11KitServer:
    """``p11-kit server`` exposing one SoftHSM2 token on a socket of its own."""

    def __init__(self, *, provider: str, token_label: str, socket_path: Path, env: dict[str, str]) -> None:
        self.provider = provider
        self.token_label = token_label
        self.socket_path = socket_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.address = f"unix:path={socket_path}"

    def start(self) -> None:
        """Start (or start again) the server; returns once it listens."""
        assert self.process is None or self.process.poll() is not None
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["p11-kit", "server", "-f", "-n", str(self.socket_path), "--provider", self.provider,
             f"pkcs11:token={self.token_label}"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"p11-kit server did not start: {output}")
            time.sleep(0.02)

    def group(self) -> list[int]:
        """The server and its per-connection ``p11-kit-remote`` processes."""
        if self.process is None:
            return []
        found = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]

    def kill(self) -> None:
        """Every process of the server killed at once: the appliance is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> list[int]:
        """SIGSTOP: the appliance stops answering without closing any connection."""
        pids = self.group()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.kill()
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()
        self.socket_path.unlink(missing_ok=True)


def opencryptoki_library() -> str | None:
    if shutil.which("pkcsconf") is None or shutil.which("pkcsslotd") is None:
        return None
    return next((path for path in OPENCRYPTOKI_CANDIDATES if os.path.exists(path)), None)


#: Where pkcsslotd writes its pid once it has daemonised itself.
PKCSSLOTD_PIDFILE = Path("/var/run/pkcsslotd.pid")


class TokenUnavailable(RuntimeError):
    """The machine's openCryptoki soft token cannot serve these tests (e.g. another
    user initialised it), though nothing wrong with the code under test."""


def _running(pid: int) -> bool:
    """``pid`` runs (a zombie left unreaped by a container's init does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


_SHARED_DAEMON = Path(tempfile.gettempdir()) / "oidc-tests-pkcsslotd.json"


@contextlib.contextmanager
def _shared_daemon() -> Iterator[dict[str, Any]]:
    """The test processes using openCryptoki's pkcsslotd, and the daemon the tests started (its pid, or
    None), read and written under an exclusive lock; processes that are gone are dropped."""
    with open(_SHARED_DAEMON.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            shared = json.loads(_SHARED_DAEMON.read_text())
        except (OSError, ValueError):
            shared = {}
        if not isinstance(shared, dict):
            shared = {}
        shared["users"] = [user for user in shared.get("users", []) if isinstance(user, int) and _running(user)]
        try:
            yield shared
        finally:  # also when the token turned out unusable: the daemon started is still recorded
            _SHARED_DAEMON.write_text(json.dumps(shared))


class OpenCryptoki:
    """openCryptoki's soft token, initialised with this label and these PINs.

    openCryptoki keeps its tokens under a compiled-in directory
    (``/var/lib/opencryptoki``), so the soft token is the machine's one.  A token
    in its factory state is initialised (``pkcsconf -I`` reads the label from
    stdin; then the SO PIN is changed, the user PIN set and changed, since
    openCryptoki marks PINs set by someone else "to be changed").  Re-initialising
    an initialised soft token leaves it refusing every login on openCryptoki 3.8,
    so a token already carrying this label is used as it is: each test labels its
    keys with a prefix of its own and destroys them afterwards.  PINs are 4 to 8
    characters on this token.  A token initialised under another label is
    :class:`TokenUnavailable`.  ``pkcsslotd`` is started when none runs, and
    :meth:`stop_daemon` stops that one (never a daemon someone else started) once
    no test process uses it any more: pytest-xdist runs test files that use the
    soft token in several workers at once, and a worker that stopped the daemon
    under another's feet failed that one's tests (CKR_HOST_MEMORY).  Who uses it
    is kept in a file under a lock (:func:`_shared_daemon`).
    """

    LABEL = "oidc-tests"
    DEFAULT_SO_PIN = "87654321"
    SO_PIN = "so-7319a"
    PIN = "us-40213"

    def __init__(self, library: str) -> None:
        self.library = library
        self.slot = -1
        self.daemon_pid: int | None = None  # the pkcsslotd this object started

    def _pkcsconf(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(["pkcsconf", *args], input=stdin, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"pkcsconf {args[0]} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def prepare(self) -> None:
        with _shared_daemon() as shared:
            if subprocess.run(["pgrep", "-x", "pkcsslotd"], capture_output=True).returncode != 0:
                # The slot daemon every openCryptoki client needs; it daemonises itself.
                subprocess.run(["pkcsslotd"], check=True, timeout=30)
                shared["daemon"] = self._daemon_pid()
            shared["users"].append(os.getpid())
            self.daemon_pid = shared.get("daemon")
            self._initialise_token()  # under the lock: two workers never initialise it at once

    def _initialise_token(self) -> None:
        current = ""
        slot = None
        for block in re.split(r"(?=Token #\d+ Info:)", self._pkcsconf("-t")):
            match = re.match(r"Token #(\d+) Info:", block)
            if match and "IBM SoftTok" in block:
                slot = int(match.group(1))
                label = re.search(r"Label:\s*(.*?)\s*$", block, re.M)
                current = label.group(1) if label else ""
                initialised = "TOKEN_INITIALIZED" in block
        if slot is None:
            raise TokenUnavailable("openCryptoki has no soft token slot (libpkcs11_sw.so in opencryptoki.conf)")
        self.slot = slot
        if current == self.LABEL:
            return
        if initialised:
            raise TokenUnavailable(f"slot {slot} is initialised as {current!r}, not {self.LABEL!r},"
                                   " and a token in use is not re-initialised")
        self._pkcsconf("-I", "-c", str(slot), "-S", self.DEFAULT_SO_PIN, stdin=self.LABEL + "\n")
        self._pkcsconf("-P", "-c", str(slot), "-S", self.DEFAULT_SO_PIN, "-n", self.SO_PIN)
        self._pkcsconf("-u", "-c", str(slot), "-S", self.SO_PIN, "-n", "tmp-8812")
        self._pkcsconf("-p", "-c", str(slot), "-U", "tmp-8812", "-n", self.PIN)

    @staticmethod
    def _daemon_pid() -> int | None:
        """The pid of the pkcsslotd just started (its pid file is written after it forks)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid = int(PKCSSLOTD_PIDFILE.read_text().strip())
            except (OSError, ValueError):
                pid = 0
            if pid and _running(pid):
                return pid
            time.sleep(0.05)
        found = subprocess.run(["pgrep", "-x", "pkcsslotd"], capture_output=True, text=True).stdout.split()
        return int(found[0]) if len(found) == 1 else None

    def stop_daemon(self) -> None:
        """Stop the pkcsslotd the tests started, if they did, once this was its last user.

        pkcsslotd ignores SIGTERM (drops it, logging nothing) while a process has the library
        initialised, as this one does: the library is finalised here first, and the signal sent
        again until the daemon is gone (SIGKILL after 20 s).
        """
        self.daemon_pid = None
        self._finalize_here()
        with _shared_daemon() as shared:
            shared["users"] = [user for user in shared["users"] if user != os.getpid()]
            pid = shared.get("daemon")
            if shared["users"] or pid is None or not _running(pid):
                return
            shared["daemon"] = None
            self._stop(pid)

    @staticmethod
    def _stop(pid: int) -> None:
        deadline = time.monotonic() + 20
        signalled = 0.0
        while _running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            if time.monotonic() - signalled > 0.5:
                os.kill(pid, signal.SIGTERM)
                signalled = time.monotonic()
            time.sleep(0.05)

    def _finalize_here(self) -> None:
        """``C_Finalize`` in this process, so that pkcsslotd sees no client left."""
        import pkcs11

        from keys.connection import module_lock
        from keys.hsm import PKCS11_LOCK

        with PKCS11_LOCK, module_lock(self.library):
            try:
                pkcs11.lib(self.library).finalize()
            except pkcs11.PKCS11Error:
                pass  # not initialised: nothing to finalise

    def destroy_labelled(self, prefix: str) -> None:
        """Destroy every object whose label starts with ``prefix`` (a test's own keys)."""
        import pkcs11
        from pkcs11 import Attribute

        from keys.hsm import PKCS11_LOCK

        with PKCS11_LOCK:
            token = pkcs11.lib(self.library).get_token(token_label=self.LABEL)
            try:
                session = token.open(rw=True, user_pin=self.PIN)
            except pkcs11.UserAlreadyLoggedIn:
                session = token.open(rw=True)
            try:
                for obj in list(session.get_objects()):
                    try:
                        if str(obj[Attribute.LABEL]).startswith(prefix):
                            obj.destroy()
                    except pkcs11.ObjectHandleInvalid:
                        continue  # another test process's object, destroyed by it since it was listed
            finally:
                session.close()


class RemoteTokens:
    """Several SoftHSM2 tokens, each behind its own ``p11-kit server`` and reached through its own copy
    of p11-kit's client module: the shape of several network HSMs, each failing on its own.

    The client module reads ``P11_KIT_SERVER_ADDRESS`` when it is loaded, once per module file; a
    copy per token (not a symlink: that is the same loaded module) gets each its own address, set
    through ``HSM_<NAME>_MODULE_ENV``.
    """

    def __init__(self, *, softhsm: Any, labels: dict[str, str], client_module: str, directory: Path) -> None:
        self.softhsm = softhsm
        self.labels = labels  # token name -> SoftHSM2 token label
        self.servers: dict[str, P11KitServer] = {}
        self.libraries: dict[str, str] = {}
        for name, label in labels.items():
            library = directory / f"p11-kit-client-{name.lower()}.so"
            shutil.copyfile(client_module, library)
            self.libraries[name] = str(library)
            self.servers[name] = P11KitServer(provider=softhsm.library, token_label=label,
                                              socket_path=directory / f"{name.lower()}.sock", env=softhsm.env())

    def start(self) -> None:
        for server in self.servers.values():
            server.start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def env(self) -> dict[str, str]:
        """HSM_TOKENS and each token's HSM_<NAME>_* settings."""
        env = {"HSM_ENABLED": "true", "HSM_TOKENS": ",".join(self.labels)}
        for name, label in self.labels.items():
            prefix = f"HSM_{name.upper()}_"
            env[prefix + "LIBRARY"] = self.libraries[name]
            env[prefix + "TOKEN_LABEL"] = label
            env[prefix + "PIN"] = self.softhsm.pin
            env[prefix + "MODULE_ENV"] = f"P11_KIT_SERVER_ADDRESS={self.servers[name].address}"
        return env
