"""The admin API's definitions, used twice: to validate request bodies and to publish ``/admin/openapi.json``.

Each request body is a table of :class:`Field` (name -> type, required,
description); :func:`read_body` checks a JSON body against its table (unknown
fields, missing required ones, wrong types), and :func:`openapi_document`
turns the same tables into the OpenAPI 3.1 schemas of the operations.  The
operations themselves are the routes of the admin blueprints: each view is
annotated with :func:`operation`, and the document lists every admin route of
the running app, so a route without a description is noticed (a test checks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import Rule

from oidc import urls
from oidc.accounts import clients
from oidc.models import MTLS_METADATA
from oidc.settings import SECURITY_PROFILES
from oidc.vocabulary import (
    AUTH_METHODS,
    ENCRYPTED_RESPONSES,
    ENCRYPTION_ALGORITHMS,
    ENCRYPTION_ENCODINGS,
    REQUEST_OBJECT_SIGNING_ALGORITHMS,
)

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "boolean": bool, "array": list, "object": dict,
                                                   "integer": int}


@dataclass(frozen=True)
class Field:
    """One member of a JSON request body."""

    type: str  # string, boolean, array (of strings) or object
    description: str
    required: bool = False
    format: str | None = None
    enum: tuple[str, ...] | None = None
    max_length: int | None = None

    def problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this field, or None."""
        if (value is None or (value == "" and self.format == _URI)) and not self.required:
            return None
        expected = _JSON_TYPES[self.type]
        given: Any = value
        if not isinstance(given, expected) or (self.type != "boolean" and isinstance(given, bool)):
            article = "an" if self.type[0] in "aeiou" else "a"
            return f"{name}: must be {'true or false' if self.type == 'boolean' else article + ' ' + self.type}"
        if self.type == "array" and not all(isinstance(item, str) for item in value):
            return f"{name}: must be a list of strings"
        if self.enum is not None and value not in self.enum:
            return f"{name}: one of {', '.join(self.enum)}"
        if self.max_length is not None and isinstance(value, str) and len(value) > self.max_length:
            return f"{name}: at most {self.max_length} characters"
        return None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.type == "array":
            schema["items"] = {"type": "string", **({"format": self.format} if self.format else {})}
        elif self.format:
            schema["format"] = self.format
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.max_length:
            schema["maxLength"] = self.max_length
        return schema


Body = Mapping[str, Field]


def body_schema(fields: Body, *, additional: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {name: f.schema() for name, f in fields.items()},
                              "additionalProperties": additional}
    required = [name for name, f in fields.items() if f.required]
    if required:
        schema["required"] = required
    return schema


