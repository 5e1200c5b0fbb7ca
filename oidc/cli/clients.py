"""``flask clients ...``: OAuth 2.0 / OpenID Connect clients.

Stable (operators script it; ``--json`` prints one JSON object or array)::

    flask clients create --name NAME [--redirect-uri URI ...] [--post-logout-redirect-uri URI ...]
        [--grant-type G ...] [--scope "S ..."] [--auth-method METHOD] [--first-party]
        [--audience URI ...] [--jwks-file FILE | --jwks-uri URL] [--resource-server] [--refresh-always] [--admin-api]
        [--require-par] [--dpop-bound] [--security-profile default|fapi2|fapi2-message-signing]
        [--logo-uri URL] [--policy-uri URL] [--tos-uri URL]
        [--backchannel-logout-uri URL [--backchannel-logout-session-required]]
        [--authorization-signed-response-alg ALG] [--introspection-signed-response-alg ALG]
        [--userinfo-signed-response-alg ALG]
        [--{id-token,userinfo,authorization,introspection}-encrypted-response-{alg,enc} VALUE] [--json]
    flask clients list [--json]
    flask clients show CLIENT_ID [--json]
    flask clients delete CLIENT_ID
    flask clients disable CLIENT_ID / flask clients enable CLIENT_ID
    flask clients rotate-secret CLIENT_ID [--json]
    flask clients set-display CLIENT_ID [--logo-uri URL] [--policy-uri URL] [--tos-uri URL] [--json]
    flask clients set-backchannel-logout CLIENT_ID --uri URL|'' [--session-required|--no-session-required] [--json]
    flask clients initial-token create [--label TEXT] [--uses N | --unlimited] [--expires-in SECONDS]
        [--grant-type G ...] [--scope "S ..."] [--auth-method METHOD ...] [--fix NAME=JSON ...] [--json]
    flask clients initial-token list [--json]
    flask clients initial-token revoke ID
    flask clients create ... [--auth-method tls_client_auth --tls-client-auth-{subject-dn,san-dns,san-uri,san-ip,
        san-email} VALUE] [--auth-method self_signed_tls_client_auth --jwks-file FILE] [--tls-certificate-bound]
    flask clients set-certificate CLIENT_ID [--tls-client-auth-... VALUE] [--bound|--not-bound] [--json]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from oidc.accounts import registration
from oidc.accounts.clients import (
    DEFAULT_SCOPE,
    ClientError,
    create_client,
    created_view,
    delete_client,
    get_client,
    list_clients,
    rotate_secret,
    set_backchannel_logout,
    set_certificate,
    set_disabled,
    set_display,
)
from oidc.cli.output import CommandGroup, emit, fields, iso, json_option, table
from oidc.models import MTLS_METADATA, RESPONSE_METADATA, Client
from oidc.settings import SECURITY_PROFILES
from oidc.vocabulary import AUTH_METHODS, GRANT_TYPES, REQUEST_OBJECT_SIGNING_ALGORITHMS


def _response_metadata_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--<name>`` for each signed or encrypted response metadata of a client (OIDC Registration §2)."""
    for name in reversed(RESPONSE_METADATA):
        command = click.option(f"--{name.replace('_', '-')}", name, default=None,
                               help=f"{name} (client metadata).")(command)
    return command

