"""The key sets every deployment needs, by name (DESIGN.md, "Key sets").

A module of plain strings: the settings, the token builders and the key
service read these without loading PKCS#11 or the database layer.
"""

from __future__ import annotations

#: Signs ID tokens (and signed userinfo, logout tokens, JARM responses).
ID_TOKEN_SET = "openid.id-token"
#: Signs JWT access tokens (RFC 9068, ``typ: at+jwt``).
ACCESS_TOKEN_SET = "jwt.access-token"
#: Decrypts encrypted request objects (RFC 9101 §6.1; ``use: enc``); never signs.
REQUEST_OBJECT_SET = "openid.request-object"

#: Signs the audit trail's checkpoints (``typ: audit-checkpoint+jwt``).
AUDIT_CHECKPOINT_SET = "audit.checkpoint"

#: Sets whose public keys are published in a JWK Set of their own, never in the token JWKS:
#: a checkpoint must not verify as a token, nor a token as a checkpoint.
OWN_JWKS_SETS = (AUDIT_CHECKPOINT_SET,)
