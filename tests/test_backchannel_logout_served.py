"""Back-channel logout under gunicorn: sent by the workers' own threads, and owed across a restart.

A relying party's endpoint on loopback (tests/logout_receiver.py) verifies
each logout token with PyJWT against the JWK Set the server publishes.  The
second half stops the server, ends a session from the operator's command
line (a process that sends nothing), and starts the server again: the row
written while no worker ran is delivered by the new workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from conftest import software_env

from live_flows import UserAgent, redeem, register
from logout_receiver import Receiver, verify_logout_token
from oidc_fixtures import jwt_parts
from serving import Gunicorn, free_port

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read, not followed

pytestmark = [pytest.mark.e2e, pytest.mark.both_databases]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_logout_tokens_are_sent_by_the_workers_and_survive_a_restart(make_app, provisioned_database_url,
                                                                      system_secret, admin_key, receiver, tmp_path):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {**software_env(provisioned_database_url, system_secret, admin_key), "OIDC_ISSUER": issuer,
           "DEVELOPMENT_MODE": "true", "BACKCHANNEL_LOGOUT_POLL_SECONDS": "0.5", "METRICS_BIND": "",
           "LOG_FORMAT": "text"}
    client = register(make_app, env, redirect_uris=[CALLBACK], backchannel_logout_uri=receiver.url,
                      backchannel_logout_session_required=True)

    def serve(log: str) -> Gunicorn:
        server = Gunicorn(env, workers=2, log_path=tmp_path / log, port=port)
        server.wait_ready("/health/ready")
        return server

    server = serve("first.log")
    try:
        # RP-initiated logout: the page answers at once; a worker's thread delivers.
        browser = UserAgent(server.url)
        tokens = redeem(server.url, client, browser.code(client[0], CALLBACK), CALLBACK).json()
        started = time.monotonic()
        page = browser.get("/logout?id_token_hint=" + tokens["id_token"])
        assert page.status_code == 200 and time.monotonic() - started < 2
        jwks = requests.get(server.url + "/.well-known/jwks.json", timeout=10).json()
        [delivery] = receiver.wait_for(1)
        claims = verify_logout_token(delivery.token, jwks, issuer=issuer, audience=client[0])
        assert claims["sid"] == jwt_parts(tokens["id_token"])[1]["sid"]

        other = UserAgent(server.url)
        second = redeem(server.url, client, other.code(client[0], CALLBACK), CALLBACK).json()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]

    # The server is down: the operator disables the user; the logout token is owed, nobody sends it.
    result = make_app(env).test_cli_runner().invoke(args=["users", "disable", "alice"])
    assert result.exit_code == 0, result.output
    time.sleep(1.0)
    assert len(receiver.deliveries) == 1

    server = serve("second.log")
    try:
        deliveries = receiver.wait_for(2)
        claims = verify_logout_token(deliveries[1].token, jwks, issuer=issuer, audience=client[0])
        assert claims["sid"] == jwt_parts(second["id_token"])[1]["sid"]
        time.sleep(1.5)  # two workers poll the one row: it is sent once
        assert len(receiver.deliveries) == 2
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_instances_starting_on_one_database_send_each_owed_token_once(make_app, database_url,
                                                                          system_secret, admin_key, receiver,
                                                                          tmp_path):
    """30 logout tokens owed while no server runs; two instances (two workers each) start at once on one
    PostgreSQL and race for the rows: each token arrives once."""
    from oidc_fixtures import Provider

    env = {**software_env(database_url, system_secret, admin_key), "DEVELOPMENT_MODE": "true",
           "BACKCHANNEL_LOGOUT_POLL_SECONDS": "0.2", "METRICS_BIND": "", "LOG_FORMAT": "text"}
    provider = Provider(make_app(env))
    provider.add_user()
    clients = [provider.add_client(backchannel_logout_uri=receiver.url) for _ in range(3)]
    for _ in range(10):
        browser = provider.new_browser()
        for client in clients:
            browser.tokens(*client)
    result = provider.app.test_cli_runner().invoke(args=["users", "disable", "alice"])
    assert result.exit_code == 0, result.output

    servers = [Gunicorn(env, workers=2, log_path=tmp_path / f"{name}.log") for name in ("a", "b")]
    try:
        for server in servers:
            server.wait_ready("/health/ready")
        receiver.wait_for(30, timeout=60)
        time.sleep(2.0)  # four workers polling every 0.2 s: anything sent twice would have arrived
        jtis = [jwt_parts(delivery.token)[1]["jti"] for delivery in receiver.deliveries]
        assert len(jtis) == 30 and len(set(jtis)) == 30
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.log(), server.log()[-3000:]
