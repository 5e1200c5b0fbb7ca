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

from keys import (
    ACCESS_TOKEN_SET,
    AUDIT_CHECKPOINT_SET,
    EDDSA_ALGORITHMS,
    ID_TOKEN_SET,
    JWS_ALGORITHMS,
    REQUEST_OBJECT_SET,
)
from keys import ENCRYPTION_ALGORITHMS as KEY_MANAGEMENT_ALGORITHMS

__all__ = [
    "ACCESS_TOKEN_SET",
    "ACCESS_TOKEN_TYP",
    "ASSERTION_ALGORITHMS",
    "AUDIT_CHECKPOINT_SET",
    "AUDIT_CHECKPOINT_TYP",
    "AUTH_METHODS",
    "CERTIFICATE_THUMBPRINT",
    "CLAIMS_SUPPORTED",
    "CODE_CHALLENGE_METHODS",
    "CONFIDENTIAL_AUTH_METHODS",
    "DEFAULT_ENCRYPTION_ENCODING",
    "DEFAULT_GRANT_TYPES",
    "DEVICE_CODE_GRANT_TYPE",
    "DPOP_ALGORITHMS",
    "ENCRYPTED_RESPONSES",
    "ENCRYPTION_ALGORITHMS",
    "ENCRYPTION_ENCODINGS",
    "FAPI2_ALGORITHMS",
    "FAPI2_AUTH_METHODS",
    "GRANT_TYPES",
    "ID_TOKEN_SET",
    "ID_TOKEN_TYP",
    "INTROSPECTION_JWT_MEDIA_TYPE",
    "INTROSPECTION_TYP",
    "JARM_RESPONSE_MODES",
    "JARM_TYP",
    "JWT_MEDIA_TYPE",
    "LOGOUT_TOKEN_EVENT",
    "LOGOUT_TOKEN_TYP",
    "MTLS_AUTH_METHODS",
    "PROMPT_VALUES",
    "REQUEST_OBJECT_ENCRYPTION_ALGORITHMS",
    "REQUEST_OBJECT_SET",
    "REQUEST_OBJECT_SIGNING_ALGORITHMS",
    "REQUEST_OBJECT_TYP",
    "RESPONSE_MODES",
    "RESPONSE_TYPES",
    "SECRET_AUTH_METHODS",
    "USERINFO_TYP",
    "id_token_signing_algs",
]


def id_token_signing_algs(configured: str) -> list[str]:
    """The ID token algs to advertise: EdDSA over Ed25519 has two names (RFC 8037, RFC 9864),
    and a set configured with either may carry keys of both (existing EdDSA keys keep theirs)."""
    return list(EDDSA_ALGORITHMS) if configured in EDDSA_ALGORITHMS else [configured]

#: Key-management algorithms a request object may be encrypted with to the provider's decryption key set
#: (RFC 9101 §6.1, RFC 7518 §4.3, §4.6), each decrypted where the key lives (on the token); which of
#: them a deployment decrypts is REQUEST_OBJECT_ENCRYPTION_ALG's and its token's (discovery says).
REQUEST_OBJECT_ENCRYPTION_ALGORITHMS: tuple[str, ...] = tuple(KEY_MANAGEMENT_ALGORITHMS)

#: Mutual-TLS client authentication (RFC 8705 §2): a certificate issued by a CA the provider trusts whose
#: subject DN or SAN is the registered one (§2.1), or a self-signed certificate of a key of the client's
#: registered JWK Set (§2.2).
MTLS_AUTH_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")
#: Client authentication methods at the token endpoint (RFC 6749 §2.3, OIDC Core §9, RFC 8705 §2).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", *MTLS_AUTH_METHODS, "none")
#: Those that authenticate a confidential client (introspection, client_credentials).
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", *MTLS_AUTH_METHODS)
#: Those the FAPI 2.0 Security Profile allows (§5.3.2.1 clause 4): private_key_jwt or MTLS.
FAPI2_AUTH_METHODS = ("private_key_jwt", *MTLS_AUTH_METHODS)
#: The ``cnf`` member binding an access token to a client certificate (RFC 8705 §3.1): the base64url
#: SHA-256 of the certificate's DER encoding.
CERTIFICATE_THUMBPRINT = "x5t#S256"
#: Those that carry a client secret.
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

