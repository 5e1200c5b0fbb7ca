"""Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).

One pipeline per request, each step written once:

1. **who may register**: an operator's initial access token (one use taken atomically, the
   first statement of the transaction), or nobody without one unless ``REGISTRATION_OPEN``;
2. **the software statement** (RFC 7591 §2.3), when present or required: a JWS from an issuer
   of ``REGISTRATION_SOFTWARE_STATEMENT_ISSUERS``, with an allowed ``alg``, verified and not
   expired; its claims win over the request's;
3. **the policy** of the initial access token, and the statement's claims: what they fix wins,
   what they limit (grant types, scope, authentication methods) is checked;
4. **the metadata**, mapped through :data:`~oidc.accounts.clients.REGISTRABLE_METADATA` and
   checked by :func:`~oidc.accounts.clients.build_client`: the same checks as the CLI and the
   admin API, never a second validator.

The client then gets a registration access token (random, stored as a keyed hash, rotated on
every update) for its configuration endpoint, ``/register/<client_id>``.  A failure raises
:class:`RegistrationError` with RFC 7591 §3.2.2's error (or RFC 6750's ``invalid_token``, 401),
and the caller rolls back: nothing is written, not even the use of the initial access token.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc7591.errors import (
    InvalidClientMetadataError,
    InvalidRedirectURIError,
    InvalidSoftwareStatementError,
    UnapprovedSoftwareStatementError,
)
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from oidc import hashing, queries, urls
from oidc.accounts.clients import (
    REGISTRABLE_METADATA,
    ClientError,
    build_client,
    check_informational,
    check_response_types,
    replace_metadata,
)
from oidc.db import db
from oidc.models import Client, InitialAccessToken
from oidc.oauth2.client_keys import ClientKeyError, remote_key_set
from oidc.observability import audit
from oidc.queries import find_client
from oidc.state import current_state
from oidc.vocabulary import AUTH_METHODS, GRANT_TYPES

log = logging.getLogger(__name__)

INVALID_CLIENT_METADATA = InvalidClientMetadataError.error
INVALID_REDIRECT_URI = InvalidRedirectURIError.error
INVALID_SOFTWARE_STATEMENT = InvalidSoftwareStatementError.error
UNAPPROVED_SOFTWARE_STATEMENT = UnapprovedSoftwareStatementError.error
INVALID_TOKEN = "invalid_token"  # RFC 6750 §3.1

#: Longest initial or registration access token looked up (ours are 43 characters).
MAX_TOKEN_LENGTH = 512
#: Longest software statement read.
MAX_STATEMENT_LENGTH = 16 * 1024
#: Seconds of clock skew allowed on a software statement's exp, nbf and iat.
STATEMENT_LEEWAY = 60
#: Claims of a software statement about the statement itself, not client metadata.
_JWT_CLAIMS = frozenset(("iss", "sub", "aud", "exp", "nbf", "iat", "jti"))
#: RFC 7591 §2: the defaults of a registration request (the CLI's and admin API's differ).
DEFAULT_REGISTERED_GRANT_TYPES = ["authorization_code"]
#: The limits a policy may set (and "fixed": metadata it sets whatever the request says).
POLICY_LIMITS = ("grant_types", "scope", "token_endpoint_auth_methods")
#: Metadata of the response that a client's update request may repeat, and is ignored (RFC 7592 §2.2).
_SERVER_FIELDS = ("client_id", "client_secret", "registration_access_token", "registration_client_uri",
                  "client_secret_expires_at", "client_id_issued_at")


class RegistrationError(Exception):
    """A refused registration or management request: its RFC error code, a description, the status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class PolicyError(ValueError):
    """An operator's initial access token policy is invalid; the message names the field."""


def _metadata_error(description: str) -> RegistrationError:
    return RegistrationError(INVALID_CLIENT_METADATA, description)


def _token_error(description: str) -> RegistrationError:
    return RegistrationError(INVALID_TOKEN, description, 401)


# -- the pipeline -------------------------------------------------------------------------------


