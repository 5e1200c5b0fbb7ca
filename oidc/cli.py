"""Operator commands: ``flask --app app keys ...``.

Output is meant to be scripted: ``--json`` prints one JSON document; errors go
to stderr with a non-zero exit status and never include secret material.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from keys.errors import KeyServiceError
from keys.sealing import Sealer
from keys.software import SoftwareManager
from keys.store import KeyStore
from oidc.key_service import start_key_service
from oidc.models import db, signing_keys

keys_cli = AppGroup("keys", help="Manage signing keys (HSM and sealed software keys).")


def _service() -> Any:
    try:
        return start_key_service(current_app._get_current_object())  # type: ignore[attr-defined]
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_sets(as_json: bool) -> None:
    """List key sets, the backend serving each and its number of keys."""
    service = _service()
    sets = [{"set": name, "backend": service.backend_of(name), "keys": len(service.keys(name))}
            for name in service.key_set_names()]
    _emit(sets, as_json, "\n".join(f"{s['set']}\t{s['backend'] or 'none'}\t{s['keys']} key(s)" for s in sets))


@keys_cli.command("show")
@click.argument("key_set")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(key_set: str, as_json: bool) -> None:
    """Show the public keys of KEY_SET and their rotation status."""
    try:
        statuses = [status.as_dict() for status in _service().keys(key_set)]
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(statuses, as_json, "\n".join(
        f"{s['kid']}\t{s['alg']}\t{s['backend']}\t{s['status']}" for s in statuses))


@keys_cli.command("generate")
@click.argument("key_set")
@click.option("--alg", help="JWS algorithm (default: the set's configured one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def generate(key_set: str, alg: str | None, as_json: bool) -> None:
    """Add a key to KEY_SET (on the HSM when the set lives there)."""
    try:
        record = _service().generate(key_set, alg)
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    data = {"set": key_set, "kid": record.kid, "alg": record.alg, "backend": record.backend,
            "active_at": record.active_at}
    _emit(data, as_json, f"generated {record.kid} ({record.alg}, {record.backend}) in {key_set}")


@keys_cli.command("import")
@click.argument("key_set")
@click.argument("jwk_file", type=click.File("r"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_(key_set: str, jwk_file: Any, as_json: bool) -> None:
    """Import a private JWK from JWK_FILE ('-' for stdin) into the software store."""
    try:
        jwk = json.load(jwk_file)
    except ValueError:
        raise click.ClickException("the JWK file is not valid JSON") from None
    try:
        record = _service().import_jwk(key_set, jwk)
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    data = {"set": key_set, "kid": record.kid, "alg": record.alg, "backend": record.backend}
    _emit(data, as_json, f"imported {record.kid} ({record.alg}) into {key_set}")


@keys_cli.command("delete")
@click.argument("key_set")
@click.argument("kid")
def delete(key_set: str, kid: str) -> None:
    """Delete key KID from KEY_SET (destroying it on the HSM)."""
    if not _service().delete(key_set, kid):
        raise click.ClickException(f"no key {kid!r} in key set {key_set!r}")
    click.echo(f"deleted {kid} from {key_set}")


@keys_cli.command("retire")
def retire() -> None:
    """Remove keys whose retention period after rotation has passed."""
    retired = _service().retire_expired()
    click.echo(f"retired {len(retired)} key(s)")


@keys_cli.command("reseal")
def reseal() -> None:
    """Re-seal every software key under the first SECRETS_SYSTEM secret.

    Run after prepending a new secret; then the old secret can be removed.
    """
    try:
        manager = SoftwareManager(KeyStore(db.engine, signing_keys),
                                  Sealer.from_setting(current_app.config["SECRETS_SYSTEM"]))
        count = manager.reseal()
    except KeyServiceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"re-sealed {count} key(s) under the current secret")


def init_app(app: Flask) -> None:
    app.cli.add_command(keys_cli)