#: The device authorization grant (RFC 8628 §3.4), polled for at the token endpoint.
DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT_TYPE)
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
RESPONSE_TYPES = ("code",)
#: response_mode values of the authorization response (OAuth 2.0 Multiple Response Types, Form Post).
#: The JWT Secured Authorization Response Mode (JARM §2.3) ones deliver the response as a signed JWT;
#: ``jwt`` is the response type's default mode (``query.jwt`` for ``code``), ``fragment.jwt`` is
#: allowed for ``code`` too (JARM §2.3.3; the JWT keeps the code out of the server's logs).
JARM_RESPONSE_MODES = ("jwt", "query.jwt", "fragment.jwt", "form_post.jwt")
RESPONSE_MODES = ("query", "form_post", *JARM_RESPONSE_MODES)
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
#: The header ``typ`` of logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4).
LOGOUT_TOKEN_TYP = "logout+jwt"
#: The one member of a logout token's ``events`` claim (Back-Channel Logout 1.0 §2.4).
LOGOUT_TOKEN_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: The header ``typ`` of JARM responses and of signed userinfo responses: neither JARM nor OIDC Core
#: §5.3.2 defines a media type of its own, and clients (the OpenID conformance suite among them)
#: expect the generic one.  What tells them from an ID token is their claims
#: (:data:`oidc.oauth2.jwt.ARTEFACTS`): a JARM response has no ``sub``, a signed userinfo no ``exp``.
JARM_TYP = "JWT"
USERINFO_TYP = "JWT"
#: The header ``typ`` of JWT introspection responses (RFC 9701 §5) and the media type a resource
#: server asks for them with (``Accept``) and gets them as.
INTROSPECTION_TYP = "token-introspection+jwt"
INTROSPECTION_JWT_MEDIA_TYPE = "application/token-introspection+jwt"
#: The media type of a signed (or encrypted) userinfo response (OIDC Core §5.3.2).
JWT_MEDIA_TYPE = "application/jwt"

#: Encryption of responses to a client (OIDC Registration §2, JARM §3, RFC 9701 §6), with a public key
#: the client registered with ``use: enc``: RSA-OAEP-256 for an RSA key, ECDH-ES for an EC (P-256/384/521)
#: key.  A client that names an ``alg`` and no ``enc`` gets A128CBC-HS256, the registration default.
ENCRYPTION_ALGORITHMS = ("RSA-OAEP-256", "ECDH-ES")
#: The responses a client may have encrypted: its metadata is ``<kind>_encrypted_response_alg/enc``.
ENCRYPTED_RESPONSES = ("id_token", "userinfo", "authorization", "introspection")
ENCRYPTION_ENCODINGS = ("A256GCM", "A128CBC-HS256")
DEFAULT_ENCRYPTION_ENCODING = "A128CBC-HS256"

#: Algorithms a DPoP proof may be signed with (RFC 9449 §5.1): asymmetric only, never none or a MAC.
#: DPOP_SIGNING_ALGS narrows them; advertised as dpop_signing_alg_values_supported.
DPOP_ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "EdDSA", "Ed25519")
#: Signature algorithms the FAPI 2.0 Security Profile allows (§5.4.1).
FAPI2_ALGORITHMS = ("PS256", "ES256", "EdDSA", "Ed25519")

#: The header ``typ`` of the audit trail's checkpoints (RFC 8725 §3.11: their own, never a token's).
AUDIT_CHECKPOINT_TYP = "audit-checkpoint+jwt"

#: Algorithms a request object (RFC 9101) may be signed with, advertised as
#: request_object_signing_alg_values_supported: the FAPI 2.0 ones (§5.4.1), and RS256 outside the
#: profile.  ``none`` is not among them: only a client registered for unsigned objects
#: (``request_object_signing_alg: none``) may send one, and never under the FAPI 2.0 profile.
REQUEST_OBJECT_SIGNING_ALGORITHMS = ("PS256", "ES256", "EdDSA", "Ed25519", "RS256")
#: The header ``typ`` of a request object (RFC 9101 §10.8).
REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
