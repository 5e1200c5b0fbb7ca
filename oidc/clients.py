"""Client registration and management: functions, and ``flask clients ...``.

The functions are what the CLI and the admin HTTP API share.  A client secret
is generated here (256 random bits), returned once, and stored only as a keyed
hash; rotating it returns the new one once.

CLI (stable: operators script it; ``--json`` prints one JSON object or array)::

    flask clients create --name NAME [--redirect-uri URI ...] [--post-logout-redirect-uri URI ...]
        [--grant-type G ...] [--scope "S ..."] [--auth-method METHOD] [--first-party]
        [--audience URI ...] [--jwks-file FILE] [--resource-server] [--refresh-always] [--json]
    flask clients list [--json]
    flask clients show CLIENT_ID [--json]
    flask clients delete CLIENT_ID
    flask clients disable CLIENT_ID / flask clients enable CLIENT_ID
    flask clients rotate-secret CLIENT_ID [--json]
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import Any, Iterable
from urllib.parse import urlsplit

import click
from flask.cli import AppGroup

from oidc.models import (
    AccessToken, AuthorizationCode, Client, ClientAssertion, Consent, RefreshToken, db, find_client, now,
)
from oidc.oauth2.client_cache import client_cache
from oidc.security import hasher, random_token

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
DEFAULT_SCOPE = "openid profile email offline_access"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class ClientError(ValueError):
    """Invalid registration data; the message says which field and why."""


def _check_uri(uri: Any, field: str) -> str:
    if not isinstance(uri, str) or not 0 < len(uri) <= 2000 or not uri.isprintable() or " " in uri:
        raise ClientError(f"{field}: {uri!r} is not a URI")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise ClientError(f"{field}: {uri!r} must not have a fragment")
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return uri
    if parts.scheme and "." in parts.scheme and parts.scheme not in ("http", "https"):
        return uri  # private-use scheme of a native app (RFC 8252 §7.1), e.g. com.example.app:/cb
    raise ClientError(f"{field}: {uri!r} must be https (http only on loopback), or a reverse-domain app scheme")


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
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError):
        raise ClientError("jwks: the key set could not be read") from None
    return json.dumps(jwks, sort_keys=True)


def _strings(values: Iterable[Any] | None, field: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise ClientError(f"{field}: must be a list of strings")
    return list(dict.fromkeys(values))


def create_client(*, name: str, redirect_uris: Iterable[str] | None = None,
                  post_logout_redirect_uris: Iterable[str] | None = None,
                  grant_types: Iterable[str] | None = None, scope: str | None = None,
                  auth_method: str = "client_secret_basic", first_party: bool = False,
                  audiences: Iterable[str] | None = None, jwks: Any = None, resource_server: bool = False,
                  refresh_always: bool = False) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (shown once; None for public clients)."""
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 255:
        raise ClientError("name: 1 to 255 characters")
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
    if "authorization_code" in grants and not redirects:
        raise ClientError("redirect_uris: the authorization_code grant needs at least one")
    if auth_method == "none" and "client_credentials" in grants:
        raise ClientError("grant_types: a public client (auth_method none) cannot use client_credentials")
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise ClientError("grant_types: refresh_token needs authorization_code")
    scope_value = DEFAULT_SCOPE if scope is None else scope
    if not isinstance(scope_value, str) or len(scope_value) > 2000 or not all(
            token.isprintable() and '"' not in token and "\\" not in token for token in scope_value.split()):
        raise ClientError("scope: space-separated scope tokens")
    jwks_text = None
    if auth_method == "private_key_jwt":
        if jwks is None:
            raise ClientError("jwks: private_key_jwt needs the client's public JWK Set")
        jwks_text = _check_jwks(jwks)
    elif jwks is not None:
        jwks_text = _check_jwks(jwks)

    client = Client(
        client_id=secrets.token_hex(16), name=name.strip(), auth_method=auth_method, scope=" ".join(
            dict.fromkeys(scope_value.split())), jwks=jwks_text, first_party=bool(first_party),
        resource_server=bool(resource_server), refresh_always=bool(refresh_always), disabled=False,
        created_at=now(),
    )
    client.redirect_uris = redirects
    client.post_logout_redirect_uris = post_logout
    client.grant_types = grants
    client.audiences = audience_list
    secret = None
    if auth_method in ("client_secret_basic", "client_secret_post"):
        secret = random_token(32)
        client.secret_hash = hasher("client secret").hash(secret)
        client.secret_rotated_at = client.created_at
    db.session.add(client)
    db.session.commit()
    return client, secret


