"""The documented start-up brings an empty database's schema up to date."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from oidc.app import create_app
from oidc.db import db
from oidc.schema import upgrade_schema

pytestmark = pytest.mark.both_databases


def test_migrations_build_the_schema_from_an_empty_database(empty_database_url):
    app = create_app({"TESTING": True}, env={"DATABASE_URL": empty_database_url})
    upgrade_schema(app)
    upgrade_schema(app)  # a second start-up finds nothing to do
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(db.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_models_and_migrations_agree(empty_database_url):
    """Autogenerate finds nothing to add: the models have no change without a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    app = create_app({"TESTING": True}, env={"DATABASE_URL": empty_database_url})
    upgrade_schema(app)
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    finally:
        engine.dispose()
    assert differences == []
