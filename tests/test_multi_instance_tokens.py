"""Two gunicorn instances on one PostgreSQL database sharing two tokens, with the audit chain on.

Tokens A and B are SoftHSM2 tokens, each behind its own ``p11-kit server`` (tests/remote_token.RemoteTokens);
both instances have HSM_TOKENS=A,B and AUDIT_CHAIN=true.  ``client_credentials`` requests go to both at
once; A's server is killed and both instances keep signing on B; A comes back; the instances stop.  Then
``oidc-hsm audit verify`` (a process of its own, as an operator runs it) passes, and the one chain holds a
``token.issued`` entry for every token either instance issued, and A's outage as each worker saw it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from test_hsm_drills import DRILL_ENV
from test_hsm_token_drills import token_kids

from live_flows import add_client
from serving import Gunicorn, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

ROOT = Path(__file__).resolve().parent.parent
OIDC_HSM = str(Path(sys.executable).with_name("oidc-hsm"))
#: Requests per phase, over both instances.
PHASE = 30
REJOIN_BOUND = 15.0


class Outcome:
    """Every answer: (instance, status, the token whose key signed, the access token's jti)."""

    def __init__(self, urls: dict[str, str], client: tuple[str, str | None], kids: dict[str, str]) -> None:
        self.urls = urls
        self.client = client
        self.kids = kids
        self.answers: list[tuple[str, int, str | None, str | None]] = []

    def call(self, instance: str) -> tuple[str, int, str | None, str | None]:
        try:
            response = requests.post(self.urls[instance] + "/token",
                                     data={"grant_type": "client_credentials", "scope": "api"},
                                     auth=(self.client[0], self.client[1] or ""), timeout=10)
        except requests.RequestException:
            return instance, 0, None, None
        if response.status_code != 200:
            return instance, response.status_code, None, None
        token = response.json()["access_token"]
        kid = jwt.get_unverified_header(token)["kid"]
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        return instance, 200, self.kids.get(kid), jti

    def phase(self, count: int) -> list[tuple[str, int, str | None, str | None]]:
        """``count`` requests, alternately to each instance, four at a time."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(self.call, ["a", "b"] * (count // 2)))
        self.answers.extend(answers)
        return answers


def _oidc_hsm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OIDC_HSM, *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_two_instances_share_two_tokens_and_write_one_audit_chain(make_app, base_env, remote_tokens, softhsm,
                                                                   tmp_path):
    port_a = free_port()
    env = {**base_env, **remote_tokens.env(), **DRILL_ENV, "OIDC_ISSUER": f"http://127.0.0.1:{port_a}",
           "LOG_FORMAT": "text", "AUDIT_CHAIN": "true", "AUDIT_SEAL_SECONDS": "0.2",
           "AUDIT_CHECKPOINT_ENTRIES": "10"}
    client = add_client(make_app, env, grant_types=["client_credentials"], scope="api")
    servers = {"a": Gunicorn(env, workers=1, log_path=tmp_path / "a.log", port=port_a),
               "b": Gunicorn(env, workers=1, log_path=tmp_path / "b.log")}
    try:
        for server in servers.values():
            server.wait_ready("/health/ready")
        kids = {kid: name for name, label in remote_tokens.labels.items() for kid in token_kids(softhsm, label)}
        outcome = Outcome({name: server.url for name, server in servers.items()}, client, kids)

        # Both tokens, both instances: every key of each signs somewhere.
        first = outcome.phase(PHASE)
        assert {status for _, status, _, _ in first} == {200}
        assert {token for _, _, token, _ in first} == {"A", "B"}

        # A gone: each instance loses at most the signature in flight on A, then signs on B alone.
        remote_tokens.servers["A"].kill()
        lost = outcome.phase(PHASE)
        failed = [answer for answer in lost if answer[1] != 200]
        assert len(failed) <= 2 and {status for _, status, _, _ in failed} <= {503}, failed
        for instance in ("a", "b"):
            signed = [token for name, status, token, _ in lost if name == instance and status == 200]
            assert len(signed) >= PHASE // 2 - 1 and set(signed) == {"B"}, (instance, signed)
        for server in servers.values():
            ready = requests.get(server.url + "/health/ready", timeout=5)
            assert ready.status_code == 200
            assert ready.json()["checks"]["hsm"]["tokens"]["A"] == {"ok": False, "reason": "hsm_unavailable"}

        # A back: it rejoins in both instances by itself.
        remote_tokens.servers["A"].start()
        restarted = time.monotonic()
        deadline = restarted + REJOIN_BOUND
        rejoined: set[str] = set()
        while rejoined != {"a", "b"} and time.monotonic() < deadline:
            rejoined |= {name for name, status, token, _ in outcome.phase(4) if token == "A"}
        assert rejoined == {"a", "b"}
        print(f"\nwhile A was down: {len(failed)} of {len(lost)} requests failed; A signed again in both "
              f"instances {time.monotonic() - restarted:.1f} s after its server was back")
    finally:
        for server in servers.values():  # both shut down at once, then wait for each
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.stop()
    for server in servers.values():
        text = server.log()
        assert "Traceback" not in text, text[-3000:]
        assert softhsm.pin not in text

    # One chain, as the operator checks it: sealed, checkpointed and verified by a process of its own.
    verified = _oidc_hsm(env, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] is True and result["unsealed"] == 0 and result["checkpoints"] >= 3, result
    exported = _oidc_hsm(env, "audit", "export")
    assert exported.returncode == 0, exported.stderr
    entries = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [entry["position"] for entry in entries] == list(range(1, len(entries) + 1))
    issued = [entry["fields"]["jti"] for entry in entries if entry["event"] == "token.issued"]
    answered = [jti or "" for _, status, _, jti in outcome.answers if status == 200]
    assert sorted(issued) == sorted(answered) and len(set(issued)) == len(issued)  # every one, once
    lost_entries = [entry["fields"] for entry in entries if entry["event"] == "hsm.lost"]
    assert lost_entries and {fields.get("hsm_token") for fields in lost_entries} == {"A"}
    assert any(entry["event"] == "hsm.available" and entry["fields"].get("hsm_token") == "A" for entry in entries)
    print(f"one chain of {len(entries)} entries, {len(issued)} token.issued, {result['checkpoints']} checkpoints")