def register(body: Any, initial_token: str | None) -> dict[str, Any]:
    """Register a client from an RFC 7591 request ``body``; the registration response (not yet committed)."""
    state = current_state()
    policy = _initial_token_policy(initial_token)
    if not isinstance(body, dict):
        raise _metadata_error("the request body must be a JSON object")
    metadata, policy = _with_software_statement(body, policy, required=state.settings.require_software_statement)
    arguments, informational = _arguments(apply_policy(metadata, policy))
    client, secret = _built(arguments)
    token = hashing.random_token(32)
    client.registration_token_hash = state.hasher(hashing.REGISTRATION_ACCESS_TOKEN).hash(token)
    client.registration_policy = json.dumps(policy, sort_keys=True)
    client.registration_metadata = json.dumps(informational, sort_keys=True)
    queries.add(client)
    db.session.flush()
    return registration_response(client, token, secret)


def read_registration(client_id: str, token: str | None) -> dict[str, Any]:
    """RFC 7592 §2.1: the client's current registration (its token is not rotated by a read)."""
    client = _managed_client(client_id, token)
    if not current_state().hasher(hashing.REGISTRATION_ACCESS_TOKEN).verify(token or "",
                                                                             client.registration_token_hash):
        raise _token_error("the registration access token is not valid")
    return registration_response(client, str(token), None)


def update_registration(client_id: str, token: str | None, body: Any) -> dict[str, Any]:
    """RFC 7592 §2.2: replace the client's metadata; a new registration access token (not yet committed:
    the caller commits, then forgets the client from the client cache)."""
    state = current_state()
    hasher = state.hasher(hashing.REGISTRATION_ACCESS_TOKEN)
    new_token = hashing.random_token(32)
    _claim_registration_token(client_id, token, hasher.hash(new_token))
    client = _managed_client(client_id, new_token)
    if not isinstance(body, dict):
        raise _metadata_error("the request body must be a JSON object")
    if body.get("client_id") != client.client_id:
        raise _metadata_error("client_id: must be the client's own (RFC 7592 §2.2)")
    given_secret = body.get("client_secret")
    if given_secret is not None and not (isinstance(given_secret, str) and state.hasher(
            hashing.CLIENT_SECRET).verify(given_secret, client.secret_hash)):
        raise _metadata_error("client_secret: not the client's current secret")
    stored_policy = json.loads(client.registration_policy or "{}")
    request = {name: value for name, value in body.items() if name not in _SERVER_FIELDS}
    metadata, policy = _with_software_statement(request, stored_policy, required=False)
    arguments, informational = _arguments(apply_policy(metadata, policy))
    # The statement registered with stays (its claims are fixed in the stored policy, not verified
    # again: it may have expired since) unless a new one comes.
    stored_statement = json.loads(client.registration_metadata or "{}").get("software_statement")
    if stored_statement is not None:
        informational.setdefault("software_statement", stored_statement)
    try:
        secret = replace_metadata(client, **arguments)
    except ClientError as exc:
        raise _client_error(exc) from None
    client.registration_policy = json.dumps(policy, sort_keys=True)
    client.registration_metadata = json.dumps(informational, sort_keys=True)
    db.session.flush()
    return registration_response(client, new_token, secret)


def delete_registration(client_id: str, token: str | None) -> Client:
    """RFC 7592 §2.3: the client whose registration token this is, its token revoked; the caller deletes it."""
    _claim_registration_token(client_id, token, None)
    client = find_client(client_id, include_disabled=True)
    if client is None:
        raise _token_error("the registration access token is not valid")
    return client


def registration_response(client: Client, token: str, secret: str | None) -> dict[str, Any]:
    """RFC 7591 §3.2.1 / RFC 7592 §3: the client's metadata, its identifiers and its registration token."""
    settings = current_state().settings
    response: dict[str, Any] = {"client_id": client.client_id, "client_id_issued_at": client.created_at}
    if secret is not None:
        response["client_secret"] = secret
    if client.secret_hash is not None:
        response["client_secret_expires_at"] = 0  # never
    for name, (attribute, _) in REGISTRABLE_METADATA.items():
        value = getattr(client, attribute)
        if attribute == "jwks" and value is not None:
            value = json.loads(value)
        if value is not None and value != []:
            response[name] = value
    response["response_types"] = ["code"] if "authorization_code" in client.grant_types else []
    response.update(json.loads(client.registration_metadata or "{}"))
    response["registration_access_token"] = token
    response["registration_client_uri"] = registration_client_uri(settings.issuer, client.client_id)
    return response


