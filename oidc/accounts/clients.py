"""Client registration and management: what the CLI and the admin HTTP API share.

A client secret is generated here (256 random bits), returned once, and stored
only as a keyed hash; rotating it returns the new one once.  A change made here
(disabling, deleting, a new secret) applies at once in this process and in
every other within ``CLIENT_CACHE_SECONDS`` (see :mod:`oidc.oauth2.client_cache`).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import SplitResult

from oidc import hashing, queries
from oidc.db import db
from oidc.models import MTLS_METADATA, RESPONSE_METADATA, Client
from oidc.oauth2 import encryption, mtls
from oidc.oauth2.client_cache import current_client_cache
from oidc.oauth2.outbound import FetchError, check_url
from oidc.queries import find_client
from oidc.settings import DEFAULT_PROFILE, FAPI2_PROFILES, SECURITY_PROFILES
from oidc.state import current_state
from oidc.text import bounded_text, column_text
from oidc.urls import is_loopback_http, split_url
from oidc.vocabulary import (
    ASSERTION_ALGORITHMS,
    AUTH_METHODS,
    DEFAULT_GRANT_TYPES,
    DEVICE_CODE_GRANT_TYPE,
    ENCRYPTED_RESPONSES,
    FAPI2_ALGORITHMS,
    FAPI2_AUTH_METHODS,
    GRANT_TYPES,
    REQUEST_OBJECT_SIGNING_ALGORITHMS,
    RESPONSE_TYPES,
    SECRET_AUTH_METHODS,
    id_token_signing_algs,
)

#: The responses a client may have signed: ``<kind>_signed_response_alg`` (JARM, RFC 9701, OIDC Core §5.3.2).
SIGNED_RESPONSES = ("authorization", "introspection", "userinfo")

DEFAULT_SCOPE = "openid profile email offline_access"
#: Longest redirect, logout, page or logo URI registered.
MAX_URI_LENGTH = 2000
#: Longest client name (what the consent page shows).
MAX_CLIENT_NAME_LENGTH = 255


class ClientError(ValueError):
    """Invalid registration data; the message says which field and why (``field: why``)."""

    @property
    def field(self) -> str:
        """The argument of :func:`build_client` that is wrong."""
        return str(self).split(":", 1)[0]


def _read_uri(value: Any, field: str, *, forbidden: str = " ", kind: str = "URI") -> tuple[str, SplitResult]:
    """``value`` as a registered URI and its parts: bounded, printable, without ``forbidden`` characters,
    readable by ``urlsplit``; ClientError naming ``field`` otherwise."""
    uri = bounded_text(value, MAX_URI_LENGTH)
    if uri is None or not uri.isprintable() or any(character in uri for character in forbidden):
        raise ClientError(f"{field}: {value!r} is not a {kind}")
    parts = split_url(uri)
    if parts is None:
        raise ClientError(f"{field}: {uri!r} is not a {kind}")
    return uri, parts


def _check_uri(value: Any, field: str) -> str:
    uri, parts = _read_uri(value, field)
    if parts.fragment or "#" in uri:
        raise ClientError(f"{field}: {uri!r} must not have a fragment")
    if parts.scheme == "https" and parts.netloc:
        return uri
    if is_loopback_http(parts):
        return uri
    if parts.scheme and "." in parts.scheme and parts.scheme not in ("http", "https"):
        return uri  # private-use scheme of a native app (RFC 8252 §7.1), e.g. com.example.app:/cb
    raise ClientError(f"{field}: {uri!r} must be https (http only on loopback), or a reverse-domain app scheme")


def _check_web_uri(value: Any, field: str) -> str | None:
    """An optional page or image URL shown to users: https (http only on loopback), nothing else."""
    if value is None or value == "":
        return None
    uri, parts = _read_uri(value, field, forbidden=' "', kind="URL")
    if (parts.scheme == "https" and parts.netloc) or is_loopback_http(parts):
        return uri
    raise ClientError(f"{field}: {uri!r} must be an https URL (http only on loopback)")


def check_backchannel_logout_uri(value: Any, *, development: bool) -> str | None:
    """A client's ``backchannel_logout_uri`` (Back-Channel Logout 1.0 §2.2): an absolute https URL without
    a fragment; http only on a loopback host in development mode.  None or "" registers none."""
    if value is None or value == "":
        return None
    uri, parts = _read_uri(value, "backchannel_logout_uri", kind="URL")
    if parts.fragment or "#" in uri:
        raise ClientError(f"backchannel_logout_uri: {uri!r} must not have a fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if is_loopback_http(parts) and development:
        return uri
    raise ClientError(f"backchannel_logout_uri: {uri!r} must be an https URL (http only on loopback, "
                      "in development mode)")


def _check_jwks(jwks: Any) -> str:
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if isinstance(jwks, str):
        try:
            jwks = json.loads(jwks)
        except ValueError:
            raise ClientError("jwks: not valid JSON") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError("jwks: must be a JWK Set with at least one key")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "OKP") or "d" in key:
            raise ClientError("jwks: only public RSA, EC or OKP keys are accepted")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]  # a dict checked above, not yet the TypedDict
    except (JoseError, ValueError, TypeError):
        raise ClientError("jwks: the key set could not be read") from None
    return json.dumps(jwks, sort_keys=True)


def _strings(values: Iterable[Any] | None, field: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise ClientError(f"{field}: must be a list of strings")
    return list(dict.fromkeys(values))


#: Client metadata a registration request may carry (RFC 7591 §2, RFC 9126 §6, RFC 9449 §5.2, Back-Channel
#: Logout 1.0 §2.2, JARM and OIDC Registration §2 for signed and encrypted responses), by its
#: name in the request: the :func:`build_client` argument it fills (also the ``Client`` column it is
#: stored in) and its JSON type.  :mod:`oidc.accounts.registration` maps a request through this table
#: and nothing else: every check is :func:`build_client`'s, the same for /register, the CLI and the
#: admin API.  New metadata plugs in with an argument of :func:`build_client` (checked there), a
#: column of the same name, and a line here; :func:`replace_metadata` and the registration
#: response follow from the table.  Metadata that changes nothing the provider does, or only
#: states that the client expects what the provider does anyway, goes in
#: :data:`INFORMATIONAL_METADATA` (kept as registered and returned) with its check instead.
#: Arguments that are the operator's alone (first_party, resource_server, admin_api, audiences,
#: ...) are not listed: a client cannot register them.
REGISTRABLE_METADATA: dict[str, tuple[str, type]] = {
    "client_name": ("name", str),
    "redirect_uris": ("redirect_uris", list),
    "post_logout_redirect_uris": ("post_logout_redirect_uris", list),
    "grant_types": ("grant_types", list),
    "scope": ("scope", str),
    "token_endpoint_auth_method": ("auth_method", str),
    "jwks": ("jwks", dict),
    "jwks_uri": ("jwks_uri", str),
    "logo_uri": ("logo_uri", str),
    "policy_uri": ("policy_uri", str),
    "tos_uri": ("tos_uri", str),
    "require_pushed_authorization_requests": ("require_pushed_authorization_requests", bool),
    "dpop_bound_access_tokens": ("dpop_bound_access_tokens", bool),
    "security_profile": ("security_profile", str),
    "backchannel_logout_uri": ("backchannel_logout_uri", str),
    "backchannel_logout_session_required": ("backchannel_logout_session_required", bool),
    **{name: (name, str) for name in RESPONSE_METADATA},
    **{name: (name, str) for name in MTLS_METADATA},
    "tls_client_certificate_bound_access_tokens": ("tls_client_certificate_bound_access_tokens", bool),
    "require_signed_request_object": ("require_signed_request_object", bool),
    "request_object_signing_alg": ("request_object_signing_alg", str),
}


#: Longest contact, software id or version kept; most contacts kept.
MAX_INFORMATIONAL_LENGTH = 255
MAX_CONTACTS = 10


def _check_contacts(contacts: Any) -> list[str]:
    if (not isinstance(contacts, list) or len(_strings(contacts, "contacts")) > MAX_CONTACTS
            or any(column_text(contact, MAX_INFORMATIONAL_LENGTH) is None for contact in contacts)):
        raise ClientError(f"contacts: at most {MAX_CONTACTS} addresses of at most {MAX_INFORMATIONAL_LENGTH} characters")
    return list(contacts)


def _check_short_text(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if column_text(value, MAX_INFORMATIONAL_LENGTH) is None:
            raise ClientError(f"{name}: a string of at most {MAX_INFORMATIONAL_LENGTH} characters")
        return str(value)
    return check


def _check_one_of(name: str, supported: Callable[[], tuple[str, ...]]) -> Callable[[Any], str]:
    """Metadata (OIDC Registration §2) a client may send, but only with the behaviour this provider has:
    asking for another is an error (invalid_client_metadata), not something silently ignored."""
    def check(value: Any) -> str:
        allowed = supported()
        if value not in allowed:
            raise ClientError(f"{name}: this provider supports {', '.join(allowed)}")
        return str(value)
    return check


def _id_token_algs() -> tuple[str, ...]:
    return tuple(id_token_signing_algs(current_state().settings.id_token_signing_alg))


#: Informational metadata (RFC 7591 §2, OIDC Registration §2) kept and returned as registered:
#: nothing depends on it.  Each with its check (which returns the value kept).
INFORMATIONAL_METADATA: dict[str, Callable[[Any], Any]] = {
    "client_uri": lambda value: _check_web_uri(value, "client_uri"),
    "contacts": _check_contacts,
    "software_id": _check_short_text("software_id"),
    "software_version": _check_short_text("software_version"),
    "application_type": _check_one_of("application_type", lambda: ("web", "native")),
    "id_token_signed_response_alg": _check_one_of("id_token_signed_response_alg", _id_token_algs),
    "subject_type": _check_one_of("subject_type", lambda: ("public",)),
    "token_endpoint_auth_signing_alg": _check_one_of("token_endpoint_auth_signing_alg",
                                                     lambda: ASSERTION_ALGORITHMS),
    # verified by its issuer's signature (oidc.accounts.registration) before it gets here
    "software_statement": lambda value: value,
}


def check_informational(metadata: dict[str, Any]) -> dict[str, Any]:
    """The informational metadata of a registration request, checked."""
    return {name: check(metadata[name]) for name, check in INFORMATIONAL_METADATA.items()
            if metadata.get(name) is not None}


def check_response_types(response_types: Any, grant_types: list[str]) -> None:
    """RFC 7591 §2.1: the response types go with the grant types (``code`` with authorization_code)."""
    if response_types is None:
        return
    types = _strings(response_types, "response_types")
    unknown = [value for value in types if value not in RESPONSE_TYPES]
    if unknown:
        raise ClientError(f"response_types: only {', '.join(RESPONSE_TYPES)} is supported")
    if ("code" in types) != ("authorization_code" in grant_types):
        raise ClientError("response_types: code goes with the authorization_code grant, and only with it")


def create_client(**metadata: Any) -> tuple[Client, str | None]:
    """Register a client (the arguments of :func:`build_client`); returns it and its secret (shown once;
    None for clients without one)."""
    client, secret = build_client(**metadata)
    queries.add(client)
    db.session.commit()
    return client, secret


def build_client(*, name: str, redirect_uris: Iterable[str] | None = None,
                 post_logout_redirect_uris: Iterable[str] | None = None,
                 grant_types: Iterable[str] | None = None, scope: str | None = None,
                 auth_method: str = "client_secret_basic", first_party: bool = False,
                 audiences: Iterable[str] | None = None, jwks: Any = None, jwks_uri: str | None = None,
                 resource_server: bool = False,
                 refresh_always: bool = False, id_token_on_refresh: bool = True,
                 require_pushed_authorization_requests: bool = False,
                 dpop_bound_access_tokens: bool = False, security_profile: str | None = None,
                 admin_api: bool = False, logo_uri: str | None = None, policy_uri: str | None = None,
                 tos_uri: str | None = None, backchannel_logout_uri: str | None = None,
                 backchannel_logout_session_required: bool = False,
                 authorization_signed_response_alg: str | None = None,
                 authorization_encrypted_response_alg: str | None = None,
                 authorization_encrypted_response_enc: str | None = None,
                 introspection_signed_response_alg: str | None = None,
                 introspection_encrypted_response_alg: str | None = None,
                 introspection_encrypted_response_enc: str | None = None,
                 userinfo_signed_response_alg: str | None = None,
                 userinfo_encrypted_response_alg: str | None = None,
                 userinfo_encrypted_response_enc: str | None = None,
                 id_token_encrypted_response_alg: str | None = None,
                 id_token_encrypted_response_enc: str | None = None,
                 tls_client_auth_subject_dn: str | None = None, tls_client_auth_san_dns: str | None = None,
                 tls_client_auth_san_uri: str | None = None, tls_client_auth_san_ip: str | None = None,
                 tls_client_auth_san_email: str | None = None,
                 tls_client_certificate_bound_access_tokens: bool = False, require_signed_request_object: bool = False,
                 request_object_signing_alg: str | None = None) -> tuple[Client, str | None]:
    """A new client, every argument checked, not yet added to the database; and its secret (or None).

    ClientError names the first argument that is wrong.  The ``*_signed_response_alg`` and
    ``*_encrypted_response_alg/enc``: the signed and encrypted responses it wants
    (:func:`check_response_metadata`); the ``tls_client_auth_*``: its certificate
    (:func:`check_mtls_metadata`).
    """
    # The parameters above named in RESPONSE_METADATA and MTLS_METADATA (read before any other local is bound).
    response_metadata = {name: value for name, value in locals().items() if name in RESPONSE_METADATA}
    certificate_metadata = {name: value for name, value in locals().items() if name in MTLS_METADATA}
    if column_text(name.strip() if isinstance(name, str) else None, MAX_CLIENT_NAME_LENGTH) is None:
        raise ClientError(f"name: 1 to {MAX_CLIENT_NAME_LENGTH} characters, without a NUL")
    if auth_method not in AUTH_METHODS:
        raise ClientError(f"auth_method: one of {', '.join(AUTH_METHODS)}")
    grants = _strings(grant_types, "grant_types") or list(DEFAULT_GRANT_TYPES)
    unknown = [grant for grant in grants if grant not in GRANT_TYPES]
    if unknown:
        raise ClientError(f"grant_types: unknown {', '.join(unknown)}; use {', '.join(GRANT_TYPES)}")
    redirects = [_check_uri(uri, "redirect_uris") for uri in _strings(redirect_uris, "redirect_uris")]
    post_logout = [_check_uri(uri, "post_logout_redirect_uris")
                   for uri in _strings(post_logout_redirect_uris, "post_logout_redirect_uris")]
    audience_list = [_check_uri(uri, "audiences") if uri.startswith("http") else uri
                     for uri in _strings(audiences, "audiences")]
    _check_grant_combination(grants, auth_method, redirects)
    scope_value = DEFAULT_SCOPE if scope is None else scope
    if not isinstance(scope_value, str) or len(scope_value) > 2000 or not all(
            token.isprintable() and '"' not in token and "\\" not in token for token in scope_value.split()):
        raise ClientError("scope: space-separated scope tokens")
    jwks_text, jwks_uri = _check_keys(auth_method, jwks, jwks_uri)
    responses = check_response_metadata(response_metadata, json.loads(jwks_text) if jwks_text else None)
    certificate = check_mtls_metadata(auth_method, certificate_metadata, jwks_text)

    display = {field: _check_web_uri(value, field) for field, value in
               (("logo_uri", logo_uri), ("policy_uri", policy_uri), ("tos_uri", tos_uri))}

    state = current_state()
    logout_uri = check_backchannel_logout_uri(backchannel_logout_uri, development=state.settings.development)
    if security_profile not in (None, *SECURITY_PROFILES):
        raise ClientError(f"security_profile: one of {', '.join(SECURITY_PROFILES)}")
    fapi2 = security_profile in FAPI2_PROFILES or state.settings.fapi2
    if fapi2:
        _check_fapi2(auth_method, redirects, state.settings)
    _check_request_objects(request_object_signing_alg, bool(require_signed_request_object),
                           jwks_text is not None or jwks_uri is not None,
                           fapi2=fapi2, required=state.settings.require_signed_request_object)

    client = Client(
        client_id=secrets.token_hex(16), name=name.strip(), auth_method=auth_method, scope=" ".join(
            dict.fromkeys(scope_value.split())), jwks=jwks_text, jwks_uri=jwks_uri, first_party=bool(first_party),
        resource_server=bool(resource_server), refresh_always=bool(refresh_always),
        id_token_on_refresh=bool(id_token_on_refresh), admin_api=bool(admin_api),
        require_pushed_authorization_requests=bool(require_pushed_authorization_requests),
        dpop_bound_access_tokens=bool(dpop_bound_access_tokens),
        require_signed_request_object=bool(require_signed_request_object),
        request_object_signing_alg=request_object_signing_alg or None,
        security_profile=security_profile if security_profile != DEFAULT_PROFILE else None,
        created_at=state.clock.now(), redirect_uris=redirects, post_logout_redirect_uris=post_logout,
        grant_types=grants, audiences=audience_list, **display, **responses, backchannel_logout_uri=logout_uri,
        backchannel_logout_session_required=bool(backchannel_logout_session_required), **certificate,
        tls_client_certificate_bound_access_tokens=bool(tls_client_certificate_bound_access_tokens),
    )
    secret = None
    if auth_method in SECRET_AUTH_METHODS:
        secret = hashing.random_token(32)
        client.secret_hash = state.hasher(hashing.CLIENT_SECRET).hash(secret)
        client.secret_rotated_at = client.created_at
    return client, secret


def _check_keys(auth_method: str, jwks: Any, jwks_uri: Any) -> tuple[str | None, str | None]:
    """The client's keys: a JWK Set by value or an https ``jwks_uri``, never both (RFC 7591 §2)."""
    if jwks is not None and jwks_uri is not None:
        raise ClientError("jwks_uri: register jwks or jwks_uri, not both (RFC 7591 §2)")
    if auth_method == "private_key_jwt" and jwks is None and jwks_uri is None:
        raise ClientError("jwks: private_key_jwt needs the client's public JWK Set (jwks or jwks_uri)")
    if jwks_uri is None:
        return (None if jwks is None else _check_jwks(jwks)), None
    uri = bounded_text(jwks_uri, MAX_URI_LENGTH)
    try:
        check_url(uri if uri is not None and uri.isprintable() and " " not in uri else "")
    except FetchError:
        raise ClientError(f"jwks_uri: {jwks_uri!r} must be an https URL without credentials or fragment") from None
    return None, uri


