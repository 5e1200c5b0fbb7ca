"""``oidc-hsm doctor``: is this deployment able to serve?  One line per check, each failure with its fix.

Checks, in order: the settings, the page theme, the database and its schema,
and with an HSM the PKCS#11 module (it loads, the token is there, the PIN logs
in, it has the mechanisms of each key set's algorithm, the key sets' keys are
on it and cannot leave it).  Nothing is changed anywhere; no PIN or secret is
printed.  The exit status is 0 only when every check holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from oidc.cli.settings_help import DOCTOR, settings_epilog


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable (skipped)
    detail: str
    fix: str = ""
    warn: bool = False  # holds, but needs the operator's attention soon

    def line(self) -> str:
        mark = "warn" if self.ok and self.warn else {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        text = f"[{mark}] {self.name}: {self.detail}"
        if (self.ok is False or self.warn) and self.fix:
            text += f" -> fix: {self.fix}"
        return text


class Report:
    def __init__(self, echo: Callable[[str], None]) -> None:
        self.checks: list[Check] = []
        self.echo = echo

    def add(self, name: str, ok: bool | None, detail: str, fix: str = "", *, warn: bool = False) -> bool:
        check = Check(name, ok, detail, fix, warn)
        self.checks.append(check)
        self.echo(check.line())
        return bool(ok)

    @property
    def healthy(self) -> bool:
        return all(check.ok is not False for check in self.checks)


def run_checks(env: Mapping[str, str] | None = None, echo: Callable[[str], None] = click.echo) -> Report:
    """Run every check against the settings in ``env`` (the process environment by default)."""
    from oidc import create_app
    from oidc.settings import ConfigError
    from oidc.web.pages import ThemeError

    report = Report(echo)
    try:
        app = create_app(env=env)
    except ThemeError as exc:
        report.add("settings", True, "valid")
        report.add("theme", False, str(exc), "fix the template, or unset THEME_DIR to use the shipped pages")
        return report
    except ConfigError as exc:
        report.add("settings", False, str(exc), "correct that variable (README.md, Configuration)")
        return report
    settings = app.extensions["oidc.state"].settings
    report.add("settings", True, f"valid (issuer {settings.issuer})")
    _check_secrets(report, settings)
    if settings.theme_dir:
        report.add("theme", True, f"THEME_DIR {settings.theme_dir}: templates parse")
    _check_database(report, app)
    _check_certificates(report, app)
    if settings.hsm_enabled:
        _check_hsm(report, settings)
    else:
        report.add("hsm", None, "HSM_ENABLED is false: signing keys are software keys sealed in the database")
    return report


def _check_secrets(report: Report, settings: Any) -> None:
    from keys.errors import KeyServiceError
    from keys.sealing import Sealer

    try:
        Sealer.from_setting(",".join(settings.secrets_system))
    except (KeyServiceError, ValueError) as exc:
        report.add("SECRETS_SYSTEM", False, str(exc),
                   "set SECRETS_SYSTEM to a random value of at least 32 characters "
                   "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return
    report.add("SECRETS_SYSTEM", True, f"{len(settings.secrets_system)} secret(s) of usable length")
    if not settings.https and not any(host in settings.issuer for host in ("//localhost", "//127.0.0.1", "//[::1]")):
        report.add("issuer", False, f"{settings.issuer} is not https", "serve behind TLS and set OIDC_ISSUER=https://...")


def _check_database(report: Report, app: Any) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from oidc.db import db

    with app.app_context():
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                current = set(MigrationContext.configure(connection).get_current_heads())
        except SQLAlchemyError as exc:
            reason = type(getattr(exc, "orig", None) or exc).__name__
            report.add("database", False, f"cannot connect ({reason})",
                       "check DATABASE_URL and that the database server is running and reachable")
            return
        finally:
            db.engine.dispose()
        report.add("database", True, f"reachable ({db.engine.dialect.name})")
        config = app.extensions["migrate"].migrate.get_config(app.extensions["migrate"].directory)
        heads = set(ScriptDirectory.from_config(config).get_heads())
        if current == heads:
            report.add("schema", True, f"up to date (revision {', '.join(sorted(heads))})")
        else:
            report.add("schema", False, f"at {', '.join(sorted(current)) or 'nothing'}, the code needs "
                       f"{', '.join(sorted(heads))}", "run oidc-hsm db upgrade (oidc-hsm serve also does it)")


#: A key's certificate expiring within this many days is a warning (renew it: README, "Attach a certificate").
CERTIFICATE_WARNING_DAYS = 30


def _check_certificates(report: Report, app: Any) -> None:
    """Each attached certificate chain: a warning within 30 days of its end, a failure once it has expired."""
    import time
    from datetime import UTC, datetime

    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from oidc.db import db, key_certificates

    table = key_certificates
    with app.app_context():
        try:
            with db.engine.connect() as connection:
                rows = list(connection.execute(select(table.c.key_set, table.c.kid, table.c.not_after)
                                               .order_by(table.c.key_set, table.c.kid)))
        except SQLAlchemyError:
            return  # no database or an old schema: the database and schema checks say which
        finally:
            db.engine.dispose()
    now = time.time()
    for key_set, kid, not_after in rows:
        name, ends = f"certificate {key_set}/{kid}", datetime.fromtimestamp(not_after, UTC).isoformat()
        fix = f"oidc-hsm keys csr {key_set} --kid {kid}, have it issued, then oidc-hsm keys certificate {key_set} " \
              f"--kid {kid} --chain chain.pem"
        days = (not_after - now) / 86400
        if days < 0:
            report.add(name, False, f"the chain expired at {ends}; the JWKS still publishes it as x5c", fix)
        elif days <= CERTIFICATE_WARNING_DAYS:
            report.add(name, True, f"the chain expires at {ends}, in {int(days)} day(s)", fix, warn=True)
        else:
            report.add(name, True, f"valid until {ends}")


def _check_hsm(report: Report, settings: Any) -> None:
    from keys.service import ID_TOKEN_SET
    from oidc.cli import pkcs11_probe as probe

    library = settings.hsm_library
    try:
        lib = probe.load(library)
    except probe.ProbeError as exc:
        report.add("pkcs11 library", False, f"cannot load {library}: {exc}",
                   "install the HSM vendor's PKCS#11 module and point HSM_LIBRARY at it")
        return
    report.add("pkcs11 library", True, f"{library} loaded ({lib.manufacturer_id.strip()} {lib.library_description.strip()})")

    wanted = f"label {settings.hsm_token_label!r}" if settings.hsm_token_label else f"slot {settings.hsm_slot}"
    try:
        slot, labels = probe.find_slot(lib, settings.hsm_token_label, settings.hsm_slot)
    except probe.ProbeError as exc:
        report.add("token", False, str(exc), "check the HSM's connection and its client configuration")
        return
    if slot is None:
        present = ", ".join(labels) or "none"
        report.add("token", False, f"no token with {wanted} (tokens present: {present})",
                   "set HSM_TOKEN_LABEL (or HSM_SLOT) to one of the tokens present, or initialise the token")
        return
    report.add("token", True, f"{wanted} found in slot {slot.slot_id}")

    try:
        session = probe.login(slot, settings.hsm_pin)
    except probe.LoginFailed as exc:
        report.add("login", False, str(exc), exc.fix)
        return
    except probe.ProbeError as exc:
        report.add("login", False, str(exc), "check the token")
        return
    report.add("login", True, "the user PIN is accepted (not shown)")

    try:
        available = probe.mechanisms(slot)
    except probe.ProbeError as exc:
        report.add("mechanisms", False, str(exc), "check the token")
        available = None
    try:
        for key_set, alg in settings.key_set_algorithms.items():
            setting = "ID_TOKEN_SIGNING_ALG" if key_set == ID_TOKEN_SET else "ACCESS_TOKEN_SIGNING_ALG"
            if available is not None:
                missing = probe.missing_mechanisms(available, alg)
                if missing:
                    report.add(f"mechanisms {key_set}", False,
                               f"{alg} needs {', '.join(missing)}, which the token does not offer",
                               f"set {setting} to an algorithm the token supports (RS256 needs only RSA), "
                               "or use a token that has these mechanisms")
                else:
                    usable = ", ".join(probe.usable_mechanisms(available, alg))
                    report.add(f"mechanisms {key_set}", True, f"{alg}: {usable} available")
            _check_keys(report, session, settings, key_set)
    finally:
        try:
            session.close()
        except Exception:
            pass


def _check_keys(report: Report, session: Any, settings: Any, key_set: str) -> None:
    from oidc.cli import pkcs11_probe as probe

    label = settings.hsm_key_set_prefix + key_set
    try:
        keys = probe.private_keys(session, label)
    except probe.ProbeError as exc:
        report.add(f"keys {key_set}", False, str(exc), "check the token")
        return
    if not keys:
        report.add(f"keys {key_set}", False, f"no private key labelled {label!r} on the token",
                   f"start the provider once (it provisions the key sets) or run oidc-hsm keys generate {key_set}")
        return
    exposed = [key.key_id for key in keys if key.extractable or not key.sensitive]
    if exposed:
        report.add(f"keys {key_set}", False,
                   f"{len(exposed)} of {len(keys)} key(s) labelled {label!r} can leave the token "
                   f"(CKA_EXTRACTABLE or not CKA_SENSITIVE): {', '.join(exposed)}",
                   f"generate a new key (oidc-hsm keys generate {key_set}), then retire and delete these")
        return
    hsm_only = "*" in settings.hsm_only_key_sets or key_set in settings.hsm_only_key_sets
    if hsm_only:
        from keys import shortfalls

        # An HSM-only set promises keys born on the token that never left it (keys.evidence).
        lacking = {key.key_id: shortfalls(key.attributes) for key in keys if shortfalls(key.attributes)}
        if lacking:
            report.add(f"keys {key_set}", False,
                       f"HSM-only set: {len(lacking)} of {len(keys)} key(s) labelled {label!r} lack the evidence of "
                       "a key generated on the token that never left it: "
                       + "; ".join(f"{kid}: {', '.join(problems)}" for kid, problems in lacking.items()),
                       f"generate a new key on the token (oidc-hsm keys generate {key_set}), then retire and "
                       "delete these")
            return
    report.add(f"keys {key_set}", True, f"{len(keys)} key(s) labelled {label!r}, none extractable"
               + (", each generated on the token, always sensitive, never extractable" if hsm_only else ""))


@click.command("doctor", epilog=settings_epilog(DOCTOR))
def doctor_command() -> None:
    """Check the settings, the database and the HSM; print one line per check, with the fix for each failure.

    Changes nothing; never prints the PIN or a secret.  Exits 0 only when every check holds.
    """
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its "Context impl" lines are not checks
    report = run_checks()
    failed = sum(check.ok is False for check in report.checks)
    held = sum(check.ok is True for check in report.checks)
    click.echo(f"{held} check(s) hold, {failed} failed" + ("" if failed else ": ready to serve"))
    raise SystemExit(0 if report.healthy else 1)
