"""The names every layer may read: what the provider supports, listed once.

Client authentication methods, grant and response types, header ``typ``s,
algorithms and the key-set names: discovery, registration and validation read
these.  Adding a method, grant or algorithm here makes it advertised (OIDC
Discovery 1.0 §3, RFC 8414 §2), accepted at registration
(``oidc.accounts.clients``) and allowed by the grants and client
authentication that check it.  Only plain values: importing this module loads
neither the protocol core nor the HSM module.
"""

from __future__ import annotations

from keys import ACCESS_TOKEN_SET, EDDSA_ALGORITHMS, ID_TOKEN_SET, JWS_ALGORITHMS

__all__ = [
    "ACCESS_TOKEN_SET",
    "ACCESS_TOKEN_TYP",
    "ASSERTION_ALGORITHMS",
    "AUTH_METHODS",
    "CLAIMS_SUPPORTED",
    "CODE_CHALLENGE_METHODS",
    "CONFIDENTIAL_AUTH_METHODS",
    "DEFAULT_GRANT_TYPES",
    "DPOP_ALGORITHMS",
    "FAPI2_ALGORITHMS",
    "GRANT_TYPES",
    "ID_TOKEN_SET",
    "ID_TOKEN_TYP",
    "PROMPT_VALUES",
    "REQUEST_OBJECT_DECRYPTION_SET",
    "REQUEST_OBJECT_SIGNING_ALGORITHMS",
    "REQUEST_OBJECT_TYP",
    "RESPONSE_MODES",
    "RESPONSE_TYPES",
    "SECRET_AUTH_METHODS",
    "id_token_signing_algs",
]


def id_token_signing_algs(configured: str) -> list[str]:
    """The ID token algs to advertise: EdDSA over Ed25519 has two names (RFC 8037, RFC 9864),
    and a set configured with either may carry keys of both (existing EdDSA keys keep theirs)."""
    return list(EDDSA_ALGORITHMS) if configured in EDDSA_ALGORITHMS else [configured]

#: Client authentication methods at the token endpoint (RFC 6749 §2.3, OIDC Core §9).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
#: Those that authenticate a confidential client (introspection, client_credentials).
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
#: Those that carry a client secret.
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
RESPONSE_TYPES = ("code",)
#: response_mode values of the authorization response (OAuth 2.0 Multiple Response Types, Form Post).
RESPONSE_MODES = ("query", "form_post")
CODE_CHALLENGE_METHODS = ("S256",)
#: ``prompt`` values (OIDC Core §3.1.2.1); ``none`` goes with no other (:mod:`oidc.oauth2.authorization`).
PROMPT_VALUES = ("none", "login", "consent", "select_account")

#: Algorithms a client may sign its private_key_jwt assertion with: asymmetric only
#: (a client has no shared secret with us to use HS256 with), RFC 9864's Ed25519
#: next to the polymorphic EdDSA; the key service's own list.
ASSERTION_ALGORITHMS = tuple(JWS_ALGORITHMS)

#: Claims an ID token or userinfo response may carry (OIDC Core §2, §5.1).
CLAIMS_SUPPORTED = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "sid",
                    "name", "preferred_username", "updated_at", "email", "email_verified")

#: The header ``typ`` of JWT access tokens (RFC 9068 §2.1).
ACCESS_TOKEN_TYP = "at+jwt"
#: The header ``typ`` of ID tokens.
ID_TOKEN_TYP = "JWT"

#: Algorithms a DPoP proof may be signed with (RFC 9449 §5.1): asymmetric only, never none or a MAC.
#: DPOP_SIGNING_ALGS narrows them; advertised as dpop_signing_alg_values_supported.
DPOP_ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "EdDSA", "Ed25519")
#: Signature algorithms the FAPI 2.0 Security Profile allows (§5.4.1).
FAPI2_ALGORITHMS = ("PS256", "ES256", "EdDSA", "Ed25519")

#: Algorithms a request object (RFC 9101) may be signed with, advertised as
#: request_object_signing_alg_values_supported: the FAPI 2.0 ones (§5.4.1), and RS256 outside the
#: profile.  ``none`` is not among them: only a client registered for unsigned objects
#: (``request_object_signing_alg: none``) may send one, and never under the FAPI 2.0 profile.
REQUEST_OBJECT_SIGNING_ALGORITHMS = ("PS256", "ES256", "EdDSA", "Ed25519", "RS256")
#: The header ``typ`` of a request object (RFC 9101 §10.8).
REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
#: The key set that decrypts encrypted request objects (RFC 9101 §6.1; ``use: enc``, never signs).
REQUEST_OBJECT_DECRYPTION_SET = "openid.request-object"
