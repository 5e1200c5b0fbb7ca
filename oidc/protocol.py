"""Wiring of OpenID Connect / OAuth 2.0 into the app: server, pages, endpoints, CLI.

Kept apart from :func:`oidc.create_app` so that the protocol side is one
``init_app`` call; each area lives in its own module:

========================  ===================================================
``oidc/oauth2/``          Authlib server, grants, client auth, token building
``oidc/authorize.py``     /authorize and the consent page
``oidc/login.py``         /login, the browser session, /logout
``oidc/token.py``         /token, /introspect, /revoke
``oidc/userinfo.py``      /userinfo
``oidc/clients.py``       client management and ``flask clients``
``oidc/users.py``         user management and ``flask users``
``oidc/admin_accounts.py``  admin HTTP API for clients and users
========================  ===================================================
"""

from __future__ import annotations

import click
from flask import Flask, Response
from flask.cli import AppGroup


def _security_headers(response: Response) -> Response:
    """Pages of ours are never framed (clickjacking of the consent page) nor sniffed."""
    # (``name not in headers`` rather than ``headers.setdefault``, which raises and
    # catches an exception for each header it adds: this runs on every response.)
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        for name, value in _PAGE_HEADERS:
            if name not in headers:
                headers[name] = value
    return response


_PAGE_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
)


tokens_cli = AppGroup("tokens", help="Maintenance of issued tokens.")


@tokens_cli.command("prune")
def prune_command() -> None:
    """Delete expired codes, tokens, assertions and sessions."""
    from oidc.oauth2.issuance import prune_expired

    counts = prune_expired()
    click.echo(", ".join(f"{name}: {count}" for name, count in counts.items()))


def init_app(app: Flask) -> None:
    from oidc import admin_accounts, authorize, login, token, userinfo
    from oidc.clients import clients_cli
    from oidc.oauth2 import server
    from oidc.users import users_cli

    server.init_app(app)
    login.init_app(app)
    app.register_blueprint(authorize.bp)
    app.register_blueprint(token.bp)
    app.register_blueprint(userinfo.bp)
    app.register_blueprint(admin_accounts.bp)
    app.after_request(_security_headers)
    app.cli.add_command(users_cli)
    app.cli.add_command(clients_cli)
    app.cli.add_command(tokens_cli)
