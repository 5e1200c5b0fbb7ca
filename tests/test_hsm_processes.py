"""Several processes provisioning the same empty token at the same moment.

Two processes that "look up, generate if missing" without a shared lock make
duplicate key pairs every time (DESIGN.md); the provisioning lock (a file lock
beside SQLite, an advisory lock on PostgreSQL) must leave exactly one pair per
set.  The processes wait on a file barrier so that they really race.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_hsm_manager import published, verify_signature

from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET

from support import start_key_service

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4

pytestmark = [pytest.mark.e2e, pytest.mark.both_databases]

#: One provider process: build the app, migrate, start the key service, sign once per set.
WORKER = r"""
import base64, json, sys, time
from pathlib import Path

barrier, index, env = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])


def wait(phase):
    (barrier / f"{phase}-ready-{index}").touch()
    deadline = time.monotonic() + 120
    while not (barrier / f"{phase}-go").exists():
        if time.monotonic() > deadline:
            sys.exit(f"barrier {phase} never opened")
        time.sleep(0.001)


from oidc.app import create_app
from oidc.schema import upgrade_schema
from oidc.state import state_of

app = create_app(env=env)
wait("schema")
upgrade_schema(app)
wait("keys")
service = state_of(app).key_service()
report = {}
for key_set in ("openid.id-token", "jwt.access-token"):
    signer = service.signer(key_set)
    signing_input = f"process-{index}.{key_set}".encode()
    report[key_set] = {"kid": signer.kid, "alg": signer.alg, "backend": signer.backend,
                       "input": signing_input.decode(), "signature": signer.sign(signing_input).hex()}
service.hsm.close()
print(json.dumps(report))
"""


def _open_barrier(barrier: Path, phase: str, processes: list[subprocess.Popen[str]]) -> None:
    """Wait until every process is waiting at ``phase``, then let them all go at once."""
    deadline = time.monotonic() + 120
    while len(list(barrier.glob(f"{phase}-ready-*"))) < len(processes):
        for process in processes:
            if process.poll() is not None:
                _, stderr = process.communicate()
                raise AssertionError(f"a process exited before the {phase} barrier:\n{stderr}")
        assert time.monotonic() < deadline, f"the processes never all reached the {phase} barrier"
        time.sleep(0.01)
    (barrier / f"{phase}-go").touch()


def _sqlalchemy_url(database_url: str) -> str:
    if database_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + database_url[len("postgresql://"):]
    return database_url


def test_processes_starting_together_provision_one_key_pair_per_set(
    make_app, hsm_env, softhsm, token, database_url, tmp_path
):
    assert softhsm.list_objects(token) == []
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(barrier), str(index), json.dumps(hsm_env)],
            cwd=ROOT, env=softhsm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in range(PROCESSES)
    ]
    try:
        _open_barrier(barrier, "schema", processes)
        _open_barrier(barrier, "keys", processes)
        results = [process.communicate(timeout=180) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_stdout, stderr) in zip(processes, results, strict=False):
        assert process.returncode == 0, stderr
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results]

    # Exactly one key pair per set on the token, and one lifecycle row per set.
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert softhsm.key_objects(token, key_set) == {"private": 1, "public": 1}
    assert len(softhsm.list_objects(token)) == 4
    engine = create_engine(_sqlalchemy_url(database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT key_set, backend FROM signing_keys ORDER BY key_set")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(ACCESS_TOKEN_SET, "hsm"), (ID_TOKEN_SET, "hsm")]

    # Every process signs with that one pair, as a provider started afterwards publishes it.
    app = make_app(hsm_env)
    start_key_service(app)
    jwks = published(app)
    assert len(jwks) == 2
    for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
        assert len({report[key_set]["kid"] for report in reports}) == 1
        for report in reports:
            assert report[key_set]["backend"] == "hsm"
            verify_signature(
                jwks[report[key_set]["kid"]], report[key_set]["input"].encode(), bytes.fromhex(report[key_set]["signature"])
            )
    assert len(softhsm.list_objects(token)) == 4
