"""The HSM key manager: key pairs on a PKCS#11 token (python-pkcs11).

It stands on the connection supervisor (:class:`keys.connection.TokenConnection`),
which holds the one logged-in session of the process and applies the failure
model to every call; this module finds, describes, generates, destroys and signs
with the key pairs, choosing each algorithm's mechanism from the token's own list
(:mod:`keys.mechanisms`).  No raw ``PKCS11Error`` leaves either module: callers see
:class:`HSMError` subclasses.

Attribute mapping is Ory Hydra's: ``CKA_LABEL`` is the (prefixed) key set name,
``CKA_ID`` the kid; the public and private objects of a pair share both.
"""

from __future__ import annotations

import logging
import os
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asn1crypto.core import OctetString
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pkcs11 import KDF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as ckr
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters

from keys.algorithms import (
    ALG_FOR_CURVE,
    EC_CURVES,
    ENCRYPTION_ALGORITHMS,
    MIN_RSA_BITS,
    SEC_NAME_FOR_CURVE,
    Algorithm,
    decryption_description,
    get_algorithm,
    key_algorithm,
)
from keys.connection import (
    AVAILABLE,
    CALLER,
    MODULE,
    PKCS11_LOCK,
    SESSION,
    UNAVAILABLE,
    UNOPENED,
    HSMConfig,
    TokenConnection,
    ckr_name,
    classify,
)
from keys.errors import HSMOperationError, InvalidKey, KeyNotFound, MechanismUnsupported, WrongKeyUse
from keys.evidence import KeyEvidence, TokenLocation
from keys.jwk import PublicKey, load_public_jwk, public_jwk
from keys.mechanisms import (
    GENERATION_MECHANISMS,
    OAEP_PARAMETERS,
    SigningPlan,
    check_decryption,
    check_generation,
    choose,
    mechanism_name,
)
from keys.signer import BoundSigner, KeyRecord, Signer

log = logging.getLogger(__name__)

BACKEND = "hsm"

#: DER of the named-curve OIDs, as found in CKA_EC_PARAMS.
_EC_PARAMS_TO_CURVE = {encode_named_curve_parameters(oid): crv for crv, oid in SEC_NAME_FOR_CURVE.items()}
#: Ed25519 in CKA_EC_PARAMS: the OID 1.3.101.112, or the PrintableString "edwards25519"
#: that some PKCS#11 v2.40 tokens use.
_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_NAMES = {_ED25519_OID, b"\x13\x0cedwards25519"}


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
    point: bytes = OctetString.load(ec_point).native
    return point


@dataclass
class _KeyPair:
    record: KeyRecord
    private_key: Any  # pkcs11 PrivateKey handle, valid while the session lives



