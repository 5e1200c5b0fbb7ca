"""The web layer: thin Flask blueprints over the protocol core and the account services.

==================  =====================================================
``authorize``       /authorize and the consent page
``login``           /login (rate-limited)
``logout``          /logout (RP-Initiated Logout)
``token``           /token, /introspect, /revoke
``par``             /par (pushed authorization requests)
``register``        /register (dynamic client registration, RFC 7591 and RFC 7592)
``device``          /device_authorization and the device pages (RFC 8628)
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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from oidc.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Register the pages' shared parts, every blueprint, and the headers of every response."""
    from oidc.web import (
        authorize,
        device,
        errors,
        health,
        login,
        logout,
        pages,
        par,
        register,
        session,
        token,
        userinfo,
        wellknown,
    )
    from oidc.web.admin import accounts as admin_accounts
    from oidc.web.admin import api as admin_api
    from oidc.web.admin import keys as admin_keys

    pages.init_app(app, settings)
    errors.init_app(app)
    session.init_app(app)
    login.init_app(app, settings)
    device.init_app(app, settings)
    for blueprint in (wellknown.bp, health.bp, authorize.bp, logout.bp, token.bp, par.bp, register.bp, userinfo.bp,
                      admin_keys.bp, admin_accounts.bp):
        app.register_blueprint(blueprint)
    admin_api.init_app(app, settings.issuer)
    app.after_request(pages.security_headers)  # registered last: it runs first, before the access log