def read_body(fields: Body | None, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object checked against ``fields`` (None: any object).

    Raises :class:`~werkzeug.exceptions.BadRequest`, which :mod:`oidc.web.errors`
    answers as a JSON ``invalid_request`` naming the problem.
    """
    if optional and not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if fields is None:
        return body
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for name, spec in fields.items():
        if name not in body:
            if spec.required:
                raise BadRequest(f"{name}: required")
            continue
        problem = spec.problem(name, body[name])
        if problem:
            raise BadRequest(problem)
    return body


# -- the bodies -----------------------------------------------------------------------------------

_URI = "uri"

CLIENT_FIELDS: dict[str, Field] = {
    "name": Field("string", "Name shown to users on the consent page.", required=True, max_length=255),
    "redirect_uris": Field("array", "Registered redirect URIs, compared exactly (https; http only on loopback; "
                           "or a reverse-domain app scheme).", format=_URI),
    "post_logout_redirect_uris": Field("array", "Registered post-logout redirect URIs.", format=_URI),
    "grant_types": Field("array", "Grant types (default authorization_code and refresh_token)."),
    "scope": Field("string", "Space-separated scopes the client may request "
                   "(default 'openid profile email offline_access')."),
    "auth_method": Field("string", "Token endpoint authentication method (default client_secret_basic).",
                         enum=AUTH_METHODS),
    "first_party": Field("boolean", "Trusted client: users are not asked for consent."),
    "audiences": Field("array", "Resources (RFC 8707) the client may get access tokens for."),
    "jwks": Field("object", "The client's public JWK Set (for private_key_jwt and self_signed_tls_client_auth)."),
    "jwks_uri": Field("string", "https URL of the client's public JWK Set, fetched and cached (instead of jwks).",
                      format=_URI),
    "resource_server": Field("boolean", "May introspect tokens issued to other clients."),
    "refresh_always": Field("boolean", "Issue refresh tokens without offline_access."),
    "id_token_on_refresh": Field("boolean", "A refresh also returns a new ID token (default true; OIDC Core "
                                 "§12.2 makes it optional: without, a refresh costs one signature less)."),
    "admin_api": Field("boolean", "May request access tokens for the admin API (its audience <issuer>/admin, "
                       "with the admin scope)."),
    "require_pushed_authorization_requests": Field("boolean", "Authorization requests only through /par "
                                                   "(RFC 9126 §6)."),
    "dpop_bound_access_tokens": Field("boolean", "Token requests need a DPoP proof; access tokens are always "
                                      "DPoP-bound (RFC 9449 §5.2)."),
    "require_signed_request_object": Field("boolean", "Authorization requests only as signed request objects "
                                           "(RFC 9101 §10.5), at /authorize or /par."),
    "request_object_signing_alg": Field("string", "The one alg of the client's request objects (OpenID Connect "
                                        "Dynamic Client Registration §2); none: unsigned ones; absent: any the "
                                        "provider allows.", enum=(*REQUEST_OBJECT_SIGNING_ALGORITHMS, "none")),
    "security_profile": Field("string", "fapi2: the FAPI 2.0 Security Profile for this client; "
                              "fapi2-message-signing: FAPI 2.0 Message Signing too (signed request objects "
                              "at /par, JARM responses) (default: the provider's SECURITY_PROFILE).",
                              enum=SECURITY_PROFILES),
    "logo_uri": Field("string", "https URL of the client's logo, shown on the consent page.", format=_URI),
    "policy_uri": Field("string", "https URL of the client's privacy policy, linked on the consent page.", format=_URI),
    "tos_uri": Field("string", "https URL of the client's terms of service, linked on the consent page.",
                     format=_URI),
    "backchannel_logout_uri": Field("string", "https URL the client receives logout tokens at when a login "
                                    "session it got tokens in ends (OpenID Connect Back-Channel Logout 1.0 §2.2; "
                                    "http only on loopback, in development mode).", format=_URI,
                                    max_length=clients.MAX_URI_LENGTH),
    "backchannel_logout_session_required": Field("boolean", "Logout tokens carry the login session's sid "
                                                 "(default false: sub only)."),
    **{f"{kind}_signed_response_alg": Field(
        "string", f"{what} signed with this alg (one the ID token key set signs with; default: the set's).")
       for kind, what in (("authorization", "JARM authorization responses"),
                          ("introspection", "JWT introspection responses (RFC 9701)"),
                          ("userinfo", "UserInfo responses as application/jwt (OIDC Core §5.3.2)"))},
    **{name: spec for kind in ENCRYPTED_RESPONSES for name, spec in (
        (f"{kind}_encrypted_response_alg", Field(
            "string", f"Encrypt {kind} responses to the client's jwks key with use 'enc' "
                      "(RSA for RSA-OAEP-256, EC or X25519 for ECDH-ES).", enum=ENCRYPTION_ALGORITHMS)),
        (f"{kind}_encrypted_response_enc", Field(
            "string", f"Content encryption of {kind} responses (default A128CBC-HS256).",
            enum=ENCRYPTION_ENCODINGS)))},
    **{name: Field("string", f"tls_client_auth (RFC 8705 §2.1.2): {what}; register exactly one of these.",
                   max_length=clients.MAX_URI_LENGTH)
       for name, what in (("tls_client_auth_subject_dn", "the certificate's subject DN (RFC 4514)"),
                          ("tls_client_auth_san_dns", "a dNSName of the certificate's subjectAltName"),
                          ("tls_client_auth_san_uri", "a URI of the certificate's subjectAltName"),
                          ("tls_client_auth_san_ip", "an IP address of the certificate's subjectAltName"),
                          ("tls_client_auth_san_email", "an rfc822Name of the certificate's subjectAltName"))},
    "tls_client_certificate_bound_access_tokens": Field(
        "boolean", "Access tokens are bound to the certificate of the token request (RFC 8705 §3): "
                   "the client asks for them over mutual TLS and presents the same certificate with them."),
}

#: The registration fields of what the consent page shows (those ``set_display`` changes).
DISPLAY_FIELDS: dict[str, Field] = {name: CLIENT_FIELDS[name] for name in clients.DISPLAY_FIELDS}
#: The registration fields of back-channel logout (those ``set_backchannel_logout`` changes).
BACKCHANNEL_LOGOUT_FIELDS: dict[str, Field] = {
    name: CLIENT_FIELDS[name] for name in ("backchannel_logout_uri", "backchannel_logout_session_required")}
#: The registration fields of mutual TLS (those ``set_certificate`` changes).
CERTIFICATE_FIELDS: dict[str, Field] = {
    name: CLIENT_FIELDS[name] for name in (*MTLS_METADATA, "tls_client_certificate_bound_access_tokens")}
#: What ``PATCH /admin/clients/<client_id>`` changes.
CLIENT_UPDATE_FIELDS: dict[str, Field] = {**DISPLAY_FIELDS, **BACKCHANNEL_LOGOUT_FIELDS, **CERTIFICATE_FIELDS}

USER_FIELDS: dict[str, Field] = {
    "username": Field("string", "Login name (case-insensitive, unique).", required=True, max_length=255),
    "password": Field("string", "Initial password.", required=True, format="password"),
    "email": Field("string", "Email address.", format="email"),
    "name": Field("string", "Full name (the name claim)."),
    "email_verified": Field("boolean", "Whether the email address is verified (default false)."),
    "admin": Field("boolean", "May use the admin API with an access token made for it (default false)."),
}

PASSWORD_FIELDS: dict[str, Field] = {
    "password": Field("string", "The new password.", required=True, format="password"),
    "revoke_grants": Field("boolean", "Also end the user's offline_access grants (refresh tokens that "
                           "outlive the login), as after an account compromise."),
}

GENERATE_KEY_FIELDS: dict[str, Field] = {
    "alg": Field("string", "JWS algorithm of the new key (default: the key set's configured algorithm)."),
}

INITIAL_TOKEN_FIELDS: dict[str, Field] = {
    "label": Field("string", "A note: who the token is for.", max_length=255),
    "max_uses": Field("integer", "How many clients it may register (default 1); null: unlimited."),
    "expires_in": Field("integer", "Seconds it may be used for (default 86400)."),
    "policy": Field("object", "What its registrations may be: grant_types, scope and token_endpoint_auth_methods "
                    "limit; fixed sets metadata whatever the request says (e.g. {\"security_profile\": \"fapi2\"})."),
}

#: Longest PEM chain accepted (a leaf and a few CA certificates are a few KiB).
MAX_CHAIN_PEM_LENGTH = 65536

KEY_CERTIFICATE_REQUEST_FIELDS: dict[str, Field] = {
    "subject": Field("string", "RFC 4514 subject, e.g. CN=op.example.com,O=Example (default: CN=<the issuer's host>).",
                     max_length=1024),
    "kid": Field("string", "Key to certify (default: the key that signs for the set now).", max_length=255),
}

KEY_CERTIFICATE_FIELDS: dict[str, Field] = {
    "chain": Field("string", "PEM of the issued chain, leaf first, each certificate followed by its issuer.",
                   required=True, max_length=MAX_CHAIN_PEM_LENGTH),
    "kid": Field("string", "Key the chain certifies (default: the key that signs for the set now).", max_length=255),
}

#: Names the OpenAPI document gives each body table.
BODIES: dict[str, Body] = {"ClientRegistration": CLIENT_FIELDS, "ClientUpdate": CLIENT_UPDATE_FIELDS,
                           "NewUser": USER_FIELDS, "NewPassword": PASSWORD_FIELDS, "GenerateKey": GENERATE_KEY_FIELDS,
                           "NewInitialAccessToken": INITIAL_TOKEN_FIELDS,
                           "CertificateRequest": KEY_CERTIFICATE_REQUEST_FIELDS,
                           "Certificate": KEY_CERTIFICATE_FIELDS}


# -- the operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    summary: str
    body: str | None = None  # a name in BODIES, or "JWK" (any JSON object)
    body_optional: bool = False
    responses: Mapping[int, str] = field(default_factory=lambda: {200: "OK"})
    path_enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


def operation(summary: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Describe an admin view for the OpenAPI document."""
    def annotate(view: Callable[..., Any]) -> Callable[..., Any]:
        view.openapi = Operation(summary, **kwargs)  # type: ignore[attr-defined]
        return view
    return annotate


def _operation_of(view: Any) -> Operation | None:
    while view is not None:
        found: Operation | None = getattr(view, "openapi", None)
        if found is not None:
            return found
        view = getattr(view, "__wrapped__", None)
    return None


_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string"}, "error_description": {"type": "string"}}}


def openapi_document(app: Flask, issuer: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every admin route of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(urls.ADMIN + "/") or rule.endpoint == "admin_openapi":
            continue
        described = _operation_of(app.view_functions[rule.endpoint])
        path, parameters = _path_parameters(rule, described)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, method, described, parameters)
    return {
        "openapi": "3.1.0",
        "info": {"title": "oidc-hsm admin API", "version": "1",
                 "description": "Signing keys, clients and users of the provider. Authenticate with "
                                "`Authorization: Bearer <one of ADMIN_API_KEYS>` or an access token of this "
                                "provider carrying ADMIN_SCOPE."},
        "servers": [{"url": issuer}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR_SCHEMA, **{name: body_schema(fields) for name, fields in BODIES.items()}},
        },
    }


