"""JWK (RFC 7517) conversions between ``cryptography`` keys and JSON.

joserfc does the encoding; this module only decides *which* members we publish
(never a private one) and checks an imported key against its algorithm.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from keys.algorithms import ALG_FOR_CURVE, CURVE_FOR_SEC_NAME, MIN_RSA_BITS, Algorithm, get_algorithm
from keys.errors import InvalidKey, UnsupportedAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: The only members a published JWK may have: the public parameters of each
#: key type plus the metadata we set.  Anything else (``d``, ``p``, ...) is dropped.
_PUBLIC_MEMBERS = {"kty", "kid", "alg", "use", "n", "e", "crv", "x", "y"}


def public_jwk(public_key: PublicKey, *, kid: str, alg: str, use: str = "sig") -> dict[str, str]:
    """The public JWK of ``public_key`` with ``kid``, ``alg`` and ``use`` set."""
    if isinstance(public_key, rsa.RSAPublicKey):
        key: Any = RSAKey.import_key(public_key)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        key = ECKey.import_key(public_key)
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        key = OKPKey.import_key(public_key)
    else:
        raise InvalidKey(f"unsupported public key type {type(public_key).__name__}")
    members = key.as_dict(private=False)
    members.update(kid=kid, alg=alg, use=use)
    return {name: value for name, value in members.items() if name in _PUBLIC_MEMBERS}


def load_public_jwk(jwk: dict[str, Any]) -> PublicKey:
    """The ``cryptography`` public key of a published JWK."""
    try:
        key: Any = import_key({name: value for name, value in jwk.items() if name in _PUBLIC_MEMBERS})
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidKey(f"the JWK cannot be parsed: {type(exc).__name__}") from None
    public_key = key.public_key
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise InvalidKey(f"unsupported public key type {type(public_key).__name__}")
    return public_key


def thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a stable kid for imported keys."""
    jwk = public_jwk(public_key, kid="", alg="")
    return import_key({k: v for k, v in jwk.items() if k not in ("kid", "alg", "use")}).thumbprint()


def check_key_for_algorithm(public_key: PublicKey, algorithm: Algorithm) -> None:
    """Refuse a key that cannot sign ``algorithm`` (wrong type, curve or size)."""
    if algorithm.is_rsa:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidKey(f"{algorithm.name} needs an RSA key")
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidKey(
                f"RSA key of {public_key.key_size} bits is too small; {MIN_RSA_BITS} is the minimum"
            )
    elif algorithm.is_ecdsa:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidKey(f"{algorithm.name} needs an EC key on {algorithm.curve}")
        curve = CURVE_FOR_SEC_NAME.get(
            public_key.curve.name
        )
        if curve != algorithm.curve:
            raise InvalidKey(f"{algorithm.name} needs curve {algorithm.curve}, not {public_key.curve.name}")
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise InvalidKey("EdDSA needs an Ed25519 key")


def default_algorithm_for(public_key: PublicKey) -> str:
    """The algorithm a key is used with when an imported JWK names none."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = CURVE_FOR_SEC_NAME.get(public_key.curve.name)
        if crv is None:
            raise InvalidKey(f"unsupported EC curve {public_key.curve.name}")
        return ALG_FOR_CURVE[crv]
    return "EdDSA"


def load_private_jwk(jwk: dict[str, Any]) -> tuple[PrivateKey, str]:
    """Parse a private JWK for import; return the key and the algorithm it signs with.

    Raises :class:`InvalidKey` or :class:`UnsupportedAlgorithm` with a message
    that names the problem (never echoing key material).
    """
    if not isinstance(jwk, dict):
        raise InvalidKey("a JWK must be a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise UnsupportedAlgorithm("symmetric ('oct') keys are not accepted: only asymmetric keys sign")
    if kty not in ("RSA", "EC", "OKP"):
        raise InvalidKey(f"unsupported key type {kty!r}; expected RSA, EC or OKP")
    if "alg" in jwk:
        get_algorithm(str(jwk["alg"]))  # refuses HS*/none/unknown by name
    if jwk.get("use", "sig") != "sig":
        raise InvalidKey("only signing keys (use=sig) can be imported")
    if kty == "OKP" and jwk.get("crv") != "Ed25519":
        raise InvalidKey(f"unsupported OKP curve {jwk.get('crv')!r}; only Ed25519 is supported")
    if "d" not in jwk:
        raise InvalidKey("the JWK has no private part ('d'); import a private key")
    try:
        key = import_key(jwk)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidKey(f"the JWK cannot be parsed: {type(exc).__name__}") from None
    private_key = key.private_key
    if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise InvalidKey("the JWK has no private part of a signing key type")
    alg = str(jwk.get("alg") or default_algorithm_for(private_key.public_key()))
    check_key_for_algorithm(private_key.public_key(), get_algorithm(alg))
    return private_key, alg
