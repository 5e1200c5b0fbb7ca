"""``oidc-hsm doctor``: is this deployment able to serve?  One line per check, each failure with its fix.

Checks, in order: the settings (and variables that look like misspelt ones),
the page theme, the database and its schema, the Redis a setting names, and
with an HSM the PKCS#11 module (it loads, the token is there, the PIN logs in,
it has the mechanisms of each key set's algorithm, the key sets' keys are on it
and cannot leave it); last, the backend each key set signs on.  Nothing is
changed anywhere; no PIN or secret is
printed.  The exit status is 0 only when every check holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    from oidc.app import create_app
    from oidc.settings import ConfigError, describe_unknown_names, unknown_names
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
    unknown = unknown_names(env)
    if unknown:
        report.add("variables", False, describe_unknown_names(unknown),
                   "rename each to the setting it was meant to be (README.md, Configuration), or unset it")
    _check_secrets(report, settings)
    if settings.theme_dir:
        report.add("theme", True, f"THEME_DIR {settings.theme_dir}: templates parse")
    database_ok = _check_database(report, app, settings)
    if database_ok:
        _check_certificates(report, app)
    _check_shared_storage(report, "RATELIMIT_STORAGE_URI", settings.ratelimit_storage_uri)
    _check_shared_storage(report, "DPOP_JTI_STORAGE_URI", settings.dpop_jti_storage_uri)
    on_token: dict[str, int] = {}
    if settings.hsm_enabled:
        for target in _tokens(settings):  # HSM_TOKENS: every token is checked, each its own lines
            _check_hsm(report, settings, target, on_token)
    else:
        report.add("hsm", None, "HSM_ENABLED is false: signing keys are software keys sealed in the database")
    if database_ok:
        _report_backends(report, app, settings, on_token)
    return report


def _check_secrets(report: Report, settings: Any) -> None:
    from keys import KeyServiceError, Sealer

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


def _check_database(report: Report, app: Any, settings: Any) -> bool:
    """Whether the database is reachable and its schema up to date."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from oidc import queries
    from oidc.db import db

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        path = os.path.abspath(url.database or "")
        default = path == os.path.join(app.instance_path, "oidc.sqlite3")
        where = f"SQLite file {path}" + (" (the default, without DATABASE_URL)" if default else "")
        if not url.database or url.database == ":memory:":
            where = "an SQLite database in memory (gone when the process ends)"
        elif not os.path.exists(path):  # connecting would create it, and doctor changes nothing
            report.add("database", False, f"{where} does not exist yet",
                       "run oidc-hsm db upgrade, which creates it (oidc-hsm serve also does), or set DATABASE_URL "
                       "to the database in use")
            return False
    else:
        where = f"{url.get_backend_name()} database {url.database!r} on {url.host or 'localhost'}:{url.port or 'default port'}"
    with app.app_context():
        try:
            with db.engine.connect() as connection:
                queries.ping(connection)
                current = set(MigrationContext.configure(connection).get_current_heads())
        except SQLAlchemyError as exc:
            reason = type(getattr(exc, "orig", None) or exc).__name__
            report.add("database", False, f"cannot connect ({reason})",
                       "check DATABASE_URL and that the database server is running and reachable")
            return False
        finally:
            db.engine.dispose()
        report.add("database", True, f"reachable: {where}")
        config = app.extensions["migrate"].migrate.get_config(app.extensions["migrate"].directory)
        heads = set(ScriptDirectory.from_config(config).get_heads())
        if current == heads:
            return report.add("schema", True, f"up to date (revision {', '.join(sorted(heads))})")
        found = f"at {', '.join(sorted(current))}" if current else "none yet (a new database)"
        return report.add("schema", False, f"{found}, the code needs {', '.join(sorted(heads))}",
                          "run oidc-hsm db upgrade (oidc-hsm serve also does it)")


