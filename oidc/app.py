"""The application factory: :func:`create_app` builds the provider in a fixed order.

settings -> state -> extensions -> the web layer -> the CLI.  A request then
goes from a view in :mod:`oidc.web` to the protocol core (:mod:`oidc.oauth2`,
:mod:`oidc.accounts`), which signs through the key service (:mod:`keys`) held
by :mod:`oidc.state`.  As in Flask's tutorial, the factory imports its parts
inside itself: importing a module of the package never builds the app.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

MIGRATIONS_DIRECTORY = os.path.join(os.path.dirname(__file__), "migrations")


class Provider(Flask):
    """Flask, with each hook and view checked once for ``async def`` rather than at every call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Flask asks before each hook and view of each request (an inspect call each); the answer
        # is the function's own, so it is kept (the app's functions are few and live as long as it).
        try:
            return self._synchronous[func]
        except KeyError:
            synchronous = self._synchronous[func] = super().ensure_sync(func)
            return synchronous
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)


def create_app(config: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> Flask:
    """Build the provider.

    Settings come from the environment (or ``env``); ``config`` overrides
    individual Flask config values, for tests.  Nothing here touches the HSM or
    the database: the key service starts in the serving process (see
    :mod:`oidc.state`), so ``gunicorn --preload`` is safe.
    """
    from flask_migrate import Migrate

    from oidc import cli, state, web
    from oidc.db import db, ping_idle_connections
    from oidc.oauth2 import server
    from oidc.oauth2.parameters import ProviderRequest
    from oidc.observability import logs, metrics
    from oidc.settings import flask_config, load_settings
    from oidc.web.documents import DocumentJSONProvider
    from oidc.web.proxy import TrustedProxyFix

    app = Provider("oidc", instance_relative_config=True, template_folder="web/templates")
    app.request_class = ProviderRequest
    app.json = DocumentJSONProvider(app)
    os.makedirs(app.instance_path, exist_ok=True)
    settings = load_settings(env, instance_path=app.instance_path)
    app.config.update(flask_config(settings))
    if config:
        app.config.update(config)
    app_state = state.init_app(app, settings)

    db.init_app(app)
    if settings.database_url.startswith("postgresql"):
        with app.app_context():
            ping_idle_connections(db.engine)
    Migrate(app, db, directory=MIGRATIONS_DIRECTORY)
    # X-Forwarded-* (and the client certificate header) is honoured only from the proxy, for the configured hops.
    app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, hops=settings.trusted_proxy_hops, trusted=settings.forwarded_allow_ips,
        certificate_header=settings.client_cert_header,
    )
    logs.init_app(app, settings.log_format, settings.log_level)
    metrics.init_app(app, settings.metrics)
    server.init_app(app, app_state)
    web.init_app(app, settings)
    cli.init_app(app)
    if app_state.audit_trail is not None:
        from oidc.observability import audit_chain

        app_state.audit_handler = audit_chain.init_app(app, app_state.audit_trail)
    return app
