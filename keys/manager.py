"""The managers behind the key service, and the strategy that chooses one per key set.

Ory Hydra's ``jwk`` package is the model: one manager interface
(:class:`KeyManager`), a hardware manager and a software manager implementing
it, and a :class:`ManagerStrategy` over the two that serves each set from the
hardware manager first and from the software manager where the hardware has no
key for the set, unless the set is HSM-only (then it fails closed).

The hardware side is always present: :class:`TokenKeys` (key pairs on a PKCS#11
token, their lifecycle in the store) when an HSM is configured, :class:`NoToken`
(a manager that has nothing) when none is, so the service never asks which.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from keys.algorithms import OAEP_ALGORITHMS, key_algorithm, oaep_algorithm
from keys.errors import HSMError, HSMUnavailable, KeyNotFound
from keys.evidence import KeyEvidence, shortfalls
from keys.signer import KeyRecord, Signer

if TYPE_CHECKING:
    from keys.hsm import HSMManager
    from keys.mechanisms import SigningPlan
    from keys.software import SoftwareManager
    from keys.store import KeyStore

log = logging.getLogger(__name__)

#: The backend names of the two managers (``KeyRecord.backend``).
HSM_BACKEND = "hsm"
SOFTWARE_BACKEND = "software"


class KeyManager(Protocol):
    """What the key service asks of the manager holding a key (the HSM or the software store)."""

    @property
    def backend(self) -> str: ...

    @property
    def available(self) -> bool:
        """Whether the manager can be asked now (False while a token is lost)."""
        ...

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> list[KeyRecord]:
        """The keys of ``key_set`` this manager holds.

        ``stored``: the store's rows of the set (the lifecycle of every key);
        ``alg``: the set's configured algorithm, for keys whose algorithm the
        manager cannot tell by itself; ``stored_only``: from the store alone.
        """
        ...

    def signer(self, record: KeyRecord) -> Signer:
        """A signer for ``record``'s private key, which stays in the manager (refused for ``use: enc``)."""
        ...

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        """RSAES-OAEP decryption of a JWE encrypted key with ``record``'s private key, which stays in the
        manager (None for a ciphertext that does not decrypt); refused for ``use: sig``."""
        ...

    def generate(self, key_set: str, alg: str, *, rsa_bits: int, created_at: int, active_at: int) -> KeyRecord:
        """A new key pair in ``key_set``, its lifecycle stored."""
        ...

    def delete(self, key_set: str, kid: str) -> bool:
        """Remove the key pair for good; False when there was none."""
        ...

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        """Where ``record``'s private key is and what protects it (see :mod:`keys.evidence`)."""
        ...

    def close(self) -> None:
        """Let go of whatever the manager holds open (a logged-in session)."""
        ...