def _mtls_metadata_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--<name>`` for each certificate metadata of a ``tls_client_auth`` client (RFC 8705 §2.1.2)."""
    helps = {"tls_client_auth_subject_dn": "the certificate's subject DN (RFC 4514, e.g. 'CN=app,O=Example')",
             "tls_client_auth_san_dns": "a dNSName of the certificate's subjectAltName",
             "tls_client_auth_san_uri": "a URI of the certificate's subjectAltName",
             "tls_client_auth_san_ip": "an IP address of the certificate's subjectAltName",
             "tls_client_auth_san_email": "an rfc822Name (email) of the certificate's subjectAltName"}
    for name in reversed(MTLS_METADATA):
        command = click.option(f"--{name.replace('_', '-')}", name, default=None,
                               help=f"tls_client_auth: {helps[name]} (register exactly one).")(command)
    return command


cli = CommandGroup("clients", help="Manage OAuth 2.0 / OpenID Connect clients.")


def _load(client_id: str) -> Client:
    client = get_client(client_id)
    if client is None:
        raise click.ClickException(f"no client {client_id!r}")
    return client


@cli.command("create")
@click.option("--name", required=True, help="Name shown on the consent page.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Registered redirect URI (repeatable).")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
              help="Registered post-logout redirect URI (repeatable).")
@click.option("--grant-type", "grant_types", multiple=True, type=click.Choice(GRANT_TYPES),
              help="Grant type (repeatable; default authorization_code and refresh_token).")
@click.option("--scope", default=None, help=f'Space-separated scopes the client may request (default "{DEFAULT_SCOPE}").')
@click.option("--auth-method", default="client_secret_basic", type=click.Choice(AUTH_METHODS),
              help="Token endpoint authentication method.")
@click.option("--first-party", is_flag=True, help="Trusted client: no consent screen.")
@click.option("--audience", "audiences", multiple=True, help="Resource (RFC 8707) the client may get tokens for.")
@click.option("--jwks-file", type=click.File("r"), help="The client's public JWK Set (for private_key_jwt).")
@click.option("--jwks-uri", default=None, help="https URL of the client's public JWK Set (instead of --jwks-file).")
@click.option("--resource-server", is_flag=True, help="May introspect tokens issued to other clients.")
@click.option("--refresh-always", is_flag=True, help="Issue refresh tokens without offline_access.")
@click.option("--id-token-on-refresh/--no-id-token-on-refresh", default=True, show_default=True,
              help="A refresh also returns a new ID token (optional in OIDC Core §12.2; one signature less without).")
@click.option("--require-par", "require_par", is_flag=True,
              help="Authorization requests only through /par (require_pushed_authorization_requests).")
@click.option("--dpop-bound", "dpop_bound", is_flag=True,
              help="Token requests need a DPoP proof (dpop_bound_access_tokens).")
@click.option("--require-signed-request-object", "require_signed_request_object", is_flag=True,
              help="Authorization requests only as signed request objects (require_signed_request_object, "
                   "RFC 9101 §10.5).")
@click.option("--request-object-signing-alg", default=None,
              type=click.Choice((*REQUEST_OBJECT_SIGNING_ALGORITHMS, "none")),
              help="The one alg of the client's request objects; none: unsigned ones (request_object_signing_alg).")
@click.option("--security-profile", default=None, type=click.Choice(SECURITY_PROFILES),
              help="fapi2: the FAPI 2.0 Security Profile for this client; fapi2-message-signing: "
                   "FAPI 2.0 Message Signing too (default: SECURITY_PROFILE).")
@click.option("--admin-api", is_flag=True,
              help="May request access tokens for the admin API (resource <issuer>/admin, with the admin scope).")
@click.option("--logo-uri", default=None, help="https URL of the client's logo, shown on the consent page.")
@click.option("--policy-uri", default=None, help="https URL of the client's privacy policy, linked on the consent page.")
@click.option("--tos-uri", default=None, help="https URL of the client's terms of service, linked on the consent page.")
@click.option("--backchannel-logout-uri", default=None,
              help="https URL the client receives logout tokens at (OpenID Connect Back-Channel Logout).")
@click.option("--backchannel-logout-session-required", is_flag=True,
              help="Logout tokens carry the login session's sid (backchannel_logout_session_required).")
@click.option("--tls-certificate-bound", "tls_certificate_bound", is_flag=True,
              help="Access tokens are bound to the client's certificate (tls_client_certificate_bound_access_tokens, "
                   "RFC 8705 §3; the token request over mutual TLS).")
@_response_metadata_options
@_mtls_metadata_options
@json_option
def create_command(name: str, redirect_uris: tuple[str, ...], post_logout_redirect_uris: tuple[str, ...],
                   grant_types: tuple[str, ...], scope: str | None, auth_method: str, first_party: bool,
                   audiences: tuple[str, ...], jwks_file: Any, jwks_uri: str | None, resource_server: bool,
                   refresh_always: bool,
                   id_token_on_refresh: bool,
                   admin_api: bool, require_par: bool, dpop_bound: bool, security_profile: str | None,
                   logo_uri: str | None, policy_uri: str | None, tos_uri: str | None,
                   require_signed_request_object: bool, request_object_signing_alg: str | None,
                   backchannel_logout_uri: str | None, backchannel_logout_session_required: bool,
                   tls_certificate_bound: bool, as_json: bool, **response_metadata: str | None) -> None:
    """Register a client and print its client_id (and its secret, shown once)."""
    jwks = jwks_file.read() if jwks_file is not None else None
    try:
        client, secret = create_client(
            name=name, redirect_uris=redirect_uris, post_logout_redirect_uris=post_logout_redirect_uris,
            grant_types=grant_types or None, scope=scope, auth_method=auth_method, first_party=first_party,
            audiences=audiences, jwks=jwks, jwks_uri=jwks_uri, resource_server=resource_server,
            refresh_always=refresh_always,
            id_token_on_refresh=id_token_on_refresh,
            require_pushed_authorization_requests=require_par, dpop_bound_access_tokens=dpop_bound,
            security_profile=security_profile,
            admin_api=admin_api,
            logo_uri=logo_uri, policy_uri=policy_uri, tos_uri=tos_uri,
            require_signed_request_object=require_signed_request_object,
            request_object_signing_alg=request_object_signing_alg,
            backchannel_logout_uri=backchannel_logout_uri,
            backchannel_logout_session_required=backchannel_logout_session_required,
            tls_client_certificate_bound_access_tokens=tls_certificate_bound,
            **{key: value for key, value in response_metadata.items() if value is not None},
        )
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    text = f"client_id: {client.client_id}"
    if secret is not None:
        text += f"\nclient_secret: {secret}\n(the secret is shown only now)"
    emit(created_view(client, secret), as_json, text)


@cli.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List clients."""
    clients = [client.as_dict() for client in list_clients()]
    emit(clients, as_json, table(("CLIENT_ID", "NAME", "AUTH METHOD", "STATUS", "CREATED"), (
        (c["client_id"], c["name"], c["auth_method"], "disabled" if c["disabled"] else "enabled",
         iso(c["created_at"])) for c in clients)))