def replace_metadata(client: Client, **metadata: Any) -> str | None:
    """Replace every registrable metadatum of ``client`` (RFC 7592 §2.2: what is left out takes its default).

    Checked by :func:`build_client`, as a new registration is; the operator's own settings of the
    client (first_party, audiences, ...) are kept.  Returns a new secret when the new
    authentication method needs one the client did not have (shown once), else None.
    """
    fresh, secret = build_client(**metadata)
    for attribute, _ in REGISTRABLE_METADATA.values():
        setattr(client, attribute, getattr(fresh, attribute))
    if client.auth_method not in SECRET_AUTH_METHODS:
        client.secret_hash = client.secret_rotated_at = None
        secret = None
    elif client.secret_hash is not None:
        secret = None  # the client keeps the secret it has
    else:
        client.secret_hash, client.secret_rotated_at = fresh.secret_hash, fresh.secret_rotated_at
    return secret


def check_response_metadata(metadata: dict[str, Any], jwks: dict[str, Any] | None) -> dict[str, str | None]:
    """The signed and encrypted response metadata of a registration, checked; :class:`ClientError` otherwise.

    A signing alg must be one the ID token key set signs with (it signs these
    responses); an encryption needs a key of the client's ``jwks`` with
    ``use: enc`` for its alg (:func:`oidc.oauth2.encryption.check_registration`).
    """
    checked: dict[str, str | None] = {}
    signing_algs = id_token_signing_algs(current_state().settings.id_token_signing_alg)
    for kind in SIGNED_RESPONSES:
        name = f"{kind}_signed_response_alg"
        alg = metadata.get(name)
        if alg is not None and alg not in signing_algs:
            raise ClientError(f"{name}: one of {', '.join(signing_algs)} (the ID token key set's algorithm)")
        checked[name] = alg
    for kind in ENCRYPTED_RESPONSES:
        alg_name, enc_name = f"{kind}_encrypted_response_alg", f"{kind}_encrypted_response_enc"
        try:
            checked[alg_name], checked[enc_name] = encryption.check_registration(
                metadata.get(alg_name), metadata.get(enc_name), jwks, kind)
        except encryption.EncryptionError as exc:
            raise ClientError(str(exc)) from None
    return checked


