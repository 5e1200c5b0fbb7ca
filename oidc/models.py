"""Database tables.  The schema itself is managed by Alembic migrations."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

from keys.store import define_signing_keys_table

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))

#: The key service's own table (software keys and HSM key lifecycles).
signing_keys = define_signing_keys_table(db.metadata)


# -- OpenID Connect / OAuth 2.0 -------------------------------------------------
#
# Times are integer seconds since the epoch (as in ``signing_keys``).  Secrets
# are never stored in clear: ``*_hash`` columns hold keyed hashes (see
# :mod:`oidc.security`), passwords a scrypt hash.  Rows that depend on a client
# or a user are deleted with it (explicitly, see oidc/clients.py and
# oidc/users.py, and by ON DELETE CASCADE where the database enforces it).

import json as _json
import time as _time

from sqlalchemy import (
    BigInteger, Boolean, Column, ForeignKey, Integer, Row, String, Text, UniqueConstraint, bindparam, select, update,
)


def now() -> int:
    return int(_time.time())


def _loads(value: str | None) -> list:
    return list(_json.loads(value)) if value else []


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id = Column(Integer, primary_key=True, autoincrement=True)
    #: The stable, opaque ``sub`` claim; never reused, never the username.
    subject = Column(String(64), nullable=False, unique=True)
    username = Column(String(255), nullable=False, unique=True)
    password_hash = Column(String(255), nullable=False)
    email = Column(String(320))
    email_verified = Column(Boolean, nullable=False, default=False)
    name = Column(String(255))
    disabled = Column(Boolean, nullable=False, default=False)
    created_at = Column(BigInteger, nullable=False, default=now)
    updated_at = Column(BigInteger, nullable=False, default=now)

    def get_user_id(self) -> int:
        return self.id

    def as_dict(self) -> dict:
        return {"username": self.username, "sub": self.subject, "email": self.email,
                "email_verified": bool(self.email_verified), "name": self.name,
                "disabled": bool(self.disabled), "created_at": self.created_at, "updated_at": self.updated_at}


class Client(db.Model):  # type: ignore[name-defined,misc]
    """A registered relying party or resource server.

    List-valued registration metadata are JSON arrays in text columns, so the
    schema is the same on SQLite and PostgreSQL.
    """

    __tablename__ = "clients"

    id = Column(Integer, primary_key=True, autoincrement=True)
    client_id = Column(String(64), nullable=False, unique=True)
    name = Column(String(255), nullable=False)
    secret_hash = Column(String(64))
    secret_rotated_at = Column(BigInteger)
    auth_method = Column(String(32), nullable=False)
    redirect_uris_json = Column("redirect_uris", Text, nullable=False, default="[]")
    post_logout_redirect_uris_json = Column("post_logout_redirect_uris", Text, nullable=False, default="[]")
    grant_types_json = Column("grant_types", Text, nullable=False, default="[]")
    audiences_json = Column("audiences", Text, nullable=False, default="[]")
    scope = Column(Text, nullable=False, default="")
    jwks = Column(Text)
    first_party = Column(Boolean, nullable=False, default=False)
    #: May introspect tokens issued to other clients (a resource server).
    resource_server = Column(Boolean, nullable=False, default=False)
    #: Issue refresh tokens without ``offline_access`` (client policy).
    refresh_always = Column(Boolean, nullable=False, default=False)
    disabled = Column(Boolean, nullable=False, default=False)
    created_at = Column(BigInteger, nullable=False, default=now)

    @property
    def redirect_uris(self) -> list[str]:
        return _loads(self.redirect_uris_json)

    @redirect_uris.setter
    def redirect_uris(self, value: list[str]) -> None:
        self.redirect_uris_json = _json.dumps(list(value))

    @property
    def post_logout_redirect_uris(self) -> list[str]:
        return _loads(self.post_logout_redirect_uris_json)

    @post_logout_redirect_uris.setter
    def post_logout_redirect_uris(self, value: list[str]) -> None:
        self.post_logout_redirect_uris_json = _json.dumps(list(value))

    @property
    def grant_types(self) -> list[str]:
        return _loads(self.grant_types_json)

    @grant_types.setter
    def grant_types(self, value: list[str]) -> None:
        self.grant_types_json = _json.dumps(list(value))

    @property
    def audiences(self) -> list[str]:
        return _loads(self.audiences_json)

    @audiences.setter
    def audiences(self, value: list[str]) -> None:
        self.audiences_json = _json.dumps(list(value))

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    # Authlib's ClientMixin -------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope if every scope in it is registered, else None (invalid_scope).

        With no scope requested, every registered scope but ``offline_access``.
        """
        registered = self.scopes
        if not scope:
            return " ".join(s for s in registered if s != "offline_access")
        requested = list(dict.fromkeys(scope.split()))
        if not set(requested) <= set(registered):
            return None
        return " ".join(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string comparison, never a prefix

    def check_client_secret(self, client_secret: str) -> bool:
        from oidc.security import hasher

        return hasher("client secret").verify(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def as_dict(self) -> dict:
        return {
            "client_id": self.client_id, "name": self.name, "auth_method": self.auth_method,
            "redirect_uris": self.redirect_uris, "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grant_types": self.grant_types, "scope": self.scope, "audiences": self.audiences,
            "jwks": _json.loads(self.jwks) if self.jwks else None, "first_party": bool(self.first_party),
            "resource_server": bool(self.resource_server), "refresh_always": bool(self.refresh_always),
            "disabled": bool(self.disabled), "created_at": self.created_at,
            "secret_rotated_at": self.secret_rotated_at,
        }


class LoginSession(db.Model):  # type: ignore[name-defined,misc]
    """A browser login; its ``sid`` goes into ID tokens, ending it logs out."""

    __tablename__ = "login_sessions"

    sid = Column(String(64), primary_key=True)
    user_pk = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    auth_time = Column(BigInteger, nullable=False)
    expires_at = Column(BigInteger, nullable=False)
    ended_at = Column(BigInteger)


class AuthorizationCode(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "authorization_codes"

    id = Column(Integer, primary_key=True, autoincrement=True)
    code_hash = Column(String(64), nullable=False, unique=True)
    #: The family of every token issued from this code (revoked on replay).
    grant_id = Column(String(64), nullable=False, index=True)
    client_pk = Column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    redirect_uri = Column(Text, nullable=False)
    #: Whether the authorization request carried ``redirect_uri`` (then the token request must repeat it).
    redirect_uri_given = Column(Boolean, nullable=False, default=True)
    scope = Column(Text, nullable=False, default="")
    audience = Column(Text, nullable=False, default="[]")
    nonce = Column(Text)
    code_challenge = Column(String(128))
    code_challenge_method = Column(String(8))
    auth_time = Column(BigInteger, nullable=False)
    sid = Column(String(64))
    created_at = Column(BigInteger, nullable=False)
    expires_at = Column(BigInteger, nullable=False)
    used_at = Column(BigInteger)

    # Authlib's AuthorizationCodeMixin
    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri if self.redirect_uri_given else None

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class RefreshToken(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "refresh_tokens"

    id = Column(Integer, primary_key=True, autoincrement=True)
    token_hash = Column(String(64), nullable=False, unique=True)
    grant_id = Column(String(64), nullable=False, index=True)
    client_pk = Column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    scope = Column(Text, nullable=False, default="")
    audience = Column(Text, nullable=False, default="[]")
    auth_time = Column(BigInteger, nullable=False)
    sid = Column(String(64))
    created_at = Column(BigInteger, nullable=False)
    expires_at = Column(BigInteger, nullable=False)
    #: Set when it was exchanged for a new one; presenting it again is reuse.
    rotated_at = Column(BigInteger)
    revoked_at = Column(BigInteger)

    # Authlib's TokenMixin
    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client: "Client") -> bool:
        return self.client_pk == client.id


class AccessToken(db.Model):  # type: ignore[name-defined,misc]
    """Every issued JWT access token by ``jti``: what introspection and revocation need.

    A revoked access token keeps its row until it expires, so that it is
    reported inactive for as long as it would otherwise verify.
    """

    __tablename__ = "access_tokens"

    id = Column(Integer, primary_key=True, autoincrement=True)
    jti = Column(String(64), nullable=False, unique=True)
    grant_id = Column(String(64), index=True)
    client_pk = Column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope = Column(Text, nullable=False, default="")
    issued_at = Column(BigInteger, nullable=False)
    expires_at = Column(BigInteger, nullable=False, index=True)
    revoked_at = Column(BigInteger)


#: Longest client_id looked up (ours are 32 characters); longer ones are unknown at once.
MAX_CLIENT_ID_LENGTH = 64

# The hot-path look-ups (every token, introspection and userinfo request) as
# statements built once: building the expression costs more than running it.
_CLIENT_BY_ID = select(Client).where(Client.client_id == bindparam("client_id")).limit(1)
_ENABLED_CLIENT_BY_ID = _CLIENT_BY_ID.where(Client.disabled.is_(False))
_ACCESS_TOKEN_BY_JTI = select(*AccessToken.__table__.c).where(AccessToken.jti == bindparam("jti")).limit(1)
# Codes and refresh tokens are looked up by every keyed hash they may have (one per system secret).
_CODE_BY_HASH = select(AuthorizationCode).where(
    AuthorizationCode.code_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_REFRESH_TOKEN_BY_HASH = select(RefreshToken).where(
    RefreshToken.token_hash.in_(bindparam("hashes", expanding=True))).limit(1)


def find_client(client_id: object, *, include_disabled: bool = False) -> Client | None:
    """The client registered as ``client_id`` (disabled ones only when asked for)."""
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
        return None
    statement = _CLIENT_BY_ID if include_disabled else _ENABLED_CLIENT_BY_ID
    return db.session.execute(statement, {"client_id": client_id}).scalar()


def find_authorization_code_row(hashes: list[str]) -> AuthorizationCode | None:
    return db.session.execute(_CODE_BY_HASH, {"hashes": hashes}).scalar()


def find_refresh_token_row(hashes: list[str]) -> RefreshToken | None:
    return db.session.execute(_REFRESH_TOKEN_BY_HASH, {"hashes": hashes}).scalar()


def find_access_token_row(jti: object) -> Row | None:
    """The row of an access token by ``jti`` (family tokens, and revoked client tokens), read-only.

    It is read with SQLAlchemy Core on a connection of its own, outside the
    request's ORM session: introspection and userinfo only read it, and most
    tokens (a client's) have no row at all, so a request that reads nothing
    else never opens a session transaction.  That costs about a third of an
    ORM query and its transaction.  Writers change the row with an ``UPDATE``
    by ``id`` (see :func:`revoke_access_token_row`).
    """
    if not isinstance(jti, str) or not 0 < len(jti) <= 64:
        return None
    with db.engine.connect() as connection:
        return connection.execute(_ACCESS_TOKEN_BY_JTI, {"jti": jti}).first()


def revoke_access_token_row(row_id: int, moment: int) -> None:
    """Mark an access token row revoked, in the request's transaction (a second revocation keeps the first time)."""
    db.session.execute(update(AccessToken).where(AccessToken.id == row_id, AccessToken.revoked_at.is_(None))
                       .values(revoked_at=moment))


class Consent(db.Model):  # type: ignore[name-defined,misc]
    """A user's consent to a client for a scope set (sorted, space-separated)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_pk", "client_pk", "scope", name="uq_consents_user_client_scope"),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    user_pk = Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    client_pk = Column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    scope = Column(Text, nullable=False)
    created_at = Column(BigInteger, nullable=False, default=now)


class ClientAssertion(db.Model):  # type: ignore[name-defined,misc]
    """``jti`` of each accepted private_key_jwt assertion, until it expires (replay refusal)."""

    __tablename__ = "client_assertions"
    __table_args__ = (UniqueConstraint("client_pk", "jti", name="uq_client_assertions_client_jti"),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    client_pk = Column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False)
    jti = Column(String(255), nullable=False)
    expires_at = Column(BigInteger, nullable=False, index=True)
