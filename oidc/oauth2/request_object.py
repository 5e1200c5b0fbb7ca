"""Request objects (RFC 9101, OpenID Connect Core §6): an authorization request as a JWT.

A client sends its authorization request as the ``request`` parameter, by value,
to ``/authorize`` or to ``/par`` (RFC 9126 §3).  A remote ``request_uri`` (a URL
of the client's that the provider would fetch) is not supported; a
``request_uri`` is one of ours, from ``/par``.

:func:`resolve` reads the object, in this order:

1. Its shape: at most :data:`MAX_REQUEST_OBJECT_LENGTH` characters, a compact
   JWS (three parts) or JWE (five parts), a header of at most
   :data:`MAX_HEADER_LENGTH` characters that is a JSON object without ``crit``.
2. A JWE is decrypted by the key service with the provider's decryption key set
   (:func:`_decrypt`); its plaintext must be a signed object (nested, RFC 9101 §6.1),
   which is then read as one sent in the clear.
3. Its ``alg``: one of :data:`~oidc.vocabulary.REQUEST_OBJECT_SIGNING_ALGORITHMS`
   (PS256, ES256 and EdDSA only under the FAPI 2.0 profile), the client's
   registered ``request_object_signing_alg`` when it has one.  ``none`` only for
   a client registered for unsigned objects (``request_object_signing_alg:
   none``), never under the FAPI 2.0 profile nor when signed objects are
   required.  ``typ`` ``oauth-authz-req+jwt`` is accepted (and required where
   :func:`~oidc.oauth2.security_profile.requires_request_object_typ` says so).
4. Its signature, with the client's registered keys only (:func:`client_keys`: its
   ``jwks`` or its ``jwks_uri``), a key of the type the ``alg`` needs (never a key the
   header carries).
5. Its claims: ``iss`` the client, ``aud`` this issuer, ``exp`` in the future,
   ``nbf`` (when present; always under the FAPI 2.0 profile) not in the future
   and at most 60 minutes old, and under the profile ``exp - nbf`` at most 60
   minutes; ``client_id``, when present, the one sent beside the object.
6. Its parameters: every other member, as the string an HTTP request would carry
   (numbers in decimal, a list of strings as a repeated parameter).  ONLY these
   are used (RFC 9101 §5): the parameters sent beside the object are ignored,
   and the object's go through the same validation as plain parameters
   (:func:`oidc.oauth2.authorization.validate_authorization_request`).

Every refusal is :class:`InvalidRequestObject` (``invalid_request_object``,
RFC 9101 §6.3), naming what is wrong; nothing here raises anything else, except
an HSM outage while decrypting (a 503, as for signing).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import import_key
from werkzeug.datastructures import MultiDict

from keys import DecryptionError, HSMUnavailable, KeyServiceError
from oidc.hashing import b64url_decode, is_b64url
from oidc.oauth2 import security_profile
from oidc.oauth2.client_keys import ClientKeyError, client_key_set
from oidc.state import current_state
from oidc.vocabulary import (
    FAPI2_ALGORITHMS,
    REQUEST_OBJECT_SET,
    REQUEST_OBJECT_SIGNING_ALGORITHMS,
    REQUEST_OBJECT_TYP,
)

#: Longest ``request`` accepted (characters): a nested PS256 object under RSA-4096 keys stays far below.
MAX_REQUEST_OBJECT_LENGTH = 16384
#: Longest (base64url) JOSE header read: ours never need more than a few hundred characters.
MAX_HEADER_LENGTH = 2048
#: FAPI 2.0 Message Signing §5.3.1: ``nbf`` at most 60 minutes old, ``exp`` at most 60 minutes after ``nbf``.
MAX_NBF_AGE = 3600
MAX_LIFETIME = 3600
#: The claims of the JWT itself, not parameters of the authorization request.
JWT_CLAIMS = frozenset(("iss", "aud", "exp", "nbf", "iat", "jti", "sub"))
#: ``alg`` -> the key type (and curve) that verifies it.
_KEY_TYPES: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "PS256": ("RSA", None), "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"), "Ed25519": ("OKP", "Ed25519"),
}
_TYPS = (REQUEST_OBJECT_TYP, "application/" + REQUEST_OBJECT_TYP)
UNSIGNED = "none"
#: The refusal of a plain (or unsigned) request from a client that must sign its requests (RFC 9101 §10.5).
SIGNED_OBJECT_REQUIRED = ("This client must send its authorization requests as signed request objects "
                          "(RFC 9101, section 10.5).")


class InvalidRequestObject(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """The request object is malformed, not verified, or refused (RFC 9101 §6.3)."""

    error = "invalid_request_object"
    status_code = 400

    def __init__(self, description: str) -> None:
        # RFC 6749 §5.2 allows %x20-21 / %x23-5B / %x5D-7E in a description (and Authlib raises for
        # anything else): a parameter name echoed from the object is made of those only.
        super().__init__(description="".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description))


@dataclass(frozen=True, slots=True)
class RequestObject:
    """A verified request object: the authorization request's parameters, and whether it was signed."""

    params: MultiDict[str, str]
    signed: bool


