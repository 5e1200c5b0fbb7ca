"""The stored keys of the keyed hashes (client secrets, codes, refresh tokens).

A key per purpose, 256 bits, sealed with AES-256-GCM under the system secrets
(:class:`keys.sealing.Sealer`, the same sealing as software signing keys; its
associated data binds the row to its purpose).  Its lifecycle is its own:

* made once, on first use, as the key earlier versions derived from the first
  system secret, so every hash written before it existed still verifies;
* re-sealed, never changed, when a system secret is rotated (``flask keys
  reseal`` after prepending the new secret): hashes need no re-keying, and the
  old secret can be dropped without locking out a client or ending a grant;
* replacing it (deleting its row) invalidates every client secret, code and
  refresh token at once: the response to a leaked hashing key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from keys import Sealer
from oidc import queries
from oidc.db import db
from oidc.hashing import derive_key

if TYPE_CHECKING:
    from oidc.state import State

log = logging.getLogger(__name__)

#: Sealing associated data of a hashing key row: a "key set" of its own, kid = purpose.
_SEALING_SET = "oidc.hashing-keys"


def _public_part(purpose: str) -> dict[str, str]:
    return {"purpose": purpose}


def _open(sealer: Sealer, purpose: str, sealed: bytes) -> bytes:
    return sealer.open(sealed, key_set=_SEALING_SET, kid=purpose, public_jwk=_public_part(purpose))


def hashing_key(state: State, purpose: str) -> bytes:
    """The hashing key of ``purpose``, made (and stored) on first use."""
    sealer = state.sealer()
    with state.app.app_context():
        engine = db.engine
    with engine.connect() as connection:
        sealed = queries.sealed_hashing_key(connection, purpose)
    if sealed is not None:
        return _open(sealer, purpose, sealed)
    secrets_system = state.settings.secrets_system
    if len(secrets_system) > 1:
        log.warning("storing the %s hashing key while several system secrets are listed: it is the one "
                    "derived from the first; hashes made under another stop verifying once it is dropped", purpose)
    key = derive_key(secrets_system[0], b"keyed hash: " + purpose.encode())
    sealed = sealer.seal(key, key_set=_SEALING_SET, kid=purpose, public_jwk=_public_part(purpose))
    try:
        with engine.begin() as connection:
            queries.insert_hashing_key(connection, purpose, sealed, int(state.clock.time()))
    except IntegrityError:  # another process stored it first: use theirs
        with engine.connect() as connection:
            stored = queries.sealed_hashing_key(connection, purpose)
            assert stored is not None, "the row whose insert failed as a duplicate"
            return _open(sealer, purpose, stored)
    return key


def reseal(state: State) -> int:
    """Re-seal every hashing key under the first system secret (all opened first, then written
    in one transaction, so an unopenable row aborts before anything is written)."""
    sealer = state.sealer()
    with state.app.app_context():
        engine = db.engine
    with engine.connect() as connection:
        rows = queries.sealed_hashing_keys(connection)
    updates = [(purpose, sealer.seal(_open(sealer, purpose, sealed), key_set=_SEALING_SET, kid=purpose,
                                     public_jwk=_public_part(purpose)))
               for purpose, sealed in rows if not sealer.is_current(sealed)]
    with engine.begin() as connection:
        for purpose, sealed in updates:
            queries.reseal_hashing_key(connection, purpose, sealed)
    return len(updates)
