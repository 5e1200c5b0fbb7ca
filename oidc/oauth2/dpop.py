"""DPoP (RFC 9449): proofs of possession, their checks, and the key an access token is bound to.

A proof is a JWT in the ``DPoP`` request header, signed by the client's key
and carrying that public key in its header.  :func:`verify_proof` checks, in
this order (RFC 9449 §4.3):

* one proof, a compact JWS whose header has ``typ: dpop+jwt``, an ``alg`` of
  ``DPOP_SIGNING_ALGS`` (asymmetric only: never ``none`` or a MAC) and a
  public ``jwk`` of that alg's key type and curve (RFC 7518 §3.4, RFC 8037 §3.1:
  ``ES256`` a P-256 key, ``EdDSA`` an Ed25519 one; a private member such as
  ``d`` is refused);
* the signature, with that key;
* ``htm`` the request's method and ``htu`` the endpoint's URL *as configured*
  (the issuer plus the path, never the ``Host`` header), compared without
  query and fragment, scheme and host case-insensitively (§4.3, RFC 3986 §6.2.2);
* ``iat`` within ``DPOP_PROOF_MAX_AGE`` seconds of now, either way;
* ``ath``, at a protected resource: the hash of the access token (§4.2);
* ``nonce``, when ``DPOP_NONCE`` is on: one this provider made (§8); a
  proof without it, or with a stale one, gets ``use_dpop_nonce`` and a fresh
  ``DPoP-Nonce`` header;
* ``jti`` seen once: recorded in a shared store (the database, or Redis with
  ``DPOP_JTI_STORAGE_URI``) for as long as its ``iat`` is acceptable, so every
  worker and instance refuses a replay.

Nonces need no storage: a nonce is an HMAC of the current time step under a
key derived from the system secret, so every instance makes and accepts the
same ones (the current and the previous step are accepted).

Everything in a proof comes from an unauthenticated sender: each value is
checked for its type before it is used, and what the JSON and JOSE parsers
raise on malformed input is caught where they are called, so a bad proof is
``invalid_dpop_proof`` (or, at a resource, the ``DPoP`` challenge), never a 500.

The result is the key's RFC 7638 thumbprint (``jkt``): access tokens carry it
as ``cnf.jkt`` (§6.1), a public client's refresh token is bound to it (§5),
and ``dpop_jkt`` at the authorization endpoint binds a code to it (§10).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Response
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import import_key
from joserfc.jws import JWSRegistry

from keys import ALGORITHMS
from oidc import queries
from oidc.hashing import b64url, b64url_decode, derive_key
from oidc.state import State, current_state
from oidc.text import bounded_text

#: The header ``typ`` of a DPoP proof (RFC 9449 §4.2).
PROOF_TYP = "dpop+jwt"
#: The authorization scheme of a DPoP-bound access token (RFC 9449 §7.1).
SCHEME = "DPoP"
#: The token_type of a DPoP-bound access token in a token response (RFC 9449 §5).
TOKEN_TYPE = "DPoP"
NONCE_HEADER = "DPoP-Nonce"
_ENVIRON_KEY = "HTTP_DPOP"  # the DPoP request header field (RFC 9449 §4.1), as WSGI names it
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4, RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: base64url characters of a 32-bit RSA public exponent (4 bytes): more is refused before any arithmetic.
_MAX_RSA_EXPONENT_CHARACTERS = 6
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 255
#: Longest ``nonce`` compared (ours are 32 characters).
MAX_NONCE_LENGTH = 64


class _ProofRegistry(JWSRegistry):
    """joserfc's JWS checks, with room in the header for the public key an RSA proof carries."""

    max_header_length = 4096


_registries: dict[str, JWSRegistry] = {}


def _registry(alg: str) -> JWSRegistry:
    registry = _registries.get(alg)
    if registry is None:
        registry = _registries[alg] = _ProofRegistry(algorithms=[alg])
    return registry


