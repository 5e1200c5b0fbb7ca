"""User accounts: functions shared by the CLI and the admin HTTP API, and ``flask users ...``.

Passwords are hashed with scrypt (see :mod:`oidc.security`); the CLI reads
them from standard input only, never from the command line (which other local
users can see in the process list).

CLI (stable; ``--json`` prints one JSON object or array)::

    flask users create USERNAME --password-stdin [--email E] [--name N] [--email-verified] [--json]
    flask users list [--json]
    flask users show USERNAME [--json]
    flask users delete USERNAME
    flask users disable USERNAME / flask users enable USERNAME
    flask users set-password USERNAME --password-stdin
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from typing import Any

import click
from flask.cli import AppGroup

from oidc.login import normalize_username
from oidc.models import AccessToken, AuthorizationCode, Consent, LoginSession, RefreshToken, User, db, now
from oidc.security import hash_password

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class UserError(ValueError):
    """Invalid account data; the message says which field and why."""


def _check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UserError(f"password: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return password


def create_user(username: str, password: str, *, email: str | None = None, name: str | None = None,
                email_verified: bool = False) -> User:
    normalized = normalize_username(username) if isinstance(username, str) else ""
    if not 0 < len(normalized) <= 255 or not normalized.isprintable() or " " in normalized:
        raise UserError("username: 1 to 255 printable characters without spaces")
    if User.query.filter_by(username=normalized).first() is not None:
        raise UserError(f"username: {normalized!r} is taken")
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
        raise UserError("email: not an email address")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise UserError("name: at most 255 characters")
    moment = now()
    user = User(subject=secrets.token_hex(16), username=normalized, password_hash=hash_password(
        _check_password(password)), email=email, email_verified=bool(email_verified), name=name, disabled=False,
        created_at=moment, updated_at=moment)
    db.session.add(user)
    db.session.commit()
    return user


def get_user(username: str) -> User | None:
    if not isinstance(username, str) or len(username) > 255:
        return None
    return User.query.filter_by(username=normalize_username(username)).first()


def set_password(user: User, password: str) -> None:
    """A new password; every session of the user ends."""
    user.password_hash = hash_password(_check_password(password))
    user.updated_at = now()
    LoginSession.query.filter_by(user_pk=user.id, ended_at=None).update({"ended_at": now()})
    db.session.commit()


def set_disabled(user: User, disabled: bool) -> None:
    user.disabled = disabled
    user.updated_at = now()
    if disabled:
        LoginSession.query.filter_by(user_pk=user.id, ended_at=None).update({"ended_at": now()})
    db.session.commit()


def delete_user(user: User) -> None:
    """Delete a user with every session, code, token and consent (in one transaction)."""
    for model in (AccessToken, RefreshToken, AuthorizationCode, Consent, LoginSession):
        model.query.filter_by(user_pk=user.id).delete(synchronize_session=False)
    db.session.delete(user)
    db.session.commit()


# -- CLI ------------------------------------------------------------------------------------

users_cli = AppGroup("users", help="Manage user accounts.")


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("no password on standard input")
    return password


def _load(username: str) -> User:
    user = get_user(username)
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


@users_cli.command("create")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@click.option("--email", default=None, help="Email address.")
@click.option("--name", default=None, help="Full name.")
@click.option("--email-verified", is_flag=True, help="Mark the email address as verified.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create_command(username: str, password_stdin: bool, email: str | None, name: str | None,
                   email_verified: bool, as_json: bool) -> None:
    """Create a user; the password is read from standard input."""
    try:
        user = create_user(username, _read_password(), email=email, name=name, email_verified=email_verified)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(user.as_dict(), as_json, f"created {user.username} (sub {user.subject})")


@users_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """List users."""
    users = [user.as_dict() for user in User.query.order_by(User.id)]
    _emit(users, as_json, "\n".join(
        f"{u['username']}\t{u['sub']}\t{u['email'] or ''}\t{'disabled' if u['disabled'] else 'enabled'}"
        for u in users))


@users_cli.command("show")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(username: str, as_json: bool) -> None:
    """Show a user."""
    data = _load(username).as_dict()
    _emit(data, as_json, "\n".join(f"{key}: {value}" for key, value in sorted(data.items())))


@users_cli.command("delete")
@click.argument("username")
def delete_command(username: str) -> None:
    """Delete a user and every session, token and consent of theirs."""
    delete_user(_load(username))
    click.echo(f"deleted {normalize_username(username)}")


@users_cli.command("disable")
@click.argument("username")
def disable_command(username: str) -> None:
    """Disable a user: no login, sessions end, tokens become inactive."""
    set_disabled(_load(username), True)
    click.echo(f"disabled {normalize_username(username)}")


@users_cli.command("enable")
@click.argument("username")
def enable_command(username: str) -> None:
    """Enable a disabled user."""
    set_disabled(_load(username), False)
    click.echo(f"enabled {normalize_username(username)}")


@users_cli.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
def set_password_command(username: str, password_stdin: bool) -> None:
    """Replace a user's password (read from standard input); their sessions end."""
    user = _load(username)
    try:
        set_password(user, _read_password())
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password changed for {user.username}")
