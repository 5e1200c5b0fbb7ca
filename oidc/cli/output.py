"""How every command prints: JSON with ``--json``, plain text otherwise."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