@dataclass(frozen=True, slots=True)
class Policy:
    """What a client's request objects must be (its registration and its security profile)."""

    algorithms: tuple[str, ...]
    allow_unsigned: bool
    typ_required: bool
    #: The FAPI 2.0 rules on time: ``nbf`` required, ``exp - nbf`` at most :data:`MAX_LIFETIME`.
    fapi: bool


def policy(client: Any) -> Policy:
    """The rules for request objects of ``client``."""
    fapi = security_profile.is_fapi2(client)
    algorithms = tuple(alg for alg in REQUEST_OBJECT_SIGNING_ALGORITHMS if not fapi or alg in FAPI2_ALGORITHMS)
    registered = getattr(client, "request_object_signing_alg", None)
    if registered:
        # OIDC Dynamic Client Registration §2: objects not signed with it are rejected.
        algorithms = tuple(alg for alg in algorithms if alg == registered)
    allow_unsigned = (registered == UNSIGNED and not fapi
                      and not security_profile.requires_signed_request_object(client))
    return Policy(algorithms, allow_unsigned, security_profile.requires_request_object_typ(client), fapi)


def client_keys(client: Any, kid: str | None = None) -> list[dict[str, Any]]:
    """The public JWKs ``client`` registered, the only keys its request objects verify with: its
    ``jwks``, or the set at its ``jwks_uri`` (:func:`~oidc.oauth2.client_keys.client_key_set`, cached;
    a ``kid`` the cached set lacks refreshes it, at most as often as that allows)."""
    try:
        key_set = client_key_set(client, kid=kid)
    except ClientKeyError as exc:
        raise InvalidRequestObject(f"The client's keys cannot be read: {exc}.") from None
    return [key.as_dict(private=False) for key in key_set.keys]


def resolve(token: object, client: Any) -> RequestObject:
    """The parameters of the request object ``token`` sent by ``client`` (RFC 9101 §5, §6).

    ``client`` is the one named by the ``client_id`` sent beside the object.
    Raises :class:`InvalidRequestObject`.
    """
    if not isinstance(token, str) or not token:
        raise InvalidRequestObject("The request parameter is empty.")
    if len(token) > MAX_REQUEST_OBJECT_LENGTH:
        raise InvalidRequestObject(f"The request object is longer than {MAX_REQUEST_OBJECT_LENGTH} characters.")
    parts = token.split(".")
    if len(parts) == 5:
        _check_may_encrypt(client)
        token = _nested(_decrypt(token))
        parts = token.split(".")
    if len(parts) != 3:
        raise InvalidRequestObject("The request object is neither a compact JWS nor a compact JWE.")
    rules = policy(client)
    header = _header(parts[0])
    alg = header["alg"]
    _check_typ(header, rules)
    if alg == UNSIGNED:
        if not rules.allow_unsigned:
            raise InvalidRequestObject("Unsigned request objects (alg none) are not accepted from this client.")
        if parts[2]:
            raise InvalidRequestObject("An unsigned request object has an empty signature.")
        claims = _claims(parts[1])
    else:
        if alg not in rules.algorithms:
            raise InvalidRequestObject(f"The request object's alg must be one of: {', '.join(rules.algorithms)}"
                                       if rules.algorithms else "This client may not send signed request objects.")
        claims = _verified_claims(token, header, client)
    _check_claims(claims, client, rules)
    return RequestObject(_parameters(claims, client), signed=alg != UNSIGNED)