def check_mtls_metadata(auth_method: str, metadata: dict[str, Any], jwks: str | None) -> dict[str, str | None]:
    """The certificate a ``tls_client_auth`` client registers (RFC 8705 §2.1.2: exactly one of MTLS_METADATA),
    checked; a ``self_signed_tls_client_auth`` client needs its ``jwks`` (§2.2).  :class:`ClientError` otherwise."""
    checked = {name: _check_certificate_field(name, metadata.get(name)) for name in MTLS_METADATA}
    registered = [name for name, value in checked.items() if value is not None]
    if auth_method == "tls_client_auth" and len(registered) != 1:
        raise ClientError(f"tls_client_auth: register exactly one of {', '.join(MTLS_METADATA)}")
    if auth_method != "tls_client_auth" and registered:
        raise ClientError(f"{registered[0]}: only for auth_method tls_client_auth")
    if auth_method == "self_signed_tls_client_auth" and jwks is None:
        raise ClientError("jwks: self_signed_tls_client_auth needs the JWK Set of the certificate's key")
    return checked


def _check_certificate_field(name: str, value: Any) -> str | None:
    """One ``tls_client_auth_*`` value: None or "" registers none."""
    if value is None or value == "":
        return None
    text = column_text(value.strip() if isinstance(value, str) else None, MAX_URI_LENGTH)
    if text is None or not text.isprintable():
        raise ClientError(f"{name}: a string of at most {MAX_URI_LENGTH} printable characters")
    if name == "tls_client_auth_subject_dn":
        try:
            mtls.check_subject_dn(text)
        except ValueError:
            raise ClientError(f"{name}: {text!r} is not a distinguished name (RFC 4514)") from None
    elif name == "tls_client_auth_san_ip":
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ClientError(f"{name}: {text!r} is not an IPv4 or IPv6 address") from None
    elif " " in text or (name == "tls_client_auth_san_email" and "@" not in text) or (
            name == "tls_client_auth_san_uri" and ((parts := split_url(text)) is None or not parts.scheme)):
        raise ClientError(f"{name}: {text!r} is not a {name.rsplit('_', 1)[1]} name")
    return text


