"""User accounts: create, find, authenticate, change, disable, delete.

Passwords are hashed with scrypt at ``PASSWORD_HASH_COST`` (see
:class:`oidc.hashing.PasswordHasher`); :func:`authenticate` spends the same
work whether or not the account exists, and rewrites a hash made at another
cost (or in the earlier format) once the password is known to be right.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

from oidc import queries
from oidc.db import db
from oidc.models import User
from oidc.oauth2.logins import end_logins_of
from oidc.state import current_state
from oidc.text import bounded_text, column_text

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_USERNAME_LENGTH = 255
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class UserError(ValueError):
    """Invalid account data; the message says which field and why."""


def normalize_username(value: str) -> str:
    """Usernames compare after NFKC normalisation, trimmed and lower-cased."""
    return unicodedata.normalize("NFKC", value or "").strip().lower()


def _check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UserError(f"password: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return password


def create_user(username: object, password: object, *, email: str | None = None, name: str | None = None,
                email_verified: bool = False, admin: bool = False) -> User:
    normalized = normalize_username(username) if isinstance(username, str) else ""
    if bounded_text(normalized, MAX_USERNAME_LENGTH) is None or not normalized.isprintable() or " " in normalized:
        raise UserError("username: 1 to 255 printable characters without spaces")
    if queries.find_user_by_username(normalized) is not None:
        raise UserError(f"username: {normalized!r} is taken")
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
        raise UserError("email: not an email address")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise UserError("name: at most 255 characters")
    state = current_state()
    moment = state.clock.now()
    user = User(subject=secrets.token_hex(16), username=normalized,
                password_hash=state.passwords.hash(_check_password(password)), email=email,
                email_verified=bool(email_verified), name=name, disabled=False, admin=bool(admin), created_at=moment,
                updated_at=moment)
    queries.add(user)
    db.session.commit()
    return user


def get_user(username: object) -> User | None:
    checked = column_text(username, MAX_USERNAME_LENGTH)
    if checked is None:
        return None
    return queries.find_user_by_username(normalize_username(checked))


def list_users() -> list[User]:
    return queries.list_users()


def authenticate(username: str, password: str) -> User | None:
    """The enabled user with this username and password, or None (after the same work)."""
    passwords = current_state().passwords
    user = get_user(username)
    valid = passwords.verify(password, user.password_hash if user is not None else None)
    if not valid or user is None or user.disabled:
        return None
    if passwords.needs_rehash(str(user.password_hash)):
        user.password_hash = passwords.hash(password)
        db.session.commit()
    return user


def set_password(user: User, password: object, *, revoke_grants: bool = False) -> None:
    """A new password; every session of the user ends, and with it every grant made without
    offline_access (OIDC Core §11).  ``revoke_grants`` ends the offline_access grants too
    (a compromised account: every refresh token of the user stops working)."""
    state = current_state()
    user.password_hash = state.passwords.hash(_check_password(password))
    user.updated_at = state.clock.now()
    end_logins_of(user, include_offline=revoke_grants)
    db.session.commit()


def set_disabled(user: User, disabled: bool) -> None:
    """Disable (every session and every grant ends, offline ones included) or enable a user."""
    user.disabled = disabled
    user.updated_at = current_state().clock.now()
    if disabled:
        end_logins_of(user, include_offline=True)
    db.session.commit()


def delete_user(user: User) -> None:
    """Delete a user with every session, code, token and consent (in one transaction); the clients of its
    open sessions are owed logout tokens, as when a user is disabled (the outbox keeps its ``sub``)."""
    end_logins_of(user, include_offline=True)
    queries.delete_rows_of_user(user.id)
    queries.remove(user)
    db.session.commit()
