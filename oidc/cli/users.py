"""``flask users ...``: user accounts.

Passwords are asked for twice, hidden, on a terminal, or read from standard
input with ``--password-stdin`` (scripts); never from the command line, which
other local users can see in the process list::

    flask users create USERNAME [--password-stdin] [--email E] [--name N] [--email-verified] [--admin] [--json]
    flask users list [--json]
    flask users show USERNAME [--json]
    flask users delete USERNAME
    flask users disable USERNAME / flask users enable USERNAME
    flask users set-password USERNAME [--password-stdin] [--revoke-grants]
"""

from __future__ import annotations

import sys

import click

from oidc.accounts.users import (
    UserError,
    create_user,
    delete_user,
    get_user,
    list_users,
    normalize_username,
    set_disabled,
    set_password,
)
from oidc.cli.output import CommandGroup, emit, fields, iso, json_option, table
from oidc.models import User

cli = CommandGroup("users", help="Manage user accounts.")


def _read_password(from_stdin: bool) -> str:
    """The new password: from standard input with --password-stdin, else asked twice on the terminal."""
    if not from_stdin:
        if not sys.stdin.isatty():
            raise click.ClickException("no terminal to ask for the password on: pass --password-stdin and "
                                       "write the password to standard input")
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("no password on standard input")
    return password


def _load(username: str) -> User:
    user = get_user(username)
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


@cli.command("create")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (scripts); without it, it is asked for on the terminal.")
@click.option("--email", default=None, help="Email address.")
@click.option("--name", default=None, help="Full name.")
@click.option("--email-verified", is_flag=True, help="Mark the email address as verified.")
@click.option("--admin", is_flag=True, help="May use the admin API with an access token of an admin_api client.")
@json_option
def create_command(username: str, password_stdin: bool, email: str | None, name: str | None,
                   email_verified: bool, admin: bool, as_json: bool) -> None:
    """Create a user; the password is asked for on the terminal (or read with --password-stdin)."""
    try:
        user = create_user(username, _read_password(password_stdin), email=email, name=name, email_verified=email_verified,
                           admin=admin)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    emit(user.as_dict(), as_json, f"created {user.username} (sub {user.subject})")


@cli.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List users."""
    users = [user.as_dict() for user in list_users()]
    emit(users, as_json, table(("USERNAME", "SUB", "EMAIL", "STATUS", "CREATED"), (
        (u["username"], u["sub"], u["email"], "disabled" if u["disabled"] else "enabled", iso(u["created_at"]))
        for u in users)))


@cli.command("show")
@click.argument("username")
@json_option
def show_command(username: str, as_json: bool) -> None:
    """Show a user."""
    data = _load(username).as_dict()
    emit(data, as_json, fields(data))


@cli.command("delete")
@click.argument("username")
def delete_command(username: str) -> None:
    """Delete a user and every session, token and consent of theirs."""
    delete_user(_load(username))
    click.echo(f"deleted {normalize_username(username)}")


@cli.command("disable")
@click.argument("username")
def disable_command(username: str) -> None:
    """Disable a user: no login, sessions end, tokens become inactive."""
    set_disabled(_load(username), True)
    click.echo(f"disabled {normalize_username(username)}")


@cli.command("enable")
@click.argument("username")
def enable_command(username: str) -> None:
    """Enable a disabled user."""
    set_disabled(_load(username), False)
    click.echo(f"enabled {normalize_username(username)}")


@cli.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (scripts); without it, it is asked for on the terminal.")
@click.option("--revoke-grants", is_flag=True,
              help="Also revoke the user's offline_access grants (every refresh token): a compromised account.")
def set_password_command(username: str, password_stdin: bool, revoke_grants: bool) -> None:
    """Replace a user's password (asked for, or read with --password-stdin); their sessions end, and the grants
    made without offline_access (with --revoke-grants, every grant)."""
    user = _load(username)
    try:
        set_password(user, _read_password(password_stdin), revoke_grants=revoke_grants)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password changed for {user.username}" + (", every grant revoked" if revoke_grants else ""))
