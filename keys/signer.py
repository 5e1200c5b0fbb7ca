"""The contract between the key service and whoever builds tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class KeyRecord:
    """What the service knows about one key pair, whichever manager holds it.

    ``created_at`` is when the key was published; ``active_at`` is when it may
    start signing (later than ``created_at`` by the pre-publication period for a
    rotated key, so that resource servers have it cached before they see it).
    """

    key_set: str
    kid: str
    alg: str
    use: str
    backend: str  # "hsm" or "software"
    public_jwk: dict[str, Any] = field(compare=False)
    created_at: int = 0
    active_at: int = 0
    #: The name of the token holding an HSM key among several (``HSM_TOKENS``); None when unknown
    #: (a key the store knows while its token cannot be asked) or not on a token.
    token: str | None = field(default=None, compare=False)


class Signer(Protocol):
    """The active signing key of a key set.

    ``sign`` returns the JWS signature bytes for ``signing_input`` (for EC keys the
    raw ``r||s`` of RFC 7518 §3.4).  The private key never leaves its manager.
    """

    @property
    def record(self) -> KeyRecord: ...

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def sign(self, signing_input: bytes) -> bytes: ...


@dataclass(frozen=True)
class BoundSigner:
    """A :class:`Signer` made of a key record and its manager's signing function."""

    record: KeyRecord
    _sign: Callable[[bytes], bytes] = field(repr=False, compare=False)
    # The record's, copied when the signer is made (a snapshot's, not per token): each token reads
    # them several times (its header, its audit line), and a property costs a call each time.
    kid: str = field(init=False, repr=False, compare=False)
    alg: str = field(init=False, repr=False, compare=False)
    backend: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", self.record.kid)
        object.__setattr__(self, "alg", self.record.alg)
        object.__setattr__(self, "backend", self.record.backend)

    def sign(self, signing_input: bytes) -> bytes:
        return self._sign(signing_input)