def _check_may_encrypt(client: Any) -> None:
    """RFC 9101 §6.1: an encrypted request object is a signed one inside.  A client that registered no keys
    can sign none, so its encrypted objects are refused before anyone authenticated spends a decryption
    (an RSA private-key operation on the token) on them."""
    if not (getattr(client, "jwks", None) or getattr(client, "jwks_uri", None)):
        raise InvalidRequestObject("This client registered no keys to sign request objects with: an encrypted "
                                   "request object from it is not decrypted.")


def _decrypt(token: str) -> bytes:
    """The plaintext of an encrypted request object, decrypted with the provider's decryption key set.

    The private key never leaves the key service (on the token where the set is there:
    ``C_Decrypt``, or the ECDH-ES shared secret derived there).
    """
    state = current_state()
    if REQUEST_OBJECT_SET not in state.settings.decryption_key_sets:
        raise InvalidRequestObject("Encrypted request objects are not supported.")
    try:
        return state.key_service().decrypt(REQUEST_OBJECT_SET, token)
    except HSMUnavailable:
        raise  # the decryption key is on a token that is unreachable: 503, as for signing
    except DecryptionError as exc:
        raise InvalidRequestObject(f"The request object could not be decrypted: {exc}.") from None
    except KeyServiceError:
        raise InvalidRequestObject("The request object could not be decrypted.") from None


def _nested(plaintext: bytes) -> str:
    """The signed object inside an encrypted one (RFC 9101 §6.1: signed, then encrypted)."""
    try:
        inner = plaintext.decode("ascii")
    except UnicodeDecodeError:
        inner = ""
    if inner.count(".") != 2:
        raise InvalidRequestObject("An encrypted request object must hold a signed one (RFC 9101, section 6.1).")
    return inner


def _json_segment(segment: str, what: str) -> Any:
    if not is_b64url(segment):
        raise InvalidRequestObject(f"The request object's {what} is not base64url.")
    try:
        return json.loads(b64url_decode(segment))
    except (ValueError, RecursionError):  # json: RecursionError for arrays or objects nested too deeply
        raise InvalidRequestObject(f"The request object's {what} is not JSON.") from None


def _header(segment: str) -> dict[str, Any]:
    if len(segment) > MAX_HEADER_LENGTH:
        raise InvalidRequestObject(f"The request object's header is longer than {MAX_HEADER_LENGTH} characters.")
    header = _json_segment(segment, "header")
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise InvalidRequestObject("The request object's header is not a JSON object with an alg.")
    if "crit" in header:
        # RFC 7515 §4.1.11: no extension is understood here, so any "crit" is refused.
        raise InvalidRequestObject("The request object's header names critical extensions (crit).")
    for name in ("kid", "typ"):
        if name in header and not isinstance(header[name], str):
            raise InvalidRequestObject(f"The request object's {name} is not a string.")
    return header


def _check_typ(header: dict[str, Any], rules: Policy) -> None:
    """RFC 9101 §10.8: ``oauth-authz-req+jwt`` (or none, or ``JWT``, unless the profile requires it)."""
    typ = header.get("typ")
    lowered = typ.lower() if isinstance(typ, str) else None
    if lowered in _TYPS:
        return
    if rules.typ_required or lowered not in (None, "jwt"):
        raise InvalidRequestObject(f"The request object's typ must be {REQUEST_OBJECT_TYP}.")


def _claims(segment: str) -> dict[str, Any]:
    claims = _json_segment(segment, "payload")
    if not isinstance(claims, dict):
        raise InvalidRequestObject("The request object's payload is not a JSON object.")
    return claims


@functools.lru_cache(maxsize=256)
def _import(jwk_json: str) -> Any:
    """A parsed public key of a client (parsing costs more than verifying)."""
    return import_key(json.loads(jwk_json))


