"""The several-token drill under gunicorn: two SoftHSM2 tokens, each behind its own ``p11-kit server``,
two workers, ``client_credentials`` under steady load.

1. Token A's server is killed: only the requests in flight on A may fail; every later one is
   signed on B at once; readiness stays 200 and names A's state; A rejoins by itself once its
   server is back.
2. Token A's server is stopped (SIGSTOP): a signature sent to A is given up after
   HSM_TOKEN_TIMEOUT_SECONDS (503 for that request only; the call stays on A's own thread, the
   worker keeps serving), A is passed over while it hangs, and after SIGCONT it rejoins by itself;
   no worker is replaced.
3. Both are killed: 503 (every set HSM-only: never software); B alone back is enough.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import requests
from test_hsm_drills import DRILL_ENV, Load, jwks, ready, wait_booted, wait_until, worker_pids

from live_flows import add_client
from serving import Gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

REJOIN_BOUND = 15.0
#: Requests answered otherwise than 200 while token A is lost: those in flight on A, at most one per worker.
WORKERS = 2


def signed_by(url: str, client: tuple[str, str | None], timeout: float = 10) -> tuple[int, str | None]:
    """A client_credentials request: (status, the kid that signed its access token); status 0 when unanswered."""
    try:
        response = requests.post(f"{url}/token", data={"grant_type": "client_credentials", "scope": "api"},
                                 auth=(client[0], client[1] or ""), timeout=timeout)
    except requests.RequestException:
        return 0, None
    if response.status_code != 200:
        if response.status_code == 503:
            assert response.json()["error"] == "temporarily_unavailable"
        return response.status_code, None
    return 200, jwt.get_unverified_header(response.json()["access_token"])["kid"]


def token_kids(softhsm: Any, label: str) -> set[str]:
    """The kids of the key pairs on one token (CKA_ID, as text)."""
    return {bytes.fromhex(obj["ID"]).decode("ascii") for obj in softhsm.list_objects(label) if "ID" in obj}


class TokenDrill:
    """The server under load, every answer recorded with the token that signed it."""

    def __init__(self, server: Gunicorn, client: tuple[str, str | None], remote_tokens: Any) -> None:
        self.server = server
        self.client = client
        self.tokens = remote_tokens
        self.kids: dict[str | None, str] = {}
        self.outcomes: list[tuple[float, int, str | None, float]] = []  # (asked, status, token, answered)

    def call(self) -> tuple[str, int]:
        asked = time.monotonic()
        status, kid = signed_by(self.server.url, self.client)
        self.outcomes.append((asked, status, self.kids.get(kid), time.monotonic()))
        return "server", status

    def between(self, start: float, end: float) -> list[tuple[int, str | None]]:
        return [(status, token) for asked, status, token, answered in self.outcomes
                if start <= asked and answered < end]

    def signs_on(self, token: str, since: float) -> bool:
        return any(name == token and asked >= since for asked, _, name, _ in self.outcomes)

    def a_killed(self, published: dict[str, Any]) -> tuple[list[int], float]:
        """Phase 1: the requests that failed while A was gone, and how long A took to rejoin."""
        a = self.tokens.servers["A"]
        killed = time.monotonic()
        a.kill()
        time.sleep(2.0)
        answer = requests.get(f"{self.server.url}/health/ready", timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"]["hsm"]["tokens"]["A"] == {"ok": False, "reason": "hsm_unavailable"}
        assert jwks(self.server.url) == published
        restarted = time.monotonic()
        a.start()
        rejoin = wait_until(lambda: self.signs_on("A", restarted), REJOIN_BOUND, "A rejoins", self.server)
        during = self.between(killed, restarted)
        assert {token for status, token in during if status == 200} == {"B"}
        return [status for status, _ in during if status != 200], rejoin

    def a_stopped(self) -> tuple[list[int], float]:
        """Phase 2: SIGSTOP; the signatures in flight on A are given up, every worker keeps serving on B."""
        pids = worker_pids(self.server)
        a = self.tokens.servers["A"]
        stopped = time.monotonic()
        a.pause()
        time.sleep(float(DRILL_ENV["GUNICORN_TIMEOUT"]) + 4.0)
        assert ready(self.server.url) == 200
        continued = time.monotonic()
        a.resume()
        rejoin = wait_until(lambda: self.signs_on("A", continued), REJOIN_BOUND, "A rejoins after SIGCONT",
                            self.server)
        hung = self.between(stopped, continued)
        assert sum(status == 200 for status, _ in hung) > 100
        assert worker_pids(self.server) == pids  # none hung until gunicorn replaced it
        return [status for status, _ in hung if status != 200], rejoin

    def both_then_b(self) -> None:
        """Phase 3: both killed (503, never software), then B alone back is enough."""
        both = time.monotonic()
        self.tokens.servers["A"].kill()
        self.tokens.servers["B"].kill()
        time.sleep(2.0)
        assert ready(self.server.url) == 503
        b_back = time.monotonic()
        self.tokens.servers["B"].start()
        wait_until(lambda: self.signs_on("B", b_back), REJOIN_BOUND, "B alone signs", self.server)
        time.sleep(1.0)
        assert {status for status, _ in self.between(both + 1.0, b_back)} <= {503}
        tail = [status for _, status, _, _ in self.outcomes[-10:]]
        assert tail == [200] * 10, tail
        assert ready(self.server.url) == 200


def test_two_tokens_drill_one_lost_killed_or_stopped_then_both(make_app, base_env, remote_tokens, softhsm, tmp_path):
    env = {**base_env, **remote_tokens.env(), **DRILL_ENV}
    client = add_client(make_app, env, grant_types=["client_credentials"], scope="api")
    server = Gunicorn(env, workers=WORKERS, log_path=tmp_path / "gunicorn.log")
    drill = TokenDrill(server, client, remote_tokens)
    try:
        wait_booted(server, WORKERS)
        published = jwks(server.url)
        assert len(published["keys"]) == 4  # two sets, one pair each on both tokens
        for name, label in remote_tokens.labels.items():
            drill.kids.update(dict.fromkeys(token_kids(softhsm, label), name))
        with Load(drill.call, threads=3):
            time.sleep(1.5)
            assert drill.signs_on("A", 0) and drill.signs_on("B", 0)
            failed_killed, rejoin_killed = drill.a_killed(published)
            assert len(failed_killed) <= WORKERS, failed_killed  # only those in flight on A
            time.sleep(1.0)
            failed_stopped, rejoin_stopped = drill.a_stopped()
            assert len(failed_stopped) <= WORKERS, failed_stopped
            time.sleep(1.0)
            drill.both_then_b()
        assert {status for _, status, _, _ in drill.outcomes} <= {0, 200, 503}
        print(f"\nfailed while A was killed: {len(failed_killed)}, while stopped: {len(failed_stopped)}; "
              f"rejoined in {rejoin_killed:.1f} s (killed), {rejoin_stopped:.1f} s (stopped)")
    finally:
        remote_tokens.servers["A"].resume()
        server.stop()
    text = server.log()
    assert "Traceback" not in text, text[-3000:]
    assert "WORKER TIMEOUT" not in text
    assert softhsm.pin not in text
