"""``oidc-hsm audit ...``: verify the hash-chained audit trail and export it for a SIEM."""

from __future__ import annotations

import json
from typing import TextIO

import click

from keys import KeyServiceError
from oidc.cli.output import CommandGroup, emit
from oidc.observability.audit_chain import AuditTrail
from oidc.state import current_state

cli = CommandGroup("audit", help="Verify and export the audit trail (AUDIT_CHAIN).")

since_option = click.option("--since", type=click.IntRange(min=1), default=1, show_default=True,
                            help="The first position of the chain to read (earlier entries are trusted as stored).")


def _trail() -> AuditTrail:
    trail = current_state().audit_trail
    if trail is None:
        raise click.ClickException("the audit chain is off: set AUDIT_CHAIN=true")
    return trail


@cli.command("verify")
@since_option
@click.option("--seal/--no-seal", default=True, show_default=True,
              help="First seal the entries not sealed yet (and sign a checkpoint if one is due).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(since: int, seal: bool, as_json: bool) -> None:
    """Replay the chain and its signed checkpoints; name the first entry that does not match (exit 1)."""
    trail = _trail()
    try:
        if seal:
            trail.seal()
        result = trail.verify(since)
    except KeyServiceError as exc:
        raise click.ClickException(f"the audit key set cannot be read: {exc}") from None
    if result.ok:
        text = (f"ok: {result.entries} entries (positions {since}-{result.last_position}) and "
                f"{result.checkpoints} signed checkpoints match; {result.unsealed} entries not sealed yet")
    else:
        text = f"TAMPERED: {result.problem} ({result.entries} entries matched before it)"
    emit(result.as_dict(), as_json, text)
    if not result.ok:
        raise SystemExit(1)


@cli.command("export")
@since_option
@click.option("--output", "-o", type=click.File("w"), default="-", help="Where to write (default: stdout).")
def export(since: int, output: TextIO) -> None:
    """Write the sealed entries as JSON lines (position, id, at, event, fields, hash), in chain order."""
    for entry in _trail().export(since):
        output.write(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
