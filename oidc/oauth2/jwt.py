"""JWTs this provider issues and verifies, signed through the key service only.

A JWS is ``b64url(header) . b64url(claims) . b64url(signer.sign(signing_input))``,
built by the key service's one builder (:func:`keys.jws.compact_jws`, also used
by its self-test): the private key never leaves the manager (HSM or sealed
software key) that holds it, and Authlib is never given a private key.

* ID tokens (OIDC Core §2) are signed with the ``openid.id-token`` key set.
* Access tokens are RFC 9068 JWTs (header ``typ: at+jwt``) signed with the
  ``jwt.access-token`` key set.
* JARM authorization responses, signed userinfo responses (OIDC Core §5.3.2) and
  JWT introspection responses (RFC 9701, ``typ: token-introspection+jwt``) are
  signed with the ``openid.id-token`` key set, the set whose keys clients already
  trust for what the provider says to them (:func:`sign_response`).  Each kind
  is told from the others by its ``typ`` and its claims (:data:`ARTEFACTS`), so
  that none is ever accepted as another: a JARM response has no ``sub``, a
  signed userinfo response no ``exp``, an ID token both.

``at_hash`` (OIDC Core §3.1.3.6) is Authlib's ``create_half_hash``: the left
half of the hash of the access token's ASCII octets, the hash being the one of
the ID token's ``alg`` (SHA-256 for RS256/PS256/ES256, SHA-384 and SHA-512
likewise); for ``EdDSA`` (RFC 8037) and ``Ed25519`` (RFC 9864), whose signature
has no separate hash, the convention OIDC implementations follow: SHA-512,
whose left half is 32 bytes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authlib.oidc.core.util import create_half_hash
from joserfc.errors import JoseError, MissingClaimError
from joserfc.jwk import import_key
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry
from joserfc.util import urlsafe_b64decode

from keys import EDDSA_ALGORITHMS, KeyServiceError, Signer, compact_jws
from oidc.hashing import b64url_decode, is_b64url, random_token
from oidc.state import State, current_state
from oidc.vocabulary import (
    ACCESS_TOKEN_SET,
    ACCESS_TOKEN_TYP,
    FAPI2_ALGORITHMS,
    ID_TOKEN_SET,
    ID_TOKEN_TYP,
    INTROSPECTION_TYP,
    JARM_TYP,
    USERINFO_TYP,
)

#: Longest token we try to parse.
MAX_TOKEN_LENGTH = 16384


@dataclass(frozen=True, slots=True)
class Signed:
    """A JWT this provider signed: the token, and what an audit line names of it (``typ``, ``kid``, claims)."""

    token: str
    typ: str
    kid: str
    alg: str
    claims: dict[str, Any]


def _signer(key_set: str, state: State | None = None) -> Signer:
    """The active signer of ``key_set``, refused when the FAPI 2.0 profile does not allow its alg
    (``state``: the app's, when the caller has it)."""
    state = current_state(state)  # once: the key service and the setting are both the state's
    signer = state.key_service().signer(key_set)
    if signer.alg not in FAPI2_ALGORITHMS and state.settings.fapi2:
        # A key imported or activated after start-up (see State.check_profile_algorithms).
        raise KeyServiceError(f"key set {key_set!r} signs with {signer.alg}, which SECURITY_PROFILE=fapi2 refuses")
    return signer


def _sign(signer: Signer, claims: dict[str, Any], typ: str) -> Signed:
    return Signed(compact_jws(signer, claims, typ), typ, signer.kid, signer.alg, claims)


def sign_jwt(key_set: str, claims: dict[str, Any], typ: str) -> Signed:
    """A compact JWS of ``claims`` signed by the active key of ``key_set``."""
    return _sign(_signer(key_set), claims, typ)


def same_algorithm(registered: str, alg: str) -> bool:
    """Whether a client's registered ``alg`` names the signature ``alg`` (EdDSA has two names)."""
    return registered == alg or (registered in EDDSA_ALGORITHMS and alg in EDDSA_ALGORITHMS)


def sign_response(claims: dict[str, Any], typ: str, registered_alg: str | None) -> Signed:
    """A response to a client (JARM, userinfo, introspection) signed with the ``openid.id-token`` set.

    ``registered_alg`` is the algorithm the client registered for it (None: the
    set's own); registration accepts only the set's algorithms, so a mismatch
    means the set's algorithm changed since, and the response is refused
    rather than signed with an algorithm the client will not accept.
    """
    signer = _signer(ID_TOKEN_SET)
    if registered_alg is not None and not same_algorithm(registered_alg, signer.alg):
        raise KeyServiceError(f"key set {ID_TOKEN_SET!r} signs with {signer.alg}, but the client "
                              f"registered {registered_alg} for its signed responses")
    return _sign(signer, claims, typ)


def half_hash(value: str, alg: str) -> str:
    """``at_hash`` of ``value`` for a JWS ``alg`` (OIDC Core §3.1.3.6).

    Authlib knows Ed25519 signatures by their RFC 8037 name only; RFC 9864's
    ``Ed25519`` is the same signature, so it gets the same (SHA-512) half hash.
    """
    half: bytes = create_half_hash(value, "EdDSA" if alg in EDDSA_ALGORITHMS else alg)
    return half.decode("ascii")


def issue_access_token(state: State, *, client_id: str, subject: str, scope: str, audience: list[str],
                       lifetime: int, extra: dict[str, Any] | None = None) -> Signed:
    """An RFC 9068 access token (with its claims and kid), issued by ``state``'s issuer, clock and keys."""
    moment = state.clock.now()
    claims: dict[str, Any] = {
        "iss": state.settings.issuer,
        "sub": subject,
        "aud": audience[0] if len(audience) == 1 else audience,
        "client_id": client_id,
        "iat": moment,
        "exp": moment + lifetime,
        "jti": random_token(18),
        "scope": scope,
    }
    if extra:
        claims.update(extra)
    return _sign(_signer(ACCESS_TOKEN_SET, state), claims, ACCESS_TOKEN_TYP)


def issue_id_token(claims: dict[str, Any], access_token: str | None, state: State | None = None) -> Signed:
    """Sign an ID token; ``at_hash`` is computed for the alg of the key that signs it
    (``state``: the app's, when the caller has it).

    The signer is resolved once, so the hash and the signature are of the same key
    even when the active key changes meanwhile (a rotation, another token taking over).
    """
    signer = _signer(ID_TOKEN_SET, state)
    if access_token is not None:
        claims = {**claims, "at_hash": half_hash(access_token, signer.alg)}
    return _sign(signer, claims, ID_TOKEN_TYP)


# -- verifying our own tokens ----------------------------------------------------------


class InvalidToken(Exception):
    """A token that is not one of ours, is malformed, or fails verification."""


class _OwnClaimsRegistry(JWTClaimsRegistry):
    """joserfc's claims registry, its ``validate`` with what depends only on the options found once.

    joserfc's ``validate`` gathers the essential claims (a property, a set built on each call)
    and looks each claim's ``validate_<name>`` up by a name built on each call; a registry
    serves every request with the same options (:func:`_claims_registry`), so both are made
    when it is built.  The checks themselves, their order and their errors are joserfc's.
    """

    def __init__(self, now: Callable[[], int], leeway: int, **options: Any) -> None:
        super().__init__(now=now, leeway=leeway, **options)
        self._essential = sorted(self.essential_keys)
        prefix = "validate_"
        self._validators: dict[str, Callable[[Any], None]] = {
            name[len(prefix):]: getattr(self, name) for name in dir(self) if name.startswith(prefix)}

    def validate(self, claims: dict[str, Any]) -> None:
        missed = [key for key in self._essential if claims.get(key) is None]
        if missed:
            raise MissingClaimError(",".join(missed))
        validators, options = self._validators, self.options
        for key, value in claims.items():
            validator = validators.get(key)
            if validator is not None:
                validator(value)
            elif key in options:
                self.check_value(key, value)


class _ClaimsIgnoringExpiry(_OwnClaimsRegistry):
    """The claim checks for tokens that are still meaningful once expired
    (an ID token as a logout hint, a token being introspected)."""

    def validate_exp(self, value: object) -> None:
        if not isinstance(value, int):
            super().validate_exp(value)  # refuses a malformed exp as usual


#: Each published JWK's parsed public key and joserfc's algorithm for it, by kid, each with
#: the JWK it was parsed from: parsing costs more than verifying, and comparing the JWK with
#: the one parsed costs less than serialising it to look it up.
_PUBLIC_KEYS: dict[str, tuple[dict[str, Any], Any, Any]] = {}
_MAX_PUBLIC_KEYS = 64


def _verifier(jwk: dict[str, Any]) -> tuple[Any, Any]:
    """The parsed public key of a published JWK (of the key service's snapshot) and joserfc's algorithm
    of its ``alg``, the key checked for it (type, curve, ``use``): made once per key."""
    kid = str(jwk.get("kid"))
    cached = _PUBLIC_KEYS.get(kid)
    if cached is not None and cached[0] == jwk:
        return cached[1], cached[2]
    key = import_key(jwk)
    algorithm = JWSRegistry(algorithms=[jwk["alg"]]).get_alg(jwk["alg"])
    algorithm.check_key(key)
    if len(_PUBLIC_KEYS) >= _MAX_PUBLIC_KEYS:
        _PUBLIC_KEYS.clear()
    _PUBLIC_KEYS[kid] = (dict(jwk), key, algorithm)
    return key, algorithm


def _header(token: str) -> Mapping[str, Any]:
    return _parsed_header(token.split(".", 1)[0])


@functools.lru_cache(maxsize=64)
def _parsed_header(segment: str) -> Mapping[str, Any]:
    """The checked JOSE header of a header segment, read-only: parsed once per distinct segment,
    as our tokens share a handful (one per key and ``typ``); a refused one raises each time."""
    if not is_b64url(segment):
        raise InvalidToken("not base64url")
    try:
        # Text, not bytes: json.loads would first guess the octets' encoding (RFC 7515: UTF-8).
        header = json.loads(b64url_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):  # json: RecursionError for arrays or objects nested too deeply
        raise InvalidToken("malformed header") from None
    if not isinstance(header, dict) or not isinstance(header.get("kid"), str):
        raise InvalidToken("no kid")
    if "crit" in header:
        # RFC 7515 §4.1.11: we sign with no critical extension, so any "crit" (of whatever
        # type) names one we do not understand, and the JWS is rejected.
        raise InvalidToken("crit")
    if not isinstance(header.get("alg"), str) or not isinstance(header.get("typ", ""), str):
        raise InvalidToken("malformed header")
    return MappingProxyType(header)


@dataclass(frozen=True, slots=True)
class Artefact:
    """A kind of JWT this provider signs: the set that signs it, its ``typ``, the claims that tell it apart."""

    name: str
    key_set: str
    typ: str
    #: Claims every one of this kind carries, and claims none carries.
    required: tuple[str, ...]
    excluded: tuple[str, ...]


ID_TOKEN = Artefact("ID token", ID_TOKEN_SET, ID_TOKEN_TYP, ("sub", "aud", "iat", "exp"),
                    ("code", "error", "token_introspection"))
JARM_RESPONSE = Artefact("JARM response", ID_TOKEN_SET, JARM_TYP, ("aud", "exp"),
                         ("sub", "iat", "token_introspection"))
USERINFO_RESPONSE = Artefact("userinfo response", ID_TOKEN_SET, USERINFO_TYP, ("sub", "aud"),
                             ("exp", "code", "error", "token_introspection"))
INTROSPECTION_RESPONSE = Artefact("introspection response", ID_TOKEN_SET, INTROSPECTION_TYP,
                                  ("aud", "iat", "token_introspection"), ("sub", "code", "error"))
#: Every kind signed with the ID token set: no two accept the same token.
ARTEFACTS = (ID_TOKEN, JARM_RESPONSE, USERINFO_RESPONSE, INTROSPECTION_RESPONSE)


def verify_artefact(token: str, artefact: Artefact, *, check_exp: bool = True) -> dict[str, Any]:
    """Claims of ``token`` if it is a JWT of kind ``artefact`` this issuer signed, else :class:`InvalidToken`."""
    claims = verify_own_jwt(token, typ=artefact.typ, key_set=artefact.key_set,
                            check_exp=check_exp and "exp" in artefact.required)
    if any(name not in claims for name in artefact.required) or any(name in claims for name in artefact.excluded):
        raise InvalidToken(f"not an {artefact.name}")
    return claims


@functools.lru_cache(maxsize=32)
def _claims_registry(now: Callable[[], int], issuer: str, check_exp: bool, leeway: int) -> JWTClaimsRegistry:
    """The claim checks of :func:`verify_own_jwt`, built once per clock, issuer and options: a registry
    keeps only its options (``now`` is called at each validation), and building one costs each request."""
    registry_class = _OwnClaimsRegistry if check_exp else _ClaimsIgnoringExpiry
    return registry_class(now=now, leeway=leeway, iss={"essential": True, "value": issuer},
                          exp={"essential": check_exp})


def verify_own_jwt(token: str, *, typ: str | None, key_set: str, check_exp: bool = True,
                   leeway: int = 0, state: State | None = None) -> dict[str, Any]:
    """Claims of a JWT that this issuer signed with a published key of ``key_set``, or :class:`InvalidToken`.

    The signature is verified with the published signing key (``use: sig``) of
    ``key_set`` the header names (RFC 8725 §3.1: an access token only with
    ``jwt.access-token`` keys, an ID token only with ``openid.id-token`` keys),
    for the alg that key is published with (joserfc); ``iss`` must be this issuer and,
    unless ``check_exp`` is false, ``exp`` in the future (joserfc's claims
    registry, which also checks ``nbf`` and ``iat`` when present).  ``state``: the app's, when the
    caller has it.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidToken("not a compact JWS")
    header = _header(token)
    if typ is not None and str(header.get("typ", "")).lower() not in (typ.lower(), "application/" + typ.lower()):
        raise InvalidToken("wrong typ")
    state = current_state(state)  # once: the key service, the clock and the issuer are all the state's
    try:
        jwk = state.key_service().public_key(header["kid"], key_set=key_set)
    except KeyServiceError:
        raise InvalidToken("key service unavailable") from None
    if jwk is None or header.get("alg") != jwk.get("alg") or jwk.get("use", "sig") != "sig":
        raise InvalidToken("unknown key")
    # The header is parsed once, above: the signature is checked with joserfc's algorithm
    # directly, over the token's own signing input, rather than through its compact
    # deserialization, which would decode and check the header again.  Nothing after this
    # reads the header, and a valid signature means the header and payload are ours.
    signing_input, _, signature = token.rpartition(".")
    try:
        key, algorithm = _verifier(jwk)
        if not algorithm.verify(signing_input.encode("ascii"), urlsafe_b64decode(signature.encode("ascii")), key):
            raise InvalidToken("bad signature")
        # The payload is decoded once its exact text is known to be signed by us, so it is our signer's
        # canonical base64url: the standard library's decoder reads it, without joserfc's checks of
        # untrusted input (its regular expression costs more than the decoding).  The signature,
        # decoded before it is verified, keeps them.
        claims = json.loads(b64url_decode(signing_input.partition(".")[2]).decode("utf-8"))
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        # joserfc raises TypeError (and others) for some malformed keys or signatures: a
        # malformed token is invalid (RFC 6750 §3.1 invalid_token), never a 500.
        raise InvalidToken("bad signature") from None
    if not isinstance(claims, dict):
        raise InvalidToken("the payload is not a JSON object")
    try:
        _claims_registry(state.clock.now, state.settings.issuer, check_exp, leeway).validate(claims)
    except (JoseError, TypeError, ValueError):
        raise InvalidToken("claims refused") from None
    return claims
