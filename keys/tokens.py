"""Several PKCS#11 tokens as one hardware manager: each holds its own pair per set, any healthy one signs.

Each configured token (``HSM_TOKENS``; the plain ``HSM_*`` settings are one
token) is a :class:`keys.manager.TokenKeys` over its own connection supervisor
(:class:`keys.connection.TokenConnection`), with its own module lock, failure
model and recovery thread.  :class:`TokenPool` puts them behind the one
:class:`keys.manager.HardwareManager` the strategy knows:

* every token's keys of a set are the set's keys (each record names its token),
  so the JWKS publishes them all and a token signed on any of them verifies;
* a key is signed with, described and destroyed on its own token;
* a new key of a set (start-up provisioning, rotation) is generated on every
  token, so each one has its own pair and its own pre-published successor;
* the pool is available while any token is; the key service picks, per
  signature, a *healthy* token (available, no call hung in its module), taking
  turns, so a lost token costs only the signatures in flight on it.

While a token cannot be asked, its keys stay as last read in this process (or,
never read, as the store knows them), so the JWKS does not change during its
outage; the keys of a token replaced or removed stay published, as the store
knows them, until they are deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from keys.errors import HSMUnavailable, KeyNotFound
from keys.evidence import KeyEvidence
from keys.manager import HSM_BACKEND, TokenKeys
from keys.signer import BoundSigner, KeyRecord, Signer

if TYPE_CHECKING:
    from keys.hsm import HSMManager
    from keys.mechanisms import SigningPlan

log = logging.getLogger("keys.hsm")


class TokenPool:
    """The hardware manager over one or more tokens (see the module docstring)."""

    backend = HSM_BACKEND
    configured = True

    def __init__(self, tokens: Sequence[TokenKeys]) -> None:
        if not tokens:
            raise ValueError("a token pool needs at least one token")
        names = [member.name for member in tokens]
        if len(set(names)) != len(names):
            raise ValueError(f"token names must differ: {names}")
        self.members = list(tokens)
        self.by_name = {member.name: member for member in tokens}
        #: Called when any lost token is back (the service re-reads and provisions).
        self.on_available: list[Callable[[], None]] = []
        for member in self.members:
            member.on_available.append(self._token_back)
        #: Each token's keys of each set as last read from it: (token, set) -> records.
        self._last_read: dict[tuple[str, str], list[KeyRecord]] = {}
        self._turn = 0
        self._turn_lock = threading.Lock()

    def _token_back(self) -> None:
        for callback in list(self.on_available):
            callback()

    # -- what the strategy and the service ask --------------------------------

    @property
    def token(self) -> HSMManager:
        """The first token's PKCS#11 manager (tools and tests that know one token)."""
        return self.members[0].token

    @property
    def names(self) -> list[str]:
        return [member.name for member in self.members]

    @property
    def available(self) -> bool:
        return any(member.available for member in self.members)

    @property
    def retry_initial_seconds(self) -> float:
        return min(member.retry_initial_seconds for member in self.members)

    def label(self, key_set: str) -> str:
        return self.members[0].label(key_set)

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> list[KeyRecord]:
        if stored_only:
            return self.members[0].records(key_set, stored, stored_only=True)
        if len(self.members) == 1:  # one token: lost means the set cannot be read (the caller keeps its snapshot)
            return self.members[0].records(key_set, stored, alg=alg)
        found: list[KeyRecord] = []
        for member in self.members:
            key = (member.name, key_set)
            try:
                # Fails at once while the token is known lost (its recovery probes it).
                self._last_read[key] = member.records(key_set, stored, alg=alg)
            except HSMUnavailable:
                pass  # lost: as last read
            found.extend(self._last_read.get(key, []))
        # Keys the store knows on no token read: a token down since this process started, a failed
        # token replaced or one taken out of HSM_TOKENS.  Published (tokens they signed still verify),
        # signing nowhere, until their token is read again or they are deleted.
        seen = {record.kid for record in found}
        found.extend(record for record in self.members[0].records(key_set, stored, stored_only=True)
                     if record.kid not in seen)
        return found

    def _member(self, record: KeyRecord) -> TokenKeys:
        member = self.by_name.get(record.token) if record.token is not None else None
        if member is None:
            raise KeyNotFound(f"key {record.kid!r} of {record.key_set!r} is on a token that cannot be asked now")
        return member

    def signer(self, record: KeyRecord) -> Signer:
        if record.token is None:
            return BoundSigner(record, self._never_signs)
        return self._member(record).signer(record)

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        """Decryption with ``record``'s private key, on its own token."""
        if record.token is None:
            raise self.unavailable_error()
        return self._member(record).decrypter(record)

    def oaep_hashes(self, record: KeyRecord) -> tuple[str, ...]:
        return self._member(record).oaep_hashes(record)

    def check_decryption(self, key_set: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None,
                         alg: str = "RSA-OAEP-256") -> str:
        """Each available token must decrypt for ``alg`` (and generate its key when asked): the first one's
        mechanism."""
        mechanisms = [member.check_decryption(key_set, generate=generate, rsa_bits=rsa_bits, key_bits=key_bits,
                                              alg=alg)
                      for member in self.members if member.available]
        if not mechanisms:
            raise self.unavailable_error()
        return mechanisms[0]

    def _never_signs(self, signing_input: bytes) -> bytes:
        """The signing function of a key whose token is not known in this process yet: it never signs."""
        raise self.unavailable_error()

    def healthy(self, name: str) -> bool:
        """Whether token ``name`` can sign now (available, and no call hung in its module)."""
        member = self.by_name.get(name)
        return member is not None and member.token.healthy

    def turn(self) -> int:
        """A counter that advances per signature: where the round of healthy tokens starts."""
        with self._turn_lock:
            self._turn += 1
            return self._turn

    def generate(self, key_set: str, alg: str, *, rsa_bits: int, created_at: int, active_at: int) -> KeyRecord:
        """A new pair of ``key_set`` on every token (see :meth:`generate_on`); the first token's."""
        return self.generate_on(self.names, key_set, alg, rsa_bits=rsa_bits, created_at=created_at,
                                active_at=active_at)[0]

    def generate_on(self, names: Collection[str], key_set: str, alg: str, *, rsa_bits: int, created_at: int,
                    active_at: int) -> list[KeyRecord]:
        """A new pair of ``key_set`` on each token named in ``names`` (in configuration order).

        Refused before any is made while one of them is lost: a rotation gives every token its
        successor at once, or none.
        """
        chosen = [member for member in self.members if member.name in names]
        lost = [member.name for member in chosen if not member.available]
        if lost and len(self.members) > 1:
            raise HSMUnavailable(f"token(s) {', '.join(lost)} cannot be asked now: a new key of {key_set!r} is "
                                 "made on every token at once; try again when they are back")
        generated = [member.generate(key_set, alg, rsa_bits=rsa_bits, created_at=created_at, active_at=active_at)
                     for member in chosen]
        for record in generated:
            self._last_read.pop((record.token or "", key_set), None)
        return generated

    def lacking(self, key_set: str, records: Sequence[KeyRecord], use: str = "sig") -> list[str]:
        """The available tokens with no key of ``key_set`` of ``use`` (signing, or decryption) among ``records``."""
        holding = {record.token for record in records if record.backend == HSM_BACKEND and record.use == use}
        return [member.name for member in self.members if member.available and member.name not in holding]

    def delete(self, key_set: str, kid: str) -> bool:
        deleted = False
        for member in self.members:
            if member.available:
                deleted = member.delete(key_set, kid) or deleted
                self._last_read.pop((member.name, key_set), None)
        return deleted

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        return self._member(record).evidence(record)

    def open(self, wait_seconds: float) -> None:
        """Open every token; a token still unreachable after ``wait_seconds`` is probed in the background,
        as long as another one opened (one token is enough to sign)."""
        if len(self.members) == 1:
            self.members[0].open(wait_seconds)
            return
        failures = self._open_each()
        deadline = time.monotonic() + wait_seconds
        # None opened: wait for any of them as long as a single token would be waited for.
        while failures and not self.available and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            failures = self._open_each([member for member in self.members if not member.token.hung])
        if not self.available:
            raise failures[0] if failures else self.unavailable_error()
        for failure in failures:
            log.warning("starting without a token (%s): it joins when it is reachable", failure)

    def _open_each(self, members: Sequence[TokenKeys] | None = None) -> list[HSMUnavailable]:
        """Open ``members`` (all) at once, each on its own thread: one that hangs (a stopped appliance)
        is left to its thread after its ``busy_seconds`` and counts as unreachable.  A final error
        (no such library, a refused PIN) stops the start, as with one token."""
        results: dict[str, BaseException | None] = {}
        abandoned: set[str] = set()
        guard = threading.Lock()

        def run(member: TokenKeys) -> None:
            try:
                member.open(0.0)
                outcome: BaseException | None = None
            except BaseException as exc:  # reported to the starting thread
                outcome = exc
            with guard:
                results[member.name] = outcome
                late = member.name in abandoned
            if late and outcome is None:
                self._token_back()  # answered after the start went on without it: it joins now

        started = [(member, threading.Thread(target=run, args=(member,), daemon=True,
                                             name=f"pkcs11-open-{member.name}"))
                   for member in (self.members if members is None else members)]
        for _, thread in started:
            thread.start()
        failures: list[HSMUnavailable] = []
        for member, thread in started:
            thread.join(timeout=member.token.config.busy_seconds + 1.0)
            with guard:
                if member.name not in results:
                    abandoned.add(member.name)
                outcome = results.get(member.name, HSMUnavailable(f"token {member.name!r} does not answer"))
            if isinstance(outcome, HSMUnavailable):
                failures.append(outcome)
            elif outcome is not None:
                raise outcome
        return failures

    def start_recovery(self) -> None:
        for member in self.members:
            member.start_recovery()

    def close(self) -> None:
        for member in self.members:
            member.close()

    def refuse_weak_keys(self, algs: Mapping[str, str | None], hsm_only: Callable[[str], bool]) -> None:
        for member in self.members:
            if member.available:
                member.refuse_weak_keys(algs, hsm_only)

    def check_algorithm(self, key_set: str, alg: str, *, generate: bool, rsa_bits: int,
                        key_bits: int | None = None) -> SigningPlan:
        """Each available token must sign ``alg`` (and generate it when asked): the first one's plan."""
        plans = [member.check_algorithm(key_set, alg, generate=generate, rsa_bits=rsa_bits, key_bits=key_bits)
                 for member in self.members if member.available]
        if not plans:
            raise self.unavailable_error()
        return plans[0]

    def signing_plan(self, alg: str) -> SigningPlan:
        for member in self.members:
            if member.available:
                return member.signing_plan(alg)
        raise self.unavailable_error()

    def unavailable_error(self) -> HSMUnavailable:
        errors = [member.unavailable_error() for member in self.members]
        if len(errors) == 1:
            return errors[0]
        names = ", ".join(self.names)
        reason = "hsm_login_refused" if all(e.reason == "hsm_login_refused" for e in errors) else "hsm_unavailable"
        return HSMUnavailable(f"no token can sign now (tokens {names} are all unavailable)",
                              retry_after=min(e.retry_after for e in errors), reason=reason)

    def token_health(self) -> dict[str, str | None]:
        """Each token's state: None when usable, else a reason code (``hsm_unavailable``, ``hsm_token_hung``, ...)."""
        states: dict[str, str | None] = {}
        for member in self.members:
            if member.token.hung:
                states[member.name] = "hsm_token_hung"
                continue
            usable, reason = member.health()
            states[member.name] = None if usable else reason
        return states

    def health(self) -> tuple[bool, str | None]:
        """Usable while any token is (every token's own state: :meth:`token_health`)."""
        states = self.token_health()
        if any(reason is None for reason in states.values()):
            return True, None
        return False, next(iter(states.values()))


__all__ = ["TokenPool"]
