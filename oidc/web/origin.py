"""Same-origin check of the forms our pages post back to us (login, consent, logout confirmation).

The CSRF token proves the form came from a page of ours in this browser; the
origin check refuses a post made from another site as well, as Flask-WTF's
``WTF_CSRF_SSL_STRICT`` would under ``CSRFProtect`` (which this app does not
use: its API endpoints take no cookies).  SameSite=Lax is no substitute: it
still sends the cookie on a top-level cross-site navigation.

Browsers send ``Origin`` on every form POST; ``Referer`` is the fallback (our
pages use ``Referrer-Policy: same-origin``, so they send it to us and to no one
else).  Over HTTPS a post with neither is refused; on a plain-http issuer
(development) the check applies only to the headers that are present.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Request

from oidc.settings import Settings


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a form POST comes from a page of this issuer's origin."""
    ours = _origin(settings.issuer)
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return origin.lower() == ours
    referer = request.headers.get("Referer")
    if referer is not None:
        return _origin(referer) == ours
    return not settings.https
