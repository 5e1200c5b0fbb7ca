"""Operator commands: ``oidc-hsm keys|users|clients|tokens|audit|db ...`` (or ``flask --app app ...``).

``oidc-hsm`` (:mod:`oidc.cli.main`) also has ``serve`` and ``doctor``.

Output is meant to be scripted: ``--json`` prints one JSON document; errors go
to stderr with a non-zero exit status and never include secret material.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Add the command groups to ``flask --app app`` (``oidc-hsm`` adds them to its own)."""
    from flask_migrate.cli import db as db_group  # Flask-Migrate's ``db`` group (a plugin command)

    from oidc.cli import audit, clients, keys, tokens, users
    from oidc.cli.settings_help import GROUPS, describe_settings

    describe_settings(db_group, GROUPS["db"])
    for group in (keys.cli, users.cli, clients.cli, tokens.cli, audit.cli):
        describe_settings(group, GROUPS[str(group.name)])
        app.cli.add_command(group)