def _check_grant_combination(grants: list[str], auth_method: str, redirect_uris: list[str]) -> None:
    """Refuse grant types that cannot work together, or without what they need."""
    if "authorization_code" in grants and not redirect_uris:
        raise ClientError("redirect_uris: the authorization_code grant needs at least one")
    if auth_method == "none" and "client_credentials" in grants:
        raise ClientError("grant_types: a public client (auth_method none) cannot use client_credentials")
    if "refresh_token" in grants and "authorization_code" not in grants and DEVICE_CODE_GRANT_TYPE not in grants:
        raise ClientError(f"grant_types: refresh_token needs authorization_code or {DEVICE_CODE_GRANT_TYPE}")


def _check_request_objects(alg: str | None, require_signed: bool, has_jwks: bool, *, fapi2: bool,
                           required: bool) -> None:
    """``request_object_signing_alg`` and ``require_signed_request_object`` (RFC 9101 §10.5, OIDC Registration §2).

    A signed object is verified with the client's registered keys (``jwks`` or ``jwks_uri``), so a
    client that names an alg or must sign has to register them; ``none`` (unsigned objects) never where
    signed ones are required, nor under the FAPI 2.0 profile.
    """
    if alg is None or alg == "":
        if require_signed and not has_jwks:
            raise ClientError("jwks: require_signed_request_object needs the client's public keys (jwks or jwks_uri)")
        return
    if alg not in (*REQUEST_OBJECT_SIGNING_ALGORITHMS, "none"):
        raise ClientError(f"request_object_signing_alg: one of {', '.join(REQUEST_OBJECT_SIGNING_ALGORITHMS)}, none")
    if alg == "none":
        if require_signed or required or fapi2:
            raise ClientError("request_object_signing_alg: none (unsigned request objects) is not allowed where "
                              "signed request objects are required, nor under the FAPI 2.0 profile")
        return
    if fapi2 and alg not in FAPI2_ALGORITHMS:
        raise ClientError(f"request_object_signing_alg: the FAPI 2.0 profile allows {', '.join(FAPI2_ALGORITHMS)}")
    if not has_jwks:
        raise ClientError("jwks: a signed request object is verified with the client's public keys (jwks or jwks_uri)")