class HardwareManager(KeyManager, Protocol):
    """The hardware side of the strategy: a token, or the absence of one."""

    @property
    def configured(self) -> bool:
        """Whether there is a token at all."""
        ...

    @property
    def token(self) -> HSMManager | None:
        """The PKCS#11 key manager (tools and tests), or None."""
        ...

    @property
    def on_available(self) -> list[Callable[[], None]]:
        """Called when a lost token is back."""
        ...

    @property
    def retry_initial_seconds(self) -> float: ...

    def label(self, key_set: str) -> str: ...

    def open(self, wait_seconds: float) -> None:
        """Open the token, waiting up to ``wait_seconds`` for one that cannot be reached yet."""
        ...

    def start_recovery(self) -> None:
        """Probe a lost token from a background thread."""
        ...

    def refuse_weak_keys(self, algs: Mapping[str, str | None], hsm_only: Callable[[str], bool]) -> None:
        """Refuse to start with a private key of a configured set that could leave the token."""
        ...

    def check_algorithm(self, key_set: str, alg: str, *, generate: bool, rsa_bits: int,
                        key_bits: int | None = None) -> SigningPlan:
        """How the token signs ``alg`` for ``key_set``; refuses one it cannot sign (or generate)."""
        ...

    def signing_plan(self, alg: str) -> SigningPlan: ...

    def check_decryption(self, key_set: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None,
                         alg: str = "RSA-OAEP-256") -> str:
        """Refuse a decryption set the token cannot generate or decrypt for; the mechanism's name."""
        ...

    def oaep_hashes(self, record: KeyRecord) -> tuple[str, ...]:
        """The OAEP hashes the token decrypts with (tried with ``record``'s key)."""
        ...

    def unavailable_error(self) -> HSMUnavailable: ...

    def health(self) -> tuple[bool, str | None]:
        """Whether the token is usable now and, when not, a reason code."""
        ...

    @property
    def names(self) -> list[str]:
        """The configured tokens' names, in configuration order (see :mod:`keys.tokens`)."""
        ...

    def healthy(self, name: str) -> bool:
        """Whether token ``name`` can sign now."""
        ...

    def turn(self) -> int:
        """A counter advancing per signature: where the round of healthy tokens starts."""
        ...

    def lacking(self, key_set: str, records: Sequence[KeyRecord], use: str = "sig") -> list[str]:
        """The available tokens with no key of ``key_set`` of ``use`` among ``records``."""
        ...

    def generate_on(self, names: Collection[str], key_set: str, alg: str, *, rsa_bits: int, created_at: int,
                    active_at: int) -> list[KeyRecord]:
        """A new pair of ``key_set`` on each token named in ``names``."""
        ...

    def token_health(self) -> dict[str, str | None]:
        """Each token's state: None when usable, else a reason code."""
        ...


def alg_hints(alg: str | None) -> tuple[str, str]:
    """The algorithms RSA and Ed25519 keys of a set configured for ``alg`` are published with
    (a token only says "RSA" or "EC_EDWARDS")."""
    algorithm = key_algorithm(alg) if alg else None
    rsa_alg = alg if alg and algorithm and algorithm.is_rsa else "RS256"
    okp_alg = alg if alg and algorithm and algorithm.is_eddsa else "EdDSA"
    return rsa_alg, okp_alg


