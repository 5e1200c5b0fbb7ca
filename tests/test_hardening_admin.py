"""Admin API access by access token (outside review item 1)."""

from __future__ import annotations

import pytest

from oidc_fixtures import ISSUER, registered_user

ADMIN = f"{ISSUER}/admin"


def _client_token(op, client, **data):
    response = op.post("/token", data={"grant_type": "client_credentials", **data}, auth=client)
    return response


def _admin_status(op, token):
    return op.get("/admin/users", headers={"Authorization": f"Bearer {token}"}).status_code


def test_admin_api_needs_a_token_made_for_it(op, admin_key):
    """RFC 9068 §4 (the resource server checks aud names it) and RFC 9700 §2.3 (privileges
    restricted to their purpose): a token with the admin scope is admin access only if its
    audience is the admin API, its client is registered for the admin API, and its user (if
    any) is an enabled admin.  The ADMIN_API_KEYS path stays."""
    registered_for_anything = op.add_client(grant_types=["client_credentials"], scope="admin api")
    # Before: a token request with no scope got every registered scope, admin included.
    default = _client_token(op, registered_for_anything).json
    assert "admin" not in default["scope"].split()
    token = _client_token(op, registered_for_anything, scope="admin").json["access_token"]
    assert _admin_status(op, token) == 401  # audience: the default, not the admin API
    refused = _client_token(op, registered_for_anything, scope="admin", resource=ADMIN)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_target"

    admin_client = op.add_client(grant_types=["client_credentials"], scope="admin", admin_api=True)
    token = _client_token(op, admin_client, scope="admin", resource=ADMIN).json["access_token"]
    assert _admin_status(op, token) == 200
    assert _admin_status(op, _client_token(op, admin_client, resource=ADMIN).json["access_token"]) == 401  # no scope
    assert op.get("/admin/users", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200


def test_admin_api_user_tokens_need_an_enabled_admin_user(op):
    """RFC 9068 §4, RFC 9700 §2.3: a user's token for the admin API acts for that user, so the
    user must be an admin and enabled, besides the client being allowed to ask for the API."""
    from oidc.accounts.users import set_disabled

    op.add_user("alice")
    op.add_user("root", admin=True)
    client_id, secret = op.add_client(scope="openid admin", admin_api=True, first_party=True)
    extra = {"resource": ADMIN}
    alice = op.new_browser().tokens(client_id, secret, scope="openid admin", extra=extra)["access_token"]
    root_browser = op.new_browser()
    root = root_browser.tokens(client_id, secret, scope="openid admin", extra=extra, username="root")["access_token"]
    assert _admin_status(op, alice) == 401
    assert _admin_status(op, root) == 200
    with op.app.app_context():
        set_disabled(registered_user("root"), True)
    assert _admin_status(op, root) == 401


def test_a_body_nested_too_deeply_is_invalid_request_not_a_500(op, admin_key):
    """json raises RecursionError (not ValueError) for deep nesting; the app's JSON provider reads it
    as any other text that is not a JSON document."""
    body = "[" * 5_000 + "]" * 5_000  # 10 KB, under the body limit
    response = op.post("/admin/clients", data=body, content_type="application/json",
                       headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize("field, value", [("redirect_uris", ["https://["]), ("redirect_uris", ["https://a.test:99999/cb"]),
                                          ("logo_uri", "https://["), ("policy_uri", "https://x.test:port/")])
def test_a_uri_urlsplit_cannot_read_is_a_400_naming_the_field(op, admin_key, field, value):
    body = {"name": "app", "redirect_uris": ["https://app.test/cb"], field: value}
    response = op.post("/admin/clients", json=body, headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert field in response.get_json()["error_description"]
