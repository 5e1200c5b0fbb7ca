"""Two gunicorn instances on two ports, one PostgreSQL database, one SoftHSM2 token.

Both instances have the same configuration (one issuer: instance A's URL); the
tests talk to each by its own port.  A browser logs in on A and the code is
redeemed on B; the same refresh token, the same code, the same DPoP proof or
the same pushed request_uri, presented on A and B at the same moment,
succeeds exactly once.  Each race is run several times;
without the conditional UPDATE that claims a code or a refresh token (``WHERE
used_at IS NULL``, checking the row count) both requests succeed in the first
race or two.  One worker per instance: the race is between the instances.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from dpop_proofs import new_key, proof
from live_flows import TIMEOUT, UserAgent, add_client, basic_auth, introspect, race, redeem, refresh, register
from oidc_fixtures import jwt_parts, pkce_pair
from serving import Gunicorn, free_port

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read, not followed
RACES = 5

# Several hosts share PostgreSQL, never an SQLite file.
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


@pytest.fixture
def instances(make_app: Any, hsm_env: dict[str, str], tmp_path: Any) -> Iterator[SimpleNamespace]:
    port_a = free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    env = {**hsm_env, "OIDC_ISSUER": issuer, "METRICS_BIND": "", "LOG_FORMAT": "text"}
    client = register(make_app, env, redirect_uris=[CALLBACK])
    a = Gunicorn(env, workers=1, log_path=tmp_path / "a.log", port=port_a)
    b = Gunicorn(env, workers=1, log_path=tmp_path / "b.log")
    try:
        a.wait_ready("/health/ready")
        b.wait_ready("/health/ready")
        yield SimpleNamespace(a=a.url, b=b.url, issuer=issuer, client=client, servers=(a, b), env=env)
    finally:
        for server in (a, b):  # both shut down at once, then wait for each
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()[-3000:]


def _error(response: Any) -> str:
    return response.json().get("error", "") if response.status_code != 200 else ""


def test_login_on_one_instance_and_code_exchange_on_the_other(instances):
    browser = UserAgent(instances.a)
    flow = browser.code(instances.client[0], CALLBACK)
    assert "op_session" in browser.cookies  # the login happened on A
    response = redeem(instances.b, instances.client, flow, CALLBACK)
    assert response.status_code == 200, response.text
    tokens = response.json()
    _, id_claims = jwt_parts(tokens["id_token"])
    assert id_claims["iss"] == instances.issuer and id_claims["nonce"] == flow["nonce"]
    assert id_claims["aud"] == instances.client[0]
    # Either instance knows the tokens the other issued.
    assert introspect(instances.a, instances.client, tokens["access_token"])["active"] is True
    assert refresh(instances.a, instances.client, tokens["refresh_token"]).status_code == 200


def test_simultaneous_refreshes_on_both_instances_succeed_once_and_revoke_the_family(instances):
    browser = UserAgent(instances.a)
    client = instances.client
    for attempt in range(RACES):
        flow = browser.code(client[0], CALLBACK)  # signed in and consented: no pages after the first
        first = redeem(instances.a, client, flow, CALLBACK)
        assert first.status_code == 200, first.text
        refresh_token = first.json()["refresh_token"]

        results = race(functools.partial(refresh, instances.a, client, refresh_token),
                       functools.partial(refresh, instances.b, client, refresh_token))
        statuses = sorted(response.status_code for response in results)
        assert statuses == [200, 400], (attempt, [response.text for response in results])
        winner = next(response for response in results if response.status_code == 200).json()
        loser = next(response for response in results if response.status_code != 200)
        assert _error(loser) == "invalid_grant", loser.text

        # Family policy: a reused refresh token revokes the whole grant family,
        # the tokens the winning request just got included.
        again = refresh(instances.b, client, winner["refresh_token"])
        assert again.status_code == 400 and _error(again) == "invalid_grant", again.text
        assert introspect(instances.a, client, winner["access_token"]) == {"active": False}
        assert introspect(instances.b, client, first.json()["access_token"]) == {"active": False}
        assert introspect(instances.a, client, winner["refresh_token"]) == {"active": False}


def test_the_same_code_redeemed_on_both_instances_at_once_is_redeemed_once(instances):
    browser = UserAgent(instances.a)
    client = instances.client
    for attempt in range(RACES):
        flow = browser.code(client[0], CALLBACK)
        results = race(functools.partial(redeem, instances.a, client, flow, CALLBACK),
                       functools.partial(redeem, instances.b, client, flow, CALLBACK))
        statuses = sorted(response.status_code for response in results)
        assert statuses == [200, 400], (attempt, [response.text for response in results])
        winner = next(response for response in results if response.status_code == 200).json()
        loser = next(response for response in results if response.status_code != 200)
        assert _error(loser) == "invalid_grant", loser.text
        # A code presented twice revokes what it issued (RFC 6749 §4.1.2).
        assert introspect(instances.b, client, winner["access_token"]) == {"active": False}
        again = refresh(instances.a, client, winner["refresh_token"])
        assert again.status_code == 400 and _error(again) == "invalid_grant", again.text


def test_one_dpop_proof_and_one_request_uri_used_on_both_instances_at_once_succeed_once(instances, make_app):
    """(One test for both races: the instances are started once.)"""
    _race_one_dpop_proof(instances, make_app)
    _race_one_request_uri(instances)


def _race_one_dpop_proof(instances: SimpleNamespace, make_app: Any) -> None:
    machine = add_client(make_app, instances.env, grant_types=["client_credentials"], scope="api")
    for attempt in range(RACES):
        dpop = proof(new_key(), htu=instances.issuer + "/token", iat=int(time.time()))

        def call(base: str, dpop: str = dpop) -> Any:
            return requests.post(base + "/token", data={"grant_type": "client_credentials"}, auth=basic_auth(machine),
                                 headers={"DPoP": dpop}, timeout=TIMEOUT)

        results = race(lambda: call(instances.a), lambda: call(instances.b))
        statuses = sorted(response.status_code for response in results)
        assert statuses == [200, 400], (attempt, [response.text for response in results])
        loser = next(response for response in results if response.status_code != 200)
        assert _error(loser) == "invalid_dpop_proof", loser.text


def _race_one_request_uri(instances: SimpleNamespace) -> None:
    browser = UserAgent(instances.a)
    client = instances.client
    # (Without offline_access, which asks for consent every time: OIDC Core §11.)
    scope = "openid profile email"
    browser.code(client[0], CALLBACK, scope=scope)  # signed in and consented on A
    for attempt in range(RACES):
        _, challenge = pkce_pair()
        pushed = requests.post(instances.a + "/par", auth=client, timeout=TIMEOUT, data={
            "response_type": "code", "redirect_uri": CALLBACK, "scope": scope, "state": f"s{attempt}",
            "code_challenge": challenge, "code_challenge_method": "S256"})
        assert pushed.status_code == 201, pushed.text
        query = "/authorize?" + urlencode({"client_id": client[0], "request_uri": pushed.json()["request_uri"]})
        other = UserAgent(instances.b)
        other.cookies = dict(browser.cookies)  # the same browser, on the other instance
        results = race(functools.partial(browser.get, instances.a + query),
                       functools.partial(other.get, instances.b + query))
        statuses = sorted(response.status_code for response in results)
        assert statuses == [302, 400], (attempt, [response.text[:300] for response in results])
        winner = next(response for response in results if response.status_code == 302)
        assert winner.headers["Location"].startswith(CALLBACK + "?code=")
