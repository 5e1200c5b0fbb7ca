"""Every statement the provider runs on its database, each built once, and the functions that run them.

The rest of ``oidc`` reaches the database through the functions here (and
commits or rolls back its own transaction).  Each statement is a module-level
constant with bound parameters: building a SQLAlchemy expression costs more
than running it, and :func:`statements` can list them all, which is how
``tests/test_query_plans.py`` checks that each finds its rows through an index.
The few that may scan a table say why in :data:`SCANS`.

* **Prepared statements**: the token, code and login paths' statements are
  wrapped in :class:`~oidc.statements.Prepared`, which runs them on the DB-API
  connection (its docstring says why); they are declared here like the others.
* **Claims** (a code redeemed, a refresh token rotated, an interaction or
  pushed request used) are one conditional ``UPDATE``: of two requests racing
  with one credential, exactly one sees ``rowcount == 1``.
* **The ORM's own statements** are not listed: a new row given to :func:`add`
  (its ``INSERT``), a row given to :func:`remove` (its ``DELETE`` by primary key),
  attributes changed on a row read here and committed by its service (an
  ``UPDATE`` by primary key), and the look-ups by primary key (``*_by_pk``).
  All of them go by the primary key.

Outside this module, only the key service's own table (``keys/store.py``: ``keys/``
never imports ``oidc``), the migrations and the connection set-up of
:mod:`oidc.db` hold SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar, Token
from itertools import chain
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Connection,
    CursorResult,
    Dialect,
    Engine,
    Integer,
    Row,
    Select,
    String,
    Text,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from oidc.db import audit_chain, audit_checkpoints, audit_log, db, hashing_keys, key_certificates
from oidc.models import (
    AccessToken,
    AuthorizationCode,
    BackchannelLogout,
    Client,
    ClientAssertion,
    Consent,
    DeviceAuthorization,
    DPoPProof,
    InitialAccessToken,
    Interaction,
    LoginSession,
    PushedAuthorizationRequest,
    RefreshToken,
    User,
)
from oidc.statements import (
    CopyFrom,
    HeldConnection,
    NamedRow,
    Prepared,
    StatementConnection,
    copies_rows,
    insert_all,
    transaction_connection,
)
from oidc.text import column_text

#: A result row of any shape (its columns are read by name).
AnyRow = NamedRow

#: Longest client_id looked up (ours are 32 characters); longer ones are unknown at once.
MAX_CLIENT_ID_LENGTH = 64
#: Longest code or refresh token looked up (ours are 43 characters).
MAX_SECRET_LENGTH = 512
#: Longest access token ``jti`` looked up (ours are 24 characters).
MAX_ACCESS_TOKEN_JTI_LENGTH = 64

_CLIENT_BY_ID = select(Client).where(Client.client_id == bindparam("client_id")).limit(1)
_ENABLED_CLIENT_BY_ID = _CLIENT_BY_ID.where(Client.disabled.is_(False))
_ACCESS_TOKEN_BY_JTI = Prepared(select(*AccessToken.__table__.c).where(AccessToken.jti == bindparam("jti")).limit(1))
# Codes and refresh tokens are looked up by every keyed hash they may have (one per system secret).

class HashLookup:
    """A statement finding one row by any of a secret's keyed hashes.

    Usually there is one hash (one system secret): ``=`` then, since an expanding
    ``IN`` is rendered again on every execution.  While a system secret is rotated
    there are several: ``IN``.
    """

    def __init__(self, base: Select[Any], column: ColumnElement[Any]) -> None:
        self.one = Prepared(base.where(column == bindparam("hash")).limit(1))
        self.any = base.where(column.in_(bindparam("hashes", expanding=True))).limit(1)
        self._base, self._column = base, column
        #: ``any`` as it runs for each count of hashes: one placeholder per hash (a prepared statement
        #: cannot expand a list); the same ``IN`` as ``any``, so its plan is the one checked.
        self._by_count: dict[int, Prepared] = {}

    def execute(self, hashes: list[str]) -> AnyRow | None:
        """The row, read in the request's transaction (:func:`request_connection`)."""
        connection = request_connection()
        if len(hashes) == 1:
            return self.one.first(connection, {"hash": hashes[0]})
        lookup = self._by_count.get(len(hashes))
        if lookup is None:
            names = [f"hash_{index}" for index in range(len(hashes))]
            lookup = self._by_count[len(hashes)] = Prepared(
                self._base.where(self._column.in_([bindparam(name) for name in names])).limit(1))
        return lookup.first(connection, {f"hash_{index}": value for index, value in enumerate(hashes)})


