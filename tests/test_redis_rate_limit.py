"""Redis as the rate-limit store shared by several instances.

With ``RATELIMIT_STORAGE_URI=redis://...`` the failed-login limit per account
counts the failures of every instance together.  The test uses a Redis
database index nobody else uses (the first empty one) and empties it after.
Redis is at ``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``); missing,
the test is skipped, except in CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from live_flows import UserAgent, register
from oidc_fixtures import PASSWORD
from services import REDIS_URL as DEFAULT_REDIS_URL
from serving import Gunicorn
from support import missing

REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL).rstrip("/")




@pytest.fixture
def redis_database() -> Iterator[tuple[str, Any]]:
    """(URL of an empty Redis database, a client on it); emptied afterwards.

    The database is claimed first (``SET NX`` of a key in database 0), so test
    runs in parallel (pytest-xdist workers, other checkouts) never share one.
    """
    try:
        import redis
    except ImportError:
        missing("the redis package")
    claims = redis.Redis.from_url(f"{REDIS_URL}/0", socket_timeout=5, socket_connect_timeout=3)
    claimant = uuid.uuid4().hex
    for index in range(15, 0, -1):
        try:
            if not claims.set(f"oidc-tests:claim:{index}", claimant, nx=True, ex=600):
                continue
            connection = redis.Redis.from_url(f"{REDIS_URL}/{index}", socket_timeout=5, socket_connect_timeout=3)
            if connection.dbsize() == 0:
                break
        except redis.RedisError:
            missing(f"Redis at {REDIS_URL}")
        connection.close()
        claims.delete(f"oidc-tests:claim:{index}")
    else:
        missing(f"an empty database on the Redis at {REDIS_URL}")
    try:
        yield f"{REDIS_URL}/{index}", connection
    finally:
        connection.flushdb()
        connection.close()
        claims.delete(f"oidc-tests:claim:{index}")
        claims.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failed_logins_on_two_instances_add_up_in_redis(make_app, base_env, redis_database, tmp_path):
    storage_url, redis_client = redis_database
    env = {**base_env, "OIDC_ISSUER": "http://127.0.0.1:8000", "METRICS_BIND": "", "LOG_FORMAT": "text",
           "RATELIMIT_STORAGE_URI": storage_url, "LOGIN_RATE_LIMIT_PER_ACCOUNT": "4/minute",
           "LOGIN_RATE_LIMIT_PER_ADDRESS": "100/minute"}
    register(make_app, env, redirect_uris=["http://127.0.0.1:9/callback"])
    a = Gunicorn(env, workers=1, log_path=tmp_path / "a.log")
    b = Gunicorn(env, workers=1, log_path=tmp_path / "b.log")
    try:
        a.wait_ready("/health/ready")
        b.wait_ready("/health/ready")
        # Both instances serve the one issuer a browser knows them by: its forms come from that origin.
        origin = {"Origin": env["OIDC_ISSUER"]}
        on_a, on_b = UserAgent(a.url, headers=origin), UserAgent(b.url, headers=origin)
        # Four failures, two on each instance: each instance alone is under the limit.
        for agent in (on_a, on_b, on_a, on_b):
            assert agent.login(password="wrong password").status_code == 401
        # Together they reach it: the account is locked on both, even with the right password.
        for agent in (on_a, on_b):
            response = agent.login(password=PASSWORD)
            assert response.status_code == 429, response.text[:300]
            assert "Too many failed attempts" in response.text
        # Per account: another account is not locked.
        assert on_b.login(username="bob", password="wrong password").status_code == 401
        assert redis_client.dbsize() > 0  # the counters live in Redis, not in either process
    finally:
        for server in (a, b):
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()[-3000:]
        assert PASSWORD not in server.log()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_usernames_sprayed_from_one_address_leave_bounded_state_in_redis(base_env, redis_database, tmp_path):
    """As with memory:// (test_throttle_counters): an attempt the per-address limit refuses creates no
    counter, and every counter expires with its window."""
    from oidc.accounts.throttle import LoginThrottle
    from oidc.settings import load_settings

    storage_url, redis_client = redis_database
    throttle = LoginThrottle(load_settings({**base_env, "RATELIMIT_STORAGE_URI": storage_url},
                                           instance_path=str(tmp_path)))
    assert sum(throttle.attempt("192.0.2.7", f"nobody-{i}") is not None for i in range(100)) == 20
    assert redis_client.dbsize() == 20 * 3 + 2
    assert not any(throttle.attempt("192.0.2.7", f"somebody-{i}") for i in range(1000))
    assert redis_client.dbsize() == 20 * 3 + 2
    assert all(0 < redis_client.ttl(key) <= 3600 for key in redis_client.scan_iter())
