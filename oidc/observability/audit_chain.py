"""The audit trail in the database: one ordered, hash-chained log of every audit event, signed at checkpoints.

Every record of the ``oidc.audit`` logger (:func:`oidc.observability.audit.record`, and the key
service's ``key.*`` events) is also appended to ``audit_log`` by :class:`AuditHandler`, while
``AUDIT_CHAIN`` is on.

Why a chainer seals the rows, and not the request
    Linking each entry to the one before needs the previous entry's hash, so every writer waits on
    one lock on the chain's head: on PostgreSQL, every token request of every worker and instance
    would be in one queue, for the length of a round trip.  So a request never links: by default
    (``AUDIT_WRITE_DELAY_SECONDS`` > 0) it only appends its entries to this process's queue, and a
    **chainer** (a daemon thread in each process) writes the queue every ``AUDIT_WRITE_DELAY_SECONDS``
    in one transaction: it takes ids from the table's sequence, gives each entry the next
    ``position`` and ``hash = SHA-256(canonical(entry, previous hash))``, inserts the batch (on
    PostgreSQL one ``COPY``; on SQLite a few multi-row inserts) and moves the head, holding the lock
    of the one ``audit_chain`` row (a second chainer waits): from its first statement, a write to that
    row; or, on PostgreSQL when it writes its queue alone, from the move of the head on, made only
    if the head is still where the chainer read it (a compare-and-swap; else the batch is sealed again
    after the new head).  Each entry is one row inserted once, never updated.  ``position`` is the
    one total order: contiguous from 1, so a deleted row leaves a hole.

    With ``AUDIT_WRITE_DELAY_SECONDS=0`` a request makes **one insert** of its entries' content
    (``position`` and ``hash`` NULL; after the request's own transaction has ended, so it never
    waits on its own write lock), committed before its response; every ``AUDIT_SEAL_SECONDS`` a
    chainer seals what is stored unsealed, in ``id`` order, under the same lock.  (Ordering by
    position rather than by ``id`` means that a row whose insert committed after a larger ``id`` was
    sealed, which a sequence allows, is simply sealed after it, not lost.)

    What each costs: queued entries are lost if the process is killed (``SIGKILL``) before its chainer
    wrote them, at most ``AUDIT_WRITE_DELAY_SECONDS`` of them; a graceful exit writes them
    (:meth:`AuditTrail.stop`, at exit).  While the database cannot be written the queue grows, up to
    ``AUDIT_QUEUE_LIMIT`` entries: beyond, events are counted, not queued, and the next write records the
    count in the chain (an ``audit.dropped`` entry), so a long outage costs no memory beyond the limit and
    leaves no silent gap.  Entries stored unsealed are tamper-evident once sealed,
    ``AUDIT_SEAL_SECONDS`` later at most (while any process of the deployment runs); ``audit verify``
    counts rows not sealed yet.

Checkpoints
    Every ``AUDIT_CHECKPOINT_ENTRIES`` entries or ``AUDIT_CHECKPOINT_SECONDS`` (when the chain
    grew), the chainer signs ``{iss, iat, position, hash}`` with the audit key set
    (:data:`oidc.vocabulary.AUDIT_CHECKPOINT_SET`, on the HSM when it is there) as a JWS of
    ``typ`` :data:`oidc.vocabulary.AUDIT_CHECKPOINT_TYP`.  Someone who rewrites rows and
    recomputes every hash after them cannot sign a checkpoint: the chain then disagrees with a
    checkpoint's hash.  The audit set's public keys are published at their own URL
    (``/.well-known/audit-jwks.json``), never in the token JWKS.

Entries never hold a secret: the callers pass identifiers, and :data:`NEVER_STORED` names are
dropped in case one does not.
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson
from flask import Flask, has_request_context
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from keys import KeyServiceError, Signer, compact_jws
from oidc import queries
from oidc.observability import audit, metrics
from oidc.settings import DEFAULT_AUDIT_QUEUE_LIMIT
from oidc.vocabulary import AUDIT_CHECKPOINT_TYP

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

log = logging.getLogger(__name__)

#: The "previous hash" of the first entry.
GENESIS = "0" * 64
#: Field names never stored, whatever a caller passes (defence in depth: callers pass identifiers).
NEVER_STORED = frozenset(("password", "pin", "secret", "client_secret", "code", "code_verifier", "access_token",
                          "id_token", "token", "assertion", "client_assertion"))
#: Attributes every ``logging.LogRecord`` has: the rest of a record's ``__dict__`` are its fields.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: The entry that records events a process dropped because its queue was full (``count``, ``since``).
DROPPED_EVENT = "audit.dropped"

#: An entry in a process's queue (:meth:`AuditTrail.queue`): ``(at, event, fields, level)``.  ``fields`` is the
#: event's own mapping while ``level`` is its log level (the chainer adds the level's name and makes the text:
#: :func:`_queued_text`), else text already (``level`` None).
Queued = tuple[int, str, "Mapping[str, Any] | str", "int | None"]

#: Entries of the current request, written once it has ended (see :class:`AuditHandler`).
_pending: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("audit_pending",
                                                                                       default=None)


def canonical(entry: Mapping[str, Any], previous: str) -> bytes:
    """The bytes an entry's hash is computed over: sorted, compact JSON of its columns and the previous hash,
    as ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` writes it.

    ``fields`` is hashed as the text stored (the canonical JSON the handler wrote), so a change of a
    single character is a change of the hash.
    """
    return _canonical(entry["id"], entry["position"], entry["at"], entry["event"], entry["fields"], previous)


def _canonical(entry_id: int, position: int, at: int, event: str, fields: str, previous: str) -> bytes:
    """:func:`canonical` of an entry's columns: what ``audit verify`` and the chainer (:func:`_seal_queued`)
    both hash."""
    body = {"at": at, "event": event, "fields": fields, "id": entry_id, "position": position, "previous": previous}
    fast = _plain_json(body)
    if fast is not None:
        return fast
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


#: The value types whose JSON orjson writes exactly as the standard library does (see :func:`_plain_json`).
_PLAIN_VALUES = frozenset((str, int, bool, type(None)))
#: DEL, the one ASCII character ``ensure_ascii`` escapes and orjson does not (an int: ``in`` then looks for
#: one byte, several times cheaper than for a one-byte ``bytes``).
_DEL = 0x7F


def _plain_json(members: Mapping[str, Any]) -> bytes | None:
    """``json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` written by orjson
    (several times cheaper), when its bytes are provably the same; else None: the caller uses ``json``.

    Hashes already stored must keep verifying, so orjson writes only a flat ``dict`` whose keys are
    exactly ``str`` (orjson refuses any other key type, subclasses included, without
    ``OPT_NON_STR_KEYS``) and values exactly ``str``, ``int``, ``bool`` or ``None``: it writes other
    types (float, datetime, UUID, Enum, dataclass, any subclass) otherwise than ``json`` (and its
    ``default=str``), and refuses ints beyond 64 bits and strings with a lone surrogate.  It writes
    non-ASCII characters as UTF-8 and DEL raw where ``ensure_ascii`` escapes them (``\\uXXXX``,
    ``\\u007f``), so output that is not ASCII or holds DEL is left to ``json`` too.  Below DEL both
    escape alike, and sort ASCII keys in the same order.
    """
    if type(members) is not dict or not _PLAIN_VALUES.issuperset(map(type, members.values())):
        return None
    try:
        out = orjson.dumps(members, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a key that is not exactly str, an int beyond 64 bits, a lone surrogate
        return None
    return out if out.isascii() and _DEL not in out else None


def entry_hash(entry: Mapping[str, Any], previous: str) -> str:
    """SHA-256 (hex) of :func:`canonical`: what links an entry to the one before it."""
    return columns_hash(entry["id"], entry["position"], entry["at"], entry["event"], entry["fields"], previous)


def columns_hash(entry_id: int, position: int, at: int, event: str, fields: str, previous: str) -> str:
    """:func:`entry_hash` of an entry's columns, without a mapping of them to read back (the chainer's)."""
    return hashlib.sha256(_canonical(entry_id, position, at, event, fields, previous)).hexdigest()


def _seal_queued(entries: Sequence[Queued], ids: Sequence[int], position: int,
                 digest: str) -> tuple[list[tuple[Any, ...]], int, str]:
    """Queued entries sealed in order after ``position`` and ``digest``, with their new ids: their rows as
    :func:`oidc.queries.seal_audit_entries` inserts them (:func:`oidc.queries.sealed_values`), and the
    position and hash of the last."""
    rows: list[tuple[Any, ...]] = []
    for entry_id, (at, event, fields, level) in zip(ids, entries, strict=True):
        position += 1
        if not isinstance(fields, str):  # the event's own fields (AuditHandler.sink): its entry is made here
            event, fields = event[:64], _queued_text(fields, level)
        digest = columns_hash(entry_id, position, at, event, fields, digest)
        rows.append(queries.sealed_values(entry_id, position, at, event, fields, digest))
    return rows, position, digest


#: How many times a chainer appends by compare-and-swap before it takes the head's lock instead.
_APPEND_ATTEMPTS = 3


#: The canonical JSON of an event's fields whose values orjson cannot write as json does (see
#: :func:`fields_text`), made once (``json.dumps`` with options builds an encoder per call).
_FIELDS_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str,
                                  check_circular=False)  # flat: identifiers, never a container of itself


#: Whether a tuple of field names holds one of :data:`NEVER_STORED` (any case): an event is recorded with
#: the same names each time, so each tuple is looked at once.  Bounded: cleared when full.
_names_to_drop: dict[tuple[str, ...], bool] = {}
_NAMES_REMEMBERED = 1024


def fields_text(fields: Mapping[str, Any]) -> str:
    """An event's fields as canonical JSON text (identifiers only; :data:`NEVER_STORED` dropped)."""
    names = tuple(fields)
    drop = _names_to_drop.get(names)
    if drop is None:
        if len(_names_to_drop) >= _NAMES_REMEMBERED:
            _names_to_drop.clear()
        drop = _names_to_drop[names] = not NEVER_STORED.isdisjoint(map(str.lower, names))
    if drop:  # (a copy only when there is a name to drop)
        fields = {name: value for name, value in fields.items() if name.lower() not in NEVER_STORED}
    # Identifiers (str, int, bool, None) in ASCII: orjson writes json's bytes; anything else json itself.
    fast = _plain_json(fields)
    return fast.decode("ascii") if fast is not None else _FIELDS_ENCODER.encode(fields)