@cli.command("show")
@click.argument("client_id")
@json_option
def show_command(client_id: str, as_json: bool) -> None:
    """Show a client's registration."""
    data = _load(client_id).as_dict()
    emit(data, as_json, fields(data))


@cli.command("delete")
@click.argument("client_id")
def delete_command(client_id: str) -> None:
    """Delete a client and every code, token and consent issued to it."""
    delete_client(_load(client_id))
    click.echo(f"deleted {client_id}")


@cli.command("disable")
@click.argument("client_id")
def disable_command(client_id: str) -> None:
    """Disable a client: it cannot authenticate, its tokens become inactive."""
    set_disabled(_load(client_id), True)
    click.echo(f"disabled {client_id}")


@cli.command("enable")
@click.argument("client_id")
def enable_command(client_id: str) -> None:
    """Enable a disabled client."""
    set_disabled(_load(client_id), False)
    click.echo(f"enabled {client_id}")


@cli.command("set-display")
@click.argument("client_id")
@click.option("--logo-uri", default=None, help="https URL of the client's logo ('' removes it).")
@click.option("--policy-uri", default=None, help="https URL of its privacy policy ('' removes it).")
@click.option("--tos-uri", default=None, help="https URL of its terms of service ('' removes it).")
@json_option
def set_display_command(client_id: str, logo_uri: str | None, policy_uri: str | None, tos_uri: str | None,
                        as_json: bool) -> None:
    """Change the logo and the policy and terms links shown on the client's consent page."""
    client = _load(client_id)
    given = {name: value for name, value in
             (("logo_uri", logo_uri), ("policy_uri", policy_uri), ("tos_uri", tos_uri)) if value is not None}
    try:
        set_display(client, **given)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    data = {name: getattr(client, name) for name in ("logo_uri", "policy_uri", "tos_uri")}
    emit(data, as_json, "\n".join(f"{name}: {value or '-'}" for name, value in data.items()))


@cli.command("set-backchannel-logout")
@click.argument("client_id")
@click.option("--uri", required=True, help="https URL the client receives logout tokens at ('' removes it).")
@click.option("--session-required/--no-session-required", default=None,
              help="Whether logout tokens carry the login session's sid (default: unchanged).")
@json_option
def set_backchannel_logout_command(client_id: str, uri: str, session_required: bool | None, as_json: bool) -> None:
    """Change where the client receives logout tokens (OpenID Connect Back-Channel Logout 1.0)."""
    client = _load(client_id)
    try:
        set_backchannel_logout(client, uri, session_required=session_required)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    data = {"backchannel_logout_uri": client.backchannel_logout_uri,
            "backchannel_logout_session_required": bool(client.backchannel_logout_session_required)}
    emit(data, as_json, "\n".join(f"{name}: {value if value is not None else '-'}" for name, value in data.items()))


