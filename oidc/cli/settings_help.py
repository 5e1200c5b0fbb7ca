"""Which settings each command reads, for its ``--help`` (one table, shown by ``oidc-hsm`` and ``flask``)."""

from __future__ import annotations

from collections.abc import Iterable

import click

from oidc.settings import SERVING_NAMES

DATABASE = ("DATABASE_URL",)
HSM = ("HSM_ENABLED", "HSM_LIBRARY", "HSM_TOKEN_LABEL", "HSM_SLOT", "HSM_PIN", "HSM_KEY_SET_PREFIX", "HSM_ONLY_KEY_SETS",
       "HSM_TOKENS (with HSM_<NAME>_LIBRARY, _TOKEN_LABEL or _SLOT, _PIN or _PIN_FILE, _MODULE_ENV)")
KEYS = (*DATABASE, "SECRETS_SYSTEM", *HSM, "HSM_DESTROY_RETIRED_KEYS", "ID_TOKEN_SIGNING_ALG",
        "ACCESS_TOKEN_SIGNING_ALG", "REQUEST_OBJECT_ENCRYPTION_ALG", "RSA_KEY_SIZE", "KEY_PREPUBLICATION_SECONDS",
        "KEY_RETENTION_SECONDS")
CLIENTS = (*DATABASE, "SECRETS_SYSTEM", "CLIENT_CACHE_SECONDS", "DEVELOPMENT_MODE", "SECURITY_PROFILE",
           "ID_TOKEN_SIGNING_ALG")
USERS = (*DATABASE, "PASSWORD_HASH_COST")
TOKENS = DATABASE
DB = DATABASE
AUDIT = (*KEYS, "AUDIT_CHAIN", "AUDIT_CHECKPOINT_SIGNING_ALG")
SERVE_SETTINGS = ("every setting (README.md); those of serving only: " + ", ".join(SERVING_NAMES),)
DOCTOR = (*KEYS, "OIDC_ISSUER", "ADMIN_API_KEYS", "THEME_DIR", "RATELIMIT_STORAGE_URI", "DPOP_JTI_STORAGE_URI")

#: The settings of each command group.
GROUPS: dict[str, tuple[str, ...]] = {"keys": KEYS, "clients": CLIENTS, "users": USERS, "tokens": TOKENS, "db": DB,
                                      "audit": AUDIT}


def settings_epilog(names: Iterable[str]) -> str:
    return "Settings read (environment): " + ", ".join(names) + "."


def describe_settings(group: click.Group, names: Iterable[str]) -> None:
    """Add the settings a group reads to the --help of the group and of each of its commands."""
    epilog = settings_epilog(names)
    pending: list[click.Command] = [group]
    while pending:  # subgroups (clients initial-token ...) and their commands too
        command = pending.pop()
        if not command.epilog:
            command.epilog = epilog
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