def _check_fapi2(auth_method: str, redirect_uris: list[str], settings: Any) -> None:
    """What a client under the FAPI 2.0 profile must be (README, "The FAPI 2.0 profile")."""
    if auth_method not in FAPI2_AUTH_METHODS:
        raise ClientError("auth_method: the FAPI 2.0 profile allows confidential clients with private_key_jwt "
                          "or mutual TLS only")
    for uri in redirect_uris:
        if not uri.startswith("https://") and not (is_loopback_http(uri) and settings.development):
            raise ClientError(f"redirect_uris: the FAPI 2.0 profile requires https ({uri!r})")
    for name, alg in (("ID_TOKEN_SIGNING_ALG", settings.id_token_signing_alg),
                      ("ACCESS_TOKEN_SIGNING_ALG", settings.access_token_signing_alg)):
        if alg not in FAPI2_ALGORITHMS:
            raise ClientError(f"security_profile: the FAPI 2.0 profile needs PS256, ES256 or EdDSA signatures, "
                              f"but {name} is {alg}")


def get_client(client_id: str) -> Client | None:
    return find_client(client_id, include_disabled=True)


def list_clients() -> list[Client]:
    return queries.list_clients()


def forget(client: Client) -> None:
    """Drop ``client`` from this process's client cache (the others within CLIENT_CACHE_SECONDS)."""
    forget_client_id(str(client.client_id))