class CoreTransaction:
    """A request's transaction on a pooled connection of its own, beside its ORM Session.

    The token endpoint's code exchange and refresh (read one row, claim it,
    insert their tokens' rows) and ``/authorize``'s login read and code insert
    run prepared statements (:mod:`oidc.statements`) and read or write nothing
    through the ORM: the Session's own set-up, commit and tear-down would cost
    more than the statements do, and so would a SQLAlchemy ``Connection``'s.
    The connection is the one the thread keeps checked out, else one from the
    same pool (:func:`~oidc.statements.transaction_connection`), taken on the
    first statement, its transaction begun by the driver with that statement;
    the endpoint commits it with a success, and it is rolled back otherwise
    (:meth:`~oidc.statements.HeldConnection.end_transaction`).
    """

    def __init__(self, engine: Engine | None = None) -> None:
        #: The app's engine, when the caller has it (else the app context's, when a statement needs it).
        self._engine = engine
        self._connection: HeldConnection | None = None
        self._reset: Token[CoreTransaction | None] | None = None

    def connection(self) -> HeldConnection:
        if self._connection is None:
            self._connection = transaction_connection(self._engine if self._engine is not None else db.engine)
        return self._connection

    def commit(self) -> None:
        if self._connection is not None:
            self._connection.commit()

    def rollback(self) -> None:
        """Undo what was written so far (a refusal, or a family revoked through the Session next)."""
        if self._connection is not None:
            self._connection.rollback()

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.end_transaction()

    # The context of a request (:func:`core_transaction`); a class's own ``__enter__`` and
    # ``__exit__`` rather than a generator under ``contextmanager``, whose set-up costs every request.
    def __enter__(self) -> CoreTransaction:
        self._reset = _CORE_TRANSACTION.set(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._reset is not None:
            _CORE_TRANSACTION.reset(self._reset)
            self._reset = None
        self.close()


_CORE_TRANSACTION: ContextVar[CoreTransaction | None] = ContextVar("oidc_core_transaction", default=None)


def core_transaction(engine: Engine | None = None) -> CoreTransaction:
    """The request's :class:`CoreTransaction`, to use as a context while its endpoint runs: the current
    one inside it, closed (rolled back unless committed) when it ends, whatever happened.  ``engine``:
    the app's (``State.engine``), when the caller has it."""
    return CoreTransaction(engine)


def request_connection() -> StatementConnection:
    """Where the prepared statements of a request run: its :class:`CoreTransaction` if its endpoint runs one
    (a code exchange, a refresh, ``/authorize``), else (introspection, revocation, pages, commands) its
    Session's connection."""
    transaction = _CORE_TRANSACTION.get()
    return transaction.connection() if transaction is not None else db.session.connection()


def rollback_core_transaction() -> None:
    """Undo the request's Core writes so far, if it runs a Core transaction (before a family is revoked
    through the Session: on SQLite its claim may hold the write lock the revocation needs)."""
    transaction = _CORE_TRANSACTION.get()
    if transaction is not None:
        transaction.rollback()


def session_in_transaction() -> Session | None:
    """This request's ORM Session if it exists and has begun a transaction (without creating one), else None.

    The session itself, not its scoped proxy: each call through the proxy looks the session up again.
    """
    if not db.session.registry.has():
        return None
    session = db.session()
    return session if session.in_transaction() else None


def commit_request() -> None:
    """Commit what the request wrote: its Session's transaction if it began one, then its Core transaction's."""
    session = session_in_transaction()
    if session is not None:
        session.commit()
    transaction = _CORE_TRANSACTION.get()
    if transaction is not None:
        transaction.commit()


_REFRESH_TOKENS = RefreshToken.__table__
_ACCESS_TOKENS = AccessToken.__table__
_CODES = AuthorizationCode.__table__
_USERS = User.__table__
_LOGIN_SESSIONS = LoginSession.__table__
# A credential with what its grant needs of its user and login session, in one read.
_GRANT_USER_AND_SESSION = (
    _USERS.c.subject.label("user_subject"), _USERS.c.username.label("user_username"),
    _USERS.c.name.label("user_name"), _USERS.c.email.label("user_email"),
    _USERS.c.email_verified.label("user_email_verified"), _USERS.c.updated_at.label("user_updated_at"),
    _USERS.c.disabled.label("user_disabled"),
    _LOGIN_SESSIONS.c.expires_at.label("session_expires_at"), _LOGIN_SESSIONS.c.ended_at.label("session_ended_at"),
)
_REFRESH_GRANT_BY_HASH = HashLookup(
    select(*_REFRESH_TOKENS.c, *_GRANT_USER_AND_SESSION)
    .select_from(_REFRESH_TOKENS.join(_USERS, _USERS.c.id == _REFRESH_TOKENS.c.user_pk)
                 .outerjoin(_LOGIN_SESSIONS, _LOGIN_SESSIONS.c.sid == _REFRESH_TOKENS.c.sid)),
    _REFRESH_TOKENS.c.token_hash,
)
_CODE_GRANT_BY_HASH = HashLookup(
    select(*_CODES.c, *_GRANT_USER_AND_SESSION)
    .select_from(_CODES.join(_USERS, _USERS.c.id == _CODES.c.user_pk)
                 .outerjoin(_LOGIN_SESSIONS, _LOGIN_SESSIONS.c.sid == _CODES.c.sid)),
    _CODES.c.code_hash,
)
_LOGIN_BY_SID = Prepared(
    select(_LOGIN_SESSIONS.c.sid, _LOGIN_SESSIONS.c.auth_time, _LOGIN_SESSIONS.c.user_pk,
           *_GRANT_USER_AND_SESSION)
    .select_from(_LOGIN_SESSIONS.join(_USERS, _USERS.c.id == _LOGIN_SESSIONS.c.user_pk))
    .where(_LOGIN_SESSIONS.c.sid == bindparam("sid")).limit(1)
)
_INSERT_CODE = insert_all(insert(_CODES))
_INSERT_LOGIN_SESSION = insert_all(insert(_LOGIN_SESSIONS))
_USER_BY_USERNAME = select(User).where(User.username == bindparam("username")).limit(1)
_INSERT_REFRESH_TOKEN = insert_all(insert(_REFRESH_TOKENS))
_INSERT_ACCESS_TOKEN = insert_all(insert(_ACCESS_TOKENS))

_PUSHED_REQUEST_BY_HASH = select(PushedAuthorizationRequest).where(
    PushedAuthorizationRequest.request_uri_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_CLAIM_PUSHED_REQUEST = (
    update(PushedAuthorizationRequest)
    .where(PushedAuthorizationRequest.id == bindparam("row_id"), PushedAuthorizationRequest.used_at.is_(None))
    .values(used_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_RECORD_DPOP_JTI = insert(DPoPProof).values(jti_hash=bindparam("jti_hash"), expires_at=bindparam("expires_at"))

# Claims are Core statements on the tables: an ORM-enabled UPDATE would first flush the session.
_CLAIM_REFRESH_TOKEN = Prepared(
    update(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.id == bindparam("row_id"), _REFRESH_TOKENS.c.rotated_at.is_(None),
           _REFRESH_TOKENS.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("moment"))
)
_CLAIM_CODE = Prepared(
    update(_CODES)
    .where(_CODES.c.id == bindparam("row_id"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("moment"))
)
_REVOKE_FAMILY_REFRESH_TOKENS = (
    update(RefreshToken)
    .where(RefreshToken.grant_id == bindparam("family"), RefreshToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_REVOKE_FAMILY_ACCESS_TOKENS = (
    update(AccessToken)
    .where(AccessToken.grant_id == bindparam("family"), AccessToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_REVOKE_ACCESS_TOKEN = (
    update(AccessToken)
    .where(AccessToken.id == bindparam("row_id"), AccessToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)

# Interactions (oidc.oauth2.interactions), with their client's client_id, so that the
# client comes from the per-process cache (as at /token).
_INTERACTION_BY_HASH = (
    select(Interaction, Client.client_id).join(Client, Client.id == Interaction.client_pk)
    .where(Interaction.interaction_hash.in_(bindparam("hashes", expanding=True))).limit(1)
)
_CLAIM_INTERACTION = (
    update(Interaction)
    .where(Interaction.id == bindparam("row_id"), Interaction.used_at.is_(None),
           Interaction.expires_at > bindparam("moment"))
    .values(used_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_RECORD_INTERACTION_LOGIN = (
    update(Interaction.__table__)
    .where(Interaction.__table__.c.id == bindparam("row_id"))
    .values(sid=bindparam("sid"), auth_time=bindparam("auth_time"))
)

# Device authorization requests (RFC 8628, oidc.oauth2.device).  Each change of a row is one
# conditional UPDATE: of two requests racing on one row, exactly one changes it.
_DEVICES = DeviceAuthorization.__table__
_DEVICE_BY_CODE_HASH = select(DeviceAuthorization).where(
    DeviceAuthorization.device_code_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_DEVICE_BY_USER_CODE_HASH = select(DeviceAuthorization).where(
    DeviceAuthorization.user_code_hash.in_(bindparam("hashes", expanding=True))).limit(1)
# A poll at the pace asked (its interval after the last one, less a second's leeway) moves the last poll on.
_PACE_DEVICE_POLL = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("row_id"),
           or_(_DEVICES.c.last_polled_at.is_(None),
               _DEVICES.c.last_polled_at + _DEVICES.c.poll_interval <= bindparam("on_time_until")))
    .values(last_polled_at=bindparam("moment"))
)
_SLOW_DEVICE_POLLING = (
    update(_DEVICES).where(_DEVICES.c.id == bindparam("row_id"))
    .values(poll_interval=_DEVICES.c.poll_interval + bindparam("step"), last_polled_at=bindparam("moment"))
)
_UNDECIDED_DEVICE = (_DEVICES.c.approved_at.is_(None), _DEVICES.c.denied_at.is_(None), _DEVICES.c.used_at.is_(None))
_APPROVE_DEVICE = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("row_id"), *_UNDECIDED_DEVICE, _DEVICES.c.expires_at > bindparam("moment"))
    .values(approved_at=bindparam("moment"), user_pk=bindparam("user_pk"), sid=bindparam("sid"),
            auth_time=bindparam("auth_time"), grant_id=bindparam("grant_id"))
)
_DENY_DEVICE = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("row_id"), *_UNDECIDED_DEVICE, _DEVICES.c.expires_at > bindparam("moment"))
    .values(denied_at=bindparam("moment"))
)
_CLAIM_DEVICE_CODE = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("row_id"), _DEVICES.c.used_at.is_(None), _DEVICES.c.approved_at.isnot(None))
    .values(used_at=bindparam("moment"))
)

# The grant families of a user, or of login sessions, each row a family's grant_id and a scope
# (oidc.oauth2.families.revoke_grants).
def _live_refresh_tokens() -> Select[str, str]:
    """A part of the two statements below (a function: only whole statements are module constants)."""
    return select(RefreshToken.grant_id, RefreshToken.scope).where(RefreshToken.revoked_at.is_(None))


_GRANTS_OF_USER: CompoundSelect[str, str] = union_all(
    _live_refresh_tokens().where(RefreshToken.user_pk == bindparam("user_pk")),
    select(AccessToken.grant_id, AccessToken.scope).where(
        AccessToken.user_pk == bindparam("user_pk"), AccessToken.grant_id.is_not(None),
        AccessToken.revoked_at.is_(None), AccessToken.expires_at > bindparam("moment")),
)
_GRANTS_OF_SESSIONS: CompoundSelect[str, str] = union_all(
    _live_refresh_tokens().where(RefreshToken.sid.in_(bindparam("sids", expanding=True))),
    select(AuthorizationCode.grant_id, AuthorizationCode.scope).where(
        AuthorizationCode.sid.in_(bindparam("sids", expanding=True))),
)

# Accounts (oidc.accounts).
_USERS_IN_ORDER = select(User).order_by(User.id)
_CLIENTS_IN_ORDER = select(Client).order_by(Client.id)
_CONSENTED_SCOPES = Prepared(select(Consent.__table__.c.scope).where(
    Consent.__table__.c.user_pk == bindparam("user_pk"), Consent.__table__.c.client_pk == bindparam("client_pk")))
_OPEN_LOGIN_SESSIONS_OF_USER = select(_LOGIN_SESSIONS.c.sid).where(
    _LOGIN_SESSIONS.c.user_pk == bindparam("user_pk"), _LOGIN_SESSIONS.c.ended_at.is_(None))
# Ending a login is a claim too: of two requests ending one session, one ends it (and owes its logout tokens).
_END_LOGIN_SESSION = (
    update(_LOGIN_SESSIONS)
    .where(_LOGIN_SESSIONS.c.sid == bindparam("of_sid"), _LOGIN_SESSIONS.c.ended_at.is_(None))
    .values(ended_at=bindparam("moment"))
)

# Back-Channel Logout (oidc.oauth2.backchannel).  The clients owed a logout token when login
# sessions end: those with a back-channel logout URI that redeemed a code of the session or
# hold a refresh token of it, each with the session and its user's sub.
_OUTBOX = BackchannelLogout.__table__
_CLIENTS = Client.__table__


def _clients_told_by(table: Any) -> Select[Any]:
    """A part of the statement below (a function: only whole statements are module constants)."""
    return (select(table.c.client_pk, table.c.sid, _USERS.c.subject)
            .select_from(table.join(_CLIENTS, _CLIENTS.c.id == table.c.client_pk)
                         .join(_USERS, _USERS.c.id == table.c.user_pk))
            .where(table.c.sid.in_(bindparam("sids", expanding=True)),
                   _CLIENTS.c.backchannel_logout_uri.is_not(None), _CLIENTS.c.disabled.is_(False)))


_BACKCHANNEL_CLIENTS_OF_SESSIONS: CompoundSelect[Any] = union(
    _clients_told_by(_CODES).where(_CODES.c.used_at.is_not(None)),
    _clients_told_by(_REFRESH_TOKENS),
)
_INSERT_BACKCHANNEL_LOGOUT = insert(_OUTBOX)
_DUE_BACKCHANNEL_LOGOUTS = (
    select(_OUTBOX.c.id)
    .where(_OUTBOX.c.next_attempt_at <= bindparam("moment"), _OUTBOX.c.claimed_until <= bindparam("moment"))
    .order_by(_OUTBOX.c.next_attempt_at).limit(bindparam("limit", type_=Integer))
)
# The claim of a due row: a lease until ``until``; of several workers and instances, one sees rowcount 1.
_CLAIM_BACKCHANNEL_LOGOUT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.next_attempt_at <= bindparam("moment"),
           _OUTBOX.c.claimed_until <= bindparam("moment"))
    .values(claimed_until=bindparam("until"), claim=bindparam("new_claim"), attempts=_OUTBOX.c.attempts + 1)
)
_CLAIMED_BACKCHANNEL_LOGOUT = (
    select(_OUTBOX.c.id, _OUTBOX.c.sid, _OUTBOX.c.subject, _OUTBOX.c.jti, _OUTBOX.c.created_at,
           _OUTBOX.c.attempts, _CLIENTS.c.client_id, _CLIENTS.c.backchannel_logout_uri,
           _CLIENTS.c.backchannel_logout_session_required)
    .select_from(_OUTBOX.join(_CLIENTS, _CLIENTS.c.id == _OUTBOX.c.client_pk))
    .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.claim == bindparam("of_claim"))
)
# The outcome, recorded only by the claim that made the attempt.
_FINISH_BACKCHANNEL_LOGOUT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.claim == bindparam("of_claim"))
    .values(next_attempt_at=None, claimed_until=0, claim=None, delivered_at=bindparam("delivered"),
            gave_up_at=bindparam("gave_up"), last_error=bindparam("error"))
)
_RETRY_BACKCHANNEL_LOGOUT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.claim == bindparam("of_claim"))
    .values(next_attempt_at=bindparam("next_at"), claimed_until=0, claim=None, last_error=bindparam("error"))
)
# What a user or a client leaves behind, deleted before its own row (not every database cascades).
_DELETE_ROWS_OF_USER = tuple(
    delete(model).where(model.user_pk == bindparam("user_pk")).execution_options(synchronize_session=False)
    for model in (AccessToken, RefreshToken, AuthorizationCode, Consent, DeviceAuthorization, LoginSession)
)
_DELETE_ROWS_OF_CLIENT = tuple(
    delete(model).where(model.client_pk == bindparam("client_pk")).execution_options(synchronize_session=False)
    for model in (AccessToken, RefreshToken, AuthorizationCode, Consent, ClientAssertion, PushedAuthorizationRequest,
                  BackchannelLogout, DeviceAuthorization)
)

