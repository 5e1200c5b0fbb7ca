"""The key service: one façade over the HSM and software managers.

Per key set, the HSM comes first; where the token has no key pair for a set,
the software manager serves it (Ory Hydra's rule), unless the set is declared
HSM-only, in which case it fails closed.

Rotation adds a key and never replaces one:

* a new key is *published* at once but only *signs* from ``active_at`` (after
  the pre-publication period, longer than the JWKS cache lifetime), so every
  resource server already has it when the first token signed by it arrives;
* a key superseded at time S stays published until S + retention (the longest
  token lifetime), then it is retired: dropped from the JWKS, its row deleted,
  and destroyed on the HSM only when configured to.

Reads are served from an in-memory snapshot rebuilt every ``refresh_seconds``
(and at once after a change made through this process), so neither signing nor
the JWKS does database or token look-ups per request.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ContextManager

from keys.algorithms import get_algorithm
from keys.errors import HSMError, InvalidKey, KeyNotFound, NoSigningKey
from keys.hsm import HSMManager
from keys.signer import BoundSigner, KeyRecord, Signer
from keys.software import SoftwareManager
from keys.store import KeyStore

log = logging.getLogger(__name__)
audit = logging.getLogger("oidc.audit")

#: The two key sets every deployment needs (DESIGN.md).
ID_TOKEN_SET = "openid.id-token"
ACCESS_TOKEN_SET = "jwt.access-token"


@dataclass(frozen=True)
class KeySetPolicy:
    """How one key set is generated and where it may live."""

    name: str
    alg: str
    hsm_only: bool = False

    def __post_init__(self) -> None:
        get_algorithm(self.alg)  # refuse HS*/none/unknown at configuration time


@dataclass(frozen=True)
class RotationPolicy:
    """Timings that keep rotation invisible to resource servers."""

    prepublication_seconds: int
    retention_seconds: int
    destroy_retired_hsm_keys: bool = False


@dataclass(frozen=True)
class KeyStatus:
    """A key with its place in the rotation, as the admin API shows it."""

    record: KeyRecord
    status: str  # "active" (signs now), "next" (published, not yet signing), "previous" (published, retiring)
    retires_at: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.record.kid,
            "alg": self.record.alg,
            "use": self.record.use,
            "backend": self.record.backend,
            "status": self.status,
            "created_at": self.record.created_at,
            "active_at": self.record.active_at,
            "retires_at": self.retires_at,
            "public_jwk": self.record.public_jwk,
        }


def _order(record: KeyRecord) -> tuple[int, int, str]:
    return (record.active_at, record.created_at, record.kid)


@dataclass
class _SetView:
    backend: str | None
    keys: list[KeyStatus]
    signers: list[tuple[int, Signer]]  # (active_at, signer), oldest first


@dataclass
class _Snapshot:
    built_at: float
    sets: dict[str, _SetView]
    jwks_body: bytes
    etag: str
    by_kid: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Published signing keys (``use: sig``) by (key set, kid).
    signing_by_set: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class KeyService:
    """Signing keys for every key set, whichever manager holds them."""

    def __init__(
        self,
        *,
        key_sets: list[KeySetPolicy],
        store: KeyStore,
        software: SoftwareManager,
        hsm: HSMManager | None,
        rotation: RotationPolicy,
        rsa_bits: int,
        lock: Callable[[], ContextManager[Any]],
        refresh_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        sign_observer: Callable[[str, str, float], None] | None = None,
        hsm_only_sets: Collection[str] = (),
    ) -> None:
        self.policies = {policy.name: policy for policy in key_sets}
        #: Sets (any name, not only configured ones; "*" for all) that never use software keys.
        self.hsm_only_sets = frozenset(hsm_only_sets)
        self.store = store
        self.software = software
        self.hsm = hsm
        self.rotation = rotation
        self.rsa_bits = rsa_bits
        self._lock = lock
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        #: Called with (key set, backend, seconds) after every signature (metrics).
        self.sign_observer = sign_observer
        self._snapshot: _Snapshot | None = None
        self._refreshing = threading.Lock()
        #: Results of the sign-and-verify self-test run by :meth:`start`.
        self.start_self_test: dict[str, dict[str, Any]] = {}

    # -- start-up -------------------------------------------------------------

    def start(self) -> None:
        """Open the HSM, provision every configured set, and self-test each signer."""
        if self.hsm is not None:
            self.hsm.open()
        self.provision()
        self.refresh()
        self.start_self_test = self.self_test()
        for name, result in self.start_self_test.items():
            if not result["ok"]:
                raise NoSigningKey(f"key set {name!r} failed its sign-and-verify self-test: {result['error']}")

    def provision(self) -> list[KeyRecord]:
        """Generate a key pair for each configured set that has none (exactly once).

        Look-up and generation happen under the deployment-wide provisioning
        lock, and the look-up is repeated inside it, so processes starting
        together generate one key pair per set, not one each.
        """
        generated = []
        missing = [name for name in self.policies if not self._has_signing_key(name)]
        if not missing:
            return generated
        with self._lock():
            for name in missing:
                if self._has_signing_key(name):
                    continue
                now = int(self.clock())
                # The first key of a set has nothing to take over from: it signs at once.
                generated.append(self._generate(name, self.policies[name].alg, created_at=now, active_at=now))
        return generated

    def _has_signing_key(self, key_set: str) -> bool:
        backend, records = self._records(key_set)
        return any(record.use == "sig" for record in records if record.backend == backend)

    # -- reading --------------------------------------------------------------

    def is_hsm_only(self, key_set: str) -> bool:
        """Whether ``key_set`` must live on the HSM and never fall back to software keys."""
        policy = self.policies.get(key_set)
        return (policy is not None and policy.hsm_only) or "*" in self.hsm_only_sets or key_set in self.hsm_only_sets

    def _hsm_records(self, key_set: str, metadata: dict[str, KeyRecord]) -> list[KeyRecord]:
        if self.hsm is None:
            return []
        policy = self.policies.get(key_set)
        rsa_alg = policy.alg if policy and get_algorithm(policy.alg).is_rsa else "RS256"
        records = []
        for record in self.hsm.records(key_set, rsa_alg=rsa_alg):
            known = metadata.get(record.kid)
            if known is not None:
                # Our own generated keys carry their lifecycle in the store; keys
                # provisioned by hand have none and count as active since forever.
                # An RSA key generated for PS256 keeps it (the token only says "RSA").
                alg = known.alg if get_algorithm(known.alg).is_rsa and get_algorithm(record.alg).is_rsa else record.alg
                record = KeyRecord(
                    key_set=record.key_set, kid=record.kid, alg=alg, use=record.use,
                    backend=record.backend, public_jwk={**record.public_jwk, "alg": alg},
                    created_at=known.created_at, active_at=known.active_at,
                )
            records.append(record)
        return records

    def _records(self, key_set: str, stored: list[KeyRecord] | None = None) -> tuple[str | None, list[KeyRecord]]:
        """The backend serving ``key_set`` and every key of the set in either manager."""
        if stored is None:
            stored = self.store.records(key_set=key_set)
        metadata = {record.kid: record for record in stored if record.backend == "hsm"}
        hsm_records = self._hsm_records(key_set, metadata)
        software_records = [record for record in stored if record.backend == "software"]
        hsm_only = self.is_hsm_only(key_set)
        if hsm_only:
            # Never published either: whoever holds a software key of an HSM-only
            # set could otherwise sign tokens that relying parties accept.
            software_records = []
        if any(record.use == "sig" for record in hsm_records):
            backend: str | None = "hsm"
            # Software keys of a set the HSM serves are published without signing: each only
            # if its sealed private key opens and matches it (RFC 8725 §3.1: a public key
            # written into the table by itself is never trusted).  Those that sign are
            # opened, and checked the same way, by the software manager's signer.
            software_records = [record for record in software_records if self.software.publishable(record)]
        elif hsm_only:
            backend = None  # fail closed: never fall back to software
        else:
            backend = "software"
        return backend, hsm_records + software_records

    def key_set_names(self) -> list[str]:
        names = set(self.policies)
        names.update(record.key_set for record in self.store.records())
        return sorted(names)

    def _view(self, key_set: str, stored: list[KeyRecord], now: float) -> _SetView:
        backend, records = self._records(key_set, stored)
        serving = sorted(
            (record for record in records if record.backend == backend and record.use == "sig"), key=_order
        )
        live = [record for record in serving if record.active_at <= now]
        statuses: list[KeyStatus] = []
        signers: list[tuple[int, Signer]] = []
        for index, record in enumerate(serving):
            if record.active_at > now:
                statuses.append(KeyStatus(record, "next"))
            elif record is live[-1]:
                statuses.append(KeyStatus(record, "active"))
            else:
                successor = live[live.index(record) + 1]
                if successor.active_at == 0:
                    # Both provisioned by hand (no lifecycle row): nothing says when the
                    # newer one took over, so the older stays published until deleted.
                    statuses.append(KeyStatus(record, "previous"))
                else:
                    retires_at = successor.active_at + self.rotation.retention_seconds
                    if now >= retires_at:
                        continue  # retired: every token it signed has expired
                    statuses.append(KeyStatus(record, "previous", retires_at))
            manager = self.hsm if backend == "hsm" else self.software
            assert manager is not None
            signers.append((record.active_at, self._observed(manager.signer(record))))
        # Keys of the other manager (or not for signing) stay published until deleted.
        for record in records:
            if record.backend != backend or record.use != "sig":
                statuses.append(KeyStatus(record, "published"))
        return _SetView(backend, statuses, signers)

    def _observed(self, signer: Signer) -> Signer:
        observe = self.sign_observer
        if observe is None:
            return signer
        key_set, backend, sign = signer.record.key_set, signer.backend, signer.sign  # type: ignore[attr-defined]

        def timed_sign(signing_input: bytes) -> bytes:
            started = time.perf_counter()
            try:
                return sign(signing_input)
            finally:
                observe(key_set, backend, time.perf_counter() - started)

        return BoundSigner(signer.record, timed_sign)  # type: ignore[attr-defined]

    def refresh(self) -> None:
        """Rebuild the snapshot from the store and the token."""
        now = self.clock()
        stored_by_set: dict[str, list[KeyRecord]] = {name: [] for name in self.policies}
        for record in self.store.records():
            stored_by_set.setdefault(record.key_set, []).append(record)
        sets = {name: self._view(name, stored, now) for name, stored in sorted(stored_by_set.items())}
        published = [status.record.public_jwk for view in sets.values() for status in view.keys]
        body = json.dumps({"keys": published}, separators=(",", ":"), sort_keys=True).encode()
        etag = base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode()
        self._snapshot = _Snapshot(
            built_at=now, sets=sets, jwks_body=body, etag=etag,
            by_kid={jwk["kid"]: jwk for jwk in published},
            signing_by_set={(name, status.record.kid): status.record.public_jwk
                            for name, view in sets.items() for status in view.keys
                            if status.record.use == "sig" and status.record.public_jwk.get("use", "sig") == "sig"},
        )

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            self.refresh()
            snapshot = self._snapshot
        elif self.clock() - snapshot.built_at >= self.refresh_seconds and self._refreshing.acquire(blocking=False):
            # One thread refreshes; the others keep serving the previous snapshot.
            try:
                self.refresh()
            except Exception:  # a failed refresh must not stop signing with known keys
                log.exception("refreshing the key snapshot failed; serving the previous one")
            finally:
                self._refreshing.release()
            snapshot = self._snapshot
        assert snapshot is not None
        return snapshot

    # -- the contract with the token builders -------------------------------

    def signer(self, key_set: str) -> Signer:
        """The key that signs for ``key_set`` now: the newest active one."""
        view = self._current().sets.get(key_set)
        if view is None or not view.signers:
            if view is not None and view.backend is None:
                raise NoSigningKey(f"key set {key_set!r} is HSM-only and the token has no key pair for it")
            raise NoSigningKey(f"key set {key_set!r} has no signing key")
        now = self.clock()
        chosen = None
        for active_at, signer in view.signers:
            if active_at <= now:
                chosen = signer
        if chosen is None:
            raise NoSigningKey(f"key set {key_set!r} has no key active yet")
        return chosen

    def jwks(self) -> dict[str, Any]:
        return json.loads(self._current().jwks_body)

    def jwks_document(self) -> tuple[bytes, str]:
        """The serialised public JWK Set and its (unquoted) entity tag; no per-request work."""
        snapshot = self._current()
        return snapshot.jwks_body, snapshot.etag

    def public_key(self, kid: str, key_set: str | None = None) -> dict[str, Any] | None:
        """The published public JWK ``kid``; with ``key_set``, only a signing key (``use: sig``)
        of that set, so a token is verified only with the keys of its own set (RFC 8725 §3.1)."""
        snapshot = self._current()
        jwk = snapshot.by_kid.get(kid) if key_set is None else snapshot.signing_by_set.get((key_set, kid))
        return dict(jwk) if jwk is not None else None

    def keys(self, key_set: str) -> list[KeyStatus]:
        view = self._current().sets.get(key_set)
        if view is None:
            raise KeyNotFound(f"no key set {key_set!r}")
        return list(view.keys)

    def backend_of(self, key_set: str) -> str | None:
        view = self._current().sets.get(key_set)
        return view.backend if view else None

    # -- management -----------------------------------------------------------

    def _target_backend(self, key_set: str) -> str:
        """Where a new key of ``key_set`` is generated.

        On the HSM when the set lives there, when it is HSM-only, or when it is
        a configured set with no key yet (start-up provisioning, as Hydra does);
        otherwise (sets living in software, admin-created sets) in the store.
        """
        if self.hsm is None:
            if self.is_hsm_only(key_set):
                raise HSMError(f"key set {key_set!r} is HSM-only and no HSM is configured")
            return "software"
        if self.is_hsm_only(key_set):
            return "hsm"
        backend, records = self._records(key_set)
        if backend in ("hsm", None):
            return "hsm"
        if key_set in self.policies and not records:
            return "hsm"
        return "software"

    def _generate(self, key_set: str, alg: str, *, created_at: int, active_at: int) -> KeyRecord:
        if self._target_backend(key_set) == "hsm":
            assert self.hsm is not None
            record = self.hsm.generate(key_set, alg, rsa_bits=self.rsa_bits)
            record = KeyRecord(
                key_set=record.key_set, kid=record.kid, alg=record.alg, use=record.use, backend=record.backend,
                public_jwk=record.public_jwk, created_at=created_at, active_at=active_at,
            )
            self.store.add(record)  # lifecycle only; the private key stays on the token
        else:
            record = self.software.generate(
                key_set, alg, rsa_bits=self.rsa_bits, created_at=created_at, active_at=active_at
            )
        audit.info("key generated", extra={"event": "key.generated", "key_set": key_set, "kid": record.kid,
                                           "alg": record.alg, "backend": record.backend})
        return record

    def generate(self, key_set: str, alg: str | None = None) -> KeyRecord:
        """Add a key to ``key_set`` (rotation).  On the HSM when the set lives there.

        When the set already has a signing key, the new key is published now and
        signs after the pre-publication period; otherwise it signs at once.
        """
        policy = self.policies.get(key_set)
        alg = alg or (policy.alg if policy else None)
        if alg is None:
            raise InvalidKey(f"key set {key_set!r} is not configured: name the algorithm")
        get_algorithm(alg)
        with self._lock():
            now = int(self.clock())
            active_at = now + self.rotation.prepublication_seconds if self._has_signing_key(key_set) else now
            record = self._generate(key_set, alg, created_at=now, active_at=active_at)
        self.refresh()
        return record

    def import_jwk(self, key_set: str, jwk: dict[str, Any]) -> KeyRecord:
        """Import a private JWK into the software store (never onto the HSM)."""
        if self.is_hsm_only(key_set):
            raise InvalidKey(f"key set {key_set!r} is HSM-only: keys cannot be imported into it")
        now = int(self.clock())
        active_at = now + self.rotation.prepublication_seconds if self._has_signing_key(key_set) else now
        if self.public_key(str(jwk.get("kid", ""))) is not None or any(
            record.kid == jwk.get("kid") for record in self.store.records(key_set=key_set)
        ):
            raise InvalidKey(f"kid {jwk.get('kid')!r} is already in use")
        record = self.software.import_jwk(key_set, jwk, created_at=now, active_at=active_at)
        audit.info("key imported", extra={"event": "key.imported", "key_set": key_set, "kid": record.kid,
                                          "alg": record.alg, "backend": record.backend})
        self.refresh()
        return record

    def delete(self, key_set: str, kid: str) -> bool:
        """Delete a key from whichever manager holds it (destroying it on the HSM)."""
        deleted = False
        if self.hsm is not None:
            deleted = self.hsm.destroy(key_set, kid)
        if any(record.kid == kid and record.backend == "software" for record in self.store.records(key_set=key_set)):
            deleted = self.software.delete(key_set, kid) or deleted
        else:
            deleted = self.store.remove(key_set, kid) or deleted
        if deleted:
            audit.info("key deleted", extra={"event": "key.deleted", "key_set": key_set, "kid": kid})
        self.refresh()
        return deleted

    def retire_expired(self) -> list[KeyRecord]:
        """Delete keys past retention (destroying HSM keys only when configured)."""
        now = self.clock()
        retired = []
        for key_set, stored in self._stored_by_set().items():
            view = self._view(key_set, stored, now)
            kept = {(status.record.backend, status.record.kid) for status in view.keys}
            for record in self._records(key_set, stored)[1]:
                if (record.backend, record.kid) in kept:
                    continue
                if record.backend == "software":
                    self.software.delete(key_set, record.kid)
                elif self.rotation.destroy_retired_hsm_keys and self.hsm is not None:
                    self.hsm.destroy(key_set, record.kid)
                    self.store.remove(key_set, record.kid)
                else:
                    continue  # retired from the JWKS, kept on the token
                retired.append(record)
                audit.info("key retired", extra={"event": "key.retired", "key_set": key_set, "kid": record.kid,
                                                 "backend": record.backend})
        self.refresh()
        return retired

    def _stored_by_set(self) -> dict[str, list[KeyRecord]]:
        stored: dict[str, list[KeyRecord]] = {name: [] for name in self.policies}
        for record in self.store.records():
            stored.setdefault(record.key_set, []).append(record)
        return stored

    def reseal(self) -> int:
        """Re-seal every software key under the newest system secret."""
        count = self.software.reseal()
        audit.info("keys re-sealed", extra={"event": "keys.resealed", "count": count})
        return count

    # -- health ---------------------------------------------------------------

    def self_test(self) -> dict[str, dict[str, Any]]:
        """Sign a JWS with each configured set's signer and verify it with the published key."""
        from joserfc import jws
        from joserfc.jwk import import_key

        results: dict[str, dict[str, Any]] = {}
        for name in self.policies:
            try:
                signer = self.signer(name)
                header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
                signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(b'{"self-test":true}')
                token = signing_input + b"." + _b64(signer.sign(signing_input))
                jwk = self.public_key(signer.kid)
                if jwk is None:
                    raise KeyNotFound(f"kid {signer.kid!r} is not published")
                jws.deserialize_compact(token.decode(), import_key(jwk), algorithms=[signer.alg])
                results[name] = {"ok": True, "kid": signer.kid, "alg": signer.alg, "backend": signer.backend}
            except Exception as exc:  # reported, not raised: the caller decides
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return results

    def hsm_usable(self) -> bool | None:
        return None if self.hsm is None else self.hsm.is_usable()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@contextlib.contextmanager
def no_lock() -> Any:
    """For a single-process tool that needs no provisioning lock."""
    yield


__all__ = [
    "ACCESS_TOKEN_SET",
    "ID_TOKEN_SET",
    "HSMError",
    "KeyService",
    "KeySetPolicy",
    "KeyStatus",
    "RotationPolicy",
    "no_lock",
]