def forget_client_id(client_id: str) -> None:
    current_client_cache().forget(client_id)


def rotate_secret(client: Client) -> str:
    if client.auth_method not in SECRET_AUTH_METHODS:
        raise ClientError(f"auth_method {client.auth_method} has no client secret")
    state = current_state()
    secret = hashing.random_token(32)
    client.secret_hash = state.hasher(hashing.CLIENT_SECRET).hash(secret)
    client.secret_rotated_at = state.clock.now()
    db.session.commit()
    forget(client)
    return secret


DISPLAY_FIELDS = ("logo_uri", "policy_uri", "tos_uri")


def set_display(client: Client, **fields: str | None) -> None:
    """Change what the consent page shows of ``client`` (any of DISPLAY_FIELDS; None or "" removes one)."""
    unknown = sorted(set(fields) - set(DISPLAY_FIELDS))
    if unknown:
        raise ClientError(f"unknown field(s): {', '.join(unknown)}")
    checked = {name: _check_web_uri(value, name) for name, value in fields.items()}
    for name, value in checked.items():
        setattr(client, name, value)
    db.session.commit()
    forget(client)


def set_backchannel_logout(client: Client, uri: str | None, *, session_required: bool | None = None) -> None:
    """Register (or, with None or "", remove) the client's back-channel logout URI; ``session_required``
    None keeps ``backchannel_logout_session_required`` as it is."""
    client.backchannel_logout_uri = check_backchannel_logout_uri(uri, development=current_state().settings.development)
    if session_required is not None:
        client.backchannel_logout_session_required = bool(session_required)
    db.session.commit()
    forget(client)