def _path_parameters(rule: Rule, described: Operation | None) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a URL ``rule`` (``{name}`` for ``<name>``) and its path parameters."""
    path = rule.rule
    parameters = []
    for converter_name in rule.arguments:
        path = path.replace(f"<{converter_name}>", f"{{{converter_name}}}").replace(
            f"<path:{converter_name}>", f"{{{converter_name}}}")
        param_schema: dict[str, Any] = {"type": "string"}
        if described and converter_name in described.path_enums:
            param_schema["enum"] = list(described.path_enums[converter_name])
        parameters.append({"name": converter_name, "in": "path", "required": True, "schema": param_schema})
    return path, parameters


def _operation(endpoint: str, method: str, described: Operation | None,
               parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI operation of ``method`` on the route of ``endpoint``."""
    item: dict[str, Any] = {"operationId": f"{endpoint}_{method.lower()}",
                            "summary": described.summary if described else "(undocumented)",
                            "security": [{"bearer": []}]}
    if described and described.description:
        item["description"] = described.description
    if parameters:
        item["parameters"] = parameters
    if described and described.body:
        schema = ({"type": "object", "description": "A private JWK (RFC 7517)."} if described.body == "JWK"
                  else {"$ref": f"#/components/schemas/{described.body}"})
        item["requestBody"] = {"required": not described.body_optional,
                               "content": {"application/json": {"schema": schema}}}
    responses: dict[str, Any] = {}
    for status, text in (described.responses if described else {200: "OK"}).items():
        responses[str(status)] = {"description": text}
        if status != 204:
            responses[str(status)]["content"] = {"application/json": {"schema": {"type": "object"}}}
    for status, text in ((400, "Invalid request"), (401, "Missing or invalid admin credentials"),
                         (404, "Not found"), (503, "A dependency (database, HSM) is unavailable")):
        responses.setdefault(str(status), {"description": text, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    item["responses"] = responses
    return item


def init_app(app: Flask, issuer: str) -> None:
    """Serve the document at /admin/openapi.json (public: it describes, it grants nothing)."""
    document: dict[str, Any] = {}

    def openapi_json() -> Response:
        if not document:
            document.update(openapi_document(app, issuer))
        response = jsonify(document)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    app.add_url_rule(urls.ADMIN + "/openapi.json", "admin_openapi", openapi_json)
