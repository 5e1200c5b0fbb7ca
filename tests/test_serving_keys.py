"""The key service under gunicorn: HSM opened per worker, clear start-up failures."""

from __future__ import annotations

import json
import urllib.request

import pytest

from serving import Gunicorn

pytestmark = pytest.mark.e2e


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.both_databases
def test_gunicorn_workers_share_one_provisioned_key_pair_per_set(hsm_env, softhsm, token, tmp_path):
    server = Gunicorn(hsm_env, workers=2, log_path=tmp_path / "gunicorn.log")
    try:
        server.wait_ready()
        kids = {key["kid"] for key in _get_json(server.url + "/.well-known/jwks.json")["keys"]}
        # Ask enough times that both workers answer: all see the same keys.
        for _ in range(20):
            assert {key["kid"] for key in _get_json(server.url + "/.well-known/jwks.json")["keys"]} == kids
    finally:
        server.stop()
    assert len(kids) == 2
    objects = softhsm.list_objects(token)
    private = [o for o in objects if o["kind"] == "Private Key Object"]
    assert sorted(o["label"] for o in private) == ["jwt.access-token", "openid.id-token"]
    assert hsm_env["HSM_PIN"] not in server.log()


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"HSM_TOKEN_LABEL": "no-such-token"}, "token label 'no-such-token': no slot holds a token with this label"),
        ({"HSM_PIN": "wrong-pin-value-77"}, "login failed: the PIN is incorrect"),
        ({"HSM_LIBRARY": "/nonexistent/libpkcs11.so"}, "PKCS#11 module /nonexistent/libpkcs11.so"),
        ({"SECRETS_SYSTEM": "short"}, "at least 32"),
    ],
)
def test_unusable_hsm_or_secret_stops_the_server_with_one_clear_line(hsm_env, tmp_path, override, expected):
    env = {**hsm_env, **override}
    server = Gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log")
    try:
        status = server.wait_exit(timeout=60)
    finally:
        server.stop()
    log = server.log()
    assert status != 0
    # The HSM is the workers' to open; the system secret is checked by the master, before it binds.
    lines = [line for line in log.splitlines() if "key service cannot start" in line
             or line.startswith("configuration error: ")]
    assert len(lines) == 1, log
    assert expected in lines[0]
    assert "Traceback" not in log
    for secret in (env["HSM_PIN"], env["SECRETS_SYSTEM"]):
        if len(secret) > 5:
            assert secret not in log


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_pkcs11_is_loaded_in_workers_never_in_the_master(hsm_env, tmp_path, preload):
    """Even with --preload the app factory touches no PKCS#11: each worker loads and logs in itself."""
    import subprocess

    args = ("--preload",) if preload else ()
    server = Gunicorn({**hsm_env, "METRICS_BIND": ""}, workers=2, log_path=tmp_path / "gunicorn.log", args=args)
    try:
        server.wait_ready()
        master = server.process.pid
        workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                                       text=True).stdout.split()]
        assert len(workers) == 2
        with open(f"/proc/{master}/maps") as maps:
            assert "libsofthsm2" not in maps.read()
        for pid in workers:
            with open(f"/proc/{pid}/maps") as maps:
                assert "libsofthsm2" in maps.read()
        assert _get_json(server.url + "/health/ready")["checks"]["hsm"] == {"ok": True, "configured": True}
    finally:
        server.stop()
