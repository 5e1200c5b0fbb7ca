"""Configuration from environment variables.

Every setting is read here, once, and documented in README.md with its default.
Security choices have no silent defaults: a missing system secret, an HSM that
is enabled without a library or PIN, or a pre-publication period shorter than
the JWKS cache lifetime are start-up errors that name the variable.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from keys.algorithms import get_algorithm
from keys.errors import UnsupportedAlgorithm
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return number


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from None
    if not number >= minimum:  # also refuses NaN
        raise ConfigError(f"{name} must be at least {minimum:g}")
    return number


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]


def _alg(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    try:
        get_algorithm(value)
    except UnsupportedAlgorithm as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def load_settings(env: Mapping[str, str] | None = None, *, instance_path: str) -> dict[str, Any]:
    """Flask config values from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    settings: dict[str, Any] = {}

    issuer = env.get("OIDC_ISSUER", "http://localhost:8000").rstrip("/")
    if not issuer.startswith(("https://", "http://")):
        raise ConfigError("OIDC_ISSUER must be an http(s) URL")
    settings["OIDC_ISSUER"] = issuer

    database_url = env.get("DATABASE_URL") or "sqlite:///" + os.path.join(instance_path, "oidc.sqlite3")
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://"):]
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    settings["SQLALCHEMY_DATABASE_URI"] = database_url

    # Kept as given; keys.sealing.Sealer validates (missing or short is an error).
    settings["SECRETS_SYSTEM"] = env.get("SECRETS_SYSTEM", "")

    hsm_enabled = _bool(env, "HSM_ENABLED", False)
    settings["HSM_ENABLED"] = hsm_enabled
    settings["HSM_LIBRARY"] = env.get("HSM_LIBRARY", "")
    settings["HSM_TOKEN_LABEL"] = env.get("HSM_TOKEN_LABEL", "") or None
    settings["HSM_SLOT"] = _int(env, "HSM_SLOT", None)
    settings["HSM_PIN"] = env.get("HSM_PIN", "")
    settings["HSM_KEY_SET_PREFIX"] = env.get("HSM_KEY_SET_PREFIX", "")
    settings["HSM_ONLY_KEY_SETS"] = _list(env, "HSM_ONLY_KEY_SETS")
    settings["HSM_DESTROY_RETIRED_KEYS"] = _bool(env, "HSM_DESTROY_RETIRED_KEYS", False)
    # Resilience and adoption (README "When the HSM fails"):
    settings["HSM_GENERATE_KEYS"] = _bool(env, "HSM_GENERATE_KEYS", True)
    settings["HSM_STARTUP_WAIT_SECONDS"] = _seconds(env, "HSM_STARTUP_WAIT_SECONDS", 0.0)
    settings["HSM_RETRY_INITIAL_SECONDS"] = _seconds(env, "HSM_RETRY_INITIAL_SECONDS", 0.5, minimum=0.05)
    settings["HSM_RETRY_MAX_SECONDS"] = _seconds(env, "HSM_RETRY_MAX_SECONDS", 5.0, minimum=0.05)
    if settings["HSM_RETRY_MAX_SECONDS"] < settings["HSM_RETRY_INITIAL_SECONDS"]:
        raise ConfigError("HSM_RETRY_MAX_SECONDS must be at least HSM_RETRY_INITIAL_SECONDS")
    settings["HSM_READINESS_CACHE_SECONDS"] = _seconds(env, "HSM_READINESS_CACHE_SECONDS", 5.0)
    settings["HSM_ALLOW_EXTRACTABLE_KEYS"] = _bool(env, "HSM_ALLOW_EXTRACTABLE_KEYS", False)
    if hsm_enabled:
        if not settings["HSM_LIBRARY"]:
            raise ConfigError("HSM_ENABLED is true but HSM_LIBRARY is not set")
        if not settings["HSM_PIN"]:
            raise ConfigError("HSM_ENABLED is true but HSM_PIN is not set")
        if settings["HSM_TOKEN_LABEL"] is None and settings["HSM_SLOT"] is None:
            raise ConfigError("HSM_ENABLED is true but neither HSM_TOKEN_LABEL nor HSM_SLOT is set")
    elif settings["HSM_ONLY_KEY_SETS"]:
        raise ConfigError("HSM_ONLY_KEY_SETS names key sets but HSM_ENABLED is false")

    settings["ID_TOKEN_SIGNING_ALG"] = _alg(env, "ID_TOKEN_SIGNING_ALG", "RS256")
    settings["ACCESS_TOKEN_SIGNING_ALG"] = _alg(env, "ACCESS_TOKEN_SIGNING_ALG", "ES256")
    settings["RSA_KEY_SIZE"] = _int(env, "RSA_KEY_SIZE", 2048, minimum=2048)

    settings["ACCESS_TOKEN_LIFETIME"] = _int(env, "ACCESS_TOKEN_LIFETIME", 3600, minimum=1)
    settings["ID_TOKEN_LIFETIME"] = _int(env, "ID_TOKEN_LIFETIME", 3600, minimum=1)
    settings["JWKS_MAX_AGE"] = _int(env, "JWKS_MAX_AGE", 300)
    settings["KEY_PREPUBLICATION_SECONDS"] = _int(env, "KEY_PREPUBLICATION_SECONDS", 2 * settings["JWKS_MAX_AGE"])
    if settings["KEY_PREPUBLICATION_SECONDS"] <= settings["JWKS_MAX_AGE"]:
        raise ConfigError(
            "KEY_PREPUBLICATION_SECONDS must be longer than JWKS_MAX_AGE, or resource servers "
            "with a cached JWKS would meet tokens signed by a key they do not know"
        )
    longest_token = max(settings["ACCESS_TOKEN_LIFETIME"], settings["ID_TOKEN_LIFETIME"])
    settings["KEY_RETENTION_SECONDS"] = _int(
        env, "KEY_RETENTION_SECONDS", longest_token + settings["JWKS_MAX_AGE"]
    )
    if settings["KEY_RETENTION_SECONDS"] < longest_token:
        raise ConfigError(
            "KEY_RETENTION_SECONDS must be at least the longest token lifetime, or tokens "
            "would outlive the key that verifies them"
        )
    settings["KEYS_REFRESH_SECONDS"] = _int(env, "KEYS_REFRESH_SECONDS", 10, minimum=1)

    settings["ADMIN_API_KEYS"] = _list(env, "ADMIN_API_KEYS")
    for position, key in enumerate(settings["ADMIN_API_KEYS"], start=1):
        if len(key) < 32:
            raise ConfigError(f"ADMIN_API_KEYS key #{position} is shorter than 32 characters")
    settings["TRUSTED_PROXY_HOPS"] = _int(env, "TRUSTED_PROXY_HOPS", 0)
    # The same variable tells gunicorn (gunicorn.conf.py) whose forwarded headers to accept.
    settings["FORWARDED_ALLOW_IPS"] = _list(env, "FORWARDED_ALLOW_IPS") or ["127.0.0.1", "::1"]
    try:
        from oidc.proxy import parse_networks

        parse_networks(settings["FORWARDED_ALLOW_IPS"])
    except ValueError:
        raise ConfigError("FORWARDED_ALLOW_IPS must list IP addresses or networks") from None
    settings["LOG_FORMAT"] = (env.get("LOG_FORMAT") or "json").lower()
    if settings["LOG_FORMAT"] not in ("json", "text"):
        raise ConfigError("LOG_FORMAT must be json or text")
    settings["LOG_LEVEL"] = (env.get("LOG_LEVEL") or "INFO").upper()
    if settings["LOG_LEVEL"] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    settings.update(load_protocol_settings(env, settings))
    return settings