# Dynamic client registration (oidc.accounts.registration).  A use of an initial access token and
# the rotation of a registration access token are claims: one conditional UPDATE, the first
# statement of the request's transaction, so that on SQLite too it takes the write lock before reading.
_INITIAL_TOKENS = InitialAccessToken.__table__
_CLAIM_INITIAL_TOKEN = (
    update(_INITIAL_TOKENS)
    .where(_INITIAL_TOKENS.c.token_hash == bindparam("hash"), _INITIAL_TOKENS.c.revoked_at.is_(None),
           _INITIAL_TOKENS.c.expires_at > bindparam("moment"),
           or_(_INITIAL_TOKENS.c.max_uses.is_(None), _INITIAL_TOKENS.c.uses < _INITIAL_TOKENS.c.max_uses))
    .values(uses=_INITIAL_TOKENS.c.uses + 1)
)
_INITIAL_TOKEN_POLICY = select(_INITIAL_TOKENS.c.id, _INITIAL_TOKENS.c.policy).where(
    _INITIAL_TOKENS.c.token_hash == bindparam("hash")).limit(1)
_INITIAL_TOKENS_IN_ORDER = select(InitialAccessToken).order_by(InitialAccessToken.id)
_CLIENTS = Client.__table__
_ROTATE_REGISTRATION_TOKEN = (
    update(_CLIENTS)
    .where(_CLIENTS.c.client_id == bindparam("of_client"),
           _CLIENTS.c.registration_token_hash == bindparam("hash"))
    .values(registration_token_hash=bindparam("new_hash"))
)