def _check_shared_storage(report: Report, setting: str, uri: str) -> None:
    """A Redis (or other shared store) that a setting names answers; memory/database need no check."""
    if uri == "database":
        return
    if uri.startswith("memory://"):
        report.add(setting, None, "memory://: each worker process counts on its own, and restarts forget "
                                  "(use redis:// when several processes or hosts serve)")
        return
    shown = _without_password(uri)
    try:
        if uri.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(uri, socket_connect_timeout=3, socket_timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        else:
            from limits.storage import storage_from_string

            if not storage_from_string(uri).check():
                raise ConnectionError("it does not answer")
    except Exception as exc:  # any failure of the client library: name it, never a traceback
        report.add(setting, False, f"cannot reach {shown}: {exc}",
                   f"start that server, or correct {setting} (README.md, Configuration)")
        return
    report.add(setting, True, f"{shown} answers")



def _check_certificates(report: Report, app: Any) -> None:
    """Each attached certificate chain: a warning within 30 days of its end, a failure once it has expired."""
    import time
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from oidc import queries
    from oidc.db import db
    from oidc.settings import CERTIFICATE_WARNING_DAYS

    with app.app_context():
        try:
            with db.engine.connect() as connection:
                rows = queries.certificate_expiries(connection)
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


def _without_password(uri: str) -> str:
    """``uri`` with its password, if any, shown as ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def _tokens(settings: Any) -> list[Any]:
    """The tokens to check: those of HSM_TOKENS, or the one of the plain HSM_* settings (named "")."""
    from oidc.settings import TokenSettings

    if settings.hsm_tokens:
        return list(settings.hsm_tokens)
    return [TokenSettings(name="", library=settings.hsm_library, token_label=settings.hsm_token_label,
                          slot=settings.hsm_slot, pin=settings.hsm_pin)]


def _check_hsm(report: Report, settings: Any, target: Any, on_token: dict[str, int]) -> None:
    """The PKCS#11 checks of one token; ``on_token`` adds the number of private keys of each key set found."""
    from oidc.cli import pkcs11_probe as probe

    library = target.library
    named = f"token {target.name} " if target.name else ""
    setting = f"HSM_{target.name.upper()}_" if target.name else "HSM_"
    try:
        lib = probe.load(library, target.module_env)
    except probe.ProbeError as exc:
        report.add(f"{named}pkcs11 library", False, f"cannot load {library}: {exc}",
                   f"install the HSM vendor's PKCS#11 module and point {setting}LIBRARY at it")
        return
    report.add(f"{named}pkcs11 library", True,
               f"{library} loaded ({lib.manufacturer_id.strip()} {lib.library_description.strip()})")

    wanted = f"label {target.token_label!r}" if target.token_label else f"slot {target.slot}"
    try:
        slot, labels = probe.find_slot(lib, target.token_label, target.slot)
    except probe.ProbeError as exc:
        report.add(f"{named}token".strip(), False, str(exc), "check the HSM's connection and its client configuration")
        return
    if slot is None:
        present = ", ".join(labels) or "none"
        report.add(f"{named}token".strip(), False, f"no token with {wanted} (tokens present: {present})",
                   f"set {setting}TOKEN_LABEL (or {setting}SLOT) to one of the tokens present, or initialise the token")
        return
    report.add(f"{named}token".strip(), True, f"{wanted} found in slot {slot.slot_id}")

    try:
        session = probe.login(slot, target.pin)
    except probe.LoginFailed as exc:
        report.add(f"{named}login", False, str(exc), exc.fix)
        return
    except probe.ProbeError as exc:
        report.add(f"{named}login", False, str(exc), "check the token")
        return
    report.add(f"{named}login", True, "the user PIN is accepted (not shown)")

    try:
        available = probe.mechanisms(slot)
    except probe.ProbeError as exc:
        report.add(f"{named}mechanisms", False, str(exc), "check the token")
        available = None
    try:
        for key_set, alg in {**settings.key_set_algorithms, **settings.decryption_key_sets}.items():
            if available is not None:
                _check_mechanisms(report, available, key_set, alg, named)
            _check_keys(report, session, settings, key_set, on_token, named)
    finally:
        try:
            session.close()
        except Exception:
            pass


def _check_mechanisms(report: Report, available: set[Any], key_set: str, alg: str, named: str = "") -> None:
    """Whether the token offers the mechanisms ``alg`` needs (``available``: what it offers)."""
    from oidc.cli import pkcs11_probe as probe
    from oidc.vocabulary import ID_TOKEN_SET, REQUEST_OBJECT_SET

    setting = {ID_TOKEN_SET: "ID_TOKEN_SIGNING_ALG", REQUEST_OBJECT_SET: "REQUEST_OBJECT_ENCRYPTION_ALG"}.get(
        key_set, "ACCESS_TOKEN_SIGNING_ALG")
    missing = probe.missing_mechanisms(available, alg)
    if missing:
        report.add(f"{named}mechanisms {key_set}", False,
                   f"{alg} needs {', '.join(missing)}, which the token does not offer",
                   f"set {setting} to an algorithm the token supports (RS256 needs only RSA), "
                   "or use a token that has these mechanisms")
    else:
        usable = ", ".join(probe.usable_mechanisms(available, alg))
        report.add(f"{named}mechanisms {key_set}", True, f"{alg}: {usable} available")


def _check_keys(report: Report, session: Any, settings: Any, key_set: str, on_token: dict[str, int],
                named: str = "") -> None:
    from oidc.cli import pkcs11_probe as probe

    label = settings.hsm_key_set_prefix + key_set
    try:
        keys = probe.private_keys(session, label)
    except probe.ProbeError as exc:
        report.add(f"{named}keys {key_set}", False, str(exc), "check the token")
        return
    on_token[key_set] = on_token.get(key_set, 0) + len(keys)
    if not keys:
        report.add(f"{named}keys {key_set}", False, f"no private key labelled {label!r} on the token",
                   f"start the provider once (it provisions the key sets) or run oidc-hsm keys generate {key_set}")
        return
    exposed = [key.key_id for key in keys if key.extractable or not key.sensitive]
    if exposed:
        report.add(f"{named}keys {key_set}", False,
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
            report.add(f"{named}keys {key_set}", False,
                       f"HSM-only set: {len(lacking)} of {len(keys)} key(s) labelled {label!r} lack the evidence of "
                       "a key generated on the token that never left it: "
                       + "; ".join(f"{kid}: {', '.join(problems)}" for kid, problems in lacking.items()),
                       f"generate a new key on the token (oidc-hsm keys generate {key_set}), then retire and "
                       "delete these")
            return
    report.add(f"{named}keys {key_set}", True, f"{len(keys)} key(s) labelled {label!r}, none extractable"
               + (", each generated on the token, always sensitive, never extractable" if hsm_only else ""))


def _report_backends(report: Report, app: Any, settings: Any, on_token: dict[str, int]) -> None:
    """One line per key set: where its keys are, so where it signs (the key service's rule: the token
    when it holds a key of the set, else the software keys, unless the set is HSM-only)."""
    from keys import KeyStore
    from oidc.db import db, signing_keys

    with app.app_context():
        try:
            store = KeyStore(db.engine, signing_keys)
            uses = {**dict.fromkeys(settings.key_set_algorithms, "sig"), **dict.fromkeys(settings.decryption_key_sets, "enc")}
            software = {key_set: sum(record.use == use for record in store.records(key_set=key_set, backend="software"))
                        for key_set, use in uses.items()}
        finally:
            db.engine.dispose()
    token = (f"HSM token {settings.hsm_token_label!r}" if settings.hsm_token_label
             else f"the HSM token in slot {settings.hsm_slot}")
    if settings.hsm_tokens:
        token = f"HSM tokens {', '.join(target.name for target in settings.hsm_tokens)}"
    hsm_only = set(settings.hsm_only_key_sets)
    for key_set in software:
        name = f"backend {key_set}"
        stored = f"{software[key_set]} software key(s) sealed in the database"
        if not settings.hsm_enabled:
            report.add(name, True, f"software ({stored})" if software[key_set]
                       else "software (no key yet: the first start generates one, sealed in the database)")
        elif key_set not in on_token:
            report.add(name, None, f"unknown: {token} could not be checked")
        elif on_token[key_set]:
            report.add(name, True, f"{token} ({on_token[key_set]} key(s) labelled "
                                   f"{settings.hsm_key_set_prefix + key_set!r})")
        elif software[key_set] and not (hsm_only & {key_set, "*"}):
            report.add(name, True, f"software ({stored}; {token} has none for this set)")
        else:
            report.add(name, None, f"{token}, once it has a key for this set (see keys {key_set})")


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
