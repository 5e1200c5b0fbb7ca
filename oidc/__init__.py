"""An OpenID Connect provider whose token-signing keys live in an HSM."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Mapping

from flask import Flask
from flask_migrate import Migrate
from sqlalchemy import Engine, event

from oidc import key_service
from oidc.config import load_settings
from oidc.models import db
from oidc.proxy import TrustedProxyFix

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
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config["SQLALCHEMY_DATABASE_URI"])
    if config:
        app.config.update(config)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIRECTORY)
    key_service.init_app(app)

    # X-Forwarded-* is honoured only from the proxy, for the configured number of hops.
    app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, hops=app.config["TRUSTED_PROXY_HOPS"], trusted=app.config["FORWARDED_ALLOW_IPS"]
    )

    from oidc import admin, cli, errors, health, logs, metrics, wellknown

    logs.init_app(app)
    metrics.init_app(app)
    errors.init_app(app)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    cli.init_app(app)

    from oidc import protocol

    protocol.init_app(app)  # OpenID Connect / OAuth 2.0: endpoints, pages, CLI
    return app


def engine_options(database_url: str) -> dict[str, Any]:
    """Connection pool settings: detect dead connections, never hang on a dead server."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if database_url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 5}
        options["pool_recycle"] = 1800
    return options


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite for several worker processes: WAL, so readers never wait for the
    writer and a commit costs no fsync of the whole file; a busy timeout, so
    two workers writing at once queue instead of failing.  (A power cut may lose
    the last commits, never consistency; deployments that need more use PostgreSQL.)"""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()