# Rows nothing can use any more, by table (oidc.oauth2.families.prune_expired).
_PRUNE_EXPIRED = {
    # Codes are kept a day past expiry (``kept_until``) so that a late replay still revokes what they issued.
    "authorization_codes": delete(AuthorizationCode).where(AuthorizationCode.expires_at < bindparam("kept_until")),
    "access_tokens": delete(AccessToken).where(AccessToken.expires_at < bindparam("moment")),
    "refresh_tokens": delete(RefreshToken).where(
        or_(RefreshToken.expires_at < bindparam("moment"), RefreshToken.revoked_at < bindparam("kept_until"))),
    "client_assertions": delete(ClientAssertion).where(ClientAssertion.expires_at < bindparam("moment")),
    "login_sessions": delete(LoginSession).where(LoginSession.expires_at < bindparam("moment")),
    "interactions": delete(Interaction).where(Interaction.expires_at < bindparam("moment")),
    "pushed_authorization_requests": delete(PushedAuthorizationRequest).where(
        PushedAuthorizationRequest.expires_at < bindparam("moment")),
    "dpop_proofs": delete(DPoPProof).where(DPoPProof.expires_at < bindparam("moment")),
    # Kept a day past expiry (``kept_until``), so that `clients initial-token list` still shows a token
    # that has just expired and how much it was used.
    "initial_access_tokens": delete(InitialAccessToken).where(InitialAccessToken.expires_at < bindparam("kept_until")),
    "device_authorizations": delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < bindparam("moment")),
    # Logout tokens delivered or given up: kept as long as codes are (``kept_until``), for the record.
    "backchannel_logouts": delete(BackchannelLogout).where(
        BackchannelLogout.created_at < bindparam("kept_until"), BackchannelLogout.next_attempt_at.is_(None)),
}

# The keys of the keyed hashes (oidc.hashing_keys), one row per purpose.
_HASHING_KEY = select(hashing_keys.c.sealed_key).where(hashing_keys.c.purpose == bindparam("purpose"))
_HASHING_KEYS = select(hashing_keys.c.purpose, hashing_keys.c.sealed_key)
_INSERT_HASHING_KEY = insert(hashing_keys).values(
    purpose=bindparam("purpose"), sealed_key=bindparam("sealed_key"), created_at=bindparam("created_at"))
_RESEAL_HASHING_KEY = (update(hashing_keys).where(hashing_keys.c.purpose == bindparam("of_purpose"))
                       .values(sealed_key=bindparam("sealed_key")))

# Operations: the readiness probe and doctor.
_PING = select(1)
_CERTIFICATE_EXPIRIES = (select(key_certificates.c.key_set, key_certificates.c.kid, key_certificates.c.not_after)
                         .order_by(key_certificates.c.key_set, key_certificates.c.kid))

# The audit trail (oidc.observability.audit_chain).  The token path runs one of these: the insert.
_AUDIT_INSERT = insert_all(insert(audit_log), skip=("id", "position", "hash"))
#: Entries the chainer writes already sealed (a write delay's queue), every column given (each entry a
#: tuple of its values, :func:`sealed_values`), in a few statements for the whole batch, not one per
#: row: an executemany costs the worker Python per row (psycopg's pipeline, a statement per row), and on
#: SQLite the GIL per row (sqlite3 releases it around each step, and the chainer then waits for the
#: request thread to hand it back).  PostgreSQL (psycopg): one binary ``COPY ... FROM STDIN``
#: (:class:`oidc.statements.CopyFrom`), which costs the server less than the ``INSERT ... SELECT`` from
#: the rows as one JSON parameter (``json_to_recordset``) used before, which parsed every row's JSON.
_SEALED_COLUMNS = (column("id", BigInteger), column("position", BigInteger), column("at", BigInteger),
                   column("event", Text), column("fields", Text), column("hash", Text))
_AUDIT_COPY_SEALED = CopyFrom(audit_log, _SEALED_COLUMNS)
#: SQLite (and PostgreSQL through a driver that has no COPY, see :func:`copies_rows`): the rows as bound
#: values of multi-row inserts of 64 rows, then one per power of two below (each statement one sqlite3
#: step; compiled once per process, by the chainer before its first write, and cached by sqlite3).
#: SQLite's JSON functions would parse a row's text again for every column (json_extract): 35 k more
#: instructions per entry.  Larger statements save little more and cost more to compile (all of 64 rows
#: and below: some 15 ms; 512 rows alone: 40 ms).
AUDIT_SQLITE_CHUNKS = tuple(2 ** power for power in range(6, -1, -1))
_AUDIT_INSERT_SEALED_VALUES = {
    size: Prepared(insert(audit_log).values(
        [{c.name: bindparam(f"{c.name}_{index}", type_=c.type) for c in _SEALED_COLUMNS} for index in range(size)]))
    for size in AUDIT_SQLITE_CHUNKS}
#: Each chunk's parameter names, in the order of a sealed row's values (:func:`sealed_values`).
_AUDIT_SEALED_VALUE_NAMES = {size: tuple(f"{c.name}_{index}" for index in range(size) for c in _SEALED_COLUMNS)
                             for size in AUDIT_SQLITE_CHUNKS}
#: The ids for the entries the chainer writes sealed (an entry's hash covers its id), taken under the
#: head's lock: the table's own sequence on PostgreSQL (shared with every other insert); on SQLite,
#: whose rowid is the largest plus one, the largest (the head's lock is SQLite's one write lock).
#: PostgreSQL: the sequence is looked up by name once per statement, in a subquery the planner keeps
#: apart (its OFFSET): pulled up into the select, it was looked up for each id (some 3 µs of the server's
#: CPU per id, against 0.4 µs).
_AUDIT_ID_SEQUENCE = select(func.pg_get_serial_sequence(literal(audit_log.name, String), literal(audit_log.c.id.name, String))
                            .cast(postgresql.REGCLASS).label("sequence")).offset(0).subquery()
_AUDIT_NEXT_IDS = {
    "postgresql": select(func.array_agg(func.nextval(_AUDIT_ID_SEQUENCE.c.sequence)))
                  .select_from(_AUDIT_ID_SEQUENCE, func.generate_series(1, bindparam("count", type_=Integer))),
    "sqlite": select(func.coalesce(func.max(audit_log.c.id), 0)),
}
#: PostgreSQL, a chainer writing its queue alone (:func:`read_audit_head_taking_ids`,
#: :func:`append_sealed_entries`): the head read without its lock, with the ids of the batch, in one
#: statement; then, the batch sealed after it, the head moved only if it is still at the position read
#: (a compare-and-swap), and the rows copied only then, in the same transaction.  No lock is held while
#: the batch is hashed, and one statement less than under the head's lock (:func:`lock_audit_head`).
_AUDIT_HEAD_TAKING_IDS = {"postgresql": select(
    audit_chain, _AUDIT_NEXT_IDS["postgresql"].scalar_subquery().label("ids")).where(audit_chain.c.id == 1)}
#: How many unsealed entries one pass of the chainer seals.
AUDIT_SEAL_BATCH = 1000
# The chainer's first statement: a write to the head row, so it holds the head's lock (PostgreSQL's row
# lock, SQLite's write lock) before it reads anything; a second chainer waits here.
_AUDIT_LOCK_HEAD = (update(audit_chain).where(audit_chain.c.id == 1)
                    .values(position=audit_chain.c.position).returning(*audit_chain.c))
