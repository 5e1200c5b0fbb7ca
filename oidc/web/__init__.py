"""The web layer: thin Flask blueprints over the protocol core and the account services.

==================  =====================================================
``authorize``       /authorize and the consent page
``login``           /login (rate-limited)
``logout``          /logout (RP-Initiated Logout)
``token``           /token, /introspect, /revoke
``par``             /par (pushed authorization requests)
``userinfo``        /userinfo
``wellknown``       discovery and the JWK Set
``health``          liveness and readiness
``admin/``          the admin HTTP API (keys, clients, users) and its OpenAPI document
``pages``           what every page shares: theme, assets, language, CSP
``session``         the browser session cookie and the signed-in user
``errors``          JSON errors, the error page, 503s
``proxy``           X-Forwarded-* from trusted proxies only
==================  =====================================================
"""

from __future__ import annotations

from flask import Flask, Response

from oidc.settings import Settings
from oidc.web import authorize, errors, health, login, logout, pages, par, session, token, userinfo, wellknown
from oidc.web.admin import accounts as admin_accounts
from oidc.web.admin import api as admin_api
from oidc.web.admin import keys as admin_keys

_PAGE_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
    # The one referrer policy of our pages (no <meta> overrides it): browsers post our forms with
    # our Origin and a Referer to us, which the same-origin check reads (oidc.web.origin), and no
    # query string (an interaction id, an id_token_hint) reaches another site.
    ("Referrer-Policy", "same-origin"),
)


def security_headers(response: Response) -> Response:
    """Pages of ours are never framed (clickjacking of the consent page) nor sniffed.

    Their CSP allows styles and images from the provider only (plus the
    origin of a configured service logo and of a client's logo on its consent
    page), no script at all, and no inline style.
    """
    # (``name not in headers`` rather than ``headers.setdefault``, which raises and
    # catches an exception for each header it adds: this runs on every response.)
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        for name, value in _PAGE_HEADERS:
            if name not in headers:
                headers[name] = value
        if "Content-Security-Policy" not in headers:
            headers["Content-Security-Policy"] = pages.content_security_policy()
    return response


def init_app(app: Flask, settings: Settings) -> None:
    pages.init_app(app, settings)
    errors.init_app(app)
    session.init_app(app)
    login.init_app(app, settings)
    for blueprint in (wellknown.bp, health.bp, authorize.bp, logout.bp, token.bp, par.bp, userinfo.bp,
                      admin_keys.bp, admin_accounts.bp):
        app.register_blueprint(blueprint)
    admin_api.init_app(app, settings.issuer)
    app.after_request(security_headers)
