"""The software key manager: private keys in SQL, sealed with AES-256-GCM.

Used for key sets that are not on the HSM (or when there is no HSM), and for
every key imported through the admin API or CLI.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from keys.algorithms import EC_CURVES, MIN_RSA_BITS, Algorithm, get_algorithm, key_algorithm
from keys.errors import InvalidKey, KeyNotFound, SealingError, WrongKeyUse
from keys.evidence import SOFTWARE_LOCATION, KeyEvidence
from keys.jwk import PrivateKey, load_private_jwk, public_jwk, thumbprint
from keys.sealing import Sealer
from keys.signer import BoundSigner, KeyRecord, Signer
from keys.store import KeyStore

BACKEND = "software"
#: Longest ``kid`` of an imported key (the length of its column).
MAX_KID_LENGTH = 255

log = logging.getLogger(__name__)


def generate_private_key(algorithm: Algorithm, rsa_bits: int) -> PrivateKey:
    """A fresh private key suitable for ``algorithm``."""
    if algorithm.is_rsa:
        if rsa_bits < MIN_RSA_BITS:
            raise InvalidKey(f"RSA keys need at least {MIN_RSA_BITS} bits, not {rsa_bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if algorithm.is_ecdsa:
        assert algorithm.curve is not None
        return ec.generate_private_key(EC_CURVES[algorithm.curve]())
    return ed25519.Ed25519PrivateKey.generate()


def signing_function(private_key: PrivateKey, algorithm: Algorithm) -> Callable[[bytes], bytes]:
    """A function producing JWS signature bytes with ``private_key``."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        digest = algorithm.cryptography_hash()
        if algorithm.is_pss:
            # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash.
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(digest), salt_length=digest.digest_size
            )
        else:
            pad = padding.PKCS1v15()
        return lambda data: private_key.sign(data, pad, digest)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(algorithm.cryptography_hash())
        size = (algorithm.signature_size or 0) // 2

        def sign_ecdsa(data: bytes) -> bytes:
            # cryptography returns DER; JWS wants fixed-width r||s (RFC 7518 §3.4).
            r, s = decode_dss_signature(private_key.sign(data, ecdsa))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")

        return sign_ecdsa
    return private_key.sign


