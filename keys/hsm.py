"""The HSM key manager: key pairs on a PKCS#11 token (python-pkcs11).

What SoftHSM2 and python-pkcs11 taught us shapes this module (see DESIGN.md):

* python-pkcs11 initialises the library without ``CKF_OS_LOCKING_OK``, so the
  module may run without internal locks: every PKCS#11 call in the process goes
  through one process-wide lock, and there is one logged-in session per process.
* The context must be created in the process that uses it (after ``fork()``), so
  the manager notes its pid and re-initialises when it finds itself in a child.
* ``C_Initialize``, token look-up and ``C_Login`` racing in several processes
  fail now and then (``CKR_GENERAL_ERROR``, or a token not found): opening is
  retried with backoff, re-initialising the module between attempts.
* Object handles die with their session: on an invalid handle or session the
  manager reopens, looks the keys up again and retries the operation once.

Attribute mapping is Ory Hydra's: ``CKA_LABEL`` is the (prefixed) key set name,
``CKA_ID`` the kid; the public and private objects of a pair share both.
"""

from __future__ import annotations

import logging
import os
import random
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DeviceError,
    DeviceRemoved,
    GeneralError,
    ObjectHandleInvalid,
    PinIncorrect,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    TokenNotRecognised,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.util.ec import encode_named_curve_parameters

from keys.algorithms import EC_CURVES, MIN_RSA_BITS, Algorithm, get_algorithm
from keys.errors import HSMError, InvalidKey, KeyNotFound
from keys.jwk import PublicKey, public_jwk
from keys.signer import BoundSigner, KeyRecord, Signer

log = logging.getLogger(__name__)

BACKEND = "hsm"

#: One lock for every PKCS#11 call in this process (the module may have no locks of its own).
PKCS11_LOCK = threading.RLock()

#: DER of the named-curve OIDs, as found in CKA_EC_PARAMS.
_CURVE_OIDS = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
_EC_PARAMS_TO_CURVE = {encode_named_curve_parameters(oid): crv for crv, oid in _CURVE_OIDS.items()}
#: Ed25519 in CKA_EC_PARAMS: the OID 1.3.101.112, or the PrintableString "edwards25519"
#: that some PKCS#11 v2.40 tokens use.
_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_NAMES = {_ED25519_OID, b"\x13\x0cedwards25519"}

#: Exceptions after which the session (and its object handles) must be reopened.
_STALE_SESSION = (ObjectHandleInvalid, SessionHandleInvalid, SessionClosed, UserNotLoggedIn, DeviceRemoved)

#: Errors of C_Initialize, C_GetTokenInfo or C_Login that another process using
#: the token at the same moment causes (SoftHSM, reading a token file being
#: rewritten, even reports its user PIN as not initialised); another attempt
#: usually succeeds.  A wrong PIN is never retried: real tokens lock after a few.
_TRANSIENT_ERRORS = (GeneralError, TokenNotPresent, TokenNotRecognised, DeviceError, UserPinNotInitialized)

T = TypeVar("T")


#: Attempts before "no such token" is believed: a racing initialisation misses a
#: token rarely and briefly, and a wrong label should fail fast.
_NOT_FOUND_ATTEMPTS = 5