class TokenKeys:
    """Key pairs on a PKCS#11 token (:class:`keys.hsm.HSMManager`), their lifecycle in the store."""

    backend = HSM_BACKEND
    configured = True

    def __init__(self, token: HSMManager, store: KeyStore) -> None:
        self.token = token
        self.store = store

    @property
    def name(self) -> str:
        """The token's name among several (``HSM_TOKENS``), "" for a single unnamed one."""
        return self.token.config.name

    @property
    def available(self) -> bool:
        return self.token.available

    @property
    def on_available(self) -> list[Callable[[], None]]:
        return self.token.on_available

    @property
    def retry_initial_seconds(self) -> float:
        return self.token.config.retry_initial_seconds

    def label(self, key_set: str) -> str:
        return self.token.label(key_set)

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> list[KeyRecord]:
        metadata = {record.kid: record for record in stored if record.backend == HSM_BACKEND}
        if stored_only:
            # The token cannot be asked (degraded start): the keys this service
            # generated there, as the store knows them; their signatures wait for the token.
            return sorted(metadata.values(), key=lambda record: record.kid)
        rsa_alg, okp_alg = alg_hints(alg)
        records = []
        for record in self.token.records(key_set, rsa_alg=rsa_alg, okp_alg=okp_alg):
            known = metadata.get(record.kid)
            if known is not None:
                # Our own generated keys carry their lifecycle in the store; keys
                # provisioned by hand have none and count as active since forever.
                # An RSA key generated for PS256 keeps it (the token only says "RSA"),
                # an Ed25519 key published as EdDSA or Ed25519 keeps its name.
                # A decryption key is published with the algorithm the token was found to decrypt
                # (the hint: RSA-OAEP on a token whose OAEP has only SHA-1).
                same_kty = key_algorithm(known.alg).kty == key_algorithm(record.alg).kty
                keep = same_kty and not key_algorithm(known.alg).is_ecdsa and record.use == known.use == "sig"
                alg_name = known.alg if keep else record.alg
                record = KeyRecord(
                    key_set=record.key_set, kid=record.kid, alg=alg_name, use=record.use,
                    backend=record.backend, public_jwk={**record.public_jwk, "alg": alg_name},
                    created_at=known.created_at, active_at=known.active_at,
                )
            records.append(dataclasses.replace(record, token=self.name))
        return records

    def signer(self, record: KeyRecord) -> Signer:
        return self.token.signer(record)

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        return self.token.decrypter(record)

    def generate(self, key_set: str, alg: str, *, rsa_bits: int, created_at: int, active_at: int) -> KeyRecord:
        record = self.token.generate(key_set, alg, rsa_bits=rsa_bits)
        if record.use == "enc" and alg in OAEP_ALGORITHMS:
            # Stored with the algorithm the token's OAEP does, so that even a start that cannot reach the
            # token (served from the store) publishes what will work.
            alg = oaep_algorithm(alg, self.token.oaep_hashes(record)) or alg
        record = KeyRecord(
            key_set=record.key_set, kid=record.kid, alg=alg if record.use == "enc" else record.alg, use=record.use,
            backend=record.backend, public_jwk={**record.public_jwk, "alg": alg} if record.use == "enc"
            else record.public_jwk, created_at=created_at, active_at=active_at, token=self.name,
        )
        self.store.add(record)  # lifecycle only; the private key stays on the token
        return record

    def delete(self, key_set: str, kid: str) -> bool:
        return self.token.delete(key_set, kid)

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        return self.token.evidence(record)

    def open(self, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                self.token.open()
                return
            except HSMUnavailable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                if not announced:
                    log.warning("HSM not reachable (%s); waiting up to %.0f s for it", exc, wait_seconds)
                    announced = True
                time.sleep(min(exc.retry_after, remaining))

    def start_recovery(self) -> None:
        self.token.start_recovery()

    def close(self) -> None:
        self.token.close()

    def refuse_weak_keys(self, algs: Mapping[str, str | None], hsm_only: Callable[[str], bool]) -> None:
        """An extractable or non-sensitive private key (PKCS#11 v2.40 §4.9) is not
        what an HSM promises; the token manager skips such keys, and a start with one
        in a configured set stops here rather than silently generating another.
        HSM_ALLOW_EXTRACTABLE_KEYS adopts them with a WARNING, except in HSM-only sets.
        """
        on_token: dict[str, list[KeyRecord]] = {}
        for name, alg in algs.items():
            rsa_alg, okp_alg = alg_hints(alg)
            on_token[name] = self.token.records(name, rsa_alg=rsa_alg, okp_alg=okp_alg)
        for (key_set, kid), weakness in sorted(self.token.weak_keys.items()):
            if key_set not in algs:
                continue
            if not self.token.config.allow_extractable_keys:
                raise HSMError(
                    f"key set {self.label(key_set)!r}: key {kid!r} is refused, its private key is {weakness}; "
                    "provision it with CKA_SENSITIVE and without CKA_EXTRACTABLE "
                    "(or set HSM_ALLOW_EXTRACTABLE_KEYS=true for a set that is not HSM-only)"
                )
            if hsm_only(key_set):
                raise HSMError(
                    f"key set {self.label(key_set)!r} is HSM-only and its key {kid!r} is {weakness}: "
                    "HSM_ALLOW_EXTRACTABLE_KEYS does not apply to HSM-only sets"
                )
        # An HSM-only set promises keys born on the token that never left it: each key must show the
        # evidence of keys.evidence (CKA_LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, ...), or the set
        # does not start, as doctor says (an imported key, however sensitive now, once was not).
        for key_set, records in sorted(on_token.items()):
            if not hsm_only(key_set):
                continue
            for record in records:
                lacking = shortfalls(self.token.evidence(record).attributes)
                if lacking:
                    raise HSMError(f"key set {self.label(key_set)!r} is HSM-only and its key {record.kid!r} "
                                   f"lacks the evidence of a key born on the token: {'; '.join(lacking)}")

    def check_algorithm(self, key_set: str, alg: str, *, generate: bool, rsa_bits: int,
                        key_bits: int | None = None) -> SigningPlan:
        return self.token.check_algorithm(key_set, alg, generate=generate, rsa_bits=rsa_bits, key_bits=key_bits)

    def signing_plan(self, alg: str) -> SigningPlan:
        return self.token.signing_plan(alg)

    def check_decryption(self, key_set: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None,
                         alg: str = "RSA-OAEP-256") -> str:
        return self.token.check_decryption(key_set, generate=generate, rsa_bits=rsa_bits, key_bits=key_bits,
                                           alg=alg)

    def oaep_hashes(self, record: KeyRecord) -> tuple[str, ...]:
        return self.token.oaep_hashes(record)

    def unavailable_error(self) -> HSMUnavailable:
        return self.token.unavailable_error()

    def health(self) -> tuple[bool, str | None]:
        """Touches the token at most once per ``probe_interval_seconds`` (:meth:`keys.hsm.HSMManager.is_usable`)."""
        if self.token.is_usable():
            return True, None
        return False, self.token.unavailable_error().reason if not self.token.available else "hsm_session_unusable"


class NoToken:
    """The hardware side when no HSM is configured: it has no key, is never lost, and generates nothing."""

    backend = HSM_BACKEND
    configured = False
    available = True
    token: HSMManager | None = None
    retry_initial_seconds = 0.0

    def __init__(self) -> None:
        self.on_available: list[Callable[[], None]] = []

    def label(self, key_set: str) -> str:
        return key_set

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> list[KeyRecord]:
        return []

    def _none(self, what: str) -> HSMError:
        return HSMError(f"{what}: no HSM is configured")

    def signer(self, record: KeyRecord) -> Signer:
        raise KeyNotFound(f"key {record.kid!r} of {record.key_set!r} is on an HSM, and no HSM is configured")

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        raise KeyNotFound(f"key {record.kid!r} of {record.key_set!r} is on an HSM, and no HSM is configured")

    def generate(self, key_set: str, alg: str, *, rsa_bits: int, created_at: int, active_at: int) -> KeyRecord:
        raise self._none(f"key set {key_set!r}")

    def delete(self, key_set: str, kid: str) -> bool:
        return False

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        raise self._none(f"key {record.kid!r} of {record.key_set!r}")

    def open(self, wait_seconds: float) -> None:
        pass

    def start_recovery(self) -> None:
        pass

    def close(self) -> None:
        pass

    def refuse_weak_keys(self, algs: Mapping[str, str | None], hsm_only: Callable[[str], bool]) -> None:
        pass

    def check_algorithm(self, key_set: str, alg: str, *, generate: bool, rsa_bits: int,
                        key_bits: int | None = None) -> SigningPlan:
        raise self._none(f"key set {key_set!r}")

    def signing_plan(self, alg: str) -> SigningPlan:
        raise self._none(alg)

    def check_decryption(self, key_set: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None,
                         alg: str = "RSA-OAEP-256") -> str:
        raise self._none(f"key set {key_set!r}")

    def oaep_hashes(self, record: KeyRecord) -> tuple[str, ...]:
        return ()

    def unavailable_error(self) -> HSMUnavailable:
        return HSMUnavailable("no HSM is configured")

    def health(self) -> tuple[bool, str | None]:
        return True, None

    names: list[str] = []

    def healthy(self, name: str) -> bool:
        return False

    def turn(self) -> int:
        return 0

    def lacking(self, key_set: str, records: Sequence[KeyRecord], use: str = "sig") -> list[str]:
        return []

    def generate_on(self, names: Collection[str], key_set: str, alg: str, *, rsa_bits: int, created_at: int,
                    active_at: int) -> list[KeyRecord]:
        raise self._none(f"key set {key_set!r}")

    def token_health(self) -> dict[str, str | None]:
        return {}


class ManagerStrategy:
    """Per key set: the hardware manager first; where it has no signing key for the set, the
    software manager, unless the set is HSM-only (then no manager: fail closed)."""

    def __init__(self, hardware: HardwareManager, software: SoftwareManager, hsm_only_sets: Collection[str] = ()) -> None:
        self.hardware = hardware
        self.software = software
        #: Sets (any name, not only configured ones; "*" for all) that never use software keys.
        self.hsm_only_sets = frozenset(hsm_only_sets)
        #: The manager of each backend: every key is signed with and deleted through its own.
        self.by_backend: dict[str, KeyManager] = {software.backend: software, hardware.backend: hardware}
        self._refused: set[tuple[str, str]] = set()

    @property
    def managers(self) -> Iterable[KeyManager]:
        return self.by_backend.values()

    def manager(self, backend: str) -> KeyManager:
        return self.by_backend[backend]

    def is_hsm_only(self, key_set: str) -> bool:
        return "*" in self.hsm_only_sets or key_set in self.hsm_only_sets

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> tuple[str | None, list[KeyRecord]]:
        """The backend serving ``key_set`` (None: an HSM-only set the token has no key for) and every
        key of the set that may be published.  The set's use (``sig``, or ``enc`` for a decryption set)
        is its algorithm's: the token serves the set when it holds a key of that use."""
        use = key_algorithm(alg).use if alg else "sig"
        hardware_records = self.hardware.records(key_set, stored, alg=alg, stored_only=stored_only)
        if use == "enc":
            hardware_records = self._decrypting_only(key_set, hardware_records)
        software_records = self.software.records(key_set, stored)
        hsm_only = self.is_hsm_only(key_set)
        if hsm_only:
            # Never published either: whoever holds a software key of an HSM-only
            # set could otherwise sign tokens that relying parties accept.
            software_records = []
        if any(record.use == use for record in hardware_records):
            backend: str | None = self.hardware.backend
            # Software keys of a set the HSM serves are published without signing: each only
            # if its sealed private key opens and matches it (RFC 8725 §3.1: a public key
            # written into the table by itself is never trusted).  Those that sign are
            # opened, and checked the same way, by the software manager's signer.
            software_records = [record for record in software_records if self.software.publishable(record)]
        elif hsm_only:
            backend = None  # fail closed: never fall back to software
        else:
            backend = self.software.backend
        return backend, hardware_records + software_records

    def _decrypting_only(self, key_set: str, records: list[KeyRecord]) -> list[KeyRecord]:
        """The keys of a decryption set that only decrypt: a pair that can sign too (``pkcs11-tool
        --usage-decrypt`` leaves SoftHSM's default ``CKA_SIGN`` on) is neither adopted nor published."""
        for record in records:
            if record.use != "enc" and (key_set, record.kid) not in self._refused:
                self._refused.add((key_set, record.kid))
                log.warning("key %s/%s is not adopted for decryption: its private key has CKA_SIGN (a decryption "
                            "key never signs); provision it with `python -m keys.provision generate --use enc`",
                            key_set, record.kid)
        return [record for record in records if record.use == "enc"]

    def target(self, key_set: str, lookup: Callable[[], tuple[str | None, Sequence[KeyRecord]]], *,
               configured: bool) -> KeyManager:
        """The manager a new key of ``key_set`` is generated in (``lookup``: the set now, as :meth:`records`).

        On the HSM when the set lives there, when it is HSM-only, or when it is
        a configured set with no key yet (start-up provisioning, as Hydra does);
        otherwise (sets living in software, admin-created sets) in the store.
        """
        if not self.hardware.configured:
            if self.is_hsm_only(key_set):
                raise HSMError(f"key set {key_set!r} is HSM-only and no HSM is configured")
            return self.software
        if self.is_hsm_only(key_set):
            return self.hardware
        backend, records = lookup()
        if backend in (self.hardware.backend, None) or (configured and not records):
            return self.hardware
        return self.software


__all__ = [
    "HSM_BACKEND", "SOFTWARE_BACKEND", "HardwareManager", "KeyManager", "ManagerStrategy", "NoToken", "TokenKeys",
    "alg_hints",
]