def registration_client_uri(issuer: str, client_id: str) -> str:
    return urls.absolute(issuer, f"{urls.REGISTER}/{client_id}")


# -- the steps ------------------------------------------------------------------------------------


def _checked_token(token: str | None) -> str | None:
    return token if token and len(token) <= MAX_TOKEN_LENGTH and token.isascii() and token.isprintable() else None


def _initial_token_policy(initial_token: str | None) -> dict[str, Any]:
    """The policy of the initial access token, one of its uses taken; {} for open registration."""
    state = current_state()
    if initial_token is None:
        if state.settings.registration_open:
            return {}
        raise _token_error("registration needs an initial access token")
    token = _checked_token(initial_token)
    hashes = state.hasher(hashing.INITIAL_ACCESS_TOKEN).candidates(token) if token else []
    claimed = queries.claim_initial_token(hashes, state.clock.now()) if hashes else None
    if claimed is None:
        raise _token_error("the initial access token is unknown, expired, revoked or used up")
    policy: dict[str, Any] = json.loads(claimed[1])
    return policy


def _claim_registration_token(client_id: str, token: str | None, new_hash: str | None) -> None:
    checked = _checked_token(token)
    hashes = current_state().hasher(hashing.REGISTRATION_ACCESS_TOKEN).candidates(checked) if checked else []
    if not hashes or not queries.rotate_registration_token(client_id[:64], hashes, new_hash):
        raise _token_error("the registration access token is not valid")


def _managed_client(client_id: str, token: str | None) -> Client:
    """The enabled client of ``client_id`` that was registered here (RFC 7592 §2: else 401)."""
    client = find_client(client_id, include_disabled=True)
    if client is None or client.disabled or client.registration_token_hash is None or not token:
        raise _token_error("the registration access token is not valid")
    return client


