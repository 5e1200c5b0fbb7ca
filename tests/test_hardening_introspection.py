"""Who may introspect what (outside review item 5)."""

from __future__ import annotations

API = "https://api.example.test"


def _introspect(op, caller, token):
    return op.post("/introspect", data={"token": token}, auth=caller).json


def test_resource_servers_introspect_only_access_tokens_meant_for_them(op):
    """RFC 7662 §2.2 and §4: the introspection caller is the token's client, or a protected
    resource the token is meant for (its audience); refresh tokens only to their own client;
    a resource server is not told the username (data minimisation, RFC 7662 §4)."""
    op.add_user()
    client_id, secret = op.add_client(audiences=[API])
    body = op.tokens(client_id, secret, extra={"resource": API})
    api = op.add_client(grant_types=["client_credentials"], scope="x", resource_server=True, audiences=[API])
    other_rs = op.add_client(grant_types=["client_credentials"], scope="x", resource_server=True,
                             audiences=["https://other.example.test"])
    own = _introspect(op, (client_id, secret), body["access_token"])
    assert own["active"] is True and own["username"] == "alice"
    seen_by_api = _introspect(op, api, body["access_token"])
    assert seen_by_api["active"] is True and seen_by_api["sub"] == own["sub"] and "username" not in seen_by_api
    assert _introspect(op, other_rs, body["access_token"]) == {"active": False}
    assert _introspect(op, api, body["refresh_token"]) == {"active": False}
    assert _introspect(op, (client_id, secret), body["refresh_token"])["active"] is True
