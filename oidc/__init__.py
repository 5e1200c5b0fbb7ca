"""An OpenID Connect provider whose token-signing keys live in an HSM."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from flask import Flask
from flask_migrate import Migrate
from werkzeug.middleware.proxy_fix import ProxyFix

from oidc import key_service
from oidc.config import load_settings
from oidc.models import db

MIGRATIONS_DIRECTORY = os.path.join(os.path.dirname(__file__), "migrations")

migrate = Migrate()


def create_app(config: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None) -> Flask:
    """Build the provider.

    Settings come from the environment (or ``env``); ``config`` overrides
    individual Flask config values, for tests.  Nothing here touches the HSM:
    the key service starts in the serving process (see :mod:`oidc.key_service`).
    """
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_settings(env, instance_path=app.instance_path))
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}
    if config:
        app.config.update(config)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIRECTORY)
    key_service.init_app(app)

    if app.config["TRUSTED_PROXY_HOPS"]:
        # Honour X-Forwarded-* only from the configured number of trusted proxies.
        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]

    from oidc import admin, cli, errors, wellknown

    errors.init_app(app)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(admin.bp)
    cli.init_app(app)
    logging.getLogger("oidc").setLevel(logging.INFO)
    return app
