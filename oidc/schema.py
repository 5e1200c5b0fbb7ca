"""Bring the database schema up to date (Alembic, through Flask-Migrate)."""

from __future__ import annotations

from flask import Flask
from flask_migrate import upgrade

from keys import provisioning_lock
from oidc.db import db


def upgrade_schema(app: Flask) -> None:
    """Apply every pending migration; safe to call from several processes at once."""
    with app.app_context():
        # Serialised like key provisioning: two processes migrating together
        # would both try to create the same tables.
        with provisioning_lock(db.engine, "schema.upgrade"):
            upgrade(directory=app.extensions["migrate"].directory)
        db.engine.dispose()  # no connection may cross a fork
