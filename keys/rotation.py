"""The rotation view: which keys of a set are published and which one signs, as pure functions.

Rotation adds a key and never replaces one: a new key is published at once and
signs from ``active_at``; a key superseded at time S stays published until
S + retention (the longest token lifetime), then it is retired.  Nothing here
reads the store or the token: the key service gives the records, the backend
that serves the set and the time, and gets the statuses back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keys.signer import KeyRecord


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


def signing_order(record: KeyRecord) -> tuple[int, int, str]:
    """Oldest first: by the time it may sign, then by when it was made, then by kid."""
    return (record.active_at, record.created_at, record.kid)


def view(records: list[KeyRecord], backend: str | None, now: float,
         retention_seconds: int, use: str = "sig") -> tuple[list[KeyStatus], list[KeyRecord]]:
    """The published keys of a set with their statuses, and the keys that may sign (oldest first).

    Only keys of the set's ``use`` (``sig``; ``enc`` for a decryption set, whose
    "active" key is the one clients should encrypt to, and whose every published key
    decrypts) of ``backend`` take part in the rotation; a retired one (superseded
    more than ``retention_seconds`` ago) is left out of both lists.  Keys of the
    other manager, or of another use, stay published until deleted.
    """
    serving = sorted((record for record in records if record.backend == backend and record.use == use),
                     key=signing_order)
    live = [record for record in serving if record.active_at <= now]
    statuses: list[KeyStatus] = []
    signing: list[KeyRecord] = []
    for record in serving:
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
                retires_at = successor.active_at + retention_seconds
                if now >= retires_at:
                    continue  # retired: every token it signed has expired
                statuses.append(KeyStatus(record, "previous", retires_at))
        signing.append(record)
    statuses.extend(KeyStatus(record, "published") for record in records
                    if record.backend != backend or record.use != use)
    return statuses, signing


def active(signers: list[tuple[int, Any]], now: float) -> Any | None:
    """The newest of ``(active_at, signer)`` pairs (oldest first) that may sign at ``now``, or None."""
    chosen = None
    for active_at, signer in signers:
        if active_at <= now:
            chosen = signer
    return chosen
