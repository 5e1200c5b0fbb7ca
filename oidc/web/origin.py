"""Is a form POST from a page of ours?  The origin check and the CSRF token of our forms.

Our pages post back to us three forms (login, consent, logout confirmation).
The CSRF token proves the form came from a page of ours in this browser; the
origin check refuses a post made from another site as well, as Flask-WTF's
``WTF_CSRF_SSL_STRICT`` would under ``CSRFProtect`` (which this app does not
use: its API endpoints take no cookies).  SameSite=Lax is no substitute: it
still sends the cookie on a top-level cross-site navigation.

Browsers send ``Origin`` on every form POST.  Its value is ``null`` when the
page's referrer policy is ``no-referrer`` (Fetch, "append a request Origin
header"), from a sandboxed frame, or after a cross-origin redirect; our pages
are served with one policy, ``Referrer-Policy: same-origin`` (said once, in
:mod:`oidc.web`), so a browser posting one of our forms sends our origin, and a
``Referer`` to us and to no one else.  So:

* ``Origin`` present and not ``null``: it must be ours;
* ``Origin: null``: the ``Referer`` must be ours (``null`` alone never passes:
  it is what a sandboxed page of any site sends);
* neither header: refused over HTTPS; on a plain-http issuer (development,
  scripted clients that send neither) allowed.

Every refusal is logged on one line saying why, with the origins involved and
nothing else (a ``Referer``'s path and query can carry an interaction id).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Request
from flask_wtf import FlaskForm

from oidc.settings import Settings

log = logging.getLogger(__name__)

#: What the user is told when a form of ours is refused (by either check).
EXPIRED_FORM = "The form has expired. Please try again."


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased; None when it has none (or is not a URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _cross_origin_reason(request: Request, ours: str | None, https: bool) -> str | None:
    """Why the POST is not from our origin, or None when it is (see the module docstring)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return None if origin.lower() == ours else "Origin is another site's"
    referer = request.headers.get("Referer")
    if referer is not None:
        return None if _origin(referer) == ours else "Referer is another site's"
    if origin == "null":
        return "Origin is null and no Referer says which page posted the form"
    return "no Origin and no Referer on an https issuer" if https else None


def _refused(request: Request, reason: str) -> None:
    referer = request.headers.get("Referer")
    log.warning("form refused: %s", reason, extra={
        "path": request.path,
        "origin": request.headers.get("Origin"),
        "referer_origin": _origin(referer) if referer is not None else None,
        "remote_addr": request.remote_addr,
    })


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a form POST comes from a page of this issuer's origin (a refusal is logged)."""
    reason = _cross_origin_reason(request, _origin(settings.issuer), settings.https)
    if reason is None:
        return True
    _refused(request, reason)
    return False


def csrf_token_valid(request: Request, form: FlaskForm) -> bool:
    """After ``form.validate()``: whether its CSRF token passed (a refusal is logged, with Flask-WTF's reason)."""
    errors = form.csrf_token.errors
    if not errors:
        return True
    _refused(request, str(errors[0]))  # "The CSRF token has expired.", "... is missing." (never the token)
    return False


def form_posted_from_our_page(request: Request, form: FlaskForm, settings: Settings) -> bool:
    """For a form with nothing but its CSRF token (consent, logout): same origin, and the token valid."""
    if not same_origin(request, settings):
        return False
    form.validate_on_submit()
    return csrf_token_valid(request, form)
