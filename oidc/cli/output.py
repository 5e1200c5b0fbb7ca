"""How every command prints: JSON with ``--json``, plain text otherwise.

Text tables have a header row and aligned columns; times are ISO 8601 in UTC
(``2026-01-31T09:30:00Z``).  JSON keeps times as seconds since the epoch, as
the admin API does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from flask.cli import AppGroup, ScriptInfo
from sqlalchemy.exc import DBAPIError

from oidc.db import describe_database_error


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def iso(timestamp: int | float | None) -> str:
    """Seconds since the epoch as ISO 8601 in UTC; ``-`` for none."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A text table: the header row, then one aligned row per item (``-`` for an empty cell)."""
    cells = [list(headers)] + [[("-" if value in (None, "") else str(value)) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells)


def fields(data: Mapping[str, Any]) -> str:
    """``key: value`` lines, sorted by key; the times (``*_at``) in ISO 8601."""
    return "\n".join(f"{key}: {iso(value) if key.endswith('_at') else value}" for key, value in sorted(data.items()))


@contextmanager
def database_errors_in_one_line(ctx: click.Context) -> Iterator[None]:
    """A database that cannot be used stops the command with one line naming DATABASE_URL, no traceback."""
    try:
        yield
    except DBAPIError as exc:
        app = ctx.ensure_object(ScriptInfo).load_app()  # built already: the command used its database
        raise click.ClickException(describe_database_error(exc, app.config["SQLALCHEMY_DATABASE_URI"])) from None


class CommandGroup(AppGroup):
    """The operator's command groups (``keys``, ``users``, ...), under ``oidc-hsm`` and ``flask`` alike."""

    def invoke(self, ctx: click.Context) -> Any:
        with database_errors_in_one_line(ctx):
            return super().invoke(ctx)