_AUDIT_HEAD = select(audit_chain).where(audit_chain.c.id == 1)
_AUDIT_UNSEALED = (select(audit_log.c.id, audit_log.c.at, audit_log.c.event, audit_log.c.fields)
                   .where(audit_log.c.position.is_(None)).order_by(audit_log.c.id).limit(AUDIT_SEAL_BATCH))
_AUDIT_SEAL = Prepared(update(audit_log).where(audit_log.c.id == bindparam("row_id"))
                      .values(position=bindparam("sealed_position"), hash=bindparam("sealed_hash")))
_AUDIT_ADVANCE_HEAD = (update(audit_chain).where(audit_chain.c.id == 1)
                       .values(position=bindparam("head_position"), hash=bindparam("head_hash")))
#: The compare-and-swap: the head moved only from the position its writer read (0 rows: another moved it).
_AUDIT_ADVANCE_HEAD_FROM = _AUDIT_ADVANCE_HEAD.where(audit_chain.c.position == bindparam("from_position"))
_AUDIT_MARK_CHECKPOINT = (update(audit_chain).where(audit_chain.c.id == 1)
                          .values(checkpoint_position=bindparam("checkpoint_position"),
                                  checkpoint_at=bindparam("checkpoint_at")))
_AUDIT_INSERT_CHECKPOINT = insert(audit_checkpoints)
_AUDIT_ENTRIES_FROM = (select(audit_log).where(audit_log.c.position >= bindparam("since"))
                       .order_by(audit_log.c.position))
_AUDIT_HASH_AT = select(audit_log.c.hash).where(audit_log.c.position == bindparam("at_position"))
_AUDIT_CHECKPOINTS_FROM = (select(audit_checkpoints).where(audit_checkpoints.c.position >= bindparam("since"))
                           .order_by(audit_checkpoints.c.position))
_AUDIT_UNSEALED_COUNT = select(func.count()).select_from(audit_log).where(audit_log.c.position.is_(None))

#: The statements that may read a whole table, by name, and why that is fine.  Every other
#: statement must find its rows through an index (tests/test_query_plans.py).
SCANS: dict[str, str] = {
    "_USERS_IN_ORDER": "every user, for the admin API and the CLI's listings: reading them all is the point",
    "_CLIENTS_IN_ORDER": "every client, for the admin API and the CLI's listings: reading them all is the point",
    "_INITIAL_TOKENS_IN_ORDER": "every initial access token, for the admin API and the CLI's listings",
    "_HASHING_KEYS": "every hashing key (one per purpose, a handful of rows), re-sealed by `keys reseal`",
    "_CERTIFICATE_EXPIRIES": "every attached certificate chain (a few per key), read by doctor",
    "_PRUNE_EXPIRED[authorization_codes]": "the periodic `tokens prune` clean-up, off the request path",
    "_PRUNE_EXPIRED[refresh_tokens]": "the periodic `tokens prune` clean-up, off the request path",
    "_PRUNE_EXPIRED[login_sessions]": "the periodic `tokens prune` clean-up, off the request path",
    "_PRUNE_EXPIRED[initial_access_tokens]": "the periodic `tokens prune` clean-up of a handful of operator-made rows",
    "_PING": "reads no table",
}


def statements() -> dict[str, Executable]:
    """Every statement of this module by its name (``_NAME``, ``_NAME[key]``, ``_NAME.any``), to check them all.

    A :class:`Prepared` statement is listed as the Core statement it runs; a
    :class:`HashLookup` as its two (by one hash, ``.one``, and by several, ``.any``).
    """
    found: dict[str, Executable] = {}
    for name, value in globals().items():
        if isinstance(value, HashLookup):
            found[f"{name}.one"], found[f"{name}.any"] = value.one.statement, value.any
        elif isinstance(value, Prepared):
            found[name] = value.statement
        elif isinstance(value, Executable):
            found[name] = value
        elif isinstance(value, dict | tuple) and value and all(isinstance(v, Executable) for v in _items(value)):
            keys = value.keys() if isinstance(value, dict) else range(len(value))
            found.update((f"{name}[{key}]", item) for key, item in zip(keys, _items(value), strict=True))
    return found


def _items(value: dict[Any, Any] | tuple[Any, ...]) -> list[Any]:
    """A dict's or tuple's items, a :class:`Prepared` one as the Core statement it runs."""
    items = value.values() if isinstance(value, dict) else value
    return [item.statement if isinstance(item, Prepared) else item for item in items]


def find_client(client_id: object, *, include_disabled: bool = False) -> Client | None:
    """The client registered as ``client_id`` (disabled ones only when asked for)."""
    checked = column_text(client_id, MAX_CLIENT_ID_LENGTH)
    if checked is None:
        return None
    statement = _CLIENT_BY_ID if include_disabled else _ENABLED_CLIENT_BY_ID
    return db.session.execute(statement, {"client_id": checked}).scalar()


def find_access_token_row(jti: object, engine: Engine | None = None) -> AnyRow | None:
    """The row of an access token by ``jti`` (family tokens, and revoked client tokens), read-only.

    It is read on a connection of its own, outside the request's ORM session
    and any transaction (:meth:`Prepared.read`): introspection and userinfo
    only read it, and most tokens (a client's) have no row at all, so a request
    that reads nothing else never opens a session transaction.  Writers change
    the row with an ``UPDATE`` by ``id`` (:func:`revoke_access_token`).  ``engine``: the app's
    (``State.engine``), when the caller has it.
    """
    checked = column_text(jti, MAX_ACCESS_TOKEN_JTI_LENGTH)
    if checked is None:
        return None
    return _ACCESS_TOKEN_BY_JTI.read(engine if engine is not None else db.engine, {"jti": checked})


def find_refresh_grant(hashes: list[str]) -> AnyRow | None:
    """A refresh token's row joined with its user and login session (``user_*``, ``session_*``)."""
    return _REFRESH_GRANT_BY_HASH.execute(hashes)


def find_code_grant(hashes: list[str]) -> AnyRow | None:
    """An authorization code's row joined with its user and login session (``user_*``, ``session_*``)."""
    return _CODE_GRANT_BY_HASH.execute(hashes)


def find_login(sid: str) -> AnyRow | None:
    """A login session's row joined with its user (``user_*``, ``session_*``)."""
    return _LOGIN_BY_SID.first(request_connection(), {"sid": sid})


def find_user_by_username(username: str) -> User | None:
    """The user ``username`` (already normalized), as an ORM object: a login may rehash its password."""
    return db.session.execute(_USER_BY_USERNAME, {"username": username}).scalar()


def insert_login_session(row: dict[str, Any]) -> None:
    """Add a login session row in the request's transaction (columns by name)."""
    _INSERT_LOGIN_SESSION.rowcount(db.session.connection(), row)


def insert_code(row: dict[str, Any]) -> None:
    """Add an authorization code row (columns by name) in the request's transaction: its Core transaction's,
    unless it began one in its Session (a claimed interaction or pushed request), with which the code
    must then be committed or undone."""
    connection = db.session.connection() if session_in_transaction() is not None else request_connection()
    _INSERT_CODE.rowcount(connection, row)


def claim_authorization_code(row_id: int, moment: int, access_tokens: list[dict[str, Any]],
                             refresh_tokens: list[dict[str, Any]]) -> bool:
    """Mark a code used, atomically, then add the rows of the tokens issued from it (columns by name), in the
    request's transaction: False, and nothing added, when another request already did."""
    return _claim_then_insert(_CLAIM_CODE, row_id, moment, access_tokens, refresh_tokens)


