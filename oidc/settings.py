"""Settings: the environment, read once into one validated, frozen object.

Every variable is documented in README.md (deployment, keys, HSM) or in
docs/configuration-protocol.md (protocol), with its default.  Security choices
have no silent defaults: a missing system secret, an HSM that is enabled
without a library or PIN, or a pre-publication period shorter than the JWKS
cache lifetime are start-up errors whose message names the variable.

:func:`load_settings` is the only reader of the environment in the provider;
everything else reads the :class:`Settings` it returns (``state.settings``).
:func:`flask_config` derives the values Flask and its extensions read from
``app.config`` (session cookie, CSRF, request size, database URL).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keys import UnsupportedAlgorithm, get_algorithm
from oidc.vocabulary import (
    ACCESS_TOKEN_SET,
    ASSERTION_ALGORITHMS,
    AUDIT_CHECKPOINT_SET,
    DPOP_ALGORITHMS,
    FAPI2_ALGORITHMS,
    ID_TOKEN_SET,
    MTLS_AUTH_METHODS,
    REQUEST_OBJECT_ENCRYPTION_ALGORITHMS,
    REQUEST_OBJECT_SET,
)

#: Scopes whose claims this provider knows (OIDC Core §5.4) plus offline_access.
STANDARD_SCOPES = ("openid", "profile", "email", "offline_access")

#: scrypt cost of password hashes, N = 2**15 (r=8, p=1: 32 MiB), RFC 7914's interactive-login level.
DEFAULT_PASSWORD_HASH_COST = 2**15


#: A key's certificate ending within this many days is a warning in doctor and a readiness reason
#: (renew it: README, "Attach a certificate").
CERTIFICATE_WARNING_DAYS = 30

#: Values of SECURITY_PROFILE (and of a client's security_profile).
DEFAULT_PROFILE = "default"
FAPI2 = "fapi2"
#: FAPI 2.0 Message Signing (final): the Security Profile, plus signed request objects at /par and
#: JARM authorization responses.
FAPI2_MESSAGE_SIGNING = "fapi2-message-signing"
#: The profiles the FAPI 2.0 Security Profile's rules apply under.
FAPI2_PROFILES = (FAPI2, FAPI2_MESSAGE_SIGNING)
SECURITY_PROFILES = (DEFAULT_PROFILE, *FAPI2_PROFILES)
#: Longest code lifetime the FAPI 2.0 Security Profile allows (§5.3.2.1, clause 9).
FAPI2_MAX_CODE_LIFETIME = 60
#: The FAPI 2.0 Security Profile wants request_uris that live less than 600 s (§5.3.2.2, clause 6).
FAPI2_MAX_PAR_LIFETIME = 599
#: Defaults of the settings gunicorn.conf.py reads too (its own X-Forwarded-* trust, its log format).
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")
DEFAULT_LOG_FORMAT = "json"
#: The pages' defaults (README.md, "Pages and themes").
DEFAULT_SERVICE_NAME = "Single sign-on"
#: How long audit entries wait in a worker before its chainer writes them (README "The audit trail":
#: what a SIGKILL can lose, why not 0).
DEFAULT_AUDIT_WRITE_DELAY_SECONDS = 0.2
#: How many audit entries at most wait in a worker while the database cannot be written (README "The audit
#: trail"): about a minute of one busy worker's events, some 0.6 kB each in memory.
DEFAULT_AUDIT_QUEUE_LIMIT = 100_000
DEFAULT_PRIMARY_COLOR = "#1d4ed8"
DEFAULT_LANGUAGES = ("en", "de", "fr")
_HEX_COLOUR = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")


#: Every variable :func:`load_settings` reads; its reader refuses any other name, so the list stays whole.
SETTING_NAMES = (
    "OIDC_ISSUER", "DATABASE_URL", "SECRETS_SYSTEM",
    "HSM_ENABLED", "HSM_TOKENS", "HSM_LIBRARY", "HSM_TOKEN_LABEL", "HSM_SLOT", "HSM_PIN", "HSM_KEY_SET_PREFIX",
    "HSM_ONLY_KEY_SETS", "HSM_DESTROY_RETIRED_KEYS", "HSM_GENERATE_KEYS", "HSM_STARTUP_WAIT_SECONDS",
    "HSM_RETRY_INITIAL_SECONDS", "HSM_RETRY_MAX_SECONDS", "HSM_READINESS_CACHE_SECONDS", "HSM_ALLOW_EXTRACTABLE_KEYS",
    "HSM_TOKEN_TIMEOUT_SECONDS",
    "ID_TOKEN_SIGNING_ALG", "ACCESS_TOKEN_SIGNING_ALG", "RSA_KEY_SIZE", "JWKS_MAX_AGE", "KEY_PREPUBLICATION_SECONDS",
    "KEY_RETENTION_SECONDS", "KEYS_REFRESH_SECONDS", "REQUEST_OBJECT_ENCRYPTION_ALG",
    "ACCESS_TOKEN_LIFETIME", "ID_TOKEN_LIFETIME", "AUTHORIZATION_CODE_LIFETIME", "REFRESH_TOKEN_LIFETIME",
    "REFRESH_TOKEN_MAX_LIFETIME", "ACCESS_TOKEN_DEFAULT_AUDIENCE", "OIDC_SCOPES_SUPPORTED",
    "PAR_LIFETIME", "REQUIRE_PUSHED_AUTHORIZATION_REQUESTS", "REQUIRE_SIGNED_REQUEST_OBJECT", "SECURITY_PROFILE",
    "DPOP_SIGNING_ALGS",
    "DPOP_PROOF_MAX_AGE", "DPOP_NONCE", "DPOP_NONCE_LIFETIME", "DPOP_JTI_STORAGE_URI", "DEVELOPMENT_MODE",
    "CLIENT_CACHE_SECONDS", "CLIENT_ASSERTION_LEEWAY", "CLIENT_ASSERTION_MAX_LIFETIME",
    "CLIENT_ASSERTION_ACCEPT_TOKEN_ENDPOINT_AUDIENCE", "CLIENT_JWKS_CACHE_SECONDS", "CLIENT_JWKS_MIN_REFRESH_SECONDS",
    "REGISTRATION_OPEN", "REGISTRATION_SOFTWARE_STATEMENT_ISSUERS", "REGISTRATION_SOFTWARE_STATEMENT_ALGS",
    "REGISTRATION_REQUIRE_SOFTWARE_STATEMENT",
    "CLIENT_CERT_HEADER", "MTLS_CA_FILE", "MTLS_BASE_URL",
    "LOGIN_SESSION_LIFETIME", "LOGIN_RATE_LIMIT_PER_ACCOUNT", "LOGIN_RATE_LIMIT_PER_ADDRESS",
    "LOGIN_RATE_LIMIT_PER_ADDRESS_AND_ACCOUNT", "RATELIMIT_STORAGE_URI", "PASSWORD_HASH_COST", "SESSION_COOKIE_NAME",
    "CSRF_TIME_LIMIT", "MAX_REQUEST_BYTES",
    "ADMIN_API_KEYS", "ADMIN_SCOPE", "TRUSTED_PROXY_HOPS", "FORWARDED_ALLOW_IPS", "LOG_FORMAT", "LOG_LEVEL",
    "SERVICE_NAME", "SERVICE_LOGO_URL", "THEME_DIR", "PRIMARY_COLOR", "LANGUAGES", "DEFAULT_LANGUAGE",
    "STATIC_MAX_AGE",
    "BACKCHANNEL_LOGOUT_TIMEOUT", "BACKCHANNEL_LOGOUT_RETRY_WINDOW", "BACKCHANNEL_LOGOUT_RETRY_INITIAL_SECONDS",
    "BACKCHANNEL_LOGOUT_RETRY_MAX_SECONDS", "BACKCHANNEL_LOGOUT_POLL_SECONDS",
    "DEVICE_CODE_LIFETIME", "DEVICE_POLL_INTERVAL", "DEVICE_USER_CODE_RATE_LIMIT",
    "AUDIT_CHAIN", "AUDIT_CHECKPOINT_ENTRIES", "AUDIT_CHECKPOINT_SECONDS", "AUDIT_SEAL_SECONDS",
    "AUDIT_CHECKPOINT_SIGNING_ALG", "AUDIT_WRITE_DELAY_SECONDS", "AUDIT_QUEUE_LIMIT",
)
#: The variables of serving only, read by gunicorn.conf.py (and GUNICORN_CMD_ARGS by gunicorn itself).
SERVING_NAMES = (
    "BIND", "GUNICORN_WORKERS", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE", "GUNICORN_CMD_ARGS", "METRICS_BIND", "PROMETHEUS_MULTIPROC_DIR",
)
KNOWN_NAMES = frozenset(SETTING_NAMES + SERVING_NAMES)
#: The settings of each token named in HSM_TOKENS: ``HSM_<NAME>_<SUFFIX>``.
TOKEN_SETTING_SUFFIXES = ("LIBRARY", "TOKEN_LABEL", "SLOT", "PIN", "PIN_FILE", "MODULE_ENV")
#: A token's name in HSM_TOKENS: letters and digits (it is a metrics label and part of variable names).
_TOKEN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")
#: A variable a module reads, in HSM_<NAME>_MODULE_ENV.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The first word of every known name (HSM_, OIDC_, DATABASE_, ...): a variable that starts with one
#: of them is meant for this provider, so one it does not know is most likely misspelt.
PREFIXES = tuple(sorted({name.split("_", 1)[0] + "_" for name in KNOWN_NAMES if "_" in name}))


def unknown_names(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The variables that start as a setting does but are none, each with the closest known name (or None)."""
    names = os.environ if env is None else env
    known = KNOWN_NAMES | {f"HSM_{token.upper()}_{suffix}" for token in _token_names(names.get("HSM_TOKENS", ""))
                           for suffix in TOKEN_SETTING_SUFFIXES}
    # cutoff 0.7: a slip of a letter or two scores 0.75 and up; lower, unrelated names get "suggestions".
    return {name: next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.7)), None)
            for name in sorted(names) if name.startswith(PREFIXES) and name not in known}


