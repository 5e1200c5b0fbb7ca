"""Operator commands: ``flask --app app keys|users|clients|tokens ...``.

Output is meant to be scripted: ``--json`` prints one JSON document; errors go
to stderr with a non-zero exit status and never include secret material.
"""

from __future__ import annotations

from flask import Flask

from oidc.cli import clients, keys, tokens, users


def init_app(app: Flask) -> None:
    for group in (keys.cli, users.cli, clients.cli, tokens.cli):
        app.cli.add_command(group)
