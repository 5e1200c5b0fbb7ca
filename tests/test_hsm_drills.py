"""The HSM drills under gunicorn: a network HSM killed and brought back, or stopped and continued.

The token is SoftHSM2 served by ``p11-kit server``; the provider reaches it
through p11-kit's client module, as it would a network HSM's client library.
Every key set is HSM-only, so nothing may fall back to software meanwhile.

* Outage: two instances (2 workers and 1) on one PostgreSQL database and the
  one remote token, under steady ``client_credentials`` load; the server's
  processes are killed, then started again.  While the token is gone every
  token request is answered 503 (never 500, never a dropped connection), the
  public keys keep being served, readiness is 503; within 15 s of the token's
  return every instance answers 200 again from the same worker processes, with
  the same kids, nothing generated twice and no traceback in any log.
* Hang: the server's processes are stopped (SIGSTOP).  The worker blocked in
  PKCS#11 is replaced after GUNICORN_TIMEOUT; the replacement starts, is not
  ready, answers 503 at once and serves the public keys, and does not stop the
  server; after SIGCONT it becomes ready by itself.
* Reload: ``kill -HUP`` while the token is gone replaces every worker; the new
  ones start as replacements do, and the server keeps running.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from live_flows import add_client
from serving import Gunicorn
from support import json_lines

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

#: Short timings: the drills are about behaviour, and must keep the suite fast.
DRILL_ENV = {
    "HSM_ONLY_KEY_SETS": "*",
    "HSM_RETRY_INITIAL_SECONDS": "0.2",
    "HSM_RETRY_MAX_SECONDS": "1",
    "HSM_READINESS_CACHE_SECONDS": "0.5",
    "METRICS_BIND": "",
    "GUNICORN_TIMEOUT": "3",
    "GUNICORN_GRACEFUL_TIMEOUT": "3",
}
RECOVERY_BOUND = 15.0


def worker_pids(server: Gunicorn) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout
    return {int(pid) for pid in found.split()}


def token_request(url: str, client: tuple[str, str | None], timeout: float = 10) -> int:
    try:
        response = requests.post(f"{url}/token", data={"grant_type": "client_credentials", "scope": "api"},
                                 auth=(client[0], client[1] or ""), timeout=timeout)
    except requests.RequestException:
        return 0  # no answer at all
    if response.status_code == 503:
        assert response.json()["error"] == "temporarily_unavailable", response.text
        assert int(response.headers["Retry-After"]) >= 1
    return response.status_code


class Load:
    """Steady token requests from a few threads; every answer recorded with when it was asked and answered.

    A request in flight when the token goes or comes back may be answered either
    way; those that were asked and answered on one side of the event are judged.
    """

    def __init__(self, call: Callable[[], tuple[str, int]], threads: int = 3) -> None:
        self.records: list[tuple[float, str, int, float]] = []  # (asked at, instance, status, answered at)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(call,), daemon=True) for _ in range(threads)]

    def _run(self, call: Callable[[], tuple[str, int]]) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            name, status = call()
            self.records.append((asked, name, status, time.monotonic()))  # one append: atomic across threads
            time.sleep(0.005)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def results(self) -> list[tuple[float, str, int]]:
        """(asked at, instance, status) of every request, in the order they were answered."""
        return [(asked, name, status) for asked, name, status, _ in self.records]

    def between(self, start: float, end: float) -> list[tuple[float, str, int]]:
        """The requests asked at or after ``start`` and answered before ``end``."""
        return [(asked, name, status) for asked, name, status, answered in self.records
                if start <= asked and answered < end]


def jwks(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/.well-known/jwks.json", timeout=5).json()


def ready(url: str) -> int:
    return requests.get(f"{url}/health/ready", timeout=5).status_code


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, server: Gunicorn | None = None) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started >= timeout:
            log = "\n".join(line for line in (server.log() if server else "").splitlines() if "oidc.access" not in line)
            raise AssertionError(f"{what}: not within {timeout} s\n{log[-4000:]}")
        time.sleep(0.05)
    return time.monotonic() - started


def all_good(server: Gunicorn, client: tuple[str, str | None], answers: int = 6) -> bool:
    """Several readiness checks and token requests in a row, every one of them 200."""
    return all(ready(server.url) == 200 and token_request(server.url, client) == 200 for _ in range(answers))


def wait_booted(server: Gunicorn, workers: int) -> None:
    """Every worker has started its key service (readiness answers as soon as the first has)."""
    server.wait_ready("/health/ready")
    wait_until(lambda: server.log().count("worker started its key service") >= workers, 30, "every worker started")


def log_records(server: Gunicorn) -> list[dict[str, Any]]:
    return json_lines(server.log())


def messages(server: Gunicorn, prefix: str, level: str) -> list[str]:
    return [r["message"] for r in log_records(server) if r.get("level") == level and r["message"].startswith(prefix)]


def test_outage_drill_two_instances_one_database_one_remote_token(
    make_app, remote_hsm_env, remote_token, softhsm, token, tmp_path
):
    env = {**remote_hsm_env, **DRILL_ENV}
    client = add_client(make_app, env, grant_types=["client_credentials"], scope="api")
    a = Gunicorn(env, workers=2, log_path=tmp_path / "a.log")
    b = Gunicorn(env, workers=1, log_path=tmp_path / "b.log")
    servers = {"a": a, "b": b}
    try:
        wait_booted(a, 2)
        wait_booted(b, 1)
        keys_before = {name: jwks(server.url) for name, server in servers.items()}
        assert keys_before["a"] == keys_before["b"] and len(keys_before["a"]["keys"]) == 2
        objects_before = softhsm.list_objects(token)
        pids_before = {name: worker_pids(server) for name, server in servers.items()}
        turn = iter(range(10**9))

        def call() -> tuple[str, int]:
            name = "ab"[next(turn) % 2]
            return name, token_request(servers[name].url, client)

        with Load(call) as load:
            time.sleep(1.0)
            killed = time.monotonic()
            remote_token.kill()
            time.sleep(2.0)
            # While the token is gone: the keys are served from memory, and nobody is ready.
            for server in servers.values():
                assert jwks(server.url) == keys_before["a"]
                assert requests.get(f"{server.url}/.well-known/openid-configuration", timeout=5).status_code == 200
                answer = requests.get(f"{server.url}/health/ready", timeout=5)
                assert answer.status_code == 503
                assert answer.json()["checks"]["hsm"]["reason"] == "hsm_unavailable"
                assert remote_token.client_library not in answer.text and token not in answer.text
            returned = time.monotonic()
            remote_token.start()
            for name, server in servers.items():
                wait_until(functools.partial(all_good, server, client), RECOVERY_BOUND, f"instance {name} healed",
                           server)
            time.sleep(1.0)
        warm = load.between(0, killed)
        assert warm and {status for _, _, status in warm} == {200}
        gone = load.between(killed, returned)
        assert {status for _, _, status in gone} == {503}, sorted({status for _, _, status in gone})
        assert {name for _, name, _ in gone} == {"a", "b"}
        # Never a 500 or a dropped connection, before, during or after.
        assert {status for _, _, status in load.results} <= {200, 503}
        for name in servers:
            failures = [t for t, who, status in load.results if who == name and t >= returned and status != 200]
            assert not failures or max(failures) - returned < RECOVERY_BOUND
            assert {status for t, who, status in load.results if who == name and t > returned + RECOVERY_BOUND} <= {200}
        assert [status for _, _, status in load.results[-10:]] == [200] * 10

        # Healed in place: the same worker processes, the same keys, nothing generated twice.
        for name, server in servers.items():
            assert worker_pids(server) == pids_before[name]
            for _ in range(6):
                assert ready(server.url) == 200
            assert jwks(server.url) == keys_before["a"]
        assert softhsm.list_objects(token) == objects_before
        assert len(objects_before) == 4
    finally:
        for server in servers.values():
            server.stop()
    for name, server in servers.items():
        text = server.log()
        assert "Traceback" not in text, text[-3000:]
        assert not [r for r in log_records(server) if r.get("level") in ("ERROR", "CRITICAL")], text[-3000:]
        lost = messages(server, "HSM unavailable", "WARNING")
        back = messages(server, "HSM available again", "INFO")
        workers = 2 if name == "a" else 1
        # One WARNING and one INFO per worker that met the outage (at most one each per worker).
        assert 1 <= len(lost) == len(back) <= workers, (lost, back)
        assert softhsm.pin not in text


def test_hang_drill_a_stuck_worker_is_replaced_and_its_replacement_waits_for_the_token(
    make_app, remote_hsm_env, remote_token, softhsm, token, tmp_path
):
    env = {**remote_hsm_env, **DRILL_ENV}
    client = add_client(make_app, env, grant_types=["client_credentials"], scope="api")
    server = Gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log")
    try:
        wait_booted(server, 1)
        keys_before = jwks(server.url)
        objects_before = softhsm.list_objects(token)
        assert token_request(server.url, client) == 200
        (stuck_pid,) = worker_pids(server)

        remote_token.pause()
        stuck = threading.Thread(target=token_request, args=(server.url, client, 30), daemon=True)
        stuck.start()  # blocks in C_Sign until gunicorn gives up on the worker
        wait_until(lambda: worker_pids(server) - {stuck_pid} != set(), 20, "a replacement worker")
        assert server.process.poll() is None, "the server stopped"
        # The replacement starts without the token: not ready, 503 at once, public keys served.
        wait_until(lambda: ready(server.url) == 503, 10, "the replacement answering")
        started = time.monotonic()
        assert token_request(server.url, client) == 503
        assert time.monotonic() - started < 2
        assert jwks(server.url) == keys_before
        time.sleep(float(DRILL_ENV["GUNICORN_TIMEOUT"]) + 1)  # longer than the timeout: it is not killed too
        assert server.process.poll() is None
        (replacement,) = worker_pids(server)
        assert replacement != stuck_pid

        remote_token.resume()
        wait_until(lambda: ready(server.url) == 200, RECOVERY_BOUND, "ready after SIGCONT", server)
        assert token_request(server.url, client) == 200
        assert worker_pids(server) == {replacement}
        assert jwks(server.url) == keys_before
        assert softhsm.list_objects(token) == objects_before
        stuck.join(timeout=30)
    finally:
        remote_token.resume()
        server.stop()
    text = server.log()
    assert "Traceback" not in text, text[-3000:]
    assert "WORKER TIMEOUT" in text
    assert softhsm.pin not in text
    waited = [r for r in log_records(server) if r["message"].startswith("starting without the HSM")]
    assert len(waited) == 1, json.dumps(waited)


def test_a_reload_while_the_token_is_gone_does_not_stop_the_server(make_app, remote_hsm_env, remote_token, tmp_path):
    env = {**remote_hsm_env, **DRILL_ENV}
    client = add_client(make_app, env, grant_types=["client_credentials"], scope="api")
    server = Gunicorn(env, workers=2, log_path=tmp_path / "gunicorn.log")
    try:
        wait_booted(server, 2)
        before = worker_pids(server)
        remote_token.kill()
        assert token_request(server.url, client) == 503
        server.process.send_signal(signal.SIGHUP)  # gunicorn reads its configuration again, new workers
        wait_until(lambda: bool(worker_pids(server)) and not worker_pids(server) & before, 20, "new workers")
        time.sleep(1.0)
        assert server.process.poll() is None, server.log()[-2000:]
        assert token_request(server.url, client) == 503
        assert ready(server.url) == 503
        remote_token.start()
        # Each worker heals on its own backoff, and requests cannot pick their worker: wait
        # until a run of answers (which reaches every worker, in all likelihood) is all good.
        wait_until(lambda: all_good(server, client), RECOVERY_BOUND, "every worker healed once the token is back",
                   server)
    finally:
        server.stop()
    assert "Traceback" not in server.log()
