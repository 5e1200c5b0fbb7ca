"""``flask keys ...``: signing keys on the HSM and sealed in the database."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from keys import KeyRecord, KeyService, KeyServiceError, KeyStore, SoftwareManager
from oidc import hashing_keys, urls
from oidc.cli.output import CommandGroup, emit, iso, json_option, table
from oidc.db import db, signing_keys
from oidc.state import current_state

cli = CommandGroup("keys", help="Manage signing keys (HSM and sealed software keys).")


def _service() -> KeyService:
    try:
        return current_state().key_service()
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("list")
@click.option("--evidence", is_flag=True,
              help="Per published key: where it lives, its CKA_* protection attributes, mechanism and certificate.")
@json_option
def list_sets(as_json: bool, evidence: bool) -> None:
    """List key sets, the backend serving each and its number of keys."""
    service = _service()
    if evidence:
        _list_evidence(service, as_json)
        return
    sets = [{"set": name, "backend": service.backend_of(name), "keys": len(service.keys(name))}
            for name in service.key_set_names()]
    emit(sets, as_json, table(("SET", "BACKEND", "KEYS"), ((s["set"], s["backend"] or "none", s["keys"]) for s in sets)))


@cli.command("show")
@click.argument("key_set")
@json_option
def show(key_set: str, as_json: bool) -> None:
    """Show the public keys of KEY_SET and their rotation status."""
    try:
        statuses = [status.as_dict() for status in _service().keys(key_set)]
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    emit(statuses, as_json, table(("KID", "ALG", "BACKEND", "STATUS", "CREATED", "SIGNS FROM", "RETIRES"), (
        (s["kid"], s["alg"], s["backend"], s["status"], iso(s["created_at"]), iso(s["active_at"]),
         iso(s["retires_at"])) for s in statuses)))


@cli.command("generate")
@click.argument("key_set")
@click.option("--alg", help="JWS algorithm (default: the set's configured one).")
@json_option
def generate(key_set: str, alg: str | None, as_json: bool) -> None:
    """Add a key to KEY_SET (on the HSM when the set lives there)."""
    try:
        record = _service().generate(key_set, alg)
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    data = {"set": key_set, "kid": record.kid, "alg": record.alg, "backend": record.backend,
            "active_at": record.active_at}
    emit(data, as_json, f"generated {record.kid} ({record.alg}, {record.backend}) in {key_set}: {_starts(record)}")


def _starts(record: KeyRecord) -> str:
    """When a new key signs: the key service gives a set's first key no wait, and every later one
    KEY_PREPUBLICATION_SECONDS in the JWKS before it signs (KeyService.generate)."""
    wait = record.active_at - record.created_at
    if wait <= 0:
        return "it signs now (the set had no signing key)"
    return (f"published now, it starts signing at {iso(record.active_at)}, in {wait} s "
            "(KEY_PREPUBLICATION_SECONDS: resource servers' cached JWKS learn it first)")


@cli.command("import")
@click.argument("key_set")
@click.argument("jwk_file", type=click.File("r"))
@json_option
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
    emit(data, as_json, f"imported {record.kid} ({record.alg}) into {key_set}")


@cli.command("delete")
@click.argument("key_set")
@click.argument("kid")
def delete(key_set: str, kid: str) -> None:
    """Delete key KID from KEY_SET (destroying it on the HSM)."""
    if not _service().delete(key_set, kid):
        raise click.ClickException(f"no key {kid!r} in key set {key_set!r}")
    click.echo(f"deleted {kid} from {key_set}")


@cli.command("retire")
def retire() -> None:
    """Remove keys whose retention period after rotation has passed."""
    retired = _service().retire_expired()
    click.echo(f"retired {len(retired)} key(s)")


@cli.command("reseal")
def reseal() -> None:
    """Re-seal every software key and hashing key under the first SECRETS_SYSTEM secret.

    Run after prepending a new secret; then the old secret can be removed.
    """
    state = current_state()
    try:
        manager = SoftwareManager(KeyStore(db.engine, signing_keys), state.sealer())
        count = manager.reseal()
        hashing_count = hashing_keys.reseal(state)
    except KeyServiceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"re-sealed {count} key(s) and {hashing_count} hashing key(s) under the current secret")


def _list_evidence(service: KeyService, as_json: bool) -> None:
    try:
        found = service.evidence()
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    lines = []
    for item in found:
        where = item.location
        named = f"{where['token']}: " if where.get("token") else ""
        if where["kind"] == "pkcs11-token" and "unreachable" in where:
            place = f"token {named or '(unknown): '}cannot be asked now ({where['unreachable']})"
        elif where["kind"] == "pkcs11-token":
            place = (f"token {named}{where['token_label']!r} serial {where['serial']} model {where['model']} "
                     f"slot {where['slot_id']}")
        else:
            place = "software store (sealed in SQL)"
        lines.append(f"{item.key_set}\t{item.kid}\t{item.alg}\t{place}")
        if item.attributes:
            lines.append("  " + " ".join(f"{name}={_flag(value)}" for name, value in item.attributes.items()))
        if item.capabilities:
            lines.append("  " + " ".join(f"{name}={_flag(value)}" for name, value in item.capabilities.items()))
        if item.signing_mechanism:
            lines.append(f"  signs with {item.signing_mechanism_description}")
        if item.use == "enc":
            lines.append(f"  decrypts (use enc) with {item.decryption_mechanism_description or 'RSAES-OAEP in software'}")
        certificate = item.certificate
        lines.append(f"  certificate {certificate['subject']} until {certificate['not_after']}" if certificate
                     else "  no certificate")
    emit([item.as_dict() for item in found], as_json, "\n".join(lines))


def _flag(value: bool | None) -> str:
    return "unknown" if value is None else str(value).lower()


@cli.command("csr")
@click.argument("key_set")
@click.option("--subject", default=None, help="RFC 4514 subject, e.g. 'CN=op.example.com,O=Example' "
              "(default: CN=<OIDC_ISSUER's host>).")
@click.option("--kid", default=None, help="Key to certify (default: the key that signs for KEY_SET now).")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the PEM request to this file (default: standard output).")
def csr(key_set: str, subject: str | None, kid: str | None, out: str | None) -> None:
    """Write a PKCS#10 certificate request for KEY_SET's key, signed by that key where it lives (on the HSM)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    subject = subject or urls.default_certificate_subject(current_state().settings.issuer)
    try:
        request = _service().certificate_request(key_set, subject, kid=kid)
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    pem = request.public_bytes(Encoding.PEM)
    if out is None:
        click.echo(pem.decode("ascii"), nl=False)
        return
    with open(out, "wb") as file:
        file.write(pem)
    click.echo(f"wrote the certificate request for {key_set} ({subject}) to {out}", err=True)


@cli.command("certificate")
@click.argument("key_set")
@click.option("--chain", "chain_file", type=click.File("rb"), required=True,
              help="PEM file of the issued chain, leaf first, each certificate followed by its issuer.")
@click.option("--kid", default=None, help="Key the chain certifies (default: the key that signs for KEY_SET now).")
@json_option
def certificate(key_set: str, chain_file: Any, kid: str | None, as_json: bool) -> None:
    """Attach an issued certificate chain to KEY_SET's key; the JWKS then publishes it as x5c."""
    try:
        stored = _service().attach_certificate(key_set, chain_file.read(), kid=kid)
    except KeyServiceError as exc:
        raise click.ClickException(str(exc)) from None
    data = {"set": key_set, "kid": stored.kid, "not_after": stored.not_after}
    emit(data, as_json, f"attached the certificate chain to {stored.kid} of {key_set} "
                        f"(valid until {datetime.fromtimestamp(stored.not_after, UTC).isoformat()})")