def _candidates(client: Any, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The client's registered keys that may have signed with the header's ``alg`` (and ``kid``)."""
    alg = header["alg"]
    kty, crv = _KEY_TYPES[alg]
    kid = header.get("kid")
    return [jwk for jwk in client_keys(client, kid)
            if jwk.get("kty") == kty and (crv is None or jwk.get("crv") == crv)
            and jwk.get("use", "sig") == "sig" and jwk.get("alg", alg) == alg
            and (kid is None or jwk.get("kid") == kid)]


def _verified_claims(token: str, header: dict[str, Any], client: Any) -> dict[str, Any]:
    """The claims of a JWS signed by one of the client's registered keys."""
    candidates = _candidates(client, header)
    if not candidates:
        raise InvalidRequestObject("No key the client registered can verify the request object "
                                   "(its kid and alg name none).")
    for jwk in candidates:
        try:
            result = jws.deserialize_compact(token, _import(json.dumps(jwk, sort_keys=True)),
                                             algorithms=[header["alg"]])
        except (JoseError, ValueError, TypeError, KeyError, AttributeError):
            continue  # joserfc raises more than JoseError for some malformed input: a failed check all the same
        try:
            claims = json.loads(result.payload)
        except (ValueError, RecursionError):
            raise InvalidRequestObject("The request object's payload is not JSON.") from None
        if not isinstance(claims, dict):
            raise InvalidRequestObject("The request object's payload is not a JSON object.")
        return claims
    raise InvalidRequestObject("The request object's signature does not verify with the client's keys.")


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2: seconds, maybe with a fraction), None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    # json reads NaN and Infinity too: neither is a date.
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise InvalidRequestObject(f"The request object's {name} is not a number of seconds.")
    return value


def _check_claims(claims: dict[str, Any], client: Any, rules: Policy) -> None:
    """RFC 9101 §4, §6.3; FAPI 2.0 Message Signing §5.3.1 (times); the same rules for every object."""
    issuer = current_state().settings.issuer
    if claims.get("iss") != client.client_id:
        raise InvalidRequestObject("The request object's iss must be the client_id.")
    aud = claims.get("aud")
    if not (aud == issuer or (isinstance(aud, list) and issuer in aud)):
        raise InvalidRequestObject("The request object's aud must be the issuer identifier.")
    if "client_id" in claims and claims["client_id"] != client.client_id:
        raise InvalidRequestObject("The client_id in the request object is not the one sent with it.")
    _check_times(claims, rules)


def _check_times(claims: dict[str, Any], rules: Policy) -> None:
    """``exp``, ``nbf`` and ``iat``, with the clock skew allowed on client assertions."""
    state = current_state()
    now, leeway = state.clock.now(), state.settings.client_assertion_leeway
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise InvalidRequestObject("The request object has no exp.")
    if exp <= now - leeway:
        raise InvalidRequestObject("The request object has expired.")
    nbf = _numeric_date(claims, "nbf")
    if nbf is None and rules.fapi:
        raise InvalidRequestObject("The FAPI 2.0 profile requires nbf in the request object.")
    if nbf is not None:
        if nbf > now + leeway:
            raise InvalidRequestObject("The request object is not valid yet (nbf).")
        if nbf < now - MAX_NBF_AGE - leeway:
            raise InvalidRequestObject("The request object's nbf is more than 60 minutes old.")
        if rules.fapi and exp - nbf > MAX_LIFETIME:
            raise InvalidRequestObject("The FAPI 2.0 profile allows request objects of at most 60 minutes (exp - nbf).")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise InvalidRequestObject("The request object was issued in the future (iat).")


def _values(name: str, value: Any) -> list[str]:
    """The parameter values a JSON member stands for, as an HTTP request would carry them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]  # max_age (OIDC Core §6.1: numbers are JSON numbers)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)  # a repeated parameter: resource (RFC 8707)
    if isinstance(value, dict):
        return [json.dumps(value)]  # an object-valued parameter (OIDC Core §5.5 claims) as it is sent in a URL
    raise InvalidRequestObject(f"The request object's {name} is not a string, a number or a list of strings.")


def _parameters(claims: dict[str, Any], client: Any) -> MultiDict[str, str]:
    """The authorization request's parameters: the object's members, without the JWT's own claims."""
    params: MultiDict[str, str] = MultiDict()
    for name, value in claims.items():
        if name in ("request", "request_uri"):
            raise InvalidRequestObject(f"A request object must not contain {name} (RFC 9101, section 4).")
        if name in JWT_CLAIMS:
            continue
        for item in _values(name, value):
            params.add(name, item)
    params["client_id"] = str(client.client_id)
    return params