def set_certificate(client: Client, identity: dict[str, Any] | None = None, *, bound: bool | None = None) -> None:
    """Replace the certificate a ``tls_client_auth`` client is known by (``identity``: MTLS_METADATA names;
    None keeps it), and with ``bound`` (None: unchanged) ``tls_client_certificate_bound_access_tokens``.

    Checked as at registration (:func:`check_mtls_metadata`) before anything is written.
    """
    if identity is not None:
        unknown = sorted(set(identity) - set(MTLS_METADATA))
        if unknown:
            raise ClientError(f"unknown field(s): {', '.join(unknown)}")
        checked = check_mtls_metadata(client.auth_method, identity, client.jwks)
        for name, value in checked.items():
            setattr(client, name, value)
    if bound is not None:
        client.tls_client_certificate_bound_access_tokens = bool(bound)
    db.session.commit()
    forget(client)


def set_disabled(client: Client, disabled: bool) -> None:
    client.disabled = disabled
    db.session.commit()
    forget(client)


def delete_client(client: Client) -> None:
    """Delete a client and everything issued to it (in one transaction)."""
    queries.delete_rows_of_client(client.id)
    queries.remove(client)
    db.session.commit()
    forget(client)


def created_view(client: Client, secret: str | None) -> dict[str, Any]:
    data = client.as_dict()
    if secret is not None:
        data["client_secret"] = secret
    return data