def claim_refresh_token(row_id: int, moment: int, access_tokens: list[dict[str, Any]],
                        refresh_tokens: list[dict[str, Any]]) -> bool:
    """Mark a refresh token rotated, atomically, then add the rows of the tokens issued in its place (columns
    by name), in the request's transaction: False, and nothing added, when another request already did."""
    return _claim_then_insert(_CLAIM_REFRESH_TOKEN, row_id, moment, access_tokens, refresh_tokens)


def _claim_then_insert(claim: Prepared, row_id: int, moment: int, access_tokens: list[dict[str, Any]],
                       refresh_tokens: list[dict[str, Any]]) -> bool:
    # One look-up of the request's connection for the claim and the inserts.
    connection = request_connection()
    if claim.rowcount(connection, {"row_id": row_id, "moment": moment}) != 1:
        return False
    _insert_tokens(connection, access_tokens, refresh_tokens)
    return True


def insert_tokens(access_tokens: list[dict[str, Any]], refresh_tokens: list[dict[str, Any]]) -> None:
    """Add access and refresh token rows in the request's transaction (columns by name)."""
    _insert_tokens(db.session.connection(), access_tokens, refresh_tokens)


def _insert_tokens(connection: StatementConnection, access_tokens: list[dict[str, Any]],
                   refresh_tokens: list[dict[str, Any]]) -> None:
    for row in access_tokens:
        _INSERT_ACCESS_TOKEN.rowcount(connection, row)
    for row in refresh_tokens:
        _INSERT_REFRESH_TOKEN.rowcount(connection, row)


def revoke_family(grant_id: str, moment: int) -> None:
    """Revoke every refresh and access token of a grant family (in the current transaction)."""
    db.session.execute(_REVOKE_FAMILY_REFRESH_TOKENS, {"family": grant_id, "moment": moment})
    db.session.execute(_REVOKE_FAMILY_ACCESS_TOKENS, {"family": grant_id, "moment": moment})


def revoke_access_token(row_id: int, moment: int) -> None:
    """Mark an access token row revoked, in the request's transaction (a second revocation keeps the first time)."""
    db.session.execute(_REVOKE_ACCESS_TOKEN, {"row_id": row_id, "moment": moment})


def find_pushed_request(hashes: list[str]) -> PushedAuthorizationRequest | None:
    return db.session.execute(_PUSHED_REQUEST_BY_HASH, {"hashes": hashes}).scalar()


def claim_pushed_request(row_id: int, moment: int) -> bool:
    """Mark a pushed authorization request used, atomically: False when another request already did.

    Its expiry is not checked here: ``expires_in`` bounds the request_uri's use at /authorize
    (RFC 9126 §2.2, checked there), not the login and consent that use started.
    """
    return _changed(_CLAIM_PUSHED_REQUEST, {"row_id": row_id, "moment": moment}) == 1


def record_dpop_jti(jti_hash: str, expires_at: int) -> bool:
    """Record a DPoP proof's jti on a connection of its own, committed at once: False if it was seen.

    Committed whatever the request's own transaction does, so that a replay is
    refused even when the first request failed later; the unique constraint
    makes two instances racing with one proof record it once.
    """
    try:
        with db.engine.begin() as connection:
            connection.execute(_RECORD_DPOP_JTI, {"jti_hash": jti_hash, "expires_at": expires_at})
    except IntegrityError:
        return False
    return True


# The ORM's own statements (see the module's docstring) ---------------------------------------


def add(row: Any) -> None:
    """A new row of any table, written with the current transaction (the ORM's INSERT at the next flush)."""
    db.session.add(row)


def remove(row: Any) -> None:
    """Delete ``row`` with the current transaction (the ORM's DELETE by primary key)."""
    db.session.delete(row)


def client_by_pk(pk: int) -> Client | None:
    """The client of primary key ``pk`` (from the session's identity map when it was read already)."""
    return db.session.get(Client, pk)


def user_by_pk(pk: int) -> User | None:
    """The user of primary key ``pk`` (from the session's identity map when it was read already)."""
    return db.session.get(User, pk)


def pushed_request_by_pk(pk: int) -> PushedAuthorizationRequest | None:
    """The pushed authorization request of primary key ``pk``."""
    return db.session.get(PushedAuthorizationRequest, pk)


# Interactions ------------------------------------------------------------------------------


def find_interaction(hashes: list[str]) -> tuple[Interaction, str] | None:
    """An interaction by any of its id's keyed hashes, with its client's client_id."""
    found = db.session.execute(_INTERACTION_BY_HASH, {"hashes": hashes}).first()
    return (found[0], found[1]) if found is not None else None


def claim_interaction(row_id: int, moment: int) -> bool:
    """Mark an unexpired interaction used, atomically: False when another request already did."""
    return _changed(_CLAIM_INTERACTION, {"row_id": row_id, "moment": moment}) == 1


def record_interaction_login(row_id: int, sid: str | None, auth_time: int) -> None:
    """Record the login a stored interaction is for, with one Core statement (no flush)."""
    db.session.connection().execute(_RECORD_INTERACTION_LOGIN, {"row_id": row_id, "sid": sid, "auth_time": auth_time})


# Device authorization requests -------------------------------------------------------------


def find_device_by_code(hashes: list[str]) -> DeviceAuthorization | None:
    """A device authorization request by any of its device code's keyed hashes."""
    return db.session.execute(_DEVICE_BY_CODE_HASH, {"hashes": hashes}).scalar()


def find_device_by_user_code(hashes: list[str]) -> DeviceAuthorization | None:
    """A device authorization request by any of its user code's keyed hashes."""
    return db.session.execute(_DEVICE_BY_USER_CODE_HASH, {"hashes": hashes}).scalar()


def pace_device_poll(row_id: int, moment: int, leeway: int) -> bool:
    """Record a poll at ``moment``: False (nothing written) when it came sooner than the row's interval allows."""
    return _changed(_PACE_DEVICE_POLL, {"row_id": row_id, "moment": moment, "on_time_until": moment + leeway}) == 1


def slow_device_polling(row_id: int, moment: int, step: int) -> None:
    """Raise the row's polling interval by ``step`` seconds, from a poll at ``moment``."""
    db.session.execute(_SLOW_DEVICE_POLLING, {"row_id": row_id, "moment": moment, "step": step})


def approve_device(row_id: int, moment: int, *, user_pk: int, sid: str | None, auth_time: int, grant_id: str) -> bool:
    """Record the user's approval of an undecided, unexpired request: False when it was decided or expired."""
    return _changed(_APPROVE_DEVICE, {"row_id": row_id, "moment": moment, "user_pk": user_pk, "sid": sid,
                                      "auth_time": auth_time, "grant_id": grant_id}) == 1


def deny_device(row_id: int, moment: int) -> bool:
    """Record the user's denial of an undecided, unexpired request: False when it was decided or expired."""
    return _changed(_DENY_DEVICE, {"row_id": row_id, "moment": moment}) == 1


def claim_device_code(row_id: int, moment: int) -> bool:
    """Mark an approved device code redeemed, atomically: False when another request already did."""
    return _changed(_CLAIM_DEVICE_CODE, {"row_id": row_id, "moment": moment}) == 1


# Grant families and clean-up ---------------------------------------------------------------


def grants_of_user(user_pk: int, moment: int) -> Sequence[AnyRow]:
    """``(grant_id, scope)`` of each live refresh token and unexpired access token of the user's families."""
    return db.session.execute(_GRANTS_OF_USER, {"user_pk": user_pk, "moment": moment}).all()


