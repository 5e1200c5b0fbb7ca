"""What a server does before it binds its port, in this order: validate, migrate, then (gunicorn) bind.

Used by ``oidc-hsm serve`` before it starts gunicorn, and by gunicorn.conf.py's
``on_starting`` for ``gunicorn -c gunicorn.conf.py`` run by hand.  Every
failure is :class:`ServeError`, whose message is the one line to print.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from typing import Any

from flask import Flask


class ServeError(Exception):
    """The server cannot start; the message says why in one line, naming the setting."""


def prepare() -> Flask:
    """Build the app (settings), check what only a worker would otherwise find out, migrate the schema."""
    from keys import KeyServiceError
    from oidc.app import create_app
    from oidc.settings import ConfigError
    from oidc.state import state_of

    try:
        app = create_app()
    except ConfigError as exc:  # a setting or a theme file
        raise ServeError(f"configuration error: {exc}") from None
    try:
        # Workers open the sealer when their key service starts, after the port is bound:
        # a missing or short SECRETS_SYSTEM would stop each of them instead of the server here.
        state_of(app).sealer()
    except (KeyServiceError, ValueError) as exc:
        raise ServeError(f"configuration error: {exc}") from None
    migrate(app)
    return app


def migrate(app: Flask) -> None:
    """Bring the schema up to date; a database that cannot be used is one line naming DATABASE_URL."""
    from sqlalchemy.exc import DBAPIError

    from oidc.db import describe_database_error
    from oidc.schema import upgrade_schema

    try:
        upgrade_schema(app)
    except DBAPIError as exc:
        raise ServeError(describe_database_error(exc, app.config["SQLALCHEMY_DATABASE_URI"])) from None


def check_addresses_free(addresses: Iterable[Any]) -> None:
    """Refuse, in one line, an address another process listens on (gunicorn would retry it five
    times, a line and a second each, then stop).  Unix socket paths are gunicorn's to handle."""
    for address in addresses:
        if not isinstance(address, tuple):
            continue
        host, port = address[0], address[1]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn binds: a port whose last connections are in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                if exc.errno == errno.EADDRINUSE:
                    raise ServeError(f"cannot listen on {shown} (BIND): the address is already in use "
                                     "(another server is running there?)") from None
                raise ServeError(f"cannot listen on {shown} (BIND): {exc.strerror}") from None
