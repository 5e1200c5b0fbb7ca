"""``flask tokens ...``: maintenance of issued tokens."""

from __future__ import annotations

import click

from oidc.cli.output import CommandGroup
from oidc.oauth2.families import prune_expired

cli = CommandGroup("tokens", help="Maintenance of issued tokens.")


@cli.command("prune")
def prune_command() -> None:
    """Delete expired codes, tokens, assertions, sessions and initial access tokens."""
    counts = prune_expired()
    click.echo(", ".join(f"{name}: {count}" for name, count in counts.items()))