def grants_of_sessions(sids: list[str]) -> Sequence[AnyRow]:
    """``(grant_id, scope)`` of each live refresh token and code of the families the login sessions made."""
    return db.session.execute(_GRANTS_OF_SESSIONS, {"sids": sids}).all()


def prune_expired(moment: int, kept_until: int) -> dict[str, int]:
    """Delete expired rows, in the current transaction; how many of each table.

    ``kept_until``: codes that expired, and refresh tokens revoked, before it go too.
    """
    values = {"moment": moment, "kept_until": kept_until}
    return {name: _changed(statement, values) for name, statement in _PRUNE_EXPIRED.items()}


def _changed(statement: Executable, params: dict[str, Any]) -> int:
    """Run an UPDATE or DELETE in the current transaction; how many rows it changed."""
    # The result of an UPDATE or DELETE is a CursorResult, which has rowcount; Session.execute says Result.
    result = cast("CursorResult[Any]", db.session.execute(statement, params))
    return result.rowcount


# Accounts ----------------------------------------------------------------------------------


def list_users() -> list[User]:
    return list(db.session.execute(_USERS_IN_ORDER).scalars())


def list_clients() -> list[Client]:
    return list(db.session.execute(_CLIENTS_IN_ORDER).scalars())


def consented_scopes(user_pk: int, client_pk: int) -> list[str]:
    """The scope sets ``user_pk`` approved for the client, read in the request's transaction
    (:func:`request_connection`: /authorize's Core transaction, else the Session's)."""
    rows = _CONSENTED_SCOPES.all(request_connection(), {"user_pk": user_pk, "client_pk": client_pk})
    return [row.scope for row in rows]


def open_login_sessions_of(user_pk: int) -> list[str]:
    """The ``sid`` of every login session of the user that has not ended."""
    return list(db.session.execute(_OPEN_LOGIN_SESSIONS_OF_USER, {"user_pk": user_pk}).scalars())


def end_login_session(sid: str, moment: int) -> bool:
    """End a login session, in the current transaction: False when it had ended already (or another request ended it)."""
    return _changed(_END_LOGIN_SESSION, {"of_sid": sid, "moment": moment}) == 1


# Back-Channel Logout ---------------------------------------------------------------------


def backchannel_clients_of_sessions(sids: list[str]) -> Sequence[AnyRow]:
    """``(client_pk, sid, subject)`` of each client owed a logout token for the login sessions ``sids``."""
    return db.session.execute(_BACKCHANNEL_CLIENTS_OF_SESSIONS, {"sids": sids}).all()


def insert_backchannel_logouts(rows: list[dict[str, Any]]) -> None:
    """Add outbox rows in the current transaction (the one that ends their login sessions)."""
    db.session.execute(_INSERT_BACKCHANNEL_LOGOUT, rows)


def due_backchannel_logouts(connection: Connection, moment: int, limit: int) -> list[int]:
    """The ids of up to ``limit`` outbox rows due at ``moment`` and claimed by nobody, the longest due first."""
    return list(connection.execute(_DUE_BACKCHANNEL_LOGOUTS, {"moment": moment, "limit": limit}).scalars())


def claim_backchannel_logout(connection: Connection, row_id: int, moment: int, until: int, claim: str) -> bool:
    """Claim a due outbox row until ``until``, atomically: False when another worker or instance has it."""
    result = connection.execute(_CLAIM_BACKCHANNEL_LOGOUT,
                                {"row_id": row_id, "moment": moment, "until": until, "new_claim": claim})
    return result.rowcount == 1


def claimed_backchannel_logout(connection: Connection, row_id: int, claim: str) -> AnyRow | None:
    """A claimed outbox row with its client's ``client_id`` and back-channel metadata."""
    return connection.execute(_CLAIMED_BACKCHANNEL_LOGOUT, {"row_id": row_id, "of_claim": claim}).first()


def finish_backchannel_logout(connection: Connection, row_id: int, claim: str, *, delivered_at: int | None,
                              gave_up_at: int | None, error: str | None) -> bool:
    """Record that a claimed row was delivered or given up; False when the claim was lost meanwhile."""
    result = connection.execute(_FINISH_BACKCHANNEL_LOGOUT, {"row_id": row_id, "of_claim": claim,
                                                             "delivered": delivered_at, "gave_up": gave_up_at,
                                                             "error": error})
    return result.rowcount == 1


def retry_backchannel_logout(connection: Connection, row_id: int, claim: str, next_attempt_at: int, error: str) -> None:
    """Release a claimed row after a failed attempt, due again at ``next_attempt_at``."""
    connection.execute(_RETRY_BACKCHANNEL_LOGOUT, {"row_id": row_id, "of_claim": claim,
                                                   "next_at": next_attempt_at, "error": error})


def delete_rows_of_user(user_pk: int) -> None:
    """Delete the user's sessions, codes, tokens and consents, in the current transaction."""
    for statement in _DELETE_ROWS_OF_USER:
        db.session.execute(statement, {"user_pk": user_pk})


def delete_rows_of_client(client_pk: int) -> None:
    """Delete what was issued to the client (codes, tokens, consents, assertions, pushed requests)."""
    for statement in _DELETE_ROWS_OF_CLIENT:
        db.session.execute(statement, {"client_pk": client_pk})


# Dynamic client registration ---------------------------------------------------------------


def claim_initial_token(hashes: list[str], moment: int) -> tuple[int, str] | None:
    """Take one use of a live initial access token, atomically: its (id, policy), or None when
    it is unknown, expired, revoked or used up (or another request took its last use)."""
    connection = db.session.connection()
    for token_hash in hashes:  # one per system secret: usually one
        claimed = cast("CursorResult[Any]", connection.execute(_CLAIM_INITIAL_TOKEN,
                                                               {"hash": token_hash, "moment": moment}))
        if claimed.rowcount == 1:
            row = connection.execute(_INITIAL_TOKEN_POLICY, {"hash": token_hash}).first()
            return None if row is None else (int(row.id), str(row.policy))
    return None


def list_initial_tokens() -> list[InitialAccessToken]:
    return list(db.session.execute(_INITIAL_TOKENS_IN_ORDER).scalars())


def initial_token_by_pk(pk: int) -> InitialAccessToken | None:
    return db.session.get(InitialAccessToken, pk)


def rotate_registration_token(client_id: str, hashes: list[str], new_hash: str | None) -> bool:
    """Replace a client's registration access token, atomically: False when ``hashes`` is not (or no
    longer) its token: of two requests racing with one token, exactly one rotates it."""
    connection = db.session.connection()
    for token_hash in hashes:  # one per system secret: usually one
        result = cast("CursorResult[Any]", connection.execute(
            _ROTATE_REGISTRATION_TOKEN, {"of_client": client_id, "hash": token_hash, "new_hash": new_hash}))
        if result.rowcount == 1:
            return True
    return False


# The keyed hashes' keys, on a connection the caller opens (they are read before any request) --


def sealed_hashing_key(connection: Connection, purpose: str) -> bytes | None:
    return connection.execute(_HASHING_KEY, {"purpose": purpose}).scalar_one_or_none()


def sealed_hashing_keys(connection: Connection) -> list[tuple[str, bytes]]:
    return [(row.purpose, row.sealed_key) for row in connection.execute(_HASHING_KEYS)]


def insert_hashing_key(connection: Connection, purpose: str, sealed_key: bytes, created_at: int) -> None:
    """Store a new hashing key (IntegrityError: another process stored one first)."""
    connection.execute(_INSERT_HASHING_KEY, {"purpose": purpose, "sealed_key": sealed_key, "created_at": created_at})