def entry_fields(fields: Mapping[str, Any], level: int) -> dict[str, Any]:
    """An event's fields as its entry holds them: with its log level's name (``level``)."""
    return {**fields, "level": logging.getLevelName(level)}


def _queued_text(fields: Mapping[str, Any], level: int | None) -> str:
    """:func:`fields_text` of a queued entry's fields (with its level's name, unless ``level`` is None); fields
    that cannot be encoded (a value that refers to itself) are stored by name: an entry is never lost, nor
    the chainer stopped, for one."""
    named = entry_fields(fields, level) if level is not None else fields
    try:
        return fields_text(named)
    except (TypeError, ValueError, RecursionError):
        return fields_text({"unencodable_fields": sorted(str(name) for name in named)})


@dataclass
class Problem:
    """The first place the stored trail does not match: the entry's position (and id), and what is wrong."""

    position: int
    what: str
    entry_id: int | None = None

    def __str__(self) -> str:
        where = f"entry {self.position}" + (f" (id {self.entry_id})" if self.entry_id is not None else "")
        return f"{where}: {self.what}"


@dataclass
class Verification:
    """What :meth:`AuditTrail.verify` found."""

    entries: int = 0
    checkpoints: int = 0
    unsealed: int = 0
    last_position: int = 0
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "checkpoints": self.checkpoints, "unsealed": self.unsealed,
                "last_position": self.last_position,
                "first_bad": None if self.problem is None else {"position": self.problem.position,
                                                                "id": self.problem.entry_id,
                                                                "problem": self.problem.what}}


