"""Every path the provider serves, defined once.

Blueprints route on these, discovery advertises ``issuer + path``, the
private_key_jwt audience and the login redirect are built from them, and the
metrics name them.  The issuer is configuration, never request headers.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

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
#: The device authorization endpoint (RFC 8628 §3.1) and the page where the user enters the code (§3.3).
DEVICE_AUTHORIZATION = "/device_authorization"
DEVICE = "/device"
#: Where the user, signed in, approves or denies the device's request.
DEVICE_CONFIRM = "/device/confirm"
INTROSPECT = "/introspect"
REVOKE = "/revoke"
USERINFO = "/userinfo"
JWKS = "/.well-known/jwks.json"
#: The audit key set's public keys: apart from the token JWKS, so a checkpoint never verifies as a token.
AUDIT_JWKS = "/.well-known/audit-jwks.json"
DISCOVERY = "/.well-known/openid-configuration"
HEALTH_ALIVE = "/health/alive"
HEALTH_READY = "/health/ready"
ADMIN = "/admin"
#: Dynamic client registration (RFC 7591); a client's configuration is at ``REGISTER/<client_id>`` (RFC 7592).
REGISTER = "/register"


def split_url(url: str) -> SplitResult | None:
    """The parts of ``url``, or None when it cannot be read: ``urlsplit`` raises ValueError for an
    unbalanced IPv6 bracket (``https://[``), and ``port`` for a port out of range or not a number."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # urlsplit checks the port only when asked for it
    except ValueError:
        return None
    return parts


def default_certificate_subject(issuer: str) -> str:
    """The subject of a key's certificate request when none is given: ``CN=<the issuer's host>``."""
    return f"CN={urlsplit(issuer).hostname}"


def absolute(issuer: str, path: str) -> str:
    """The URL of ``path`` on this provider, as clients see it."""
    return issuer + path


#: Host names of a client's loopback redirect URI: the IP literals of RFC 8252 §7.3, and
#: ``localhost``, which §8.3 does not recommend but allows.  (``urlsplit`` gives an IPv6
#: literal without its brackets: ``http://[::1]:8080/`` has the hostname ``::1``.)
LOOPBACK_HOSTS = frozenset(("127.0.0.1", "::1", "localhost"))


def is_loopback_http(uri: str | SplitResult) -> bool:
    """Whether ``uri`` is an ``http`` URL on a loopback host (a native app's redirect, RFC 8252 §7.3)."""
    parts = urlsplit(uri) if isinstance(uri, str) else uri
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