def get_client(client_id: str) -> Client | None:
    return find_client(client_id, include_disabled=True)


def rotate_secret(client: Client) -> str:
    if client.auth_method not in ("client_secret_basic", "client_secret_post"):
        raise ClientError(f"auth_method {client.auth_method} has no client secret")
    secret = random_token(32)
    client.secret_hash = hasher("client secret").hash(secret)
    client.secret_rotated_at = now()
    db.session.commit()
    client_cache().forget(client.client_id)
    return secret


def set_disabled(client: Client, disabled: bool) -> None:
    client.disabled = disabled
    db.session.commit()
    client_cache().forget(client.client_id)


def delete_client(client: Client) -> None:
    """Delete a client and everything issued to it (in one transaction)."""
    for model in (AccessToken, RefreshToken, AuthorizationCode, Consent, ClientAssertion):
        model.query.filter_by(client_pk=client.id).delete(synchronize_session=False)
    db.session.delete(client)
    db.session.commit()
    client_cache().forget(client.client_id)


def created_view(client: Client, secret: str | None) -> dict[str, Any]:
    data = client.as_dict()
    if secret is not None:
        data["client_secret"] = secret
    return data


# -- CLI ------------------------------------------------------------------------------------

clients_cli = AppGroup("clients", help="Manage OAuth 2.0 / OpenID Connect clients.")


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def _load(client_id: str) -> Client:
    client = get_client(client_id)
    if client is None:
        raise click.ClickException(f"no client {client_id!r}")
    return client


@clients_cli.command("create")
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
@click.option("--resource-server", is_flag=True, help="May introspect tokens issued to other clients.")
@click.option("--refresh-always", is_flag=True, help="Issue refresh tokens without offline_access.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create_command(name: str, redirect_uris: tuple[str, ...], post_logout_redirect_uris: tuple[str, ...],
                   grant_types: tuple[str, ...], scope: str | None, auth_method: str, first_party: bool,
                   audiences: tuple[str, ...], jwks_file: Any, resource_server: bool, refresh_always: bool,
                   as_json: bool) -> None:
    """Register a client and print its client_id (and its secret, shown once)."""
    jwks = jwks_file.read() if jwks_file is not None else None
    try:
        client, secret = create_client(
            name=name, redirect_uris=redirect_uris, post_logout_redirect_uris=post_logout_redirect_uris,
            grant_types=grant_types or None, scope=scope, auth_method=auth_method, first_party=first_party,
            audiences=audiences, jwks=jwks, resource_server=resource_server, refresh_always=refresh_always,
        )
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    text = f"client_id: {client.client_id}"
    if secret is not None:
        text += f"\nclient_secret: {secret}\n(the secret is shown only now)"
    _emit(created_view(client, secret), as_json, text)


@clients_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """List clients."""
    clients = [client.as_dict() for client in Client.query.order_by(Client.id)]
    _emit(clients, as_json, "\n".join(
        f"{c['client_id']}\t{c['name']}\t{c['auth_method']}\t{'disabled' if c['disabled'] else 'enabled'}"
        for c in clients))


@clients_cli.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(client_id: str, as_json: bool) -> None:
    """Show a client's registration."""
    data = _load(client_id).as_dict()
    _emit(data, as_json, "\n".join(f"{key}: {value}" for key, value in sorted(data.items())))


@clients_cli.command("delete")
@click.argument("client_id")
def delete_command(client_id: str) -> None:
    """Delete a client and every code, token and consent issued to it."""
    delete_client(_load(client_id))
    click.echo(f"deleted {client_id}")


@clients_cli.command("disable")
@click.argument("client_id")
def disable_command(client_id: str) -> None:
    """Disable a client: it cannot authenticate, its tokens become inactive."""
    set_disabled(_load(client_id), True)
    click.echo(f"disabled {client_id}")


@clients_cli.command("enable")
@click.argument("client_id")
def enable_command(client_id: str) -> None:
    """Enable a disabled client."""
    set_disabled(_load(client_id), False)
    click.echo(f"enabled {client_id}")


@clients_cli.command("rotate-secret")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate_secret_command(client_id: str, as_json: bool) -> None:
    """Replace a client's secret (the old one stops working at once); print the new one once."""
    client = _load(client_id)
    try:
        secret = rotate_secret(client)
    except ClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    _emit({"client_id": client.client_id, "client_secret": secret}, as_json, f"client_secret: {secret}")