def decrypting_function(private_key: PrivateKey, algorithm: Algorithm) -> Callable[[bytes], bytes | None]:
    """A function decrypting a JWE encrypted key with ``private_key`` (RFC 7518 §4.3: RSAES-OAEP,
    MGF1 with the same hash, no label); None for a ciphertext that does not decrypt.  For ECDH-ES
    (§4.6), the ECDH shared secret with an uncompressed P-256 ephemeral public point instead."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and algorithm.name == "ECDH-ES":
        curve = private_key.curve

        def agree(point: bytes) -> bytes | None:
            try:
                return private_key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, point))
            except ValueError:
                return None

        return agree
    if not isinstance(private_key, rsa.RSAPrivateKey) or algorithm.use != "enc":
        raise InvalidKey(f"{algorithm.name} does not decrypt with a {type(private_key).__name__}")
    digest = algorithm.cryptography_hash()
    pad = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)

    def decrypt(encrypted_key: bytes) -> bytes | None:
        try:
            return private_key.decrypt(encrypted_key, pad)
        except ValueError:
            return None

    return decrypt


class SoftwareManager:
    """Generates, imports, seals and signs with keys kept in the SQL store."""

    backend = BACKEND
    #: Never lost: the store is asked as every other table is.
    available = True

    def __init__(self, store: KeyStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        #: By (set, kid, public JWK): a row whose public JWK changes is opened and checked again.
        self._signing_functions: dict[tuple[str, str, str], Callable[[bytes], bytes]] = {}
        self._decrypting_functions: dict[tuple[str, str, str], Callable[[bytes], bytes | None]] = {}
        self._publishable: dict[tuple[str, str, str], bool] = {}
        self._lock = threading.Lock()

    def records(self, key_set: str, stored: Sequence[KeyRecord], *, alg: str | None = None,
                stored_only: bool = False) -> list[KeyRecord]:
        """The software keys among ``stored`` (the store's rows of ``key_set``)."""
        return [record for record in stored if record.backend == BACKEND]

    def signer(self, record: KeyRecord) -> Signer:
        if record.use != "sig":
            raise WrongKeyUse(f"key {record.kid!r} of {record.key_set!r} is a decryption key "
                              f"(use {record.use!r}): it never signs")
        key = (record.key_set, record.kid, json.dumps(record.public_jwk, sort_keys=True))
        with self._lock:
            function = self._signing_functions.get(key)
            if function is None:
                function = signing_function(self._private(record), get_algorithm(record.alg))
                self._signing_functions[key] = function
        return BoundSigner(record, function)

    def _private(self, record: KeyRecord) -> PrivateKey:
        sealed = self.store.sealed_private(record.key_set, record.kid)
        if sealed is None:
            raise KeyNotFound(f"no software key {record.kid!r} in key set {record.key_set!r}")
        return self._open(record, sealed)

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        """RSAES-OAEP decryption of a JWE encrypted key with ``record``'s sealed private key
        (None when the ciphertext does not decrypt)."""
        if record.use != "enc":
            raise WrongKeyUse(f"key {record.kid!r} of {record.key_set!r} is a signing key "
                              f"(use {record.use!r}): it never decrypts")
        key = (record.key_set, record.kid, json.dumps(record.public_jwk, sort_keys=True))
        with self._lock:
            function = self._decrypting_functions.get(key)
            if function is None:
                function = decrypting_function(self._private(record), key_algorithm(record.alg))
                self._decrypting_functions[key] = function
        return function

    def _open(self, record: KeyRecord, sealed: bytes) -> PrivateKey:
        """The private key of ``record``, refused unless it is the private half of the published key.

        The sealing binds the public JWK (format 2); for a row sealed before that
        (format 1) the comparison below is what binds it: a public JWK written into
        the row by someone who cannot seal would otherwise be published and trusted.
        """
        der = self.sealer.open(sealed, key_set=record.key_set, kid=record.kid, public_jwk=record.public_jwk)
        # The RSA consistency check (tens of milliseconds a key) is what guards against a key
        # from an untrusted source; this one comes out of our own AES-GCM seal (its integrity
        # and its binding to this row authenticated), and was checked when it was generated
        # or imported; its public half is compared with the published one right below.
        private_key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        derived = public_jwk(private_key.public_key(), kid=record.kid, alg=record.alg,  # type: ignore[arg-type]
                             use=record.use)
        if derived != record.public_jwk:
            raise SealingError(f"software key {record.key_set}/{record.kid}: the public key does not match "
                               "its sealed private key")
        return private_key  # type: ignore[return-value]

    def publishable(self, record: KeyRecord) -> bool:
        """Whether ``record``'s private key opens and matches its public JWK (checked once per row)."""
        key = (record.key_set, record.kid, json.dumps(record.public_jwk, sort_keys=True))
        with self._lock:
            known = self._publishable.get(key)
        if known is None:
            sealed = self.store.sealed_private(record.key_set, record.kid)
            try:
                known = sealed is not None and self._open(record, sealed) is not None
            except (SealingError, ValueError, TypeError) as exc:
                log.error("software key %s/%s is not published: %s", record.key_set, record.kid, exc)
                known = False
            with self._lock:
                self._publishable[key] = known
        return known

    def _store(self, key_set: str, kid: str, alg: str, private_key: PrivateKey, *, created_at: int, active_at: int) -> KeyRecord:
        use = key_algorithm(alg).use
        record = KeyRecord(
            key_set=key_set,
            kid=kid,
            alg=alg,
            use=use,
            backend=BACKEND,
            public_jwk=public_jwk(private_key.public_key(), kid=kid, alg=alg, use=use),
            created_at=created_at,
            active_at=active_at,
        )
        der = private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.store.add(record, self.sealer.seal(der, key_set=key_set, kid=kid, public_jwk=record.public_jwk))
        return record

    def generate(self, key_set: str, alg: str, *, rsa_bits: int, created_at: int, active_at: int) -> KeyRecord:
        algorithm = key_algorithm(alg)
        private_key = generate_private_key(algorithm, rsa_bits)
        return self._store(key_set, str(uuid.uuid4()), alg, private_key, created_at=created_at, active_at=active_at)

    def import_jwk(self, key_set: str, jwk: dict[str, Any], *, created_at: int, active_at: int) -> KeyRecord:
        private_key, alg = load_private_jwk(jwk)
        kid = jwk.get("kid") or thumbprint(private_key.public_key())
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            raise InvalidKey(f"'kid' must be a string of 1 to {MAX_KID_LENGTH} characters")
        return self._store(key_set, kid, alg, private_key, created_at=created_at, active_at=active_at)

    def delete(self, key_set: str, kid: str) -> bool:
        with self._lock:
            for cached in [cached for cached in self._signing_functions if cached[:2] == (key_set, kid)]:
                del self._signing_functions[cached]
            for cached in [cached for cached in self._decrypting_functions if cached[:2] == (key_set, kid)]:
                del self._decrypting_functions[cached]
        return self.store.remove(key_set, kid)

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        return KeyEvidence(key_set=record.key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                           location=dict(SOFTWARE_LOCATION), use=record.use)

    def close(self) -> None:
        """Nothing is held open: keys are opened from the store when first used."""

    def reseal(self) -> int:
        """Re-seal every stored private key under the newest system secret.

        All rows are opened first (so an unopenable row aborts before anything
        is written), then rewritten in one transaction.  Returns the count.
        """
        updates = []
        for key_set, kid, sealed, jwk in self.store.sealed_rows():
            if self.sealer.is_current(sealed):
                continue
            plaintext = self.sealer.open(sealed, key_set=key_set, kid=kid, public_jwk=jwk)
            updates.append((key_set, kid, self.sealer.seal(plaintext, key_set=key_set, kid=kid, public_jwk=jwk)))
        self.store.replace_sealed(updates)
        return len(updates)