class _Process:
    """This process's id, updated in a forked child: compared on each queued event, where ``os.getpid()``
    would be a system call each time."""

    pid: int = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_Process.forked)


@dataclass
class AuditTrail:
    """The chain of one deployment's database: append, seal, checkpoint, verify, export."""

    engine: Callable[[], Engine]
    clock: Callable[[], float]
    issuer: str
    #: The audit set's signer (through the key service); raises KeyServiceError while it cannot sign.
    signer: Callable[[], Signer]
    #: The audit set's published public JWK of a kid, or None (never a token set's key).
    public_key: Callable[[str], dict[str, Any] | None]
    checkpoint_entries: int = 1000
    checkpoint_seconds: float = 300.0
    seal_seconds: float = 1.0
    #: 0: a request's entries are committed before its response (one insert).  Else they wait in
    #: this process's queue and the chainer thread writes the queue, sealed, every ``write_delay_seconds``.
    write_delay_seconds: float = 0.0
    #: At most this many entries wait in the process's queue (while the database cannot be written): beyond,
    #: events are counted, not queued, and the count is recorded in the chain (:data:`DROPPED_EVENT`).
    queue_limit: int = DEFAULT_AUDIT_QUEUE_LIMIT
    _stop: threading.Event = field(default_factory=threading.Event)
    _chainer: threading.Thread | None = None
    _chainer_pid: int = 0
    _chainer_lock: threading.Lock = field(default_factory=threading.Lock)
    #: This process's queue: requests append to it (a deque's append needs no lock); the chainer, holding
    #: ``_queue_lock`` against another writer of the queue, takes from its left.
    _queue: deque[Queued] = field(default_factory=deque)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Events not queued since the queue was last written (the queue was full), and since when.
    _dropped: int = 0
    _dropped_since: int = 0
    _dropped_lock: threading.Lock = field(default_factory=threading.Lock)
    #: When this process last began writing its queue, and sealing stored entries (time.monotonic).
    _written_at: float = field(default_factory=time.monotonic)
    _sealed_at: float = field(default_factory=time.monotonic)

    # -- appending (the request path) ------------------------------------------------------------

    def queue(self, event: str, level: int, fields: Mapping[str, Any]) -> None:
        """Queue one event for the chainer thread (with a write delay): the request's whole part.

        The chainer makes the entry (the level's name added, the fields made text: :func:`_queued_text`):
        in its batch that work costs less than in a request.  The fields are identifiers (str, int, bool,
        None: what :func:`audit.record`'s callers pass, never changed after), so what is written is what
        they were now."""
        self._enqueue((int(self.clock()), event, fields, level))
        if self._chainer_pid != _Process.pid:
            self.start_chainer()

    def _enqueue(self, entry: Queued) -> None:
        """Queue one entry, or count it while the queue is full (:meth:`queue_full`)."""
        if self.queue_full():
            self._drop(1)
        else:
            self._queue.append(entry)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Insert entries (``at``, ``event``, ``fields`` text) in a transaction of their own; or, with a
        write delay, queue them for the chainer thread (``fields`` then text, or the fields themselves,
        made text by the chainer: :func:`fields_text`)."""
        if not entries:
            return
        if self.write_delay_seconds > 0:
            for entry in entries:
                self._enqueue((entry["at"], entry["event"], entry["fields"], None))
        else:
            queries.insert_audit_entries(self.engine(), entries)
        self.start_chainer()

    def queue_full(self) -> bool:
        """Whether events are dropped now: the queue reached AUDIT_QUEUE_LIMIT (the database could not be
        written), until the chainer takes it; also while a failed write has put it back."""
        return self._dropped > 0 or len(self._queue) >= self.queue_limit

    def _drop(self, count: int) -> None:
        """Count ``count`` events not queued (the queue is full); the first of a run is logged."""
        with self._dropped_lock:
            if not self._dropped:
                self._dropped_since = int(self.clock())
                log.error("the audit queue holds AUDIT_QUEUE_LIMIT (%d) entries: events are counted, not queued, "
                          "until it is written (the count is recorded in the chain)", self.queue_limit)
            self._dropped += count
        metrics.AUDIT_EVENTS_DROPPED.inc(count)

    def _dropped_entry(self) -> list[Queued]:
        """The entry recording the events dropped since the queue was last taken, if any (and the count
        reset): it takes their place in the chain, after the entries queued before them."""
        with self._dropped_lock:
            count, since, self._dropped = self._dropped, self._dropped_since, 0
        if not count:
            return []
        fields = {"count": count, "since": since, "queue_limit": self.queue_limit}
        return [(int(self.clock()), DROPPED_EVENT, fields, logging.ERROR)]

    def write_queued(self, *, sign: bool = True) -> int:
        """Write this process's queued entries, sealed as they are written (:meth:`seal`); the count sealed.

        Nothing queued: nothing is done (no transaction).  Entries not written stay queued, first.
        """
        if not self._queue:
            return 0
        # Stored unsealed entries (another process's, written with no delay) are sealed with this write
        # once AUDIT_SEAL_SECONDS have passed since they were last looked for; else one statement less.
        return self.seal(sign=sign, stored_too=self.seal_due())

    def seal_due(self) -> bool:
        """Whether stored entries were last sealed ``seal_seconds`` ago or more."""
        return time.monotonic() - self._sealed_at >= self.seal_seconds

    def write_due(self) -> bool:
        """Whether entries are queued and the last write began ``write_delay_seconds`` ago or more."""
        return bool(self._queue) and time.monotonic() - self._written_at >= self.write_delay_seconds

    # -- sealing (the chainer) --------------------------------------------------------------------

    def seal(self, *, sign: bool = True, stored_too: bool = True) -> int:
        """Seal the unsealed entries in order, then this process's queued ones; the count sealed.

        Queued entries are inserted sealed (position and hash with them), in the transaction that
        seals them: one insert each, no update.  A checkpoint is signed when one is due, unless
        ``sign`` is false (a process's exit: it never starts the key service to sign; the next
        chainer to seal signs the checkpoint then due); stored unsealed entries are sealed too unless
        ``stored_too`` is false (:meth:`write_queued`).

        The checkpoint is signed between two transactions, never inside one: a token that fails or
        hangs during the signature then holds no lock on the chain's head (other chainers go on
        sealing), and the ``hsm.lost`` entry its failure makes is not held up by the sealing
        transaction's write lock (on SQLite).  A checkpoint that cannot be signed waits: the entries
        are sealed anyway, and it is signed on a later pass.
        """
        with self._queue_lock:
            # Taken one by one from the left: a request may be appending meanwhile (at the right).
            queued = [self._queue.popleft() for _ in range(len(self._queue))]
            queued.extend(self._dropped_entry())
            self._written_at = time.monotonic()
            if stored_too:
                self._sealed_at = self._written_at
        try:
            # Before the lock: starting the key service writes to the database.
            signer = self._checkpoint_signer() if sign else None
            sealed_total = 0
            engine = self.engine()
            while True:
                batch = (self._append_unlocked(engine, queued, signing=signer is not None)
                         if queued and not stored_too and queries.appends_unlocked(engine.dialect) else None)
                if batch is None:
                    with engine.begin() as connection:
                        batch = self._seal_batch(connection, queued, signing=signer is not None, stored_too=stored_too)
                sealed, written, more, due = batch
                del queued[:written]  # committed: no longer this process's to write
                sealed_total += sealed
                if due is not None and signer is not None and not self._sign_checkpoint(signer, *due):
                    signer = None  # the token failed: seal the rest without stopping at checkpoints
                if not more and not queued:
                    return sealed_total
        finally:
            if queued:  # not written (the database failed): first again, in their order
                with self._queue_lock:
                    self._queue.extendleft(reversed(queued))

    def _checkpoint_signer(self) -> Signer | None:
        try:
            return self.signer()
        except KeyServiceError as exc:  # the HSM is away: entries are sealed, the checkpoint waits
            log.warning("no audit checkpoint now: the audit key set cannot sign (%s)", type(exc).__name__)
            return None

    def _seal_batch(self, connection: Connection, queued: list[Queued], *, signing: bool,
                    stored_too: bool) -> tuple[int, int, bool, tuple[int, str] | None]:
        """Seal up to the next checkpoint (or a batch), holding the head's lock: stored unsealed entries first
        (``stored_too``), then queued ones.  (count sealed, count of ``queued`` written, more stored to seal,
        the (position, hash) of a checkpoint now due)."""
        head = queries.lock_audit_head(connection)
        if head is None:
            raise RuntimeError("the audit_chain head row is missing: run oidc-hsm db upgrade")
        position, digest = int(head.position), str(head.hash)
        # Writing the queue alone, stored unsealed entries (another process's, with no write delay) are
        # left to the next periodic seal: one statement less for each write.
        unsealed = queries.unsealed_audit_entries(connection) if stored_too else ()
        limit = self._batch_limit(head, signing)
        stored = unsealed[:limit]
        fresh = queued[:limit - len(stored)]
        sealed = []
        for row in stored:
            position += 1
            digest = columns_hash(row.id, position, row.at, row.event, row.fields, digest)
            sealed.append({"row_id": row.id, "sealed_position": position, "sealed_hash": digest})
        ids = queries.next_audit_ids(connection, len(fresh)) if fresh else []
        written, position, digest = _seal_queued(fresh, ids, position, digest)
        if sealed or written:
            queries.seal_audit_entries(connection, sealed, written, position, digest)
        more = len(stored) < len(unsealed) or len(unsealed) == queries.AUDIT_SEAL_BATCH
        return len(sealed) + len(written), len(written), more, self._checkpoint_due(head, position, digest)

    def _append_unlocked(self, engine: Engine, queued: list[Queued], *,
                         signing: bool) -> tuple[int, int, bool, tuple[int, str] | None] | None:
        """Write the queue's next batch without holding the head's lock while it is sealed
        (:func:`queries.appends_unlocked`): the head read with the batch's ids, the entries sealed after it,
        then the head moved if no other writer moved it meanwhile and the entries inserted, in one
        transaction (else the head is read again).  As :meth:`_seal_batch` answers; None when another
        writer came first every time (the caller then takes the lock)."""
        with engine.connect() as connection:
            ids: list[int] = []
            for _ in range(_APPEND_ATTEMPTS):
                with connection.begin():  # committed: the batch written, or nothing (an attempt lost)
                    # The ids once: those of a lost attempt were never used (a sequence leaves gaps anyway,
                    # and keeps what a transaction took).
                    count = 0 if ids else min(len(queued), queries.AUDIT_SEAL_BATCH)
                    head, taken = queries.read_audit_head_taking_ids(connection, count)
                    ids = ids or taken
                    fresh = queued[:self._batch_limit(head, signing)]
                    rows, position, digest = _seal_queued(fresh, ids[:len(fresh)], int(head.position), str(head.hash))
                    if queries.append_sealed_entries(connection, rows, int(head.position), position, digest):
                        return len(rows), len(rows), False, self._checkpoint_due(head, position, digest)
        return None

    def _batch_limit(self, head: Any, signing: bool) -> int:
        """How many entries the next batch seals after ``head``: up to the next multiple of
        AUDIT_CHECKPOINT_ENTRIES while checkpoints are signed, so each checkpoint signs exactly there (also
        past a multiple whose checkpoint another chainer is still signing, outside the lock); at most
        :data:`queries.AUDIT_SEAL_BATCH`."""
        since = int(head.position) - int(head.checkpoint_position)
        room = self.checkpoint_entries - since % self.checkpoint_entries if signing else 0
        return min(room, queries.AUDIT_SEAL_BATCH) if room > 0 else queries.AUDIT_SEAL_BATCH

    def _checkpoint_due(self, head: Any, position: int, digest: str) -> tuple[int, str] | None:
        """The checkpoint now due once the chain reaches ``position`` (``digest``) from ``head``, if one is:
        AUDIT_CHECKPOINT_ENTRIES entries, or AUDIT_CHECKPOINT_SECONDS, since the last one."""
        checkpoint = int(head.checkpoint_position)
        due = position - checkpoint >= self.checkpoint_entries or (
            position > checkpoint and int(self.clock()) - int(head.checkpoint_at) >= self.checkpoint_seconds)
        return (position, digest) if due else None

    def _sign_checkpoint(self, signer: Signer, position: int, digest: str) -> bool:
        """Sign the checkpoint of ``position`` (outside any transaction), then store it unless another
        chainer stored it, or a later one, meanwhile; False when the audit set could not sign."""
        now = int(self.clock())
        try:
            token = compact_jws(signer, {"iss": self.issuer, "iat": now, "position": position, "hash": digest},
                                AUDIT_CHECKPOINT_TYP)
        except KeyServiceError as exc:
            log.warning("no audit checkpoint now: the audit key set cannot sign (%s)", type(exc).__name__)
            return False
        with self.engine().begin() as connection:
            head = queries.lock_audit_head(connection)
            if head is not None and int(head.checkpoint_position) < position:
                queries.insert_audit_checkpoint(connection, {"position": position, "hash": digest, "kid": signer.kid,
                                                             "token": token, "at": now})
        return True

    def start_chainer(self) -> None:
        """Start this process's chainer thread once (again in a forked child, which has no threads)."""
        if self._chainer_pid == _Process.pid or self.seal_seconds <= 0:
            return
        with self._chainer_lock:
            if self._chainer_pid == _Process.pid:
                return
            self._stop.clear()
            self._chainer = threading.Thread(target=self._run_chainer, name="audit-chainer", daemon=True)
            self._chainer_pid = _Process.pid
            self._chainer.start()
            if self.write_delay_seconds > 0:
                atexit.register(self.stop)  # a worker's graceful exit writes what is queued

    def _run_chainer(self) -> None:
        # One wake-up per interval, never one per event: a request only appends to the queue.  A write
        # seals stored entries too when that is due (one transaction, not two).  (Writing on the request
        # thread after its response instead, to spare the GIL hand-offs, cost more CPU per request on
        # PostgreSQL: the round trips then stall the request thread instead of overlapping it.)
        interval = min(self.seal_seconds, self.write_delay_seconds or self.seal_seconds)
        try:
            queries.prepare_audit_writes(self.engine())
        except (SQLAlchemyError, RuntimeError) as exc:  # compiled on the first write instead
            log.warning("preparing the audit trail's statements failed: %s", type(exc).__name__)
        while not self._stop.wait(interval):
            try:
                if self.seal_due():
                    self.seal()  # the queue too
                elif self.write_due():
                    self.write_queued()
            except (SQLAlchemyError, KeyServiceError, RuntimeError) as exc:  # tried again next time
                log.warning("writing or sealing the audit trail failed: %s", type(exc).__name__)

    def stop(self) -> None:
        """Stop the chainer and write what is queued (a worker's graceful exit)."""
        self._stop.set()
        chainer = self._chainer
        if chainer is not None and chainer.is_alive() and chainer is not threading.current_thread():
            chainer.join(timeout=5)
        self._chainer_pid = 0
        try:
            self.write_queued(sign=False)
        except (SQLAlchemyError, RuntimeError) as exc:  # at exit: name what is lost, no traceback
            log.error("%d queued audit entries could not be written: %s", len(self._queue), type(exc).__name__)

    # -- verifying and exporting ----------------------------------------------------------------------

    def verify(self, since: int = 1) -> Verification:
        """Replay the chain from position ``since`` and every checkpoint at or after it.

        The result names the first entry that does not match: a changed entry (its hash), a
        deleted one (a hole in the positions), entries reordered (their hashes), a checkpoint whose
        signature, header or hash is wrong, or a head or checkpoint beyond the last entry (the end
        cut off).  Entries before ``since`` are trusted as stored (the hash of ``since - 1``).
        """
        since = max(1, since)
        result = Verification()
        with self.engine().connect() as connection:
            result.unsealed = queries.unsealed_audit_count(connection)
            checkpoints = {int(row.position): row for row in queries.audit_checkpoints_from(connection, since)}
            result.checkpoints = len(checkpoints)
            result.problem = self._forged_checkpoint(checkpoints)
            previous = GENESIS if since == 1 else queries.audit_hash_at(connection, since - 1)
            if previous is None:
                result.problem = result.problem or Problem(since - 1, "missing (the anchor of --since)")
                return result
            problem = self._replay(connection, since, previous, checkpoints, result)
            if result.problem is None or (problem is not None and problem.position < result.problem.position):
                result.problem = problem
            if result.problem is None:
                result.problem = self._check_end(connection, result, checkpoints)
        return result

    def _replay(self, connection: Connection, since: int, previous: str, checkpoints: Mapping[int, Any],
                result: Verification) -> Problem | None:
        expected = since
        for row in queries.audit_entries_from(connection, since):
            position = int(row.position)
            if position != expected:
                return Problem(expected, f"missing: the next entry stored is at position {position}")
            digest = entry_hash(row._mapping, previous)
            if row.hash != digest:
                return Problem(position, f"does not match its hash (event {row.event!r}): changed, moved or "
                                         "inserted", int(row.id))
            checkpoint = checkpoints.get(position)
            if checkpoint is not None and checkpoint.hash != digest:
                return Problem(position, "the chain does not match the signed checkpoint at this position "
                                         "(entries up to it were rewritten)", int(row.id))
            previous, expected = digest, expected + 1
            result.entries += 1
            result.last_position = position
        return None

    def _check_end(self, connection: Connection, result: Verification, checkpoints: Mapping[int, Any]) -> Problem | None:
        head = queries.audit_head(connection)
        last = result.last_position
        beyond = [position for position in checkpoints if position > last]
        if int(head.position) > last or beyond:
            return Problem(last + 1, f"missing: the chain's head is at {head.position} and a checkpoint signs "
                                     f"position {max(beyond or [last])}, but the last entry stored is {last}")
        return None

    def _forged_checkpoint(self, checkpoints: Mapping[int, Any]) -> Problem | None:
        """The first checkpoint whose JWS does not verify with the audit set's published keys, or says
        another position or hash than its row."""
        for position, row in sorted(checkpoints.items()):
            claims = self.checkpoint_claims(str(row.token))
            if claims is None:
                return Problem(position, "its checkpoint's signature does not verify with the audit key set "
                                         "(forged, or signed by a key that is not published)")
            if claims.get("position") != position or claims.get("hash") != row.hash:
                return Problem(position, "its checkpoint row says another position or hash than its signed JWS")
        return None

    def checkpoint_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a checkpoint JWS if it verifies: ``typ`` is the checkpoint's, the key is a
        published key of the audit set, the signature is good; else None."""
        from joserfc import jws
        from joserfc.errors import JoseError
        from joserfc.jwk import import_key

        try:
            header = json.loads(_b64decode(token.split(".", 1)[0]))
            jwk = self.public_key(str(header.get("kid", ""))) if isinstance(header, dict) else None
            if jwk is None or header.get("typ") != AUDIT_CHECKPOINT_TYP:
                return None
            verified = jws.deserialize_compact(token, import_key(jwk), algorithms=[str(jwk.get("alg", ""))])
            claims = json.loads(verified.payload)
        except (JoseError, ValueError, TypeError):
            return None
        return claims if isinstance(claims, dict) else None

    def export(self, since: int = 1) -> Iterator[dict[str, Any]]:
        """Sealed entries from ``since`` on, one dict each (for JSON lines)."""
        with self.engine().connect() as connection:
            for row in queries.audit_entries_from(connection, max(1, since)):
                try:
                    fields = json.loads(row.fields)
                except ValueError:
                    fields = row.fields  # exported as stored: verify names it
                yield {"position": row.position, "id": row.id, "at": row.at, "event": row.event, "fields": fields,
                       "hash": row.hash}


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AuditHandler(logging.Handler):
    """Appends each ``oidc.audit`` record to the trail.

    With a write delay (the default), every entry goes to the process's queue
    (:meth:`AuditTrail.append`): nothing is written in the request.  Without one, in a request,
    entries wait in the request's list and are written in one insert once the request has ended
    (:func:`flush_request`): after its own transaction, whose write lock (on SQLite) an insert on
    another connection would wait for; outside a request (commands, the HSM's recovery thread) an
    entry is written at once.
    """

    def __init__(self, trail: AuditTrail, owner: Callable[[], bool]) -> None:
        super().__init__(level=logging.INFO)
        self.trail = trail
        #: Whether a record belongs to this app (tests run several apps in one process).
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        """A record of the logger: the key service's events (those of :func:`audit.record` came as a sink)."""
        event = getattr(record, "event", None)
        if not isinstance(event, str) or audit.recording.get():
            return
        fields = {name: value for name, value in record.__dict__.items()
                  if name not in _RECORD_ATTRIBUTES and name != "event"}
        self.sink(event, record.levelno, fields)

    def sink(self, event: str, level: int, fields: dict[str, Any]) -> None:
        """Append one event: to the process's queue with a write delay; else to the request's entries
        in a request, and at once outside one."""
        if not self.owner():
            return
        if self.trail.write_delay_seconds > 0:
            self.trail.queue(event, level, fields)
            return
        entry = {"at": int(self.trail.clock()), "event": event[:64], "fields": fields_text(entry_fields(fields, level))}
        if has_request_context():
            pending = _pending.get()
            if pending is None:
                pending = []
                _pending.set(pending)  # this request's list, written and cleared by flush_request
            pending.append(entry)
            return
        try:
            self.trail.append([entry])
        except SQLAlchemyError:
            log.exception("an audit entry (%s) could not be stored", event)


class _ToParent(logging.Handler):
    """Hands an audit record on to the log as if ``oidc.audit`` had LOG_LEVEL's level.

    The chain needs every audit record, so ``oidc.audit`` logs at INFO while it is on; but
    LOG_LEVEL=WARNING still means no INFO lines in the log (each would cost a JSON line per
    token): the record reaches the log's handlers only when the parent logger would have let
    it through.
    """

    def emit(self, record: logging.LogRecord) -> None:
        parent = logging.getLogger("oidc")
        if parent.isEnabledFor(record.levelno):
            parent.handle(record)


def has_pending() -> bool:
    """Whether the current request has audit entries to write."""
    return bool(_pending.get())


def flush_request(trail: AuditTrail) -> None:
    """Write the request's entries in one insert (none: nothing is written)."""
    pending = _pending.get()
    _pending.set(None)
    if not pending:
        return
    try:
        trail.append(pending)
    except SQLAlchemyError:
        log.exception("%d audit entries could not be stored", len(pending))


def init_app(app: Flask, trail: AuditTrail) -> AuditHandler:
    """Append this app's audit events to ``trail``: the handler on ``oidc.audit``, and the request hooks.

    While the chain is on, ``oidc.audit`` logs at INFO whatever LOG_LEVEL says: the trail must not
    lose an event because the log level is WARNING.
    """
    from flask import current_app, has_app_context

    from oidc.db import db

    # The same app (current_app is a proxy: the object behind it is compared).
    proxy = cast("LocalProxy[Flask]", current_app)
    handler = AuditHandler(trail, lambda: not has_app_context() or proxy._get_current_object() is app)
    audit_logger = logging.getLogger("oidc.audit")
    if not any(isinstance(existing, _ToParent) for existing in audit_logger.handlers):
        audit_logger.addHandler(_ToParent())
        audit_logger.propagate = False
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    audit.sinks.append(handler.sink)

    @app.teardown_request
    def write_audit_entries(_exc: BaseException | None) -> None:
        if has_pending():  # (never with a write delay: entries go to the process's queue)
            # The request's session ends first (as it would at the end of the app context): on SQLite,
            # an insert on another connection would wait for the write lock that session may hold.
            db.session.remove()
            flush_request(trail)

    return handler


def detach(handler: AuditHandler) -> None:
    """Undo :func:`init_app` for one app; the last one gone, ``oidc.audit`` logs as it did before."""
    audit_logger = logging.getLogger("oidc.audit")
    audit_logger.removeHandler(handler)
    if handler.sink in audit.sinks:
        audit.sinks.remove(handler.sink)
    if not any(isinstance(existing, AuditHandler) for existing in audit_logger.handlers):
        for existing in [h for h in audit_logger.handlers if isinstance(h, _ToParent)]:
            audit_logger.removeHandler(existing)
        audit_logger.propagate = True
        audit_logger.setLevel(logging.NOTSET)