def _token_names(value: str) -> list[str]:
    """The well-formed names of HSM_TOKENS (the reader refuses the others)."""
    return [part.strip() for part in value.split(",") if _TOKEN_NAME.fullmatch(part.strip())]


def describe_unknown_names(unknown: Mapping[str, str | None]) -> str:
    """One line for :func:`unknown_names`: ``HSM_ENABLE (did you mean HSM_ENABLED?), ...``."""
    parts = [f"{name} (did you mean {close}?)" if close else name for name, close in unknown.items()]
    return "not a setting of this provider, ignored: " + ", ".join(parts)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class TokenSettings:
    """One token of HSM_TOKENS (``HSM_<NAME>_*``).  ``pin`` is never logged or shown."""

    name: str
    library: str
    token_label: str | None
    slot: int | None
    pin: str
    module_env: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never the PIN in a traceback or log line
        return f"TokenSettings(name={self.name!r}, library={self.library!r})"


@dataclass(frozen=True)
class Settings:
    """Every setting of one provider process (see README.md for each variable)."""

    issuer: str
    database_url: str
    secrets_system: tuple[str, ...]
    # HSM
    hsm_enabled: bool
    #: The tokens of HSM_TOKENS; empty when the plain HSM_* settings name the one token.
    hsm_tokens: tuple[TokenSettings, ...]
    hsm_library: str
    hsm_token_label: str | None
    hsm_slot: int | None
    hsm_pin: str
    hsm_key_set_prefix: str
    hsm_only_key_sets: tuple[str, ...]
    hsm_destroy_retired_keys: bool
    # HSM resilience and adoption (README "When the HSM fails")
    hsm_generate_keys: bool
    hsm_startup_wait_seconds: float
    hsm_retry_initial_seconds: float
    hsm_retry_max_seconds: float
    hsm_readiness_cache_seconds: float
    hsm_allow_extractable_keys: bool
    #: With HSM_TOKENS: how long a call may stay in a token's module before it is given up (and the token
    #: passed over while the call hangs); 0: calls in the request's thread, never given up.
    hsm_token_timeout_seconds: float
    # keys
    id_token_signing_alg: str
    access_token_signing_alg: str
    #: The decryption set's algorithm ("" = no decryption set: encrypted request objects refused).
    request_object_encryption_alg: str
    rsa_key_size: int
    jwks_max_age: int
    key_prepublication_seconds: int
    key_retention_seconds: int
    keys_refresh_seconds: int
    # tokens
    access_token_lifetime: int
    id_token_lifetime: int
    authorization_code_lifetime: int
    refresh_token_lifetime: int
    refresh_token_max_lifetime: int
    access_token_default_audience: str
    scopes_supported: tuple[str, ...]
    # pushed authorization requests, DPoP and the security profile
    par_lifetime: int
    require_pushed_authorization_requests: bool
    require_signed_request_object: bool
    security_profile: str
    dpop_signing_algs: tuple[str, ...]
    dpop_proof_max_age: int
    dpop_nonce: bool
    dpop_nonce_lifetime: int
    dpop_jti_storage_uri: str
    development: bool
    # clients
    client_cache_seconds: int
    client_assertion_leeway: int
    client_assertion_max_lifetime: int
    client_assertion_accept_token_endpoint_audience: bool
    client_jwks_cache_seconds: int
    client_jwks_min_refresh_seconds: int
    # dynamic client registration (RFC 7591, RFC 7592)
    registration_open: bool
    #: (issuer, JWKS file path or https URL) of each software statement issuer the operator trusts.
    software_statement_issuers: tuple[tuple[str, str], ...]
    software_statement_algs: tuple[str, ...]
    require_software_statement: bool
    # mutual-TLS clients (README "Mutual-TLS clients")
    client_cert_header: str | None
    mtls_ca_file: str | None
    mtls_base_url: str | None
    # login and the browser session
    login_session_lifetime: int
    login_rate_limit_per_account: str
    login_rate_limit_per_address: str
    login_rate_limit_per_address_and_account: str
    ratelimit_storage_uri: str
    password_hash_cost: int
    session_cookie_name: str
    csrf_time_limit: int
    max_request_bytes: int
    # administration and serving
    admin_api_keys: tuple[str, ...]
    admin_scope: str
    trusted_proxy_hops: int
    forwarded_allow_ips: tuple[str, ...]
    log_format: str
    log_level: str
    #: Whether this process collects Prometheus metrics: False only when nothing would serve them
    #: (``METRICS_BIND`` set empty and no ``PROMETHEUS_MULTIPROC_DIR``), decided once, at start.
    metrics: bool
    # pages and themes
    service_name: str
    service_logo_url: str
    theme_dir: str | None
    primary_color: str
    languages: tuple[str, ...]
    default_language: str
    static_max_age: int
    # back-channel logout (README "Back-channel logout")
    backchannel_logout_timeout: float
    backchannel_logout_retry_window: int
    backchannel_logout_retry_initial_seconds: int
    backchannel_logout_retry_max_seconds: int
    backchannel_logout_poll_seconds: float

    device_code_lifetime: int
    device_poll_interval: int
    device_user_code_rate_limit: str

    # the audit trail (README "The audit trail")
    audit_chain: bool = False
    audit_checkpoint_entries: int = 1000
    audit_checkpoint_seconds: float = 300.0
    audit_seal_seconds: float = 1.0
    audit_checkpoint_signing_alg: str = "ES256"
    audit_write_delay_seconds: float = DEFAULT_AUDIT_WRITE_DELAY_SECONDS
    audit_queue_limit: int = DEFAULT_AUDIT_QUEUE_LIMIT

    def __repr__(self) -> str:  # never a secret or PIN in a traceback or log line
        return f"Settings(issuer={self.issuer!r}, database={self.database_url.split(':', 1)[0]}, ...)"

    @property
    def key_set_algorithms(self) -> dict[str, str]:
        """The configured algorithm of each required key set (the audit set's while the audit chain is on)."""
        algorithms = {ID_TOKEN_SET: self.id_token_signing_alg, ACCESS_TOKEN_SET: self.access_token_signing_alg}
        if self.audit_chain:
            algorithms[AUDIT_CHECKPOINT_SET] = self.audit_checkpoint_signing_alg
        return algorithms

    @property
    def decryption_key_sets(self) -> dict[str, str]:
        """The configured key-encryption algorithm of each decryption key set (``use: enc``)."""
        alg = self.request_object_encryption_alg
        return {REQUEST_OBJECT_SET: alg} if alg else {}

    @property
    def fapi2(self) -> bool:
        """Whether the FAPI 2.0 Security Profile applies to every client (alone or under Message Signing)."""
        return self.security_profile in FAPI2_PROFILES

    @property
    def fapi2_message_signing(self) -> bool:
        """Whether FAPI 2.0 Message Signing applies to every client."""
        return self.security_profile == FAPI2_MESSAGE_SIGNING

    @property
    def mtls_auth_methods(self) -> tuple[str, ...]:
        """The mutual-TLS client authentication methods on offer (RFC 8705 §2): none without
        CLIENT_CERT_HEADER, ``tls_client_auth`` only with the CAs of MTLS_CA_FILE to verify against."""
        if self.client_cert_header is None:
            return ()
        return MTLS_AUTH_METHODS if self.mtls_ca_file else tuple(m for m in MTLS_AUTH_METHODS if m != "tls_client_auth")

    @property
    def https(self) -> bool:
        return self.issuer.startswith("https://")


