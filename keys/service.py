"""The key service: one façade over the HSM and software managers.

Per key set, the HSM comes first; where the token has no key pair for a set,
the software manager serves it (Ory Hydra's rule), unless the set is declared
HSM-only, in which case it fails closed: :class:`keys.manager.ManagerStrategy`
decides, over a hardware manager that is a token or, with no HSM, one that has
no key (:class:`keys.manager.NoToken`).

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
import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from keys import certificates, jwe, rotation
from keys.algorithms import ENCRYPTION_ALGORITHMS, OAEP_ALGORITHMS, key_algorithm, oaep_algorithm
from keys.algorithms import decryption_description as mechanism_description
from keys.errors import (
    CertificateError,
    HSMError,
    HSMUnavailable,
    InvalidKey,
    KeyNotFound,
    KeyServiceError,
    MechanismUnsupported,
    NoDecryptionKey,
    NoSigningKey,
    WrongKeyUse,
    reason_code,
)
from keys.evidence import KeyEvidence
from keys.jwk import load_public_jwk
from keys.jws import compact_jws
from keys.manager import HSM_BACKEND, HardwareManager, KeyManager, ManagerStrategy, NoToken, TokenKeys
from keys.names import ACCESS_TOKEN_SET, ID_TOKEN_SET, OWN_JWKS_SETS, REQUEST_OBJECT_SET
from keys.rotation import KeyStatus
from keys.signer import BoundSigner, KeyRecord, Signer
from keys.store import KeyStore, StoredChain
from keys.tokens import TokenPool

if TYPE_CHECKING:
    from keys.hsm import HSMManager
    from keys.software import SoftwareManager

log = logging.getLogger(__name__)
audit = logging.getLogger("oidc.audit")

@dataclass(frozen=True)
class KeySetPolicy:
    """How one key set is generated and where it may live.

    ``alg`` is a JWS algorithm for a signing set, or a JWE key-management one
    (``RSA-OAEP-256``, ``RSA-OAEP``, ``ECDH-ES``) for a decryption set (``use: enc``).
    """

    name: str
    alg: str

    def __post_init__(self) -> None:
        key_algorithm(self.alg)  # refuse HS*/none/unknown at configuration time

    @functools.cached_property
    def use(self) -> str:
        """``sig`` or ``enc``, found once: the key service asks for it at each signature."""
        return key_algorithm(self.alg).use


@dataclass(frozen=True)
class RotationPolicy:
    """Timings that keep rotation invisible to resource servers."""

    prepublication_seconds: int
    retention_seconds: int
    destroy_retired_hsm_keys: bool = False


@dataclass(frozen=True)
class Health:
    """Whether the key service can sign, as fixed reason codes (never exception text).

    ``failed``: key set -> why it cannot sign now (``self_test_failed``, ``hsm_unavailable``,
    ``no_signing_key``, …).  ``hsm_reason`` is set when an HSM is configured and not usable.
    """

    sets: tuple[str, ...]
    failed: dict[str, str]
    hsm_configured: bool
    hsm_usable: bool
    hsm_reason: str | None = None
    #: Each configured token's state (``HSM_TOKENS``): None when usable, else a reason code.
    tokens: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and (self.hsm_usable or not self.hsm_configured)


@dataclass(frozen=True)
class MechanismReport:
    """How one configured key set signs: where, with which algorithm and (on the HSM) which mechanism."""

    key_set: str
    alg: str
    backend: str | None
    mechanism: str | None = None
    description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _SetView:
    backend: str | None
    keys: list[KeyStatus]
    #: Per token (None: software, or a token not known yet): (active_at, signer), oldest first.
    signers: dict[str | None, list[tuple[int, Signer]]]


@dataclass
class _Snapshot:
    built_at: float
    sets: dict[str, _SetView]
    jwks_body: bytes
    etag: str
    by_kid: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The JWK Set (body, etag) of each set published on its own (keys.names.OWN_JWKS_SETS).
    own_documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)
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
        hsm: HSMManager | Sequence[HSMManager] | None,
        rotation: RotationPolicy,
        rsa_bits: int,
        lock: Callable[[], AbstractContextManager[Any]],
        refresh_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        sign_observer: Callable[[str, str, float], None] | None = None,
        hsm_only_sets: Collection[str] = (),
        generate_on_hsm: bool = True,
        token_observer: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.policies = {policy.name: policy for policy in key_sets}
        self.store = store
        self.software = software
        tokens = [] if hsm is None else [hsm] if not isinstance(hsm, Sequence) else list(hsm)
        hardware: HardwareManager = TokenPool([TokenKeys(token, store) for token in tokens]) if tokens else NoToken()
        #: Which manager serves each set, and the manager of each backend.
        self.managers = ManagerStrategy(hardware, software, hsm_only_sets)
        #: Sets (any name, not only configured ones; "*" for all) that never use software keys.
        self.hsm_only_sets = self.managers.hsm_only_sets
        self.rotation = rotation
        self.rsa_bits = rsa_bits
        self._lock = lock
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        #: Called with (key set, backend, seconds) after every signature (metrics).
        self.sign_observer = sign_observer
        #: Called with (token name, seconds, succeeded) after every signature on a token (metrics).
        self.token_observer = token_observer
        self._snapshot: _Snapshot | None = None
        self._refreshing = threading.Lock()
        #: Results of the sign-and-verify self-test run by :meth:`start`.
        self.start_self_test: dict[str, dict[str, Any]] = {}
        #: False: adopt-only, never generate a key pair through PKCS#11 (HSM_GENERATE_KEYS).
        self.generate_on_hsm = generate_on_hsm
        #: True while a start that found the token unreachable waits for it (degraded start).
        self.pending_start = False
        self._starting = threading.Lock()
        self._plans_logged: set[str] = set()
        #: Decryption sets on the token: the key-encryption algorithm its OAEP was found to do
        #: (RSA-OAEP where a token's OAEP has only SHA-1), published instead of the configured one.
        self._decryption_algs: dict[str, str] = {}

    # -- start-up -------------------------------------------------------------

    def start(self, *, wait_seconds: float = 0.0, degraded_ok: bool = False) -> None:
        """Open the HSM, provision every configured set, and self-test each signer.

        ``wait_seconds``: how long to wait for a token that cannot be reached yet
        (HSM_STARTUP_WAIT_SECONDS; 0 fails at once with one line).
        ``degraded_ok``: when it still cannot be reached, start anyway, not ready:
        serve the public keys the store knows, answer 503 for signatures, and
        finish starting when the token is back (probed with backoff from a
        background thread, so even a token that hangs blocks no request).  A
        replacement worker of a running server starts so, instead of stopping
        the server while the HSM is away.
        """
        hardware = self.managers.hardware
        hardware.on_available.append(self._hsm_back)
        if degraded_ok and hardware.configured:  # with no token there is nothing to wait for
            # Opened by the recovery thread: a hanging token must not hang the worker's start.
            self.pending_start = True
            hardware.start_recovery()
            deadline = time.monotonic() + max(wait_seconds, 2 * hardware.retry_initial_seconds)
            while not hardware.available and time.monotonic() < deadline:
                time.sleep(0.05)
            with self._starting:
                if self.pending_start and hardware.available:
                    self._complete_start()
                elif self.pending_start:
                    log.warning("starting without the HSM: not ready until it is reachable")
                    self.refresh(stored_only=True)
            return
        hardware.open(wait_seconds)
        self._complete_start()

    def _complete_start(self) -> None:
        # Refuse a hand-provisioned private key that could leave the token (PKCS#11 v2.40 §4.9),
        # rather than silently generating another (see TokenKeys.refuse_weak_keys).
        self.managers.hardware.refuse_weak_keys({name: policy.alg for name, policy in self.policies.items()},
                                                self.is_hsm_only)
        self._check_mechanisms()
        self.provision()
        self._choose_decryption_algorithms()
        self.refresh()
        results = self.self_test()
        for name, result in results.items():
            if not result["ok"]:
                raise NoSigningKey(f"key set {name!r} failed its sign-and-verify self-test: {result['error']}")
        self.start_self_test = results
        self.pending_start = False

    def _hsm_back(self) -> None:
        """A token is reachable again: finish a degraded start, or give it its keys and re-read them."""
        if self.pending_start:
            with self._starting:
                if self.pending_start:
                    self._complete_start()
                    log.info("key service started: the HSM is reachable")
            return
        if len(self.managers.hardware.names) > 1:
            self.provision()  # a replaced (empty) token gets its own pairs, pre-published
        self.refresh()

    def _check_mechanisms(self) -> None:
        """Choose (and log once) the mechanism of each set the HSM serves; refuse one it cannot do."""
        hardware = self.managers.hardware
        for name, policy in self.policies.items():
            if self._target(name) is not hardware:
                continue
            backend, records = self._records(name)
            generate = self.generate_on_hsm and not any(
                record.use == policy.use for record in records if record.backend == backend)
            if policy.use == "enc":
                self._check_decryption(name, records, generate=generate)
                continue
            plan = hardware.check_algorithm(name, policy.alg, generate=generate, rsa_bits=self.rsa_bits)
            for record in records:
                if record.backend == hardware.backend and record.public_jwk.get("kty") == "RSA":
                    # An adopted key of another size than generated ones: within the mechanism's range?
                    hardware.check_algorithm(name, record.alg, generate=False, rsa_bits=self.rsa_bits,
                                             key_bits=_rsa_bits(record.public_jwk))
            if name not in self._plans_logged:
                self._plans_logged.add(name)
                log.info("key set %s signs %s on the HSM with %s", name, policy.alg, plan.description)

    def _check_decryption(self, name: str, records: list[KeyRecord], *, generate: bool) -> None:
        """A decryption set on the token: it must offer CKM_RSA_PKCS_OAEP (CKM_ECDH1_DERIVE for ECDH-ES),
        and generation, for its keys."""
        hardware = self.managers.hardware
        alg = self.policies[name].alg
        mechanism = hardware.check_decryption(name, generate=generate, rsa_bits=self.rsa_bits, alg=alg)
        for record in records:
            if record.backend == hardware.backend and record.public_jwk.get("kty") == "RSA":
                hardware.check_decryption(name, generate=False, rsa_bits=self.rsa_bits,
                                          key_bits=_rsa_bits(record.public_jwk))
        if name not in self._plans_logged:
            self._plans_logged.add(name)
            log.info("key set %s decrypts on the HSM with %s", name, mechanism)

    def _choose_decryption_algorithms(self) -> None:
        """For each decryption set on the token: the OAEP hash its token decrypts with, tried once with
        its newest key (the mechanism list cannot say), so that only what works is published."""
        hardware = self.managers.hardware
        for name, policy in self.policies.items():
            if policy.alg not in OAEP_ALGORITHMS:
                continue  # a signing set, or ECDH-ES (whose derivation has no hash to choose)
            backend, records = self._records(name)
            on_token = [record for record in records if record.backend == backend == hardware.backend
                        and record.use == "enc"]
            if not on_token:
                continue
            working = oaep_algorithm(policy.alg, hardware.oaep_hashes(max(on_token, key=rotation.signing_order)))
            if working is None:
                raise MechanismUnsupported(f"key set {hardware.label(name)!r}: the token's CKM_RSA_PKCS_OAEP "
                                           "decrypts with neither SHA-256 nor SHA-1")
            if working != policy.alg:
                log.warning("key set %s: the token's RSAES-OAEP has no %s; its keys are published for %s",
                            name, ENCRYPTION_ALGORITHMS[policy.alg].hash_name, working)
            self._decryption_algs[name] = working

    def provision(self) -> list[KeyRecord]:
        """Generate a key pair for each configured set that has none (exactly once), and on each
        token that has none of a set the others hold.

        Look-up and generation happen under the deployment-wide provisioning
        lock, and the look-up is repeated inside it, so processes starting
        together generate one key pair per set (and token), not one each.
        """
        generated: list[KeyRecord] = []
        needed = self._provisioning()
        if not needed:
            return generated
        hardware = self.managers.hardware
        if not self.generate_on_hsm:
            for name, (first, _tokens) in needed.items():
                if self._target(name) is hardware and first:
                    raise HSMError(
                        f"key set {name!r} has no key pair labelled {hardware.label(name)!r} on the token, and "
                        "HSM_GENERATE_KEYS is false (adopt-only): provision one on the token"
                    )
                log.warning("key set %s has no key pair on token(s) %s, and HSM_GENERATE_KEYS is false: "
                            "they do not sign for it until one is provisioned there", name, ", ".join(_tokens or []))
            return generated
        with self._lock():
            for name, (first, tokens) in self._provisioning().items():
                now = int(self.clock())
                # The first key of a set has nothing to take over from: it signs at once.  A token that
                # joins a set others sign for has its key published first, like a rotated one.
                active_at = now if first else now + self.rotation.prepublication_seconds
                generated.extend(self._generate(name, self.policies[name].alg, created_at=now, active_at=active_at,
                                                tokens=tokens))
        return generated

    def _provisioning(self) -> dict[str, tuple[bool, list[str] | None]]:
        """Each configured set that needs a key: (whether it has no signing key at all, the tokens
        that lack one; None where the set lives in software)."""
        hardware = self.managers.hardware
        needed: dict[str, tuple[bool, list[str] | None]] = {}
        for name in self.policies:
            backend, records = self._records(name)
            use = self._use(name)
            first = not any(record.use == use for record in records if record.backend == backend)
            if self._target(name) is hardware:
                lacking = hardware.lacking(name, records, use)
                if lacking:
                    needed[name] = (first, lacking)
            elif first:
                needed[name] = (True, None)
        return needed

    def _has_signing_key(self, key_set: str) -> bool:
        """Whether the manager serving ``key_set`` has a key of its use (signing; decryption for an enc set)."""
        backend, records = self._records(key_set)
        use = self._use(key_set)
        return any(record.use == use for record in records if record.backend == backend)

    def _use(self, key_set: str) -> str:
        policy = self.policies.get(key_set)
        return policy.use if policy else "sig"

    # -- reading --------------------------------------------------------------

    def is_hsm_only(self, key_set: str) -> bool:
        """Whether ``key_set`` must live on the HSM and never fall back to software keys."""
        return self.managers.is_hsm_only(key_set)

    def _records(
        self, key_set: str, stored: list[KeyRecord] | None = None, stored_only: bool = False
    ) -> tuple[str | None, list[KeyRecord]]:
        """The backend serving ``key_set`` and every key of the set in either manager."""
        if stored is None:
            stored = self.store.records(key_set=key_set)
        policy = self.policies.get(key_set)
        alg = self._decryption_algs.get(key_set) or (policy.alg if policy else None)
        return self.managers.records(key_set, stored, alg=alg, stored_only=stored_only)

    def key_set_names(self) -> list[str]:
        names = set(self.policies)
        names.update(record.key_set for record in self.store.records())
        return sorted(names)

    def _view(self, key_set: str, stored: list[KeyRecord], now: float, stored_only: bool = False) -> _SetView:
        """The set's published keys and, per token, its signers: each token rotates its own keys."""
        backend, records = self._records(key_set, stored, stored_only)
        use = self._use(key_set)
        groups: dict[str | None, list[KeyRecord]] = {}
        others: list[KeyRecord] = []
        for record in records:
            if record.backend == backend and record.use == use:
                groups.setdefault(record.token if backend == HSM_BACKEND else None, []).append(record)
            else:
                others.append(record)
        statuses: list[KeyStatus] = []
        signers: dict[str | None, list[tuple[int, Signer]]] = {}
        for token, group in groups.items():
            group_statuses, signing = rotation.view(group, backend, now, self.rotation.retention_seconds, use)
            statuses.extend(group_statuses)
            if signing and use == "sig":  # a decryption set never signs
                signers[token] = [(record.active_at,
                                   self._observed(self.managers.manager(record.backend).signer(record)))
                                  for record in signing]
        statuses.extend(rotation.view(others, backend, now, self.rotation.retention_seconds, use)[0])
        return _SetView(backend, statuses, signers)

    def _observed(self, signer: Signer) -> Signer:
        observe, observe_token = self.sign_observer, self.token_observer
        if observe is None and observe_token is None:
            return signer
        key_set, backend, sign = signer.record.key_set, signer.backend, signer.sign
        token = signer.record.token if backend == HSM_BACKEND else None
        token_label = token or "default"

        def timed_sign(signing_input: bytes) -> bytes:
            started = time.perf_counter()
            succeeded = False
            try:
                signature = sign(signing_input)
                succeeded = True
                return signature
            finally:
                seconds = time.perf_counter() - started
                if observe is not None:
                    observe(key_set, backend, seconds)
                if observe_token is not None and token is not None:
                    observe_token(token_label, seconds, succeeded)

        return BoundSigner(signer.record, timed_sign)

    def refresh(self, *, stored_only: bool = False) -> None:
        """Rebuild the snapshot from the store and the token (``stored_only``: from the store alone).

        Raises :class:`HSMUnavailable` while the token is lost: the caller keeps
        the previous snapshot, so the JWKS stays what it was during an outage.
        """
        now = self.clock()
        stored_by_set: dict[str, list[KeyRecord]] = {name: [] for name in self.policies}
        for record in self.store.records():
            stored_by_set.setdefault(record.key_set, []).append(record)
        sets = {name: self._view(name, stored, now, stored_only) for name, stored in sorted(stored_by_set.items())}
        chains = self.store.chains()
        # Each published JWK, with the x5c of its attached certificate chain if it has one.
        jwks = {(name, status.record.kid): self._with_chain(status.record, chains.get((name, status.record.kid)))
                for name, view in sets.items() for status in view.keys}
        # The sets published on their own (the audit set) are in their document only, never in the token JWKS.
        published = [jwk for (name, _), jwk in jwks.items() if name not in OWN_JWKS_SETS]
        body, etag = _jwks_document(published)
        self._snapshot = _Snapshot(
            built_at=now, sets=sets, jwks_body=body, etag=etag,
            by_kid={jwk["kid"]: jwk for jwk in published},
            own_documents={own: _jwks_document([jwk for (name, _), jwk in jwks.items() if name == own])
                           for own in OWN_JWKS_SETS},
            signing_by_set={(name, status.record.kid): jwks[(name, status.record.kid)]
                            for name, view in sets.items() for status in view.keys
                            if status.record.use == "sig" and status.record.public_jwk.get("use", "sig") == "sig"},
        )

    @staticmethod
    def _with_chain(record: KeyRecord, chain: StoredChain | None) -> dict[str, Any]:
        """``record``'s public JWK, plus ``x5c`` and ``x5t#S256`` when a chain is attached (RFC 7517 §4.7-4.9)."""
        if chain is None:
            return record.public_jwk
        try:
            chain_certificates = certificates.load_chain(chain.chain_pem.encode("ascii"))
            # §4.7: the first certificate's key MUST be the JWK's; a row that says otherwise is not published.
            # Expiry is doctor's to report: an expired chain stays what the operator attached.
            certificates.check_chain(chain_certificates, load_public_jwk(record.public_jwk), None, kid=record.kid)
        except (CertificateError, InvalidKey) as exc:
            log.warning("the certificate attached to key %s/%s is not published: %s", record.key_set, record.kid, exc)
            return record.public_jwk
        return {**record.public_jwk, **certificates.x5c_members(chain_certificates)}

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            self.refresh()
            snapshot = self._snapshot
        elif (
            self.clock() - snapshot.built_at >= self.refresh_seconds
            and self.managers.hardware.available  # an outage keeps the last snapshot, untouched
            and self._refreshing.acquire(blocking=False)
        ):
            # One thread refreshes; the others keep serving the previous snapshot.
            try:
                if self.pending_start:
                    self._hsm_back()  # back, but finishing the start failed then: try again
                else:
                    self.refresh()
            except HSMUnavailable:
                snapshot.built_at = self.clock()  # lost meanwhile (logged once by the manager): keep it
            except Exception:  # a failed refresh must not stop signing with known keys
                snapshot.built_at = self.clock()  # and is tried again after refresh_seconds, not per request
                log.exception("refreshing the key snapshot failed; serving the previous one")
            finally:
                self._refreshing.release()
            snapshot = self._snapshot
        assert snapshot is not None
        return snapshot

    # -- the contract with the token builders -------------------------------

    def signer(self, key_set: str) -> Signer:
        """The key that signs for ``key_set`` now: the newest active one."""
        if self._use(key_set) != "sig":
            raise WrongKeyUse(f"key set {key_set!r} decrypts (use 'enc'): it never signs")
        view = self._current().sets.get(key_set)
        if view is None or not view.signers:
            hardware = self.managers.hardware
            if (self.pending_start or not hardware.available) and (
                view is None or view.backend in (hardware.backend, None)
            ):
                # Not "no key": the token that may hold it cannot be asked now.
                raise hardware.unavailable_error()
            if view is not None and view.backend is None:
                raise NoSigningKey(f"key set {key_set!r} is HSM-only and the token has no key pair for it")
            raise NoSigningKey(f"key set {key_set!r} has no signing key")
        if len(view.signers) == 1:  # one token (or software): its active key, whatever its state
            chosen: Signer | None = rotation.active(next(iter(view.signers.values())), self.clock())
        else:
            chosen = self._healthy_signer(view)
        if chosen is None:
            raise NoSigningKey(f"key set {key_set!r} has no key active yet")
        return chosen

    def _healthy_signer(self, view: _SetView) -> Signer | None:
        """The active key of the next healthy token, in turns (so signatures spread over the tokens);
        :class:`HSMUnavailable` when no token with an active key of the set is healthy."""
        hardware = self.managers.hardware
        now = self.clock()
        tokens = [token for token in view.signers if token is not None]
        start = hardware.turn()
        held = None in view.signers  # keys of a token this process cannot ask now
        for offset in range(len(tokens)):
            token = tokens[(start + offset) % len(tokens)]
            chosen: Signer | None = rotation.active(view.signers[token], now)
            held = held or chosen is not None
            if chosen is not None and hardware.healthy(token):
                return chosen
        if held:
            raise hardware.unavailable_error()
        return None

    # -- decryption -------------------------------------------------------------

    def _decryption_keys(self, key_set: str) -> list[jwe.DecryptionKey]:
        """Every published decryption key (``use: enc``) of ``key_set``, newest first, with its manager's
        decrypt function; :class:`HSMUnavailable` while a token that may hold them is lost."""
        policy = self.policies.get(key_set)
        if policy is None and not any(record.key_set == key_set for record in self.store.records(key_set=key_set)):
            raise KeyNotFound(f"no key set {key_set!r}")
        if policy is not None and policy.use != "enc":
            raise WrongKeyUse(f"key set {key_set!r} signs (use 'sig'): it never decrypts")
        view = self._current().sets.get(key_set)
        records = sorted((status.record for status in (view.keys if view else []) if status.record.use == "enc"),
                         key=rotation.signing_order, reverse=True)
        if not records:
            hardware = self.managers.hardware
            if (self.pending_start or not hardware.available) and (
                view is None or view.backend in (hardware.backend, None)
            ):
                raise hardware.unavailable_error()
            raise NoDecryptionKey(f"key set {key_set!r} has no decryption key")
        return [jwe.DecryptionKey(record, self.managers.manager(record.backend).decrypter(record))
                for record in records]

    def decrypt(self, key_set: str, token: str) -> bytes:
        """The plaintext of compact JWE ``token`` encrypted to a published key of decryption set ``key_set``.

        The key is the one the JWE's ``kid`` names, else each key of its ``alg`` in
        turn; the content key is decrypted where the private key lives (on the
        token, ``C_Decrypt`` with ``CKM_RSA_PKCS_OAEP``; for ECDH-ES the shared
        secret derived there with ``CKM_ECDH1_DERIVE``), the content by joserfc
        (:mod:`keys.jwe`).  Raises a :class:`~keys.errors.DecryptionError` that
        names what is wrong, :class:`WrongKeyUse` for a signing set, and
        :class:`HSMUnavailable` while the token is lost, as signing does.
        """
        return jwe.decrypt_compact(token, self._decryption_keys(key_set), key_set=key_set)

    def decryption_algorithms(self, key_set: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What ``key_set`` decrypts now: (``alg`` values, ``enc`` values); both empty without a key."""
        try:
            keys = self._decryption_keys(key_set)
        except KeyServiceError:
            return (), ()
        algs = tuple(alg for alg in ENCRYPTION_ALGORITHMS if any(key.record.alg == alg for key in keys))
        return algs, jwe.CONTENT_ENCRYPTIONS

    def jwks_document(self, key_set: str | None = None) -> tuple[bytes, str]:
        """The serialised public JWK Set and its (unquoted) entity tag; no per-request work.

        ``key_set``: the document of a set published on its own (``keys.names.OWN_JWKS_SETS``).
        """
        snapshot = self._current()
        if key_set is not None:
            return snapshot.own_documents.get(key_set) or _jwks_document([])
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

    def _target(self, key_set: str) -> KeyManager:
        """The manager a new key of ``key_set`` is generated in (see :meth:`ManagerStrategy.target`)."""
        return self.managers.target(key_set, lambda: self._records(key_set), configured=key_set in self.policies)

    def _generate(self, key_set: str, alg: str, *, created_at: int, active_at: int,
                  tokens: list[str] | None = None) -> list[KeyRecord]:
        """A new key of ``key_set`` where it lives: on every token (or on ``tokens``) when on the HSM."""
        manager = self._target(key_set)
        hardware = self.managers.hardware
        if manager is hardware and not self.generate_on_hsm:
            raise HSMError(f"key set {key_set!r} lives on the HSM and HSM_GENERATE_KEYS is false: "
                           "key pairs are provisioned on the token, not generated through PKCS#11")
        if manager is hardware:
            # On the HSM: each token its own pair (a rotation: its own successor, pre-published alike).
            records = hardware.generate_on(hardware.names if tokens is None else tokens, key_set, alg,
                                           rsa_bits=self.rsa_bits, created_at=created_at, active_at=active_at)
        else:
            records = [manager.generate(key_set, alg, rsa_bits=self.rsa_bits, created_at=created_at,
                                        active_at=active_at)]
        for record in records:
            audit.info("key generated", extra={"event": "key.generated", "key_set": key_set, "kid": record.kid,
                                               "alg": record.alg, "backend": record.backend,
                                               "token": record.token or None})
        return records

    def generate(self, key_set: str, alg: str | None = None) -> KeyRecord:
        """Add a key to ``key_set`` (rotation).  On the HSM when the set lives there.

        When the set already has a signing key, the new key is published now and
        signs after the pre-publication period; otherwise it signs at once.
        """
        policy = self.policies.get(key_set)
        alg = alg or self._decryption_algs.get(key_set) or (policy.alg if policy else None)
        if alg is None:
            raise InvalidKey(f"key set {key_set!r} is not configured: name the algorithm")
        if key_algorithm(alg).use != self._use(key_set):
            raise WrongKeyUse(f"key set {key_set!r} is for use {self._use(key_set)!r}; {alg} is not")
        with self._lock():
            now = int(self.clock())
            active_at = now + self.rotation.prepublication_seconds if self._has_signing_key(key_set) else now
            record = self._generate(key_set, alg, created_at=now, active_at=active_at)[0]
        self.refresh()
        return record

    def import_jwk(self, key_set: str, jwk: dict[str, Any]) -> KeyRecord:
        """Import a private JWK into the software store (never onto the HSM); signing keys only."""
        if self._use(key_set) != "sig":
            raise WrongKeyUse(f"key set {key_set!r} decrypts (use 'enc'): its keys are generated, not imported")
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
        for manager in self.managers.managers:
            deleted = manager.delete(key_set, kid) or deleted
        deleted = self.store.remove(key_set, kid) or deleted  # an HSM key's lifecycle row
        self.store.remove_chain(key_set, kid)
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
                if record.backend == HSM_BACKEND and not self.rotation.destroy_retired_hsm_keys:
                    continue  # retired from the JWKS, kept on the token
                self.managers.manager(record.backend).delete(key_set, record.kid)
                self.store.remove(key_set, record.kid)
                self.store.remove_chain(key_set, record.kid)
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

    # -- evidence and certificates ---------------------------------------------

    def _published(self, key_set: str, kid: str | None) -> KeyRecord:
        """The published signing key ``kid`` of ``key_set``; without ``kid``, the one that signs now."""
        if kid is None:
            return self.signer(key_set).record
        for status in self.keys(key_set):
            if status.record.kid == kid:
                return status.record
        raise KeyNotFound(f"no published key {kid!r} in key set {key_set!r}")

    def evidence(self, key_set: str | None = None) -> list[KeyEvidence]:
        """Evidence for every published key (of ``key_set``, or of every set): see :mod:`keys.evidence`.

        HSM keys are read from the token now (through the PKCS#11 lock and its
        failure model); :class:`HSMUnavailable` while the token is lost.
        """
        names = [key_set] if key_set is not None else self.key_set_names()
        chains = self.store.chains()
        found = []
        for name in names:
            for status in self.keys(name):
                record = status.record
                evidence = self._evidence(record)
                chain = chains.get((name, record.kid))
                if chain is not None:
                    summary = certificates.summary(certificates.load_chain(chain.chain_pem.encode("ascii")))
                    evidence = dataclasses.replace(evidence, certificate=summary)
                found.append(evidence)
        return found

    def _evidence(self, record: KeyRecord) -> KeyEvidence:
        """One key's evidence; with several tokens, a key whose token cannot be asked now (lost, or
        replaced) is listed as such instead of failing the whole list."""
        try:
            return self.managers.manager(record.backend).evidence(record)
        except (HSMUnavailable, KeyNotFound) as exc:
            if record.backend != HSM_BACKEND or len(self.managers.hardware.names) <= 1:
                raise
            return KeyEvidence(key_set=record.key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                               location={"kind": "pkcs11-token", "token": record.token,
                                         "unreachable": reason_code(exc)})

    def certificate_request(self, key_set: str, subject: str, *, kid: str | None = None) -> x509.CertificateSigningRequest:
        """A PKCS#10 request for a published key of ``key_set`` (the signing one by default), signed by
        that key where it lives: on the token for an HSM key (see :mod:`keys.certificates`)."""
        name = certificates.parse_subject(subject)
        record = self._published(key_set, kid)
        if record.use != "sig":
            raise CertificateError(f"key {record.kid!r} of {key_set!r} does not sign (use {record.use!r})")
        signer = self.managers.manager(record.backend).signer(record)
        request = certificates.certificate_request(signer, load_public_jwk(record.public_jwk), name)
        audit.info("certificate requested", extra={"event": "key.csr", "key_set": key_set, "kid": record.kid,
                                                   "subject": subject, "backend": record.backend})
        return request

    def attach_certificate(self, key_set: str, chain_pem: bytes, *, kid: str | None = None) -> StoredChain:
        """Check an issued chain against a published key (the signing one by default) and publish it as its x5c."""
        record = self._published(key_set, kid)
        chain = certificates.load_chain(chain_pem)
        now = datetime.fromtimestamp(self.clock(), UTC)
        certificates.check_chain(chain, load_public_jwk(record.public_jwk), now, kid=record.kid)
        stored = StoredChain(key_set=key_set, kid=record.kid, chain_pem=certificates.to_pem(chain),
                             not_after=int(certificates.not_after(chain).timestamp()), attached_at=int(self.clock()))
        self.store.put_chain(stored)
        audit.info("certificate attached", extra={"event": "key.certificate_attached", "key_set": key_set,
                                                  "kid": record.kid, "not_after": stored.not_after})
        self.refresh()
        return stored

    # -- health ---------------------------------------------------------------

    @property
    def hsm(self) -> HSMManager | None:
        """The PKCS#11 key manager, or None when no HSM is configured (tools and tests)."""
        return self.managers.hardware.token

    @property
    def hsm_available(self) -> bool | None:
        """Whether the HSM can be used now; None when none is configured (never touches the token)."""
        hardware = self.managers.hardware
        return hardware.available if hardware.configured else None

    def token_availability(self) -> dict[str, bool]:
        """Whether each configured token can sign now (never touches a token); empty with one token or none."""
        hardware = self.managers.hardware
        return {name: hardware.healthy(name) for name in hardware.names} if len(hardware.names) > 1 else {}

    def health(self) -> Health:
        """Readiness: every configured set signs (and passed the self-test), and the HSM session is usable.

        The token is touched at most once per ``probe_interval_seconds`` (see
        :meth:`keys.hsm.HSMManager.is_usable`), and never while it is known to be lost.
        """
        failed = {name: "self_test_failed" for name, result in self.start_self_test.items() if not result["ok"]}
        if self.pending_start:
            failed.update(dict.fromkeys(self.policies, "hsm_unavailable"))
        for name, policy in self.policies.items():
            try:
                if policy.use == "enc":
                    self._decryption_keys(name)
                else:
                    self.signer(name)
            except KeyServiceError as exc:
                failed.setdefault(name, reason_code(exc))
        sets = tuple(sorted(self.policies))
        failed = dict(sorted(failed.items()))
        hardware = self.managers.hardware
        usable, reason = hardware.health()
        tokens = hardware.token_health() if len(hardware.names) > 1 else {}
        return Health(sets, failed, hsm_configured=hardware.configured, hsm_usable=usable, hsm_reason=reason,
                      tokens=tokens)

    def start_recovery(self) -> None:
        """Probe a lost token from a background thread (server workers), so that no request waits on it."""
        self.managers.hardware.start_recovery()

    def close(self) -> None:
        """Stop probing and log out of the HSM (this process's session); software keys need nothing."""
        for manager in self.managers.managers:
            manager.close()

    def mechanisms(self) -> list[MechanismReport]:
        """For each configured set: the backend that signs for it and, on the HSM, the mechanism chosen
        from the token's own list (the plan :meth:`start` checked and logged)."""
        reports = []
        for name, policy in sorted(self.policies.items()):
            backend = self.backend_of(name)
            alg = self._decryption_algs.get(name, policy.alg)
            if backend != HSM_BACKEND:
                reports.append(MechanismReport(name, alg, backend))
                continue
            if policy.use == "enc":
                reports.append(MechanismReport(name, alg, backend, mechanism_description(alg).split()[0],
                                               mechanism_description(alg)))
                continue
            try:
                plan = self.managers.hardware.signing_plan(policy.alg)
            except MechanismUnsupported as exc:
                reports.append(MechanismReport(name, policy.alg, backend, None, str(exc)))
                continue
            reports.append(MechanismReport(name, policy.alg, backend, plan.mechanism_name,
                                           plan.description or plan.mechanism_name))
        return reports

    def self_test(self) -> dict[str, dict[str, Any]]:
        """Sign a JWS with each configured set's signer and verify it with the published key."""
        from joserfc import jws
        from joserfc.jwk import import_key

        results: dict[str, dict[str, Any]] = {}
        for name, policy in self.policies.items():
            if policy.use == "enc":
                results[name] = self._decryption_self_test(name)
                continue
            try:
                signer = self.signer(name)
                token = compact_jws(signer, {"self-test": True}, "JWT")
                jwk = self.public_key(signer.kid, name)
                if jwk is None:
                    raise KeyNotFound(f"kid {signer.kid!r} is not published")
                jws.deserialize_compact(token, import_key(jwk), algorithms=[signer.alg])
                results[name] = {"ok": True, "kid": signer.kid, "alg": signer.alg, "backend": signer.backend}
            except Exception as exc:  # reported, not raised: the caller decides
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return results


    def _decryption_self_test(self, name: str) -> dict[str, Any]:
        """Encrypt a JWE to the set's newest published key (joserfc, its public key) and decrypt it here."""
        from joserfc import jwe as joserfc_jwe
        from joserfc.jwk import import_key

        try:
            record = self._decryption_keys(name)[0].record
            probe = os.urandom(16)
            token = joserfc_jwe.encrypt_compact({"alg": record.alg, "enc": jwe.CONTENT_ENCRYPTIONS[0],
                                                 "kid": record.kid}, probe, import_key(record.public_jwk),
                                                algorithms=[record.alg, jwe.CONTENT_ENCRYPTIONS[0]])
            if self.decrypt(name, token) != probe:
                raise KeyServiceError("the self-test JWE decrypted to something else")
            return {"ok": True, "kid": record.kid, "alg": record.alg, "backend": record.backend}
        except Exception as exc:  # reported, not raised: the caller decides
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _jwks_document(published: list[dict[str, Any]]) -> tuple[bytes, str]:
    """A JWK Set's serialised body and its entity tag."""
    body = json.dumps({"keys": published}, separators=(",", ":"), sort_keys=True).encode()
    return body, base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode()


def _rsa_bits(jwk: dict[str, Any]) -> int:
    modulus = base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4))
    return int.from_bytes(modulus, "big").bit_length()


__all__ = [
    "ACCESS_TOKEN_SET",
    "ID_TOKEN_SET",
    "REQUEST_OBJECT_SET",
    "HSMError",
    "Health",
    "KeyService",
    "KeySetPolicy",
    "KeyStatus",
    "MechanismReport",
    "RotationPolicy",
]