def reseal_hashing_key(connection: Connection, purpose: str, sealed_key: bytes) -> None:
    connection.execute(_RESEAL_HASHING_KEY, {"of_purpose": purpose, "sealed_key": sealed_key})


# Operations --------------------------------------------------------------------------------


def ping(connection: Connection) -> None:
    """One round trip that reads nothing: the database answers."""
    connection.execute(_PING)


def certificate_expiries(connection: Connection) -> list[Row[*tuple[Any, ...]]]:
    """``(key_set, kid, not_after)`` of every attached certificate chain."""
    return list(connection.execute(_CERTIFICATE_EXPIRIES))


# The audit trail, on a connection its caller opens (off the request's transaction) ---------------


def insert_audit_entries(engine: Engine, entries: list[dict[str, Any]]) -> None:
    """Append entries (``at``, ``event``, ``fields``; the chainer seals them later), committed at once,
    on a pooled connection of their own.

    The token path's one write, so the least it can cost: a :class:`Prepared` insert; on
    PostgreSQL a single entry in autocommit (no ``BEGIN`` and ``COMMIT`` round trips around it).
    """
    with engine.connect() as connection:
        if len(entries) == 1 and connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
            _AUDIT_INSERT.rowcount(connection, entries[0])
            return
        with connection.begin():
            if len(entries) == 1:
                _AUDIT_INSERT.rowcount(connection, entries[0])
            else:
                _AUDIT_INSERT.executemany(connection, entries)


def lock_audit_head(connection: Connection) -> AnyRow | None:
    """Take the chain head's lock for this transaction; the head as it is then (None: the row is missing)."""
    return cast("AnyRow | None", connection.execute(_AUDIT_LOCK_HEAD).one_or_none())


def audit_head(connection: Connection) -> AnyRow:
    return cast(AnyRow, connection.execute(_AUDIT_HEAD).one())


def unsealed_audit_entries(connection: Connection) -> Sequence[AnyRow]:
    """The oldest unsealed entries (at most :data:`AUDIT_SEAL_BATCH`), in the order they were inserted."""
    return cast(Sequence[AnyRow], connection.execute(_AUDIT_UNSEALED).all())


def next_audit_ids(connection: Connection, count: int) -> list[int]:
    """``count`` new ids of ``audit_log`` for rows inserted with them (in a transaction holding the head's lock)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        largest = int(connection.execute(_AUDIT_NEXT_IDS["sqlite"]).scalar_one())
        return list(range(largest + 1, largest + 1 + count))
    return sorted(int(value) for value in connection.execute(_AUDIT_NEXT_IDS[dialect], {"count": count}).scalar_one())


def appends_unlocked(dialect: Dialect) -> bool:
    """Whether a chainer writing its queue alone appends by compare-and-swap on the head (PostgreSQL: round
    trips saved) rather than in a transaction holding the head's lock (SQLite, whose one write lock it is)."""
    return dialect.name == "postgresql"


def read_audit_head_taking_ids(connection: Connection, count: int) -> tuple[AnyRow, list[int]]:
    """PostgreSQL: the chain's head (no lock taken) and ``count`` new ids of ``audit_log``."""
    head = connection.execute(_AUDIT_HEAD_TAKING_IDS[connection.dialect.name], {"count": count}).one_or_none()
    if head is None:
        raise RuntimeError("the audit_chain head row is missing: run oidc-hsm db upgrade")
    return cast(AnyRow, head), sorted(int(value) for value in head.ids or ())


def append_sealed_entries(connection: Connection, rows: list[tuple[Any, ...]], from_position: int, position: int,
                          digest: str) -> bool:
    """PostgreSQL, in the caller's transaction: move the head from ``from_position`` to ``position`` and
    ``digest`` if it is still at ``from_position``, and then insert the sealed entries (:func:`sealed_values`);
    False (nothing written) when another writer moved it first.

    The head's row stays locked from the move to the commit: a writer that read the same head waits, then
    moves nothing."""
    if not _changed_on(connection, _AUDIT_ADVANCE_HEAD_FROM, {
            "from_position": from_position, "head_position": position, "head_hash": digest}):
        return False
    _insert_sealed(connection, rows)
    return True


def sealed_values(entry_id: int, position: int, at: int, event: str, fields: str,
                  digest: str) -> tuple[Any, ...]:
    """A sealed entry as the chainer inserts it: its values in the order of ``_SEALED_COLUMNS``."""
    return (entry_id, position, at, event, fields, digest)


def seal_audit_entries(connection: Connection, sealed: list[dict[str, Any]], rows: list[tuple[Any, ...]],
                       position: int, digest: str) -> None:
    """Give stored entries (``row_id``, ``sealed_position``, ``sealed_hash``) their place, insert new
    entries already sealed (:func:`sealed_values`), and move the head to ``position`` and ``digest``."""
    _AUDIT_SEAL.executemany(connection, sealed)
    if rows:
        _insert_sealed(connection, rows)
    connection.execute(_AUDIT_ADVANCE_HEAD, {"head_position": position, "head_hash": digest})


def prepare_audit_writes(engine: Engine) -> None:
    """Compile the statements :func:`seal_audit_entries` runs on ``engine``'s database (done once per
    process, so that no write, and no request waiting for the GIL meanwhile, pays for it)."""
    if copies_rows(engine.dialect):
        _AUDIT_COPY_SEALED.compiled(engine.dialect)
        return
    for statement in _AUDIT_INSERT_SEALED_VALUES.values():
        statement.compiled(engine.dialect)


def _insert_sealed(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert sealed entries (:func:`sealed_values`): one COPY through psycopg, else multi-row inserts."""
    if copies_rows(connection.dialect):
        _AUDIT_COPY_SEALED.run(connection, rows)
    else:
        _insert_sealed_values(connection, rows)


def _insert_sealed_values(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` inserted by the multi-row statements of the powers of two their count is made of."""
    start = 0
    for size in AUDIT_SQLITE_CHUNKS:
        while len(rows) - start >= size:
            values = chain.from_iterable(rows[start:start + size])
            _AUDIT_INSERT_SEALED_VALUES[size].execute(
                connection, dict(zip(_AUDIT_SEALED_VALUE_NAMES[size], values, strict=True))).close()
            start += size


def insert_audit_checkpoint(connection: Connection, row: dict[str, Any]) -> None:
    connection.execute(_AUDIT_INSERT_CHECKPOINT, row)
    connection.execute(_AUDIT_MARK_CHECKPOINT, {"checkpoint_position": row["position"], "checkpoint_at": row["at"]})


def audit_entries_from(connection: Connection, since: int) -> Any:
    """Sealed entries from position ``since`` on, in chain order (a result to iterate, not a list)."""
    return connection.execution_options(yield_per=1000).execute(_AUDIT_ENTRIES_FROM, {"since": since})


def audit_hash_at(connection: Connection, position: int) -> str | None:
    return cast("str | None", connection.execute(_AUDIT_HASH_AT, {"at_position": position}).scalar_one_or_none())


def audit_checkpoints_from(connection: Connection, since: int) -> Sequence[AnyRow]:
    return cast(Sequence[AnyRow], connection.execute(_AUDIT_CHECKPOINTS_FROM, {"since": since}).all())


def unsealed_audit_count(connection: Connection) -> int:
    return int(connection.execute(_AUDIT_UNSEALED_COUNT).scalar_one())


def _changed_on(connection: Connection, statement: Executable, params: dict[str, Any]) -> int:
    return cast(CursorResult[Any], connection.execute(statement, params)).rowcount