# -- OpenID Connect / OAuth 2.0 protocol settings ------------------------------
# Documented in docs/configuration-protocol.md (variable, default, meaning).

#: Scopes whose claims this provider knows (OIDC Core §5.4) plus offline_access.
STANDARD_SCOPES = ("openid", "profile", "email", "offline_access")


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip()
    try:
        from limits import parse_many

        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate limit such as '5/minute;20/hour', not {value!r}") from None
    return value


def load_protocol_settings(env: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of the authorization server, login pages and token lifetimes."""
    protocol: dict[str, Any] = {}
    issuer = settings["OIDC_ISSUER"]
    protocol["AUTHORIZATION_CODE_LIFETIME"] = _int(env, "AUTHORIZATION_CODE_LIFETIME", 60, minimum=1)
    protocol["REFRESH_TOKEN_LIFETIME"] = _int(env, "REFRESH_TOKEN_LIFETIME", 30 * 24 * 3600, minimum=1)
    protocol["LOGIN_SESSION_LIFETIME"] = _int(env, "LOGIN_SESSION_LIFETIME", 8 * 3600, minimum=60)
    audience = env.get("ACCESS_TOKEN_DEFAULT_AUDIENCE", "").strip() or issuer
    protocol["ACCESS_TOKEN_DEFAULT_AUDIENCE"] = audience

    scopes = (env.get("OIDC_SCOPES_SUPPORTED") or " ".join(STANDARD_SCOPES)).replace(",", " ").split()
    if "openid" not in scopes:
        raise ConfigError("OIDC_SCOPES_SUPPORTED must include 'openid'")
    protocol["OIDC_SCOPES_SUPPORTED"] = list(dict.fromkeys(scopes))
    admin_scope = (env.get("ADMIN_SCOPE") or "admin").strip()
    if " " in admin_scope:
        raise ConfigError("ADMIN_SCOPE must be a single scope token")
    protocol["ADMIN_SCOPE"] = admin_scope

    protocol["LOGIN_RATE_LIMIT_PER_ACCOUNT"] = _rate_limit(env, "LOGIN_RATE_LIMIT_PER_ACCOUNT", "5/minute;20/hour")
    protocol["LOGIN_RATE_LIMIT_PER_ADDRESS"] = _rate_limit(env, "LOGIN_RATE_LIMIT_PER_ADDRESS", "20/minute;100/hour")
    protocol["RATELIMIT_STORAGE_URI"] = env.get("RATELIMIT_STORAGE_URI") or "memory://"
    protocol["CLIENT_ASSERTION_LEEWAY"] = _int(env, "CLIENT_ASSERTION_LEEWAY", 60)
    # How long a process may authenticate clients from memory (oidc/oauth2/client_cache.py).
    protocol["CLIENT_CACHE_SECONDS"] = _int(env, "CLIENT_CACHE_SECONDS", 5, minimum=0)
    protocol["CLIENT_ASSERTION_MAX_LIFETIME"] = _int(env, "CLIENT_ASSERTION_MAX_LIFETIME", 300, minimum=1)

    # Browser session: the cookie is never readable by scripts, not sent on
    # cross-site subrequests, and only sent over TLS when the issuer is https.
    protocol["SESSION_COOKIE_NAME"] = env.get("SESSION_COOKIE_NAME") or "op_session"
    protocol["SESSION_COOKIE_HTTPONLY"] = True
    protocol["SESSION_COOKIE_SAMESITE"] = "Lax"
    protocol["SESSION_COOKIE_SECURE"] = issuer.startswith("https://")
    protocol["PERMANENT_SESSION_LIFETIME"] = protocol["LOGIN_SESSION_LIFETIME"]
    protocol["WTF_CSRF_TIME_LIMIT"] = _int(env, "CSRF_TIME_LIMIT", 3600, minimum=60)
    protocol["WTF_CSRF_SSL_STRICT"] = False  # the consent form is posted back to us; Origin checked by SameSite
    # Request bodies of the protocol endpoints are small; refuse large ones early.
    protocol["MAX_CONTENT_LENGTH"] = _int(env, "MAX_REQUEST_BYTES", 64 * 1024, minimum=4096)
    protocol["MAX_FORM_MEMORY_SIZE"] = protocol["MAX_CONTENT_LENGTH"]

    secrets = [part.strip() for part in settings["SECRETS_SYSTEM"].split(",") if part.strip()]
    if secrets and all(len(secret) >= 32 for secret in secrets):
        # Flask signs the session cookie with a key derived from the system
        # secrets (never a default): the first signs, the others still verify.
        from oidc.security import derive_key

        derived = [derive_key(secret, b"flask session").hex() for secret in secrets]
        protocol["SECRET_KEY"] = derived[0]
        protocol["SECRET_KEY_FALLBACKS"] = derived[1:]
    return protocol


def key_set_algorithms(config: Mapping[str, Any]) -> dict[str, str]:
    """The configured algorithm of each required key set."""
    return {ID_TOKEN_SET: config["ID_TOKEN_SIGNING_ALG"], ACCESS_TOKEN_SET: config["ACCESS_TOKEN_SIGNING_ALG"]}
