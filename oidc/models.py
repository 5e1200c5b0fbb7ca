"""Database tables of the provider (the key service's table is in :mod:`oidc.db`).

Secrets are never stored in clear: ``*_hash`` columns hold keyed hashes (see
:mod:`oidc.hashing`), passwords a scrypt hash.  Rows that depend on a client or
a user are deleted with it (explicitly, see :mod:`oidc.accounts`, and by
``ON DELETE CASCADE`` where the database enforces it).

These are plain tables: every statement on them is in :mod:`oidc.queries`, and
the few methods here read their own row only (the ones Authlib's
``ClientMixin`` calls and what the CLI and admin API print).  Rules that need
the settings or the protocol core live in the core: which scope a client gets
(:mod:`oidc.oauth2.scopes`), how it authenticates (:mod:`oidc.oauth2.client_auth`).
Times are set by whoever writes a row, from the app's clock.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column

from oidc.db import JSONList, db

#: The client metadata of signed and encrypted responses, as registered (and as the admin API names them).
RESPONSE_METADATA = (
    "authorization_signed_response_alg", "authorization_encrypted_response_alg",
    "authorization_encrypted_response_enc", "introspection_signed_response_alg",
    "introspection_encrypted_response_alg", "introspection_encrypted_response_enc",
    "userinfo_signed_response_alg", "userinfo_encrypted_response_alg", "userinfo_encrypted_response_enc",
    "id_token_encrypted_response_alg", "id_token_encrypted_response_enc",
)

#: The certificate a client authenticating with ``tls_client_auth`` presents (RFC 8705 §2.1.2): exactly one of
#: these is registered, its subject DN (RFC 4514) or one subjectAltName entry of the given type.
MTLS_METADATA = ("tls_client_auth_subject_dn", "tls_client_auth_san_dns", "tls_client_auth_san_uri",
                 "tls_client_auth_san_ip", "tls_client_auth_san_email")


class User(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The stable, opaque ``sub`` claim; never reused, never the username.
    subject: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    name: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: May use the admin API with an access token (of a client allowed to ask for one).
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)

    def get_user_id(self) -> int:
        return self.id

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "sub": self.subject, "email": self.email,
                "email_verified": bool(self.email_verified), "name": self.name,
                "disabled": bool(self.disabled), "admin": bool(self.admin), "created_at": self.created_at,
                "updated_at": self.updated_at}


class ClientRules:
    """What a client answers of its own fields: the methods of the ORM row (:class:`Client`) and of the
    client cache's read-only copies (:class:`oidc.oauth2.client_cache.CachedClient`), written once.

    ``self`` is either (typed Any here: the copies have the row's fields without its mapping).
    """

    @property
    def scopes(self: Any) -> list[str]:
        return str(self.scope).split()

    @property
    def is_public(self: Any) -> bool:
        return bool(self.auth_method == "none")

    # Authlib's ClientMixin, the parts that read this row only.  Its other methods are
    # the core's: oidc.oauth2.scopes.allowed_scope, and oidc.oauth2.client_auth's
    # check_client_secret and auth_method_allowed (its ClientAuthentication calls them).

    def get_client_id(self: Any) -> str:
        return str(self.client_id)

    def get_default_redirect_uri(self: Any) -> str | None:
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def check_redirect_uri(self: Any, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string comparison, never a prefix

    def check_response_type(self: Any, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self: Any, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def as_dict(self: Any) -> dict[str, Any]:
        return {
            "client_id": self.client_id, "name": self.name, "auth_method": self.auth_method,
            "redirect_uris": self.redirect_uris, "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grant_types": self.grant_types, "scope": self.scope, "audiences": self.audiences,
            "jwks": json.loads(self.jwks) if self.jwks else None, "first_party": bool(self.first_party),
            "resource_server": bool(self.resource_server), "refresh_always": bool(self.refresh_always),
            "id_token_on_refresh": bool(self.id_token_on_refresh),
            "require_pushed_authorization_requests": bool(self.require_pushed_authorization_requests),
            "dpop_bound_access_tokens": bool(self.dpop_bound_access_tokens),
            "security_profile": self.security_profile,
            "require_signed_request_object": bool(self.require_signed_request_object),
            "request_object_signing_alg": self.request_object_signing_alg,
            "admin_api": bool(self.admin_api),
            "disabled": bool(self.disabled), "created_at": self.created_at,
            "secret_rotated_at": self.secret_rotated_at,
            "logo_uri": self.logo_uri, "policy_uri": self.policy_uri, "tos_uri": self.tos_uri,
            "jwks_uri": self.jwks_uri, "dynamically_registered": self.registration_token_hash is not None,
            "backchannel_logout_uri": self.backchannel_logout_uri,
            "backchannel_logout_session_required": bool(self.backchannel_logout_session_required),
            **{name: getattr(self, name) for name in RESPONSE_METADATA},
            **{name: getattr(self, name) for name in MTLS_METADATA},
            "tls_client_certificate_bound_access_tokens": bool(self.tls_client_certificate_bound_access_tokens),
        }


class Client(db.Model, ClientRules):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A registered relying party or resource server."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    secret_rotated_at: Mapped[int | None] = mapped_column(BigInteger)
    auth_method: Mapped[str] = mapped_column(String(32), nullable=False)
    redirect_uris: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    post_logout_redirect_uris: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    grant_types: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    audiences: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    jwks: Mapped[str | None] = mapped_column(Text)
    first_party: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: May introspect tokens issued to other clients (a resource server).
    resource_server: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: Issue refresh tokens without ``offline_access`` (client policy).
    refresh_always: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: A refresh also returns a new ID token (optional in OIDC Core §12.2; on by default).
    id_token_on_refresh: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    #: Authorization requests only through /par (RFC 9126 §6).
    require_pushed_authorization_requests: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: Token requests need a DPoP proof; access tokens are always DPoP-bound (RFC 9449 §5.2).
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: "fapi2" applies the FAPI 2.0 Security Profile to this client, "fapi2-message-signing" FAPI 2.0
    #: Message Signing too; None follows SECURITY_PROFILE.
    security_profile: Mapped[str | None] = mapped_column(String(32))
    #: Authorization requests only as signed request objects (RFC 9101 §10.5).
    require_signed_request_object: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                                server_default=false())
    #: The one alg of the client's request objects ("none": unsigned ones); None: any the provider allows.
    request_object_signing_alg: Mapped[str | None] = mapped_column(String(16))
    #: May request access tokens for the admin API (its audience and the admin scope).
    admin_api: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Shown on the consent page (Dynamic Client Registration §2): the client's logo and its policies.
    logo_uri: Mapped[str | None] = mapped_column(String(2000))
    policy_uri: Mapped[str | None] = mapped_column(String(2000))
    tos_uri: Mapped[str | None] = mapped_column(String(2000))
    #: Where the client publishes its public keys (RFC 7591 §2), fetched and cached by
    #: :mod:`oidc.oauth2.client_keys`; never together with ``jwks``.
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    #: Keyed hash of the RFC 7592 registration access token (None: registered by the operator).
    registration_token_hash: Mapped[str | None] = mapped_column(String(64))
    #: What the initial access token's policy and the software statement fixed or limited (a JSON
    #: object; :mod:`oidc.accounts.registration`): an RFC 7592 update cannot lift it.
    registration_policy: Mapped[str | None] = mapped_column(Text)
    #: Informational metadata registered through /register (client_uri, contacts, software_id, ...),
    #: a JSON object returned as registered.
    registration_metadata: Mapped[str | None] = mapped_column(Text)
    #: Where logout tokens are POSTed when a login session this client got tokens in ends
    #: (OpenID Connect Back-Channel Logout 1.0 §2.2); None: the client is not told.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    #: Logout tokens carry the session's ``sid`` (§2.2); without it, ``sub`` only.
    backchannel_logout_session_required: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false())
    #: Signed (and encrypted) responses (JARM, RFC 9701, OIDC Core §5.3.2, OIDC Registration §2):
    #: the algorithms the client registered; None is "not registered" (see RESPONSE_METADATA).
    authorization_signed_response_alg: Mapped[str | None] = mapped_column(String(16))
    authorization_encrypted_response_alg: Mapped[str | None] = mapped_column(String(32))
    authorization_encrypted_response_enc: Mapped[str | None] = mapped_column(String(32))
    introspection_signed_response_alg: Mapped[str | None] = mapped_column(String(16))
    introspection_encrypted_response_alg: Mapped[str | None] = mapped_column(String(32))
    introspection_encrypted_response_enc: Mapped[str | None] = mapped_column(String(32))
    userinfo_signed_response_alg: Mapped[str | None] = mapped_column(String(16))
    userinfo_encrypted_response_alg: Mapped[str | None] = mapped_column(String(32))
    userinfo_encrypted_response_enc: Mapped[str | None] = mapped_column(String(32))
    id_token_encrypted_response_alg: Mapped[str | None] = mapped_column(String(32))
    id_token_encrypted_response_enc: Mapped[str | None] = mapped_column(String(32))
    #: What identifies the certificate of a ``tls_client_auth`` client (RFC 8705 §2.1.2; see MTLS_METADATA).
    tls_client_auth_subject_dn: Mapped[str | None] = mapped_column(String(2000))
    tls_client_auth_san_dns: Mapped[str | None] = mapped_column(String(2000))
    tls_client_auth_san_uri: Mapped[str | None] = mapped_column(String(2000))
    tls_client_auth_san_ip: Mapped[str | None] = mapped_column(String(64))
    tls_client_auth_san_email: Mapped[str | None] = mapped_column(String(320))
    #: Access tokens are bound to the client certificate of the token request (RFC 8705 §3).
    tls_client_certificate_bound_access_tokens: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false())


class LoginSession(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A browser login; its ``sid`` goes into ID tokens, ending it logs out."""

    __tablename__ = "login_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_pk: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    auth_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)


class AuthorizationCode(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    #: The family of every token issued from this code (revoked on replay).
    grant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    redirect_uri: Mapped[str] = mapped_column(Text, nullable=False)
    #: Whether the authorization request carried ``redirect_uri`` (then the token request must repeat it).
    redirect_uri_given: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    audience: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(8))
    #: RFC 7638 thumbprint of the DPoP key the code is bound to (RFC 9449 §10), if any.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: The login session (indexed: a logout finds the grants it ends by it).
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class RefreshToken(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    grant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    audience: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    auth_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: The login session (indexed: a logout finds the grants it ends by it).
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: The DPoP key a public client's refresh token is bound to (RFC 9449 §5).
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    #: The certificate (``x5t#S256``) a public client's refresh token is bound to (RFC 8705 §4).
    certificate_thumbprint: Mapped[str | None] = mapped_column(String(64))
    #: When the family's first refresh token was issued (REFRESH_TOKEN_MAX_LIFETIME counts from it).
    family_issued_at: Mapped[int | None] = mapped_column(BigInteger)
    #: Set when it was exchanged for a new one; presenting it again is reuse.
    rotated_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class AccessToken(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """Every issued JWT access token of a grant family by ``jti``, for introspection and revocation.

    A revoked access token keeps its row until it expires, so that it is
    reported inactive for as long as it would otherwise verify.
    """

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    jti: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    user_pk: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    issued_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class Consent(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A user's consent to a client for a scope set (sorted, space-separated)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_pk", "client_pk", "scope", name="uq_consents_user_client_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_pk: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ClientAssertion(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """``jti`` of each accepted private_key_jwt assertion, until it expires (replay refusal)."""

    __tablename__ = "client_assertions"
    __table_args__ = (UniqueConstraint("client_pk", "jti", name="uq_client_assertions_client_jti"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False)
    jti: Mapped[str] = mapped_column(String(255), nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class PushedAuthorizationRequest(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """An authorization request pushed to /par (RFC 9126), until it is used once or expires.

    The ``request_uri`` is stored as a keyed hash; ``used_at`` is set by one
    conditional UPDATE when an authorization response is sent for it.
    """

    __tablename__ = "pushed_authorization_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_uri_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    #: The pushed parameters, as a JSON list of [name, value] pairs (repeated names kept).
    parameters: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class Interaction(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A validated authorization request waiting for the user to log in or consent (:mod:`oidc.oauth2.interactions`).

    The browser carries only its id, stored here as a keyed hash (as codes
    are), and the row is bound to that browser by the hash of a random value in
    its session cookie.  ``used_at`` is set by one conditional UPDATE when the
    authorization response (code or error) is sent.
    """

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    interaction_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    #: Keyed hash of the binding value kept in the browser's session cookie.
    binding_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    #: The pushed request (RFC 9126) the parameters came from, claimed with the interaction.
    pushed_pk: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("pushed_authorization_requests.id", ondelete="CASCADE"), index=True)
    #: The request's parameters as validated, a JSON list of [name, value] pairs (repeated names kept).
    parameters: Mapped[list[Any]] = mapped_column(JSONList, nullable=False)
    #: What validation made of them: the redirect URI, the scope granted, the access token audience.
    redirect_uri: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    audience: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    #: The login this interaction is for: made for it at the login page, or the one the consent page was shown to.
    sid: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class DPoPProof(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """``jti`` of each accepted DPoP proof, for as long as its ``iat`` is acceptable (RFC 9449 §11.1)."""

    __tablename__ = "dpop_proofs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: SHA-256 of the key thumbprint and the jti (fixed length, whatever the client sends).
    jti_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class InitialAccessToken(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """An operator's permission to register clients at /register (RFC 7591 §3), stored as a keyed hash.

    Each registration takes one use with one conditional UPDATE (``uses < max_uses``):
    of two registrations racing with a single-use token, exactly one succeeds.
    """

    __tablename__ = "initial_access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    #: The operator's note (who it was given to).
    label: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    #: The metadata it fixes or limits, a JSON object (:mod:`oidc.accounts.registration`).
    policy: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    #: None: any number of registrations until it expires.
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "policy": json.loads(self.policy or "{}"),
                "max_uses": self.max_uses, "uses": self.uses, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}
class BackchannelLogout(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A logout token owed to a client: the outbox of Back-Channel Logout (:mod:`oidc.oauth2.backchannel`).

    Written in the transaction that ends the login session, so that a session
    never ends without its logout tokens owed, nor the other way round; one row
    per client and session.  A worker sends it after claiming it with one
    conditional UPDATE (a lease: ``claimed_until``, and ``claim`` naming the
    claimer); ``next_attempt_at`` is NULL once it is done (delivered or given up),
    so that the index of due rows holds only those still owed.
    """

    __tablename__ = "backchannel_logouts"
    __table_args__ = (UniqueConstraint("client_pk", "sid", name="uq_backchannel_logouts_client_sid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False)
    #: The login session that ended, and its user's ``sub``.
    sid: Mapped[str] = mapped_column(String(64), nullable=False)
    subject: Mapped[str] = mapped_column(String(64), nullable=False)
    #: The logout token's ``jti``, the same on every attempt (a receiver may recognise a retry).
    jti: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    #: When it is due next; NULL once delivered or given up.
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Until when the worker that claimed it owns it (0: nobody); after that another may claim it.
    claimed_until: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    #: A random value naming the current claim: only its claimer records the outcome.
    claim: Mapped[str | None] = mapped_column(String(32))
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    gave_up_at: Mapped[int | None] = mapped_column(BigInteger)
    #: Why the last attempt failed (a status code or the kind of network error), never a response body.
    last_error: Mapped[str | None] = mapped_column(String(200))


class DeviceAuthorization(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy builds db.Model at run time
    """A device authorization request (RFC 8628), from ``/device_authorization`` until it is redeemed or expires.

    The device code and the user code are stored as keyed hashes.  The user's
    decision (``approved_at`` with the user and login, or ``denied_at``) is set
    by one conditional UPDATE at the verification page; ``used_at`` by one
    conditional UPDATE when the token endpoint issues the tokens, so the device
    code is redeemed once.  ``poll_interval`` and ``last_polled_at`` pace the
    polling (``slow_down`` raises the interval, RFC 8628 §3.5).
    """

    __tablename__ = "device_authorizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    client_pk: Mapped[int] = mapped_column(Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False, index=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    audience: Mapped[list[Any]] = mapped_column(JSONList, nullable=False, default=list)
    poll_interval: Mapped[int] = mapped_column(Integer, nullable=False)
    last_polled_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    #: The user who approved it, the login it was approved in, and the family of its tokens.
    user_pk: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sid: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[int | None] = mapped_column(BigInteger)
    grant_id: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[int | None] = mapped_column(BigInteger)
    denied_at: Mapped[int | None] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)