@cli.command("rotate-secret")
@click.argument("client_id")
@json_option
def rotate_secret_command(client_id: str, as_json: bool) -> None:
    """Replace a client's secret (the old one stops working at once); print the new one once."""
    client = _load(client_id)
    try:
        secret = rotate_secret(client)
    except ClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    emit({"client_id": client.client_id, "client_secret": secret}, as_json, f"client_secret: {secret}")


# -- initial access tokens (RFC 7591 §3) --------------------------------------------------------


@cli.group("initial-token")
def initial_token() -> None:
    """Initial access tokens: who may register clients at /register (RFC 7591)."""


def _fixed(values: tuple[str, ...]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: NAME=VALUE", param_hint="--fix")
        try:
            fixed[name] = json.loads(raw)
        except ValueError:
            fixed[name] = raw  # a bare string
    return fixed


@initial_token.command("create")
@click.option("--label", default="", help="A note: who it is for.")
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many clients it may register.")
@click.option("--unlimited", is_flag=True, help="Any number of registrations until it expires.")
@click.option("--expires-in", type=click.IntRange(min=1), default=86400, show_default=True, help="Seconds.")
@click.option("--grant-type", "grant_types", multiple=True, type=click.Choice(GRANT_TYPES),
              help="Limit: the grant types its clients may have (repeatable).")
@click.option("--scope", default=None, help="Limit: the scopes its clients may have (space-separated).")
@click.option("--auth-method", "auth_methods", multiple=True, type=click.Choice(AUTH_METHODS),
              help="Limit: the token endpoint authentication methods allowed (repeatable; the first is the default).")
@click.option("--fix", "fixed", multiple=True, metavar="NAME=VALUE",
              help="Fix a metadatum whatever the request says, e.g. security_profile=fapi2 or "
                   "dpop_bound_access_tokens=true (repeatable; VALUE is JSON or a string).")
@json_option
def initial_token_create(label: str, uses: int, unlimited: bool, expires_in: int, grant_types: tuple[str, ...],
                         scope: str | None, auth_methods: tuple[str, ...], fixed: tuple[str, ...],
                         as_json: bool) -> None:
    """Make an initial access token and print it (shown only now)."""
    policy: dict[str, Any] = {"grant_types": list(grant_types) or None, "scope": scope,
                              "token_endpoint_auth_methods": list(auth_methods) or None}
    if fixed:
        policy["fixed"] = _fixed(fixed)
    try:
        row, token = registration.issue_initial_token(
            label=label, policy={name: value for name, value in policy.items() if value is not None},
            max_uses=None if unlimited else uses, expires_in=expires_in)
    except registration.PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    emit({**row.as_dict(), "initial_access_token": token}, as_json,
         f"initial_access_token: {token}\n(shown only now; id {row.id}, expires {iso(row.expires_at)})")


@initial_token.command("list")
@json_option
def initial_token_list(as_json: bool) -> None:
    """List initial access tokens (never the tokens themselves)."""
    rows = [row.as_dict() for row in registration.list_initial_tokens()]
    emit(rows, as_json, table(("ID", "LABEL", "USES", "EXPIRES", "STATUS"), (
        (str(r["id"]), r["label"] or "-", f"{r['uses']}/{r['max_uses'] or 'unlimited'}", iso(r["expires_at"]),
         "revoked" if r["revoked_at"] else "live") for r in rows)))


@initial_token.command("revoke")
@click.argument("token_id", type=int)
def initial_token_revoke(token_id: int) -> None:
    """Revoke an initial access token: it registers nothing more."""
    if registration.revoke_initial_token(token_id) is None:
        raise click.ClickException(f"no initial access token {token_id}")
    click.echo(f"revoked initial access token {token_id}")


@cli.command("set-certificate")
@click.argument("client_id")
@_mtls_metadata_options
@click.option("--bound/--not-bound", "bound", default=None,
              help="Whether access tokens are bound to the client's certificate "
                   "(tls_client_certificate_bound_access_tokens; default: unchanged).")
@json_option
def set_certificate_command(client_id: str, bound: bool | None, as_json: bool, **identity: str | None) -> None:
    """Change the certificate a tls_client_auth client is known by (RFC 8705 §2.1.2), or whether its tokens
    are bound to its certificate.  Naming one tls_client_auth_* value replaces the one registered."""
    client = _load(client_id)
    given = {name: value for name, value in identity.items() if value is not None}
    try:
        set_certificate(client, given or None, bound=bound)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    data = client.as_dict()
    emit(data, as_json, fields(data))