class InvalidDPoPProof(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """RFC 9449 §7.1 / §5: a missing, malformed or failing proof."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDPoPNonce(OAuth2Error):  # type: ignore[misc]  # the base class is untyped
    """RFC 9449 §8: the proof must carry the server's current nonce (sent in ``DPoP-Nonce``)."""

    error = "use_dpop_nonce"
    status_code = 400


@dataclass(frozen=True)
class Proof:
    """A verified DPoP proof: the thumbprint of its key, its claims and its alg."""

    jkt: str
    claims: dict[str, Any]
    alg: str = ""


# -- nonces ------------------------------------------------------------------------------

_nonce_keys: dict[tuple[str, ...], bytes] = {}
_nonce_lock = threading.Lock()


def _nonce_key() -> bytes:
    secrets = current_state().settings.secrets_system
    key = _nonce_keys.get(secrets)
    if key is None:
        with _nonce_lock:
            key = _nonce_keys[secrets] = derive_key(secrets[0], b"dpop nonce")
    return key


def _nonce_for(step: int) -> str:
    return b64url(hmac.new(_nonce_key(), str(step).encode("ascii"), hashlib.sha256).digest()[:24])


def current_nonce() -> str:
    """The nonce clients should use now (sent in ``DPoP-Nonce``)."""
    state = current_state()
    return _nonce_for(state.clock.now() // state.settings.dpop_nonce_lifetime)


def nonce_valid(nonce: object) -> bool:
    """Whether ``nonce`` is the current or the previous one (a nonce lives one to two steps)."""
    checked = bounded_text(nonce, MAX_NONCE_LENGTH)
    if checked is None:
        return False
    state = current_state()
    step = state.clock.now() // state.settings.dpop_nonce_lifetime
    return any(_matches(checked, _nonce_for(candidate)) for candidate in (step, step - 1))


# -- the jti store ---------------------------------------------------------------------------

_redis_clients: dict[str, Any] = {}


def _record_jti(jkt: str, jti: str, expires_at: int) -> bool:
    """Record ``jti`` of key ``jkt`` until ``expires_at``; False if it was already recorded."""
    # A JSON string may hold a lone surrogate (RFC 8259 §8.2), which UTF-8 cannot encode;
    # "surrogatepass" keeps the encoding one-to-one, so such a jti is recorded as any other.
    digest = hashlib.sha256(f"{jkt}:{jti}".encode("utf-8", "surrogatepass")).hexdigest()
    uri = current_state().settings.dpop_jti_storage_uri
    if uri == "database":
        return queries.record_dpop_jti(digest, expires_at)
    client = _redis_clients.get(uri)
    if client is None:
        import redis

        client = _redis_clients[uri] = redis.Redis.from_url(uri, socket_timeout=2, socket_connect_timeout=2)
    ttl = max(1, expires_at - current_state().clock.now())
    return bool(client.set("dpop-jti:" + digest, b"1", nx=True, ex=ttl))


# -- proofs ------------------------------------------------------------------------------


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK."""
    return str(import_key(jwk).thumbprint())


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token's ASCII octets (RFC 9449 §4.2).

    The token is a ``token68`` (RFC 9449 §7.1), so ASCII: the resource's
    Authorization header parser refuses any other value before a proof is checked.
    """
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def _matches(presented: object, expected: str) -> bool:
    """Whether a proof's ``presented`` claim is the (ASCII) ``expected`` value, in constant time.

    ``hmac.compare_digest`` raises TypeError for a str with non-ASCII characters;
    such a value is never ``expected`` anyway.
    """
    return isinstance(presented, str) and presented.isascii() and hmac.compare_digest(presented, expected)


def _normalized_url(url: str) -> tuple[str, str, str] | None:
    """(scheme, authority, path) of ``url``, without query and fragment, default ports dropped.

    None when ``url`` has no reading as a URL: ``urlsplit`` raises ValueError for an unclosed
    IPv6 bracket (RFC 3986 §3.2.2) and ``port`` for a port that is not a number up to 65535.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if port is None or (scheme, port) in (("https", 443), ("http", 80)):
        authority = host
    else:
        authority = f"{host}:{port}"
    return scheme, authority, parts.path or "/"


def _json_object(data: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object ``data`` holds, or :class:`InvalidDPoPProof` naming ``what``.

    ``json`` raises ValueError for malformed JSON (UnicodeDecodeError for bytes that are
    not UTF-8 is one) and RecursionError for arrays or objects nested too deeply.
    """
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidDPoPProof(description=f"The DPoP proof's {what} is not JSON.") from None
    if not isinstance(value, dict):
        raise InvalidDPoPProof(description=f"The DPoP proof's {what} is not a JSON object.")
    return value


def _public_key(jwk: object, alg: str) -> Any:
    """The public key of a proof's ``jwk``, when it is one ``alg`` signs with (RFC 9449 §4.3 step 7-8).

    The key type and curve are checked first (RFC 7518 §3.4, RFC 8037 §3.1), so joserfc
    is given only curves it knows: it raises KeyError for an unknown ``crv``.  For the
    rest it raises JoseError (a member missing or of the wrong type) or ValueError (not
    base64url, a point off its curve, an RSA exponent out of range).
    """
    algorithm = ALGORITHMS[alg]
    if not isinstance(jwk, dict) or jwk.get("kty") != algorithm.kty or (
            algorithm.curve is not None and jwk.get("crv") != algorithm.curve):
        raise InvalidDPoPProof(description=f"The DPoP proof must carry a public jwk of the key type of {alg}.")
    if _PRIVATE_MEMBERS & set(jwk):
        raise InvalidDPoPProof(description="The DPoP proof's jwk must be a public key, not a private one.")
    if algorithm.kty == "RSA" and len(str(jwk.get("e", ""))) > _MAX_RSA_EXPONENT_CHARACTERS:
        # A public exponent is small (65537, RFC 8017 §3.1 allows any odd one): a huge one makes
        # every verification of an unauthenticated proof cost milliseconds of CPU.
        raise InvalidDPoPProof(description="The DPoP proof's jwk has an RSA exponent larger than 32 bits.")
    try:
        return import_key(jwk)
    except (JoseError, ValueError):
        raise InvalidDPoPProof(description="The DPoP proof's jwk is not a valid public key.") from None


def verify_proof(header_values: list[str], *, method: str, url: str, access_token: str | None = None) -> Proof:
    """The proof of one request, checked as the module docstring says; :class:`InvalidDPoPProof` or :class:`UseDPoPNonce`."""
    state = current_state()
    settings = state.settings
    proof, header = _compact_proof(header_values)
    if header.get("typ") != PROOF_TYP:
        raise InvalidDPoPProof(description="The DPoP proof's typ must be dpop+jwt.")
    alg = header.get("alg")
    if alg not in settings.dpop_signing_algs:
        raise InvalidDPoPProof(description="The DPoP proof's alg must be one of "
                                           + ", ".join(settings.dpop_signing_algs) + ".")
    key = _public_key(header.get("jwk"), alg)
    try:
        result = jws.deserialize_compact(proof, key, registry=_registry(alg))
    except (JoseError, ValueError, TypeError):
        raise InvalidDPoPProof(description="The DPoP proof's signature does not verify with its jwk.") from None
    claims = _json_object(result.payload, "payload")
    _check_request_claims(claims, method=method, url=url)
    iat = claims.get("iat")
    moment = state.clock.now()
    if not isinstance(iat, int) or isinstance(iat, bool) or abs(moment - iat) > settings.dpop_proof_max_age:
        raise InvalidDPoPProof(description="The DPoP proof's iat is missing or outside the accepted window.")
    jti = bounded_text(claims.get("jti"), MAX_JTI_LENGTH)
    if jti is None:
        raise InvalidDPoPProof(description="The DPoP proof has no usable jti.")
    if access_token is not None and not _matches(claims.get("ath"), access_token_hash(access_token)):
        raise InvalidDPoPProof(description="The DPoP proof's ath does not match the access token.")
    if settings.dpop_nonce and not nonce_valid(claims.get("nonce")):
        raise UseDPoPNonce(description="Use the nonce in the DPoP-Nonce header in the DPoP proof.")
    jkt = str(key.thumbprint())
    if not _record_jti(jkt, jti, moment + 2 * settings.dpop_proof_max_age + 1):
        raise InvalidDPoPProof(description="The DPoP proof was already used (jti replayed).")
    return Proof(jkt=jkt, claims=claims, alg=alg)


def _compact_proof(header_values: list[str]) -> tuple[str, dict[str, Any]]:
    """The one proof among ``header_values`` and its decoded JOSE header (not yet checked)."""
    if len(header_values) != 1:
        raise InvalidDPoPProof(description="Send exactly one DPoP header.")
    proof = header_values[0].strip()
    if not proof or len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
        raise InvalidDPoPProof(description="The DPoP proof is not a compact JWS.")
    try:
        encoded_header = b64url_decode(proof.split(".", 1)[0])
    except ValueError:  # not base64url (binascii.Error), or not ASCII
        raise InvalidDPoPProof(description="The DPoP proof is not a JWT.") from None
    return proof, _json_object(encoded_header, "header")


def _check_request_claims(claims: dict[str, Any], *, method: str, url: str) -> None:
    """The claims that bind the proof to this request: its method and its URL."""
    if claims.get("htm") != method:
        raise InvalidDPoPProof(description="The DPoP proof's htm does not match the request's method.")
    htu = claims.get("htu")
    presented_url = _normalized_url(htu) if isinstance(htu, str) else None
    if presented_url is None or presented_url != _normalized_url(url):
        raise InvalidDPoPProof(description="The DPoP proof's htu does not match this endpoint's URL.")


# -- the proof of a token or PAR request ----------------------------------------------------------


def check_request_proof(request: Any, path: str) -> Proof | None:
    """The verified proof of a token or PAR request (Flask ``request``) to ``path``; None when it sent none.

    The caller keeps the result on its OAuth 2.0 request (``IssuerRequest.dpop``),
    where the grants read it.
    """
    # The environ entry itself: a WSGI server gives each header name one entry (repeated
    # fields joined by commas, which verify_proof refuses as not compact), and
    # ``headers.getlist`` would scan every header of every token request to find it.
    header = request.environ.get(_ENVIRON_KEY)
    if header is None:
        return None
    return verify_proof([header], method=request.method, url=current_state().settings.issuer + path)


def nonce_headers(state: State | None = None) -> list[tuple[str, str]]:
    """``DPoP-Nonce`` for a response, when nonces are on (``state``: the app's, when the caller has it)."""
    settings = current_state(state).settings
    return [(NONCE_HEADER, current_nonce())] if settings.dpop_nonce else []


def with_nonce(response: Response, state: State | None = None) -> Response:
    """``response`` (of /token or /par) with a fresh ``DPoP-Nonce`` when nonces are on (RFC 9449 §8)."""
    for name, value in nonce_headers(state):
        response.headers[name] = value
    return response
