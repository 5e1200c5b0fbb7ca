"""Every path the provider serves, defined once.

Blueprints route on these, discovery advertises ``issuer + path``, the
private_key_jwt audience and the login redirect are built from them, and the
metrics name them.  The issuer is configuration, never request headers.
"""

from __future__ import annotations

AUTHORIZE = "/authorize"
CONSENT = "/authorize/consent"
#: Where the browser comes back to an authorization request after logging in (``?interaction=<id>``).
AUTHORIZE_RESUME = "/authorize/resume"
#: Where the account choice of ``prompt=select_account`` is answered.
SELECT_ACCOUNT = "/authorize/select-account"
LOGIN = "/login"
LOGOUT = "/logout"
TOKEN = "/token"
PAR = "/par"
INTROSPECT = "/introspect"
REVOKE = "/revoke"
USERINFO = "/userinfo"
JWKS = "/.well-known/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"
HEALTH_ALIVE = "/health/alive"
HEALTH_READY = "/health/ready"
ADMIN = "/admin"


def absolute(issuer: str, path: str) -> str:
    """The URL of ``path`` on this provider, as clients see it."""
    return issuer + path