class HSMManager(TokenConnection):
    """Key pairs on one PKCS#11 token, through the supervisor's single logged-in session."""

    backend = BACKEND

    def __init__(self, config: HSMConfig, *, on_event: Callable[[str, str | None], None] | None = None) -> None:
        super().__init__(config, on_event=on_event)
        self._pairs: dict[tuple[str, str], _KeyPair] = {}
        self._plans: dict[tuple[str, int | None], SigningPlan] = {}
        #: Private keys found extractable or not sensitive: (key set, kid) -> what is wrong.
        self.weak_keys: dict[tuple[str, str], str] = {}
        self._warned: set[tuple[str, str]] = set()
        #: The OAEP hashes this token decrypts with (tried once, see :meth:`oaep_hashes`).
        self._oaep_hashes: tuple[str, ...] | None = None

    def _forget_handles(self) -> None:
        self._pairs.clear()


    def label(self, key_set: str) -> str:
        return self.config.key_set_prefix + key_set

    # -- mechanisms -----------------------------------------------------------

    def signing_plan(self, alg: str, *, key_bits: int | None = None) -> SigningPlan:
        """How this token signs ``alg`` (chosen once per process from its mechanism list)."""
        key = (alg, key_bits)
        plan = self._plans.get(key)
        if plan is None:
            if self._mechanisms is None:
                self._call(lambda: None, "reading the mechanism list")
            assert self._mechanisms is not None
            plan = choose(get_algorithm(alg), self._mechanisms, key_bits=key_bits)
            self._plans[key] = plan
        return plan

    def check_algorithm(
        self, key_set: str, alg: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None
    ) -> SigningPlan:
        """Refuse a set whose algorithm this token cannot sign (or generate): one line naming all three.

        ``key_bits``: the size of an RSA key already on the token, checked
        against the mechanism's key size range too.
        """
        algorithm = get_algorithm(alg)
        where = f"PKCS#11 module {self.config.library}, {self.config.describe_token()}"
        if generate:
            assert self._mechanisms is not None
            try:
                check_generation(algorithm, self._mechanisms, rsa_bits=rsa_bits)
            except MechanismUnsupported as exc:
                size = f" of {rsa_bits} bits" if algorithm.is_rsa else ""
                raise MechanismUnsupported(
                    f"{where}: cannot generate the {alg} key pair{size} labelled {self.label(key_set)!r}: {exc}"
                ) from None
        try:
            return self.signing_plan(alg, key_bits=key_bits)
        except MechanismUnsupported as exc:
            raise MechanismUnsupported(f"{where}: key set {self.label(key_set)!r} cannot sign {alg}: {exc}") from None

    def check_decryption(self, key_set: str, *, generate: bool, rsa_bits: int, key_bits: int | None = None,
                         alg: str = "RSA-OAEP-256") -> str:
        """Refuse a decryption set this token cannot generate or decrypt for; the mechanism's name."""
        where = f"PKCS#11 module {self.config.library}, {self.config.describe_token()}"
        if self._mechanisms is None:
            self._call(lambda: None, "reading the mechanism list")
        assert self._mechanisms is not None
        try:
            if generate:
                check_generation(ENCRYPTION_ALGORITHMS[alg], self._mechanisms, rsa_bits=rsa_bits)
            check_decryption(self._mechanisms, key_bits=key_bits if key_bits is not None else rsa_bits, alg=alg)
        except MechanismUnsupported as exc:
            raise MechanismUnsupported(f"{where}: key set {self.label(key_set)!r} cannot decrypt {alg}: {exc}") from None
        return "CKM_ECDH1_DERIVE" if alg == "ECDH-ES" else "CKM_RSA_PKCS_OAEP"

    # -- key discovery ------------------------------------------------------

    def records(self, key_set: str, *, rsa_alg: str = "RS256", okp_alg: str = "EdDSA") -> list[KeyRecord]:
        """Every usable key pair labelled for ``key_set`` on the token.

        ``rsa_alg`` and ``okp_alg`` are the algorithms RSA and Ed25519 keys are
        published with (the token only says "RSA" or "EC_EDWARDS").
        """
        def find() -> list[KeyRecord]:
            found = []
            # Searches cannot nest: finish this one before looking up each public key.
            private_keys = list(self._session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: self.label(key_set)}
            ))
            if not private_keys:
                self._confirm_logged_in()  # "none" must not mean "not logged in"
            for private_key in private_keys:
                pair = self._describe(key_set, private_key, rsa_alg, okp_alg)
                if pair is not None:
                    self._pairs[(key_set, pair.record.kid)] = pair
                    found.append(pair.record)
            return sorted(found, key=lambda record: record.kid)

        return self._call(find, f"finding the key pairs of {self.label(key_set)!r}")

    def _warn_once(self, key: tuple[str, str], message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _describe(self, key_set: str, private_key: Any, rsa_alg: str, okp_alg: str) -> _KeyPair | None:
        cka_id = bytes(private_key[Attribute.ID] or b"")
        kid = kid_from_id(cka_id)
        weakness = _weakness(private_key)
        if weakness:
            self.weak_keys[(key_set, kid)] = weakness
            if not self.config.allow_extractable_keys:
                self._warn_once((key_set, kid), "key %s/%s refused: its private key is %s (HSM keys must be "
                                "CKA_SENSITIVE and not CKA_EXTRACTABLE)", key_set, kid, weakness)
                return None
            self._warn_once((key_set, kid), "key %s/%s ADOPTED ALTHOUGH its private key is %s, because "
                            "HSM_ALLOW_EXTRACTABLE_KEYS is true: it can leave the token", key_set, kid, weakness)
        public_key = self._find_public(key_set, cka_id)
        if public_key is None:
            self._warn_once((key_set, kid), "key %s/%s has no public key object with its label and id; skipped",
                            key_set, kid)
            return None
        try:
            key, alg = self._public_key(public_key, rsa_alg, okp_alg)
        except InvalidKey as exc:
            self._warn_once((key_set, kid), "key %s/%s is not usable: %s", key_set, kid, exc)
            return None
        use = "sig" if _attribute(private_key, Attribute.SIGN) else (
            "enc" if _attribute(private_key, Attribute.DECRYPT) or _attribute(private_key, Attribute.DERIVE) else "sig"
        )
        if use == "enc" and isinstance(key, ec.EllipticCurvePublicKey):
            if alg != "ES256":
                self._warn_once((key_set, kid), "key %s/%s is not usable: ECDH-ES keys are on P-256", key_set, kid)
                return None
            alg = "ECDH-ES"  # an EC key that derives: the one EC key-agreement algorithm offered
        record = KeyRecord(
            key_set=key_set, kid=kid, alg=alg, use=use, backend=BACKEND,
            public_jwk=public_jwk(key, kid=kid, alg=alg, use=use),
        )
        return _KeyPair(record, private_key)

    def _find_public(self, key_set: str, cka_id: bytes) -> Any:
        # By label *and* id: an id alone could pick another set's public key (or
        # an object planted with the same id), and publish a key that is not this one's.
        matches = list(self._session.get_objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: self.label(key_set), Attribute.ID: cka_id}
        ))  # run the search to its end
        return matches[0] if matches else None

    @staticmethod
    def _public_key(public_key: Any, rsa_alg: str, okp_alg: str = "EdDSA") -> tuple[PublicKey, str]:
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
            alg = ALG_FOR_CURVE[curve]
            return ec.EllipticCurvePublicKey.from_encoded_point(EC_CURVES[curve](), raw), alg
        if key_type == KeyType.EC_EDWARDS and params in _ED25519_NAMES:
            return ed25519.Ed25519PublicKey.from_public_bytes(_unwrap_point(point, 32)), okp_alg
        raise InvalidKey(f"unsupported key type {key_type!r}")

    # -- generation and deletion -------------------------------------------

    def generate(self, key_set: str, alg: str, *, rsa_bits: int) -> KeyRecord:
        """Generate a non-extractable key pair for ``key_set`` on the token: a signing one, or for a
        key-encryption ``alg`` a decryption one (``CKA_DECRYPT``, never ``CKA_SIGN``)."""
        algorithm = key_algorithm(alg)
        kid = str(uuid.uuid4())
        size = f" of {rsa_bits} bits" if algorithm.is_rsa else ""
        what = f"the {alg} key pair{size} labelled {self.label(key_set)!r}"
        self._check_can_generate(algorithm, rsa_bits, what)

        def find() -> KeyRecord | None:
            for record in self.records(key_set, rsa_alg=alg if algorithm.is_rsa else "RS256",
                                       okp_alg=alg if algorithm.is_eddsa else "EdDSA"):
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

        mechanism = GENERATION_MECHANISMS[algorithm.kty]
        try:
            return self._call(generate, f"generation of {what}", mechanism, bounded=False)
        except HSMOperationError as exc:
            # The token's refusal (a key size or curve it does not support, a full
            # token, ...): say what was being generated, and where.
            raise self._error(f"cannot generate {what} with {mechanism_name(mechanism)} ({exc.code})") from exc

    def _check_can_generate(self, algorithm: Algorithm, rsa_bits: int, what: str) -> None:
        """Refuse a key the provider does not accept, or one the token has no mechanisms for."""
        if algorithm.is_rsa and rsa_bits < MIN_RSA_BITS:
            raise InvalidKey(f"RSA keys need at least {MIN_RSA_BITS} bits, not {rsa_bits}")
        if self._mechanisms is not None:
            try:
                check_generation(algorithm, self._mechanisms, rsa_bits=rsa_bits)
            except MechanismUnsupported as exc:
                raise self._error(f"cannot generate {what} ({exc})") from None

    def _generate_pair(self, algorithm: Algorithm, label: str, cka_id: bytes, rsa_bits: int) -> None:
        # One use per key pair (RFC 7517 §4.2; PKCS#11 v2.40 §4.9): a signing key cannot decrypt, and a
        # decryption key can neither sign nor unwrap (it decrypts content keys with C_Decrypt, whose result
        # is checked here; an unwrapped key would be a token object to account for).
        decrypts = algorithm.use == "enc"
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: not decrypts,
                           Attribute.ENCRYPT: decrypts and algorithm.is_rsa, Attribute.WRAP: False}
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: not decrypts,
            Attribute.DECRYPT: decrypts and algorithm.is_rsa,  # RSAES-OAEP
            Attribute.UNWRAP: False,
            Attribute.DERIVE: decrypts and not algorithm.is_rsa,  # ECDH-ES
        }
        if not decrypts:
            capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY
        elif algorithm.is_rsa:
            capabilities = MechanismFlag.DECRYPT | MechanismFlag.ENCRYPT
        else:
            capabilities = MechanismFlag.DERIVE
        common = {
            "id": cka_id, "label": label, "store": True,
            "capabilities": capabilities,
            "public_template": public_template, "private_template": private_template,
        }
        if algorithm.is_rsa:
            self._session.generate_keypair(KeyType.RSA, rsa_bits, **common)
        elif algorithm.is_ecdsa:
            assert algorithm.curve is not None
            params = self._session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(SEC_NAME_FOR_CURVE[algorithm.curve])},
                local=True,
            )
            params.generate_keypair(**common)
        else:
            params = self._session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_OID}, local=True
            )
            params.generate_keypair(mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, **common)

    def delete(self, key_set: str, kid: str) -> bool:
        """Destroy both halves of a key pair on the token; False when there was none."""
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

        return self._call(destroy, f"destruction of key {kid!r} of {self.label(key_set)!r}")

    # -- signing ------------------------------------------------------------

    def signer(self, record: KeyRecord) -> Signer:
        if record.use != "sig":
            raise WrongKeyUse(f"key {record.kid!r} of {self.label(record.key_set)!r} is a decryption key "
                              f"(use {record.use!r}): it never signs")
        algorithm = get_algorithm(record.alg)
        return BoundSigner(record, lambda data: self.sign(record, algorithm, data))

    def sign(self, record: KeyRecord, algorithm: Algorithm, data: bytes) -> bytes:
        """JWS signature bytes over ``data``, with the mechanism chosen for this token."""
        if record.use != "sig":
            raise WrongKeyUse(f"key {record.kid!r} of {self.label(record.key_set)!r} never signs (use {record.use!r})")
        if not self.available and self._mechanisms is None:
            self._call(lambda: None, "opening the token")
        try:
            plan = self.signing_plan(algorithm.name)
        except MechanismUnsupported as exc:
            raise MechanismUnsupported(f"key {record.kid!r} of {self.label(record.key_set)!r}: {exc}") from None
        message = plan.prepare(data)

        def sign() -> bytes:
            pair = self._pair(record, algorithm)
            return bytes(pair.private_key.sign(message, mechanism=plan.mechanism, mechanism_param=plan.parameter))

        return self._call(sign, f"signature with key {record.kid!r} of {self.label(record.key_set)!r}", plan.mechanism)

    # -- decryption -----------------------------------------------------------

    def decrypter(self, record: KeyRecord) -> Callable[[bytes], bytes | None]:
        """RSAES-OAEP decryption of a JWE encrypted key with ``record``'s private key, on the token."""
        if record.use != "enc":
            raise WrongKeyUse(f"key {record.kid!r} of {self.label(record.key_set)!r} is a signing key "
                              f"(use {record.use!r}): it never decrypts")
        algorithm = key_algorithm(record.alg)
        if algorithm.hash_name is None:  # ECDH-ES: the shared secret with the JWE's ephemeral public key
            return lambda point: self.derive(record, point)
        hash_name = algorithm.hash_name
        return lambda encrypted_key: self.decrypt(record, encrypted_key, hash_name)

    def derive(self, record: KeyRecord, point: bytes) -> bytes | None:
        """The ECDH shared secret Z of ``record``'s private key and the uncompressed P-256 ``point``
        (``C_DeriveKey`` with ``CKM_ECDH1_DERIVE``, no KDF: RFC 7518 §4.6 applies the Concat KDF to Z,
        in software).  Z comes out as the value of a session object made for it, destroyed at once."""
        algorithm = key_algorithm(record.alg)

        def derive() -> bytes | None:
            pair = self._pair(record, algorithm)
            try:
                secret = pair.private_key.derive_key(
                    KeyType.GENERIC_SECRET, 256, mechanism=Mechanism.ECDH1_DERIVE,
                    mechanism_param=(KDF.NULL, None, point),
                    template={Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
            except _CIPHERTEXT_REFUSED + (ckr.ArgumentsBad, ckr.DomainParamsInvalid, ckr.MechanismParamInvalid):
                self._confirm_logged_in()
                return None
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()

        return self._call(derive, f"key agreement with key {record.kid!r} of {self.label(record.key_set)!r}",
                          Mechanism.ECDH1_DERIVE)

    def decrypt(self, record: KeyRecord, encrypted_key: bytes, hash_name: str) -> bytes | None:
        """``C_Decrypt`` with ``CKM_RSA_PKCS_OAEP`` (``hash_name`` and MGF1 with it); None when the token
        refuses the ciphertext.

        A refused ciphertext is the sender's problem, not the token's: it must not
        set off the failure model (for bad OAEP padding SoftHSM, and p11-kit in front
        of it, answer ``CKR_GENERAL_ERROR``, openCryptoki ``CKR_FUNCTION_FAILED``: both
        would otherwise reopen the session, even re-initialise the module or mark the
        token lost, for every forged token).  So the refusal is
        caught here, and the session is proven alive instead (a token that is
        really gone fails that, and the failure model takes over as for a signature).
        """
        parameter = OAEP_PARAMETERS[hash_name]
        algorithm = key_algorithm(record.alg)

        def decrypt() -> bytes | None:
            pair = self._pair(record, algorithm)
            try:
                return bytes(pair.private_key.decrypt(encrypted_key, mechanism=Mechanism.RSA_PKCS_OAEP,
                                                      mechanism_param=parameter))
            except _CIPHERTEXT_REFUSED:
                self._confirm_logged_in()
                return None

        return self._call(decrypt, f"decryption with key {record.kid!r} of {self.label(record.key_set)!r}",
                          Mechanism.RSA_PKCS_OAEP)

    def oaep_hashes(self, record: KeyRecord) -> tuple[str, ...]:
        """The OAEP hashes (``sha256``, ``sha1``) this token decrypts with, tried once per process with
        ``record``'s key: a value encrypted to its public key here, decrypted there.

        The mechanism list cannot say (SoftHSM 2.6 lists ``CKM_RSA_PKCS_OAEP`` and
        refuses any hash but SHA-1 with ``CKR_ARGUMENTS_BAD``).
        """
        if self._oaep_hashes is not None:
            return self._oaep_hashes
        public_key = load_public_jwk(record.public_jwk)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidKey(f"key {record.kid!r} of {self.label(record.key_set)!r} is not an RSA key")
        working = []
        for hash_name in OAEP_PARAMETERS:
            probe = os.urandom(32)
            digest = key_algorithm("RSA-OAEP-256" if hash_name == "sha256" else "RSA-OAEP").cryptography_hash()
            encrypted = public_key.encrypt(probe, padding.OAEP(padding.MGF1(digest), digest, None))
            try:
                if self.decrypt(record, encrypted, hash_name) == probe:
                    working.append(hash_name)
            except HSMOperationError as exc:  # CKR_ARGUMENTS_BAD, CKR_MECHANISM_PARAM_INVALID: not this hash
                log.info("the token does not decrypt RSAES-OAEP with %s (%s)", hash_name.upper(), exc.code)
        self._oaep_hashes = tuple(working)
        return self._oaep_hashes

    def decryption_description(self, record: KeyRecord) -> str:
        return decryption_description(record.alg)

    def _pair(self, record: KeyRecord, algorithm: Algorithm) -> _KeyPair:
        """The handles of ``record``'s pair, looked up again after a new session (run inside ``_call``)."""
        pair = self._pairs.get((record.key_set, record.kid))
        if pair is None:
            self.records(record.key_set, rsa_alg=record.alg if algorithm.is_rsa else "RS256",
                         okp_alg=record.alg if algorithm.is_eddsa else "EdDSA")
            pair = self._pairs.get((record.key_set, record.kid))
            if pair is None:
                raise KeyNotFound(f"key {record.kid!r} of {record.key_set!r} is no longer on the token")
        return pair

    # -- evidence -------------------------------------------------------------

    def evidence(self, record: KeyRecord) -> KeyEvidence:
        """Where ``record``'s private key is and what the token says protects it (see :mod:`keys.evidence`).

        Read under the process lock with the failure model of every operation:
        a stale session is reopened and the attributes read again.
        """
        algorithm = key_algorithm(record.alg)

        def read() -> tuple[dict[str, bool | None], dict[str, bool | None], str | None, TokenLocation]:
            private_key = self._pair(record, algorithm).private_key
            attributes = {name: _flag(private_key, attribute) for name, attribute in _EVIDENCE_ATTRIBUTES.items()}
            attributes.update({name: _flag(private_key, attribute) for name, attribute in _USE_ATTRIBUTES.items()})
            capabilities = {name: attributes.pop(name) for name in _USE_ATTRIBUTES}
            generated_with = _optional_attribute(private_key, Attribute.KEY_GEN_MECHANISM)
            key_gen = mechanism_name(generated_with) if generated_with is not None else None
            return attributes, capabilities, key_gen, self._location()

        attributes, capabilities, key_gen_mechanism, location = self._call(
            read, f"reading the attributes of key {record.kid!r} of {self.label(record.key_set)!r}")
        if algorithm.use == "enc":
            return KeyEvidence(
                key_set=record.key_set, kid=record.kid, alg=record.alg, backend=BACKEND, location=location.as_dict(),
                attributes=attributes, capabilities=capabilities, key_gen_mechanism=key_gen_mechanism, use="enc",
                decryption_mechanism="CKM_ECDH1_DERIVE" if algorithm.is_ecdsa else "CKM_RSA_PKCS_OAEP",
                decryption_mechanism_description=self.decryption_description(record),
            )
        try:
            plan: SigningPlan | None = self.signing_plan(record.alg)
        except MechanismUnsupported:
            plan = None
        return KeyEvidence(
            key_set=record.key_set, kid=record.kid, alg=record.alg, backend=BACKEND, location=location.as_dict(),
            attributes=attributes, capabilities=capabilities, key_gen_mechanism=key_gen_mechanism,
            signing_mechanism=plan.mechanism_name if plan else None,
            signing_mechanism_description=(plan.description or plan.mechanism_name) if plan else None,
        )

    def _location(self) -> TokenLocation:
        token, slot = self._token, self._slot
        return TokenLocation(
            library=self.config.library, slot_id=int(slot.slot_id), slot_description=_text(slot.slot_description),
            token_label=_text(token.label), serial=_text(token.serial), model=_text(token.model),
            manufacturer=_text(token.manufacturer_id), name=self.config.name,
        )


#: What tokens answer for a ciphertext that does not decrypt (PKCS#11 v2.40 §5.2 names the first two;
#: SoftHSM 2.6 says CKR_GENERAL_ERROR, openCryptoki 3 CKR_FUNCTION_FAILED).
_CIPHERTEXT_REFUSED = (ckr.EncryptedDataInvalid, ckr.EncryptedDataLenRange, ckr.DataInvalid, ckr.DataLenRange,
                       ckr.GeneralError, ckr.FunctionFailed)


def _attribute(obj: Any, attribute: Attribute) -> Any:
    try:
        return obj[attribute]
    except PKCS11Error:
        return None


#: The private key attributes reported as evidence (PKCS#11 v2.40 §4.4, §4.9).
_EVIDENCE_ATTRIBUTES: dict[str, Attribute] = {
    "CKA_LOCAL": Attribute.LOCAL,
    "CKA_SENSITIVE": Attribute.SENSITIVE,
    "CKA_ALWAYS_SENSITIVE": Attribute.ALWAYS_SENSITIVE,
    "CKA_EXTRACTABLE": Attribute.EXTRACTABLE,
    "CKA_NEVER_EXTRACTABLE": Attribute.NEVER_EXTRACTABLE,
}


#: What a private key may do, reported beside the evidence: one use per key (a signing key never
#: decrypts, a decryption key never signs).
_USE_ATTRIBUTES: dict[str, Attribute] = {
    "CKA_SIGN": Attribute.SIGN,
    "CKA_DECRYPT": Attribute.DECRYPT,
    "CKA_UNWRAP": Attribute.UNWRAP,
    "CKA_DERIVE": Attribute.DERIVE,
}


def _optional_attribute(obj: Any, attribute: Attribute) -> Any:
    """An attribute's value, or None where the token does not have it.

    Unlike :func:`_attribute`, a stale session or a lost device is raised, so
    that the caller's ``_call`` reopens the session and reads again.
    """
    try:
        return obj[attribute]
    except PKCS11Error as exc:
        if classify(exc) != CALLER:
            raise
        return None  # CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_SENSITIVE: the token does not say
    except ValueError:
        return None  # CK_UNAVAILABLE_INFORMATION, which python-pkcs11 cannot map to a mechanism


def _flag(obj: Any, attribute: Attribute) -> bool | None:
    value = _optional_attribute(obj, attribute)
    return value if isinstance(value, bool) else None


def _text(value: Any) -> str:
    """A token or slot description field: blank-padded text, or bytes of it."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


def _weakness(private_key: Any) -> str:
    """What makes a private key exportable, or "" (PKCS#11 v2.40 §4.9: CKA_SENSITIVE, CKA_EXTRACTABLE)."""
    problems = []
    if _attribute(private_key, Attribute.EXTRACTABLE) is not False:
        problems.append("extractable")
    if _attribute(private_key, Attribute.SENSITIVE) is not True:
        problems.append("not sensitive")
    return " and ".join(problems)



__all__ = [
    "AVAILABLE", "BACKEND", "CALLER", "MODULE", "PKCS11_LOCK", "SESSION", "UNAVAILABLE", "UNOPENED",
    "HSMConfig", "HSMManager", "ckr_name", "classify", "kid_from_id",
]