class _Transient(Exception):
    """An attempt to open the token failed in a way the next attempt may not."""

    def __init__(self, reason: str, *, attempts: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts  # at most this many attempts for this failure (None: the configured number)


def _load_failure(exc: PKCS11Error) -> str:
    """Why the module could not be loaded: the loader's own words (a path, never a secret)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc) is PKCS11Error and detail:
        return detail
    return type(exc).__name__


@dataclass(frozen=True)
class HSMConfig:
    """Where the token is and how to log in.  ``pin`` is never logged or shown."""

    library: str
    pin: str
    token_label: str | None = None
    slot: int | None = None
    key_set_prefix: str = ""
    login_attempts: int = 10

    def __repr__(self) -> str:  # keep the PIN out of tracebacks and logs
        return f"HSMConfig(library={self.library!r}, {self.describe_token()}, prefix={self.key_set_prefix!r})"

    def describe_token(self) -> str:
        if self.token_label:
            return f"token label {self.token_label!r}"
        return f"slot {self.slot}"


def kid_from_id(cka_id: bytes) -> str:
    """A kid from ``CKA_ID``: its text when printable ASCII (Hydra's UUIDs), else hex."""
    try:
        text = cka_id.decode("ascii")
    except UnicodeDecodeError:
        return cka_id.hex()
    if text and all(ch in string.printable and ch not in "\t\n\r\x0b\x0c" for ch in text):
        return text
    return cka_id.hex()


def _unwrap_point(ec_point: bytes, raw_size: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per the standard; some tokens give it raw."""
    if len(ec_point) == raw_size:
        return ec_point
    return OctetString.load(ec_point).native


@dataclass
class _KeyPair:
    record: KeyRecord
    private_key: Any  # pkcs11 PrivateKey handle, valid while the session lives


class HSMManager:
    """Key pairs on one PKCS#11 token, used through a single logged-in session."""

    backend = BACKEND

    def __init__(self, config: HSMConfig, *, on_event: Callable[[str, str | None], None] | None = None) -> None:
        self.config = config
        #: Told of trouble (metrics): ("reconnect", None) when the session is
        #: reopened, ("error", exception class name) when an operation fails.
        self.on_event = on_event
        self._pid: int | None = None
        self._token: Any = None
        self._session: Any = None
        self._pairs: dict[tuple[str, str], _KeyPair] = {}
        self.reconnects = 0

    # -- session management -------------------------------------------------

    def label(self, key_set: str) -> str:
        return self.config.key_set_prefix + key_set

    def open(self) -> None:
        """Load the module, find the token and log in (in this process)."""
        with PKCS11_LOCK:
            self._open()

    def _error(self, reason: str) -> HSMError:
        return HSMError(f"PKCS#11 module {self.config.library}, {self.config.describe_token()}: {reason}")

    def _open(self) -> None:
        """Initialise, find the token and log in, retrying what racing processes break.

        On SoftHSM, another process logging in rewrites the token's file, and a
        process initialising or logging in at that moment fails with
        ``CKR_GENERAL_ERROR`` or does not see the token at all; the token is only
        enumerated again by a new ``C_Initialize``.  Measured with four processes
        opening one token at once: 17 to 20 of 48 failed with a single attempt
        (or with retried logins alone), none of 320 with this loop.  So a failed
        attempt re-initialises the module before the next one.  A wrong PIN,
        or a file that is not a PKCS#11 module, fails at once.
        """
        if not os.path.exists(self.config.library):
            raise self._error("the library file does not exist")
        delay = 0.01
        for attempt in range(1, self.config.login_attempts + 1):
            try:
                self._open_once(reinitialize=attempt > 1)
                return
            except _Transient as exc:
                if attempt >= min(self.config.login_attempts, exc.attempts or self.config.login_attempts):
                    raise self._error(f"{exc.reason} (tried {attempt} times)") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)

    def _open_once(self, *, reinitialize: bool) -> None:
        try:
            lib = pkcs11.lib(self.config.library)
        except _TRANSIENT_ERRORS as exc:
            raise _Transient(f"cannot initialise the module ({type(exc).__name__})") from None
        except PKCS11Error as exc:
            raise self._error(f"cannot load or initialise the module ({_load_failure(exc)})") from None
        try:
            if reinitialize or (self._pid is not None and self._pid != os.getpid()):
                # A context inherited through fork() is not usable by the child
                # (PKCS#11 v2.40 §6.7.7), and SoftHSM only enumerates its tokens
                # in C_Initialize: start a fresh context in this process.
                lib.reinitialize()
            token = self._find_token(lib)
        except _TRANSIENT_ERRORS as exc:
            raise _Transient(f"cannot initialise the module or read the token ({type(exc).__name__})") from None
        except PKCS11Error as exc:
            raise self._error(f"cannot load or initialise the module ({type(exc).__name__})") from None
        self._token = token
        self._session = self._login()
        self._pid = os.getpid()
        self._pairs.clear()

    def _find_token(self, lib: Any) -> Any:
        slots = lib.get_slots(token_present=True)
        if self.config.token_label:
            for slot in slots:
                token = slot.get_token()
                if token.label == self.config.token_label:
                    return token
            # Possibly a token this initialisation could not read (see _open).
            raise _Transient("no slot holds a token with this label", attempts=_NOT_FOUND_ATTEMPTS)
        if self.config.slot is None:
            raise self._error("neither HSM_TOKEN_LABEL nor HSM_SLOT is set")
        for slot in slots:
            if slot.slot_id == self.config.slot:
                return slot.get_token()
        raise _Transient("no token is present in this slot", attempts=_NOT_FOUND_ATTEMPTS)

    def _login(self) -> Any:
        try:
            return self._token.open(rw=True, user_pin=self.config.pin)
        except UserAlreadyLoggedIn:
            # Another session of this process is logged in: login state is
            # per token per process, so a plain session shares it.
            return self._token.open(rw=True)
        except PinIncorrect:
            raise self._error("login failed: the PIN is incorrect") from None
        except _TRANSIENT_ERRORS as exc:
            # C_Login racing in other processes fails intermittently on SoftHSM.
            raise _Transient(f"login failed ({type(exc).__name__})") from None
        except PKCS11Error as exc:
            raise self._error(f"login failed ({type(exc).__name__})") from None

    def _event(self, event: str, error: str | None = None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, error)
            except Exception:  # reporting must never break signing
                log.warning("the HSM event hook failed", exc_info=True)

    def _reopen(self) -> None:
        self.reconnects += 1
        self._event("reconnect")
        log.warning("reopening the PKCS#11 session on %s", self.config.describe_token())
        try:
            if self._session is not None:
                self._session.close()
        except PKCS11Error:
            pass
        self._session = None
        self._open()

    def _call(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` under the process lock, reopening once on a stale session."""
        with PKCS11_LOCK:
            if self._session is None or self._pid != os.getpid():
                self._open()
            try:
                try:
                    return operation()
                except _STALE_SESSION:
                    self._reopen()
                    return operation()
            except (PKCS11Error, HSMError) as exc:  # failed, after the retry if there was one
                self._event("error", type(exc).__name__)
                raise

    def close(self) -> None:
        with PKCS11_LOCK:
            if self._session is not None and self._pid == os.getpid():
                try:
                    self._session.close()
                except PKCS11Error:
                    pass
            self._session = None
            self._pairs.clear()

    def is_usable(self) -> bool:
        """A cheap round trip to the token (for readiness checks); heals a lost login."""
        def probe() -> None:
            self._confirm_logged_in()
            try:
                self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="\x00probe")
            except pkcs11.NoSuchKey:
                pass

        try:
            self._call(probe)
        except (PKCS11Error, HSMError):
            return False
        return True

    def _confirm_logged_in(self) -> None:
        """Raise ``UserNotLoggedIn`` (so ``_call`` reopens) when the session lost its login.

        A search needs no login and, without one, silently leaves private
        objects out: "no key pair for this set" would then lead to a fallback
        to software keys or to a duplicate generation.  The login is per token
        per process, and python-pkcs11's ``Session.close`` calls ``C_Logout``,
        so any other logged-in session of this process that closes logs this
        one out behind our back, with every handle still valid.

        python-pkcs11 does not expose ``C_GetSessionInfo``; instead a private
        session object is created and destroyed, which PKCS#11 allows only
        while the user is logged in.  A token that refuses the probe for any
        other reason proves nothing either way, and the search is trusted.
        """
        try:
            probe = self._session.create_object({
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.LABEL: "login probe",
            })
        except _STALE_SESSION:
            raise
        except PKCS11Error:
            return
        try:
            probe.destroy()
        except PKCS11Error:
            pass  # a session object dies with its session anyway

    # -- key discovery ------------------------------------------------------

    def records(self, key_set: str, *, rsa_alg: str = "RS256") -> list[KeyRecord]:
        """Every key pair labelled for ``key_set`` on the token."""
        def find() -> list[KeyRecord]:
            found = []
            # Searches cannot nest: finish this one before looking up each public key.
            private_keys = list(self._session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: self.label(key_set)}
            ))
            if not private_keys:
                self._confirm_logged_in()  # "none" must not mean "not logged in"
            for private_key in private_keys:
                pair = self._describe(key_set, private_key, rsa_alg)
                if pair is not None:
                    self._pairs[(key_set, pair.record.kid)] = pair
                    found.append(pair.record)
            return sorted(found, key=lambda record: record.kid)

        return self._call(find)

    def _describe(self, key_set: str, private_key: Any, rsa_alg: str) -> _KeyPair | None:
        cka_id = bytes(private_key[Attribute.ID] or b"")
        kid = kid_from_id(cka_id)
        public_key = self._find_public(key_set, cka_id)
        if public_key is None:
            log.warning("key %s/%s has no public key object on the token; skipped", key_set, kid)
            return None
        try:
            key, alg = self._public_key(public_key, rsa_alg)
        except InvalidKey as exc:
            log.warning("key %s/%s is not usable: %s", key_set, kid, exc)
            return None
        use = "sig" if _attribute(private_key, Attribute.SIGN) else (
            "enc" if _attribute(private_key, Attribute.DECRYPT) else "sig"
        )
        record = KeyRecord(
            key_set=key_set, kid=kid, alg=alg, use=use, backend=BACKEND,
            public_jwk=public_jwk(key, kid=kid, alg=alg, use=use),
        )
        return _KeyPair(record, private_key)

    def _find_public(self, key_set: str, cka_id: bytes) -> Any:
        for template in (
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: self.label(key_set), Attribute.ID: cka_id},
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: cka_id},
        ):
            matches = list(self._session.get_objects(template))  # run the search to its end
            if matches:
                return matches[0]
        return None

    @staticmethod
    def _public_key(public_key: Any, rsa_alg: str) -> tuple[PublicKey, str]:
        key_type = public_key[Attribute.KEY_TYPE]
        if key_type == KeyType.RSA:
            modulus = int.from_bytes(public_key[Attribute.MODULUS], "big")
            exponent = int.from_bytes(public_key[Attribute.PUBLIC_EXPONENT], "big")
            key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
            if key.key_size < MIN_RSA_BITS:
                raise InvalidKey(f"RSA key of {key.key_size} bits is below the {MIN_RSA_BITS}-bit minimum")
            return key, rsa_alg
        params = bytes(public_key[Attribute.EC_PARAMS])
        point = bytes(public_key[Attribute.EC_POINT])
        if key_type == KeyType.EC:
            curve = _EC_PARAMS_TO_CURVE.get(params)
            if curve is None:
                raise InvalidKey("EC key on an unsupported curve")
            size = EC_CURVES[curve]().key_size
            raw = _unwrap_point(point, 2 * ((size + 7) // 8) + 1)
            alg = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[curve]
            return ec.EllipticCurvePublicKey.from_encoded_point(EC_CURVES[curve](), raw), alg
        if key_type == KeyType.EC_EDWARDS and params in _ED25519_NAMES:
            return ed25519.Ed25519PublicKey.from_public_bytes(_unwrap_point(point, 32)), "EdDSA"
        raise InvalidKey(f"unsupported key type {key_type!r}")

    # -- generation and deletion -------------------------------------------

    def generate(self, key_set: str, alg: str, *, rsa_bits: int) -> KeyRecord:
        """Generate a non-extractable signing key pair for ``key_set`` on the token."""
        algorithm = get_algorithm(alg)
        kid = str(uuid.uuid4())

        def find() -> KeyRecord | None:
            for record in self.records(key_set, rsa_alg=alg if algorithm.is_rsa else "RS256"):
                if record.kid == kid:
                    return record
            return None

        def generate() -> KeyRecord:
            # This runs again after a lost session, and the first run may have
            # stored the pair before the session went: never make a second one.
            record = find()
            if record is None:
                self._generate_pair(algorithm, self.label(key_set), kid.encode("ascii"), rsa_bits)
                record = find()
            if record is None:
                raise self._error(f"generated key {kid} of {self.label(key_set)!r} cannot be found on the token")
            return record

        try:
            return self._call(generate)
        except PKCS11Error as exc:
            # The token's refusal (a key size or curve it does not support, a full
            # token, ...) would otherwise surface as a bare, often empty, PKCS#11
            # exception: say what was being generated, and where.
            size = f" of {rsa_bits} bits" if algorithm.is_rsa else ""
            raise self._error(
                f"cannot generate the {alg} key pair{size} labelled {self.label(key_set)!r} ({type(exc).__name__})"
            ) from exc

    def _generate_pair(self, algorithm: Algorithm, label: str, cka_id: bytes, rsa_bits: int) -> None:
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        }
        common = dict(
            id=cka_id, label=label, store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template=public_template, private_template=private_template,
        )
        if algorithm.is_rsa:
            if rsa_bits < MIN_RSA_BITS:
                raise InvalidKey(f"RSA keys need at least {MIN_RSA_BITS} bits, not {rsa_bits}")
            self._session.generate_keypair(KeyType.RSA, rsa_bits, **common)
        elif algorithm.is_ecdsa:
            assert algorithm.curve is not None
            params = self._session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_OIDS[algorithm.curve])},
                local=True,
            )
            params.generate_keypair(**common)
        else:
            params = self._session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_OID}, local=True
            )
            params.generate_keypair(mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, **common)

    def destroy(self, key_set: str, kid: str) -> bool:
        """Destroy both halves of a key pair; False when there was none."""
        def destroy() -> bool:
            self._pairs.pop((key_set, kid), None)
            # Logged out, the private half would be invisible and only the public
            # half destroyed: make sure of the login before searching.
            self._confirm_logged_in()
            destroyed = False
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for obj in list(self._session.get_objects(
                    {Attribute.CLASS: object_class, Attribute.LABEL: self.label(key_set)}
                )):
                    if kid_from_id(bytes(obj[Attribute.ID] or b"")) == kid:
                        obj.destroy()
                        destroyed = True
            return destroyed

        return self._call(destroy)

    # -- signing ------------------------------------------------------------

    def signer(self, record: KeyRecord) -> Signer:
        algorithm = get_algorithm(record.alg)
        return BoundSigner(record, lambda data: self.sign(record, algorithm, data))

    def sign(self, record: KeyRecord, algorithm: Algorithm, data: bytes) -> bytes:
        if algorithm.is_ecdsa:
            # No CKM_ECDSA_SHA* on SoftHSM: hash here, sign the digest.  The token
            # returns raw r||s, which is already the JWS signature.
            data = algorithm.digest(data)
        mechanism, parameter = _MECHANISMS[algorithm.name]

        def sign() -> bytes:
            pair = self._pairs.get((record.key_set, record.kid))
            if pair is None:
                self.records(record.key_set, rsa_alg=record.alg if algorithm.is_rsa else "RS256")
                pair = self._pairs.get((record.key_set, record.kid))
                if pair is None:
                    raise KeyNotFound(f"key {record.kid!r} of {record.key_set!r} is no longer on the token")
            return bytes(pair.private_key.sign(data, mechanism=mechanism, mechanism_param=parameter))

        return self._call(sign)


def _attribute(obj: Any, attribute: Attribute) -> Any:
    try:
        return obj[attribute]
    except PKCS11Error:
        return None


_PSS = {
    "PS256": (Mechanism.SHA256, pkcs11.MGF.SHA256, 32),
    "PS384": (Mechanism.SHA384, pkcs11.MGF.SHA384, 48),
    "PS512": (Mechanism.SHA512, pkcs11.MGF.SHA512, 64),
}

_MECHANISMS: dict[str, tuple[Mechanism, Any]] = {
    "RS256": (Mechanism.SHA256_RSA_PKCS, None),
    "RS384": (Mechanism.SHA384_RSA_PKCS, None),
    "RS512": (Mechanism.SHA512_RSA_PKCS, None),
    "PS256": (Mechanism.SHA256_RSA_PKCS_PSS, _PSS["PS256"]),
    "PS384": (Mechanism.SHA384_RSA_PKCS_PSS, _PSS["PS384"]),
    "PS512": (Mechanism.SHA512_RSA_PKCS_PSS, _PSS["PS512"]),
    "ES256": (Mechanism.ECDSA, None),
    "ES384": (Mechanism.ECDSA, None),
    "ES512": (Mechanism.ECDSA, None),
    "EdDSA": (Mechanism.EDDSA, None),
}
