"""X-Forwarded-* is believed only from a trusted proxy, and only for the configured hops."""

from __future__ import annotations

import pytest
from flask import jsonify, request

FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}


def _seen(make_app, base_env, peer: str, **env: str) -> dict:
    app = make_app({**base_env, **env})
    app.add_url_rule("/_seen", "seen", lambda: jsonify(addr=request.remote_addr, host=request.host,
                                                       scheme=request.scheme))
    return app.test_client().get("/_seen", headers=FORWARDED, environ_base={"REMOTE_ADDR": peer}).json


@pytest.mark.parametrize("peer, env", [
    ("127.0.0.1", {}),  # no hop trusted (the default): loopback is not a proxy either
    ("127.0.0.1", {"TRUSTED_PROXY_HOPS": "1", "FORWARDED_ALLOW_IPS": "10.0.0.5"}),  # not the proxy
])
def test_forwarded_headers_are_ignored_unless_the_peer_is_a_trusted_proxy(make_app, base_env, peer, env):
    assert _seen(make_app, base_env, peer, **env) == {"addr": peer, "host": "localhost", "scheme": "http"}


def test_forwarded_headers_from_the_trusted_proxy_are_applied(make_app, base_env):
    seen = _seen(make_app, base_env, "10.0.0.5", TRUSTED_PROXY_HOPS="1", FORWARDED_ALLOW_IPS="10.0.0.5")
    assert seen == {"addr": "203.0.113.9", "host": "evil.example", "scheme": "https"}