# -- parsing ------------------------------------------------------------------------------


class _Reader:
    """Typed reads of one environment mapping, each error naming its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, default: str | None = None) -> str | None:
        if name not in SETTING_NAMES:  # a new setting: add it to SETTING_NAMES (and README.md)
            raise RuntimeError(f"{name} is read but missing from SETTING_NAMES")
        return self._env.get(name, default)

    def serving(self, name: str) -> str | None:
        """A variable of serving (SERVING_NAMES), read by gunicorn.conf.py, that the app must also know of."""
        if name not in SERVING_NAMES:
            raise RuntimeError(f"{name} is not a variable of serving")
        return self._env.get(name)

    def token_text(self, name: str) -> str:
        """A token's own setting, ``HSM_<NAME>_<SUFFIX>`` (see TOKEN_SETTING_SUFFIXES)."""
        if not name.startswith("HSM_") or not name.endswith(TOKEN_SETTING_SUFFIXES):
            raise RuntimeError(f"{name} is not a token's setting")
        return self._env.get(name, "")

    def text(self, name: str, default: str = "") -> str:
        value = self.get(name)
        return default if value is None or value == "" else value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None or value == "":
            return default
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")

    def optional_integer(self, name: str, minimum: int = 0) -> int | None:
        value = self.get(name)
        if value is None or value == "":
            return None
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return number

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        number = self.optional_integer(name, minimum)
        return default if number is None else number

    def seconds(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self.get(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from None
        if not number >= minimum:  # also refuses NaN
            raise ConfigError(f"{name} must be at least {minimum:g}")
        return number

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in (self.get(name) or "").split(",") if part.strip())

    def algorithm(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            get_algorithm(value)
        except UnsupportedAlgorithm as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return value

    def rate_limit(self, name: str, default: str, *, optional: bool = False) -> str:
        from limits import parse_many

        value = self.text(name, default).strip()
        if optional and self.get(name) is not None and not (self.get(name) or "").strip():
            return ""  # explicitly empty: this limit is off
        try:
            parse_many(value)
        except ValueError:
            raise ConfigError(f"{name} must be a rate limit such as '5/minute;20/hour', not {value!r}") from None
        return value


def _database_url(value: str, instance_path: str) -> str:
    url = value or "sqlite:///" + os.path.join(instance_path, "oidc.sqlite3")
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    _check_database_url(url)
    return url


def _check_database_url(url: str) -> None:
    """Refuse a URL SQLAlchemy cannot parse, or whose dialect or driver cannot be loaded.

    Checked here, so that every command stops with one line naming DATABASE_URL instead of
    a traceback from the first query.  (Whether the server answers is known only on connecting:
    see :func:`oidc.db.describe_database_error`.)  The URL is never quoted: it can hold a password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a database URL: use postgresql://user@host/database "
                          "or sqlite:////absolute/path/oidc.sqlite3") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"DATABASE_URL names the database {parsed.drivername!r}, which SQLAlchemy does not "
                          "know: use postgresql:// or sqlite://") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ConfigError(f"DATABASE_URL: the driver of {parsed.drivername!r} is not installed ({exc}); "
                          "this provider ships the drivers of postgresql:// and sqlite://") from None


def parse_networks(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """IP networks (``10.0.0.2``, ``10.0.0.0/8``, ``::1``) from a list; ValueError names none of them."""
    return [ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip()]


def load_settings(env: Mapping[str, str] | None = None, *, instance_path: str) -> Settings:
    """The settings in ``env`` (the process environment by default), validated.

    Each group of settings has its reader below, which validates its group and returns its
    fields; the few checks across groups take what they need as arguments.
    """
    read = _Reader(os.environ if env is None else env)
    issuer = _read_issuer(read)
    hsm = _read_hsm(read)
    tokens = _read_tokens(read, issuer=issuer)
    keys = _read_keys(read, longest_token=max(tokens["access_token_lifetime"], tokens["id_token_lifetime"]))
    protocol = _read_protocol(read, id_alg=keys["id_token_signing_alg"], access_alg=keys["access_token_signing_alg"],
                              code_lifetime=tokens["authorization_code_lifetime"])
    return Settings(
        issuer=issuer,
        database_url=_database_url(read.text("DATABASE_URL"), instance_path),
        # Kept as given; keys.sealing.Sealer validates (missing or short is an error).
        secrets_system=read.items("SECRETS_SYSTEM"),
        **hsm, **keys, **tokens, **protocol,
        **_read_clients(read), **_read_registration(read), **_read_login(read), **_read_administration(read),
        **_read_pages(read), **_read_backchannel_logout(read), **_read_device(read), **_read_audit(read),
    )


def _read_audit(read: _Reader) -> dict[str, Any]:
    """The audit trail: the hash chain in the database and its signed checkpoints."""
    return {
        "audit_chain": read.boolean("AUDIT_CHAIN", False),
        "audit_checkpoint_entries": read.integer("AUDIT_CHECKPOINT_ENTRIES", 1000, minimum=1),
        "audit_checkpoint_seconds": read.seconds("AUDIT_CHECKPOINT_SECONDS", 300.0, minimum=1.0),
        "audit_seal_seconds": read.seconds("AUDIT_SEAL_SECONDS", 1.0, minimum=0.05),
        "audit_checkpoint_signing_alg": read.algorithm("AUDIT_CHECKPOINT_SIGNING_ALG", "ES256"),
        "audit_write_delay_seconds": read.seconds("AUDIT_WRITE_DELAY_SECONDS", DEFAULT_AUDIT_WRITE_DELAY_SECONDS),
        "audit_queue_limit": read.integer("AUDIT_QUEUE_LIMIT", DEFAULT_AUDIT_QUEUE_LIMIT, minimum=1),
    }


def _read_issuer(read: _Reader) -> str:
    issuer = read.text("OIDC_ISSUER", "http://localhost:8000").rstrip("/")
    if not issuer.startswith(("https://", "http://")):
        raise ConfigError("OIDC_ISSUER must be an http(s) URL")
    return issuer


def _read_hsm(read: _Reader) -> dict[str, Any]:
    """The HSM, its resilience and the adoption of its keys (README "When the HSM fails")."""
    tokens = _read_hsm_tokens(read)
    enabled = read.boolean("HSM_ENABLED", bool(tokens))
    library = read.text("HSM_LIBRARY")
    pin = read.text("HSM_PIN")
    token_label = read.text("HSM_TOKEN_LABEL") or None
    slot = read.optional_integer("HSM_SLOT")
    only = read.items("HSM_ONLY_KEY_SETS")
    if tokens and not enabled:
        raise ConfigError("HSM_TOKENS names tokens but HSM_ENABLED is false")
    if tokens and (pin or token_label or slot is not None):
        raise ConfigError("HSM_TOKENS names the tokens: set HSM_<NAME>_TOKEN_LABEL (or _SLOT) and HSM_<NAME>_PIN "
                          "for each, not HSM_TOKEN_LABEL, HSM_SLOT or HSM_PIN")
    if enabled and not tokens:
        if not library:
            raise ConfigError("HSM_ENABLED is true but HSM_LIBRARY is not set")
        if not pin:
            raise ConfigError("HSM_ENABLED is true but HSM_PIN is not set")
        if token_label is None and slot is None:
            raise ConfigError("HSM_ENABLED is true but neither HSM_TOKEN_LABEL nor HSM_SLOT is set")
    elif only and not enabled:
        raise ConfigError("HSM_ONLY_KEY_SETS names key sets but HSM_ENABLED is false")
    retry_initial = read.seconds("HSM_RETRY_INITIAL_SECONDS", 0.5, minimum=0.05)
    retry_max = read.seconds("HSM_RETRY_MAX_SECONDS", 5.0, minimum=0.05)
    if retry_max < retry_initial:
        raise ConfigError("HSM_RETRY_MAX_SECONDS must be at least HSM_RETRY_INITIAL_SECONDS")
    return {
        "hsm_enabled": enabled,
        "hsm_tokens": tokens,
        "hsm_library": library,
        "hsm_token_label": token_label,
        "hsm_slot": slot,
        "hsm_pin": pin,
        "hsm_key_set_prefix": read.text("HSM_KEY_SET_PREFIX"),
        "hsm_only_key_sets": only,
        "hsm_destroy_retired_keys": read.boolean("HSM_DESTROY_RETIRED_KEYS", False),
        "hsm_generate_keys": read.boolean("HSM_GENERATE_KEYS", True),
        "hsm_startup_wait_seconds": read.seconds("HSM_STARTUP_WAIT_SECONDS", 0.0),
        "hsm_retry_initial_seconds": retry_initial,
        "hsm_retry_max_seconds": retry_max,
        "hsm_readiness_cache_seconds": read.seconds("HSM_READINESS_CACHE_SECONDS", 5.0),
        "hsm_allow_extractable_keys": read.boolean("HSM_ALLOW_EXTRACTABLE_KEYS", False),
        "hsm_token_timeout_seconds": read.seconds("HSM_TOKEN_TIMEOUT_SECONDS", 2.0),
    }


def _read_hsm_tokens(read: _Reader) -> tuple[TokenSettings, ...]:
    """HSM_TOKENS and each token's HSM_<NAME>_* settings (README "Several tokens")."""
    names = read.items("HSM_TOKENS")
    for name in names:
        if not _TOKEN_NAME.fullmatch(name):
            raise ConfigError(f"HSM_TOKENS: {name!r} is not a token name (a letter, then letters and digits, "
                              "at most 32)")
    if len({name.upper() for name in names}) != len(names):
        raise ConfigError("HSM_TOKENS names a token twice")
    return tuple(_read_token(read, name) for name in names)


def _read_token(read: _Reader, name: str) -> TokenSettings:
    prefix = f"HSM_{name.upper()}_"
    library = read.token_text(prefix + "LIBRARY") or read.text("HSM_LIBRARY")
    if not library:
        raise ConfigError(f"{prefix}LIBRARY is not set (nor HSM_LIBRARY)")
    token_label = read.token_text(prefix + "TOKEN_LABEL") or None
    slot_text = read.token_text(prefix + "SLOT")
    try:
        slot = int(slot_text) if slot_text else None
    except ValueError:
        raise ConfigError(f"{prefix}SLOT must be a whole number, not {slot_text!r}") from None
    if token_label is None and slot is None:
        raise ConfigError(f"neither {prefix}TOKEN_LABEL nor {prefix}SLOT is set")
    return TokenSettings(name=name, library=library, token_label=token_label, slot=slot,
                         pin=_token_pin(read, prefix), module_env=parse_module_env(read.token_text(prefix + "MODULE_ENV"),
                                                                                  prefix + "MODULE_ENV"))


def _token_pin(read: _Reader, prefix: str) -> str:
    pin, pin_file = read.token_text(prefix + "PIN"), read.token_text(prefix + "PIN_FILE")
    if pin and pin_file:
        raise ConfigError(f"{prefix}PIN and {prefix}PIN_FILE are both set: set one")
    if pin_file:
        try:
            with open(pin_file, encoding="utf-8") as handle:
                pin = handle.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{prefix}PIN_FILE cannot be read ({type(exc).__name__})") from None
    if not pin:
        raise ConfigError(f"{prefix}PIN (or {prefix}PIN_FILE) is not set")
    return pin


def parse_module_env(value: str, name: str) -> tuple[tuple[str, str], ...]:
    """``NAME=value;NAME=value`` (HSM_<NAME>_MODULE_ENV): what the token's module reads when it loads."""
    pairs = []
    for item in value.split(";"):
        if not item.strip():
            continue
        key, sep, setting = item.strip().partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"{name} must be NAME=value pairs separated by ';', not {item.strip()[:40]!r}")
        pairs.append((key, setting))
    return tuple(pairs)


def _read_tokens(read: _Reader, *, issuer: str) -> dict[str, Any]:
    """Token lifetimes, the default audience of access tokens and the scopes."""
    access_token_lifetime = read.integer("ACCESS_TOKEN_LIFETIME", 3600, minimum=1)
    id_token_lifetime = read.integer("ID_TOKEN_LIFETIME", 3600, minimum=1)
    refresh_lifetime = read.integer("REFRESH_TOKEN_LIFETIME", 30 * 24 * 3600, minimum=1)
    refresh_max_lifetime = read.integer("REFRESH_TOKEN_MAX_LIFETIME", max(90 * 24 * 3600, refresh_lifetime), minimum=1)
    if refresh_max_lifetime < refresh_lifetime:
        raise ConfigError("REFRESH_TOKEN_MAX_LIFETIME must be at least REFRESH_TOKEN_LIFETIME")
    scopes = read.text("OIDC_SCOPES_SUPPORTED", " ".join(STANDARD_SCOPES)).replace(",", " ").split()
    if "openid" not in scopes:
        raise ConfigError("OIDC_SCOPES_SUPPORTED must include 'openid'")
    return {
        "access_token_lifetime": access_token_lifetime,
        "id_token_lifetime": id_token_lifetime,
        "authorization_code_lifetime": read.integer("AUTHORIZATION_CODE_LIFETIME", 60, minimum=1),
        "refresh_token_lifetime": refresh_lifetime,
        "refresh_token_max_lifetime": refresh_max_lifetime,
        "access_token_default_audience": read.text("ACCESS_TOKEN_DEFAULT_AUDIENCE").strip() or issuer,
        "scopes_supported": tuple(dict.fromkeys(scopes)),
    }


def _read_keys(read: _Reader, *, longest_token: int) -> dict[str, Any]:
    """Algorithms, key size and the key lifecycle; keys outlive the ``longest_token`` lifetime."""
    jwks_max_age = read.integer("JWKS_MAX_AGE", 300)
    prepublication = read.integer("KEY_PREPUBLICATION_SECONDS", 2 * jwks_max_age)
    keys_refresh = read.integer("KEYS_REFRESH_SECONDS", 10, minimum=1)
    if prepublication <= jwks_max_age + keys_refresh:
        raise ConfigError(
            "KEY_PREPUBLICATION_SECONDS must be longer than JWKS_MAX_AGE + KEYS_REFRESH_SECONDS, or "
            "resource servers with a JWKS cached from a worker whose key snapshot was stale would meet "
            "tokens signed by a key they do not know"
        )
    retention = read.integer("KEY_RETENTION_SECONDS", longest_token + jwks_max_age)
    if retention < longest_token:
        raise ConfigError(
            "KEY_RETENTION_SECONDS must be at least the longest token lifetime, or tokens "
            "would outlive the key that verifies them"
        )
    return {
        "id_token_signing_alg": read.algorithm("ID_TOKEN_SIGNING_ALG", "RS256"),
        "access_token_signing_alg": read.algorithm("ACCESS_TOKEN_SIGNING_ALG", "ES256"),
        "request_object_encryption_alg": _encryption_algorithm(read),
        "rsa_key_size": read.integer("RSA_KEY_SIZE", 2048, minimum=2048),
        "jwks_max_age": jwks_max_age,
        "key_prepublication_seconds": prepublication,
        "key_retention_seconds": retention,
        "keys_refresh_seconds": keys_refresh,
    }


def _encryption_algorithm(read: _Reader) -> str:
    value = read.text("REQUEST_OBJECT_ENCRYPTION_ALG").strip()
    if value and value not in REQUEST_OBJECT_ENCRYPTION_ALGORITHMS:
        raise ConfigError(f"REQUEST_OBJECT_ENCRYPTION_ALG must be one of "
                          f"{', '.join(REQUEST_OBJECT_ENCRYPTION_ALGORITHMS)} (or empty: no decryption key set), "
                          f"not {value!r}")
    return value


def _read_protocol(read: _Reader, *, id_alg: str, access_alg: str, code_lifetime: int) -> dict[str, Any]:
    """Pushed authorization requests, DPoP and the security profile (which bounds the algorithms and lifetimes)."""
    profile = read.text("SECURITY_PROFILE", DEFAULT_PROFILE).strip().lower()
    if profile not in SECURITY_PROFILES:
        raise ConfigError(f"SECURITY_PROFILE must be one of {', '.join(SECURITY_PROFILES)}, not {profile!r}")
    dpop_algs = read.items("DPOP_SIGNING_ALGS") or DPOP_ALGORITHMS
    unknown = [alg for alg in dpop_algs if alg not in DPOP_ALGORITHMS]
    if unknown:
        raise ConfigError(f"DPOP_SIGNING_ALGS: {', '.join(unknown)} not among {', '.join(DPOP_ALGORITHMS)}")
    par_lifetime = read.integer("PAR_LIFETIME", 60, minimum=1)
    if profile in FAPI2_PROFILES:
        dpop_algs = _check_fapi2(id_alg=id_alg, access_alg=access_alg, code_lifetime=code_lifetime,
                                 dpop_algs=dpop_algs, par_lifetime=par_lifetime)
    jti_storage = read.text("DPOP_JTI_STORAGE_URI", "database").strip()
    if jti_storage != "database" and not jti_storage.startswith(("redis://", "rediss://")):
        raise ConfigError("DPOP_JTI_STORAGE_URI must be 'database' or a redis:// URL")
    return {
        "par_lifetime": par_lifetime,
        "require_pushed_authorization_requests": read.boolean("REQUIRE_PUSHED_AUTHORIZATION_REQUESTS", False),
        "require_signed_request_object": read.boolean("REQUIRE_SIGNED_REQUEST_OBJECT", False),
        "security_profile": profile,
        "dpop_signing_algs": tuple(dict.fromkeys(dpop_algs)),
        "dpop_proof_max_age": read.integer("DPOP_PROOF_MAX_AGE", 60, minimum=1),
        "dpop_nonce": read.boolean("DPOP_NONCE", False),
        "dpop_nonce_lifetime": read.integer("DPOP_NONCE_LIFETIME", 300, minimum=10),
        "dpop_jti_storage_uri": jti_storage,
        "development": read.boolean("DEVELOPMENT_MODE", False),
    }


def _check_fapi2(*, id_alg: str, access_alg: str, code_lifetime: int, dpop_algs: tuple[str, ...],
                 par_lifetime: int) -> tuple[str, ...]:
    """What SECURITY_PROFILE=fapi2 demands of the other settings; the DPoP algorithms it leaves."""
    for name, alg in (("ID_TOKEN_SIGNING_ALG", id_alg), ("ACCESS_TOKEN_SIGNING_ALG", access_alg)):
        if alg not in FAPI2_ALGORITHMS:
            raise ConfigError(f"SECURITY_PROFILE=fapi2 allows {', '.join(FAPI2_ALGORITHMS)} signatures only, "
                              f"but {name} is {alg}: set it to one of them")
    if code_lifetime > FAPI2_MAX_CODE_LIFETIME:
        raise ConfigError(f"SECURITY_PROFILE=fapi2 allows authorization codes of at most "
                          f"{FAPI2_MAX_CODE_LIFETIME} s, but AUTHORIZATION_CODE_LIFETIME is {code_lifetime}")
    allowed = tuple(alg for alg in dpop_algs if alg in FAPI2_ALGORITHMS)
    if not allowed:
        raise ConfigError("SECURITY_PROFILE=fapi2: DPOP_SIGNING_ALGS names none of PS256, ES256, EdDSA")
    if par_lifetime > FAPI2_MAX_PAR_LIFETIME:
        raise ConfigError(f"SECURITY_PROFILE=fapi2 allows request_uris of less than 600 s, but PAR_LIFETIME is "
                          f"{par_lifetime}")
    return allowed


def _read_clients(read: _Reader) -> dict[str, Any]:
    return {
        "client_cache_seconds": read.integer("CLIENT_CACHE_SECONDS", 5, minimum=0),
        "client_assertion_leeway": read.integer("CLIENT_ASSERTION_LEEWAY", 60),
        "client_assertion_max_lifetime": read.integer("CLIENT_ASSERTION_MAX_LIFETIME", 300, minimum=1),
        "client_assertion_accept_token_endpoint_audience": read.boolean(
            "CLIENT_ASSERTION_ACCEPT_TOKEN_ENDPOINT_AUDIENCE", False),
        "client_jwks_cache_seconds": read.integer("CLIENT_JWKS_CACHE_SECONDS", 300, minimum=1),
        "client_jwks_min_refresh_seconds": read.integer("CLIENT_JWKS_MIN_REFRESH_SECONDS", 30, minimum=1),
        **_read_mtls(read),
    }


def _read_registration(read: _Reader) -> dict[str, Any]:
    """Dynamic client registration: open or by initial access token, and the software statements trusted."""
    issuers = []
    for entry in read.items("REGISTRATION_SOFTWARE_STATEMENT_ISSUERS"):
        parts = entry.split()
        if len(parts) != 2 or not parts[0].startswith(("https://", "http://")):
            raise ConfigError("REGISTRATION_SOFTWARE_STATEMENT_ISSUERS: comma-separated pairs of an issuer and its "
                              f"JWKS (a file or an https URL), not {entry!r}")
        issuer, source = parts
        if not source.startswith("https://") and not os.path.isfile(source):
            raise ConfigError(f"REGISTRATION_SOFTWARE_STATEMENT_ISSUERS: the JWKS of {issuer} is neither an https URL "
                              f"nor a readable file ({source!r})")
        issuers.append((issuer, source))
    algs = read.items("REGISTRATION_SOFTWARE_STATEMENT_ALGS") or ASSERTION_ALGORITHMS
    unknown = [alg for alg in algs if alg not in ASSERTION_ALGORITHMS]
    if unknown:
        raise ConfigError(f"REGISTRATION_SOFTWARE_STATEMENT_ALGS: {', '.join(unknown)} not among "
                          f"{', '.join(ASSERTION_ALGORITHMS)}")
    require = read.boolean("REGISTRATION_REQUIRE_SOFTWARE_STATEMENT", False)
    if require and not issuers:
        raise ConfigError("REGISTRATION_REQUIRE_SOFTWARE_STATEMENT is true but "
                          "REGISTRATION_SOFTWARE_STATEMENT_ISSUERS names no issuer")
    return {
        "registration_open": read.boolean("REGISTRATION_OPEN", False),
        "software_statement_issuers": tuple(issuers),
        "software_statement_algs": tuple(dict.fromkeys(algs)),
        "require_software_statement": require,
    }


#: A header name (RFC 9110 §5.1 token characters).
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")


def _check_ca_file(path: str) -> None:
    """MTLS_CA_FILE: a readable PEM file of at least one certificate (what ``tls_client_auth`` trusts)."""
    from cryptography import x509

    try:
        with open(path, "rb") as file:
            x509.load_pem_x509_certificates(file.read(1024 * 1024))
    except OSError:
        raise ConfigError(f"MTLS_CA_FILE {path!r} cannot be read") from None
    except ValueError:
        raise ConfigError(f"MTLS_CA_FILE {path!r} holds no PEM certificate") from None


def _read_mtls(read: _Reader) -> dict[str, Any]:
    """Mutual-TLS clients (RFC 8705): the header the proxy puts the client certificate in, the CAs
    ``tls_client_auth`` certificates are issued by, and the base URL of the mTLS endpoints."""
    header = read.text("CLIENT_CERT_HEADER").strip() or None
    if header is not None and not _HEADER_NAME.fullmatch(header):
        raise ConfigError(f"CLIENT_CERT_HEADER must be a header name such as X-Client-Cert, not {header!r}")
    if header is not None and header.lower().replace("_", "-") in ("authorization", "cookie", "dpop", "host"):
        raise ConfigError(f"CLIENT_CERT_HEADER cannot be {header}")
    ca_file = read.text("MTLS_CA_FILE") or None
    if ca_file is not None:
        _check_ca_file(ca_file)
    base_url = read.text("MTLS_BASE_URL").rstrip("/") or None
    if base_url is not None and not (base_url.startswith("https://") and base_url.isprintable() and " " not in base_url):
        raise ConfigError("MTLS_BASE_URL must be an https URL")
    if header is None and (ca_file or base_url):
        raise ConfigError("MTLS_CA_FILE and MTLS_BASE_URL need CLIENT_CERT_HEADER (where the proxy puts the "
                          "client certificate)")
    return {"client_cert_header": header, "mtls_ca_file": ca_file, "mtls_base_url": base_url}


def _read_backchannel_logout(read: _Reader) -> dict[str, Any]:
    """Sending logout tokens (OpenID Connect Back-Channel Logout 1.0): timeout, retries and polling."""
    retry_initial = read.integer("BACKCHANNEL_LOGOUT_RETRY_INITIAL_SECONDS", 2, minimum=1)
    retry_max = read.integer("BACKCHANNEL_LOGOUT_RETRY_MAX_SECONDS", 300, minimum=1)
    if retry_max < retry_initial:
        raise ConfigError("BACKCHANNEL_LOGOUT_RETRY_MAX_SECONDS must be at least BACKCHANNEL_LOGOUT_RETRY_INITIAL_SECONDS")
    timeout = read.seconds("BACKCHANNEL_LOGOUT_TIMEOUT", 5.0, minimum=0.1)
    if timeout > 60:
        raise ConfigError("BACKCHANNEL_LOGOUT_TIMEOUT must be at most 60 seconds (a worker thread waits that long)")
    return {
        "backchannel_logout_timeout": timeout,
        "backchannel_logout_retry_window": read.integer("BACKCHANNEL_LOGOUT_RETRY_WINDOW", 3600, minimum=0),
        "backchannel_logout_retry_initial_seconds": retry_initial,
        "backchannel_logout_retry_max_seconds": retry_max,
        "backchannel_logout_poll_seconds": read.seconds("BACKCHANNEL_LOGOUT_POLL_SECONDS", 2.0, minimum=0.05),
    }


def _read_device(read: _Reader) -> dict[str, Any]:
    """The device authorization grant (RFC 8628): how long a code lives, how often a device polls,
    and how many wrong user codes one client address may enter."""
    lifetime = read.integer("DEVICE_CODE_LIFETIME", 600, minimum=60)
    if lifetime > 3600:
        raise ConfigError("DEVICE_CODE_LIFETIME must be at most 3600 seconds (a user code is short: RFC 8628 §5.1)")
    return {
        "device_code_lifetime": lifetime,
        "device_poll_interval": read.integer("DEVICE_POLL_INTERVAL", 5, minimum=1),
        "device_user_code_rate_limit": read.rate_limit("DEVICE_USER_CODE_RATE_LIMIT", "10/minute;50/hour"),
    }


def _read_login(read: _Reader) -> dict[str, Any]:
    """Login, its rate limits, password hashing and the browser session."""
    # 2**8 is the least werkzeug's scrypt memory bound allows; below the default is for tests only.
    password_cost = read.integer("PASSWORD_HASH_COST", DEFAULT_PASSWORD_HASH_COST, minimum=2**8)
    if password_cost & (password_cost - 1):
        raise ConfigError("PASSWORD_HASH_COST must be a power of two (scrypt's N)")
    return {
        "login_session_lifetime": read.integer("LOGIN_SESSION_LIFETIME", 8 * 3600, minimum=60),
        "login_rate_limit_per_account": read.rate_limit("LOGIN_RATE_LIMIT_PER_ACCOUNT", "100/hour", optional=True),
        "login_rate_limit_per_address": read.rate_limit("LOGIN_RATE_LIMIT_PER_ADDRESS", "20/minute;100/hour"),
        "login_rate_limit_per_address_and_account": read.rate_limit("LOGIN_RATE_LIMIT_PER_ADDRESS_AND_ACCOUNT",
                                                                    "5/minute;20/hour"),
        "ratelimit_storage_uri": read.text("RATELIMIT_STORAGE_URI", "memory://"),
        "password_hash_cost": password_cost,
        "session_cookie_name": read.text("SESSION_COOKIE_NAME", "op_session"),
        "csrf_time_limit": read.integer("CSRF_TIME_LIMIT", 3600, minimum=60),
        "max_request_bytes": read.integer("MAX_REQUEST_BYTES", 64 * 1024, minimum=4096),
    }


def _read_administration(read: _Reader) -> dict[str, Any]:
    """The admin API, the proxy in front and the logs."""
    admin_scope = read.text("ADMIN_SCOPE", "admin").strip()
    if " " in admin_scope:
        raise ConfigError("ADMIN_SCOPE must be a single scope token")
    admin_keys = read.items("ADMIN_API_KEYS")
    for position, key in enumerate(admin_keys, start=1):
        if len(key) < 32:
            raise ConfigError(f"ADMIN_API_KEYS key #{position} is shorter than 32 characters")
    forwarded = read.items("FORWARDED_ALLOW_IPS") or DEFAULT_FORWARDED_ALLOW_IPS
    try:
        parse_networks(forwarded)
    except ValueError:
        raise ConfigError("FORWARDED_ALLOW_IPS must list IP addresses or networks") from None
    log_format = read.text("LOG_FORMAT", DEFAULT_LOG_FORMAT).lower()
    if log_format not in ("json", "text"):
        raise ConfigError("LOG_FORMAT must be json or text")
    log_level = read.text("LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    # METRICS_BIND unset: gunicorn.conf.py serves them on its default listener (and a process outside
    # gunicorn keeps them in its own registry); set empty with no multiprocess directory, nothing reads them.
    metrics_served = read.serving("METRICS_BIND") != "" or bool(read.serving("PROMETHEUS_MULTIPROC_DIR"))
    return {
        "admin_api_keys": admin_keys,
        "admin_scope": admin_scope,
        "trusted_proxy_hops": read.integer("TRUSTED_PROXY_HOPS", 0),
        "forwarded_allow_ips": forwarded,
        "log_format": log_format,
        "log_level": log_level,
        "metrics": metrics_served,
    }


def _read_pages(read: _Reader) -> dict[str, Any]:
    """The pages and their theme (README.md, "Pages and themes")."""
    theme_dir = read.text("THEME_DIR") or None
    if theme_dir is not None and not os.path.isdir(theme_dir):
        raise ConfigError(f"THEME_DIR {theme_dir!r} is not a directory")
    primary_color = read.text("PRIMARY_COLOR", DEFAULT_PRIMARY_COLOR).strip().lower()
    if not _HEX_COLOUR.fullmatch(primary_color):
        raise ConfigError(f"PRIMARY_COLOR must be a hex colour such as #1d4ed8, not {primary_color!r}")
    logo_url = read.text("SERVICE_LOGO_URL").strip()
    if logo_url and not (logo_url.startswith(("https://", "/")) and logo_url.isprintable() and " " not in logo_url
                         and '"' not in logo_url and not logo_url.startswith("//")):
        raise ConfigError("SERVICE_LOGO_URL must be an https URL or a path on this provider (/...)")
    languages = tuple(dict.fromkeys(code.replace("-", "_") for code in read.items("LANGUAGES"))) or DEFAULT_LANGUAGES
    default_language = read.text("DEFAULT_LANGUAGE", languages[0]).replace("-", "_")
    if default_language not in languages:
        raise ConfigError(f"DEFAULT_LANGUAGE {default_language!r} is not one of LANGUAGES ({', '.join(languages)})")
    return {
        "service_name": read.text("SERVICE_NAME", DEFAULT_SERVICE_NAME).strip()[:100],
        "service_logo_url": logo_url,
        "theme_dir": os.path.abspath(theme_dir) if theme_dir else None,
        "primary_color": primary_color,
        "languages": languages,
        "default_language": default_language,
        "static_max_age": read.integer("STATIC_MAX_AGE", 365 * 24 * 3600),
    }


def flask_config(settings: Settings) -> dict[str, Any]:
    """What Flask, Flask-SQLAlchemy and Flask-WTF read from ``app.config``."""
    from oidc.hashing import derive_key  # (here, not above: reading settings loads no cryptography)

    cookie = ("__Host-" if settings.https else "") + settings.session_cookie_name
    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": settings.database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(settings.database_url),
        # Browser session: never readable by scripts, not sent on cross-site
        # subrequests, and only over TLS when the issuer is https.
        # Over TLS the name gets the __Host- prefix (RFC 6265bis §4.1.3.2): the browser then keeps it
        # only if it is Secure, for Path=/ and without Domain, so no subdomain can set or shadow it.
        # The login cookie (a login session's sid) is named by SESSION_COOKIE_NAME; the interaction
        # binding's and Flask's session (the pages' state) are named after it (oidc.web.session).
        "LOGIN_COOKIE_NAME": cookie,
        "BINDING_COOKIE_NAME": cookie + "_binding",
        "SESSION_COOKIE_NAME": cookie + "_state",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": settings.https,
        "SESSION_COOKIE_PATH": "/",
        "SESSION_COOKIE_DOMAIN": None,
        "PERMANENT_SESSION_LIFETIME": settings.login_session_lifetime,
        # The login session row has a fixed lifetime (never extended by use), so the
        # cookie is set when it changes only: re-signing it on every request bought nothing.
        "SESSION_REFRESH_EACH_REQUEST": False,
        "WTF_CSRF_TIME_LIMIT": settings.csrf_time_limit,
        # Flask-WTF's referrer check runs only under CSRFProtect, which this app does not use;
        # the same check on our own forms is oidc.web.origin (SameSite=Lax is no origin check:
        # the cookie still goes with top-level cross-site navigations).  True, so that it stays
        # strict should CSRFProtect ever be enabled.
        "WTF_CSRF_SSL_STRICT": True,
        # WTForms' own validator messages are never shown (the pages say what went wrong in
        # their own, translated words): loading its message catalogue per request bought nothing.
        "WTF_I18N_ENABLED": False,
        # Request bodies of the protocol endpoints are small; refuse large ones early.
        "MAX_CONTENT_LENGTH": settings.max_request_bytes,
        "MAX_FORM_MEMORY_SIZE": settings.max_request_bytes,
    }
    if settings.secrets_system and all(len(secret) >= 32 for secret in settings.secrets_system):
        # Flask signs the session cookie with a key derived from the system
        # secrets (never a default): the first signs, the others still verify.
        derived = [derive_key(secret, b"flask session").hex() for secret in settings.secrets_system]
        config["SECRET_KEY"] = derived[0]
        config["SECRET_KEY_FALLBACKS"] = derived[1:]
    return config


def engine_options(database_url: str) -> dict[str, Any]:
    """Connection pool settings: never hang on a dead server.

    A PostgreSQL connection that sat idle can have died unseen (a restart, a
    proxy's idle timeout): :func:`oidc.db.ping_idle_connections` pings those
    before use.  One that dies while in use fails its request with a 503 and
    SQLAlchemy replaces the whole pool.
    """
    # hide_parameters: SQL errors (and so tracebacks and logs) never carry the statement's
    # parameters, which can be password hashes, emails or token hashes.
    options: dict[str, Any] = {"hide_parameters": True}
    if database_url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 5}
        options["pool_recycle"] = 1800
    return options