def _with_software_statement(body: dict[str, Any], policy: dict[str, Any], *,
                             required: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's metadata with the statement's claims over it, and the policy with them fixed."""
    statement = body.get("software_statement")
    if statement is None:
        if required:
            raise RegistrationError(INVALID_SOFTWARE_STATEMENT, "a software statement is required")
        return dict(body), policy
    claims = verify_software_statement(statement)
    statement_metadata = {name: value for name, value in claims.items() if name not in _JWT_CLAIMS}
    fixed = {**policy.get("fixed", {}), **statement_metadata}
    metadata = {**body, **statement_metadata, "software_statement": statement}
    return metadata, {**policy, "fixed": fixed}


def verify_software_statement(statement: Any) -> dict[str, Any]:
    """RFC 7591 §2.3: the claims of a software statement signed by a trusted issuer, with an allowed alg."""
    settings = current_state().settings
    if not isinstance(statement, str) or len(statement) > MAX_STATEMENT_LENGTH or statement.count(".") != 2:
        raise RegistrationError(INVALID_SOFTWARE_STATEMENT, "the software statement is not a compact JWS")
    try:
        extracted = jws.extract_compact(statement.encode("ascii"))
        header, claims = extracted.headers(), json.loads(extracted.payload)
    except (JoseError, ValueError, TypeError, KeyError, RecursionError, UnicodeError):
        raise RegistrationError(INVALID_SOFTWARE_STATEMENT, "the software statement cannot be read") from None
    alg = header.get("alg")
    if not isinstance(claims, dict) or alg not in settings.software_statement_algs:
        raise RegistrationError(INVALID_SOFTWARE_STATEMENT,
                                f"the software statement's alg must be one of {', '.join(settings.software_statement_algs)}")
    issuer = claims.get("iss")
    source = dict(settings.software_statement_issuers).get(issuer) if isinstance(issuer, str) else None
    if source is None:
        raise RegistrationError(UNAPPROVED_SOFTWARE_STATEMENT, "the software statement's issuer is not trusted")
    kid = header.get("kid")
    try:
        token = jwt.decode(statement, _issuer_keys(source, kid if isinstance(kid, str) else None), algorithms=[alg])
        jwt.JWTClaimsRegistry(leeway=STATEMENT_LEEWAY, now=current_state().clock.now(),
                              iss={"essential": True, "value": claims["iss"]}).validate(token.claims)
    except ClientKeyError:
        raise RegistrationError(UNAPPROVED_SOFTWARE_STATEMENT, "the issuer's keys cannot be fetched") from None
    except (JoseError, ValueError, TypeError, KeyError, AttributeError):
        raise RegistrationError(INVALID_SOFTWARE_STATEMENT,
                                "the software statement does not verify, or has expired") from None
    return dict(token.claims)


def _issuer_keys(source: str, kid: str | None) -> KeySet:
    """A trusted issuer's keys: fetched and cached (an https URL), or read once (a file)."""
    if source.startswith("https://"):
        return remote_key_set(source, kid=kid)
    files: dict[str, KeySet] = current_state().caches.setdefault("software statement issuers", {})
    if source not in files:
        try:
            with open(source, encoding="utf-8") as handle:
                files[source] = KeySet.import_key_set(json.load(handle))
        except (OSError, ValueError, TypeError, JoseError) as exc:
            log.error("the software statement issuer's JWK Set %s cannot be read: %s", source, type(exc).__name__)
            raise ClientKeyError(f"{source} cannot be read") from None
    return files[source]


def apply_policy(metadata: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    """The metadata with what ``policy`` fixes set, and what it limits checked (or defaulted to the limit)."""
    metadata = {**metadata, **policy.get("fixed", {})}
    grants = policy.get("grant_types")
    if grants is not None:
        requested = metadata.get("grant_types") or grants
        if not isinstance(requested, list) or not set(requested) <= set(grants):
            raise _metadata_error(f"grant_types: this registration allows only {', '.join(grants)}")
        metadata["grant_types"] = requested
    scope = policy.get("scope")
    if scope is not None:
        requested_scope = metadata.get("scope") or scope
        if not isinstance(requested_scope, str) or not set(requested_scope.split()) <= set(scope.split()):
            raise _metadata_error(f"scope: this registration allows only {scope}")
        metadata["scope"] = requested_scope
    methods = policy.get("token_endpoint_auth_methods")
    if methods:
        method = metadata.get("token_endpoint_auth_method") or methods[0]
        if method not in methods:
            raise _metadata_error(f"token_endpoint_auth_method: this registration allows only {', '.join(methods)}")
        metadata["token_endpoint_auth_method"] = method
    return metadata


def _arguments(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The :func:`build_client` arguments of RFC 7591 metadata (JSON types checked), and the
    informational metadata kept as registered; unknown metadata is ignored (RFC 7591 §2)."""
    arguments: dict[str, Any] = {}
    for name, (argument, json_type) in REGISTRABLE_METADATA.items():
        value = metadata.get(name)
        if value is None:
            continue
        if not isinstance(value, json_type) or (json_type is not bool and isinstance(value, bool)):
            raise _metadata_error(f"{name}: must be a JSON {_JSON_NAMES[json_type]}")
        arguments[argument] = value
    arguments.setdefault("grant_types", list(DEFAULT_REGISTERED_GRANT_TYPES))
    arguments.setdefault("name", _default_name(arguments))
    try:
        check_response_types(metadata.get("response_types"), arguments["grant_types"])
        informational = check_informational(metadata)
    except ClientError as exc:
        raise _client_error(exc) from None
    return arguments, informational


_JSON_NAMES = {str: "string", list: "array", dict: "object", bool: "boolean"}


def _default_name(arguments: dict[str, Any]) -> str:
    """A name for a client that registered none: its first redirect URI's host (shown on consent)."""
    uris = arguments.get("redirect_uris")
    host = urlsplit(uris[0]).hostname if isinstance(uris, list) and uris and isinstance(uris[0], str) else None
    return host or "Unnamed client"


def _built(arguments: dict[str, Any]) -> tuple[Client, str | None]:
    try:
        return build_client(**arguments)
    except ClientError as exc:
        raise _client_error(exc) from None


_RFC_NAMES = {argument: name for name, (argument, _) in REGISTRABLE_METADATA.items()}


def _client_error(exc: ClientError) -> RegistrationError:
    """RFC 7591 §3.2.2: invalid_redirect_uri for a redirect URI, invalid_client_metadata for the rest,
    described with the metadata's own name."""
    field = exc.field
    name = _RFC_NAMES.get(field, field)
    description = name + str(exc)[len(field):]
    return RegistrationError(INVALID_REDIRECT_URI if field == "redirect_uris" else INVALID_CLIENT_METADATA,
                             description)


# -- initial access tokens ----------------------------------------------------------------------


def check_policy(policy: Any) -> dict[str, Any]:
    """An initial access token's policy, checked: ``grant_types``, ``scope`` and
    ``token_endpoint_auth_methods`` limit; ``fixed`` holds registrable metadata set whatever is asked."""
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise PolicyError("policy: must be a JSON object")
    unknown = sorted(set(policy) - {*POLICY_LIMITS, "fixed"})
    if unknown:
        raise PolicyError(f"policy: unknown {', '.join(unknown)}; use {', '.join((*POLICY_LIMITS, 'fixed'))}")
    for name, allowed in (("grant_types", GRANT_TYPES), ("token_endpoint_auth_methods", AUTH_METHODS)):
        values = policy.get(name)
        if values is not None and (not isinstance(values, list) or not values or not set(values) <= set(allowed)):
            raise PolicyError(f"{name}: a non-empty list of {', '.join(allowed)}")
    if "scope" in policy and (not isinstance(policy["scope"], str) or not policy["scope"].split()):
        raise PolicyError("scope: space-separated scope tokens")
    fixed = policy.get("fixed", {})
    if not isinstance(fixed, dict) or not set(fixed) <= set(REGISTRABLE_METADATA):
        raise PolicyError(f"fixed: an object of registrable metadata ({', '.join(REGISTRABLE_METADATA)})")
    for name, value in fixed.items():
        json_type = REGISTRABLE_METADATA[name][1]
        if not isinstance(value, json_type) or (json_type is not bool and isinstance(value, bool)):
            raise PolicyError(f"fixed: {name} must be a JSON {_JSON_NAMES[json_type]}")
    return {name: value for name, value in policy.items() if value is not None}


def issue_initial_token(*, label: str = "", policy: Any = None, max_uses: int | None = 1,
                        expires_in: int = 86400) -> tuple[InitialAccessToken, str]:
    """Make an initial access token (returned once, stored as a keyed hash); max_uses None: unlimited."""
    checked = check_policy(policy)
    if max_uses is not None and (isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1):
        raise PolicyError("max_uses: a whole number of at least 1 (or none: unlimited)")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
        raise PolicyError("expires_in: a whole number of seconds, at least 1")
    if not isinstance(label, str) or len(label) > 255 or "\x00" in label:
        raise PolicyError("label: at most 255 characters")
    state = current_state()
    token = hashing.random_token(32)
    now = state.clock.now()
    row = InitialAccessToken(token_hash=state.hasher(hashing.INITIAL_ACCESS_TOKEN).hash(token), label=label,
                             policy=json.dumps(checked, sort_keys=True), max_uses=max_uses, uses=0,
                             created_at=now, expires_at=now + expires_in)
    queries.add(row)
    db.session.commit()
    audit.record("initial_token.created", "initial access token created", initial_token_id=row.id, label=label,
                 max_uses=max_uses, expires_at=row.expires_at)
    return row, token


def list_initial_tokens() -> list[InitialAccessToken]:
    return queries.list_initial_tokens()


def revoke_initial_token(token_id: int) -> InitialAccessToken | None:
    """Revoke an initial access token by its id (None: there is none)."""
    row = queries.initial_token_by_pk(token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = current_state().clock.now()
        db.session.commit()
        audit.record("initial_token.revoked", "initial access token revoked", initial_token_id=row.id)
    return row
