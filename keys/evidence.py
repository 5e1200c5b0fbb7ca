"""Evidence per key: where a published key lives and what the token says protects it.

An auditor asking "can this signing key leave the HSM?" gets the token's own
answer, read from the private key object (PKCS#11 v2.40 §4.9, private key
objects, and §4.4, storage objects):

* ``CKA_LOCAL``: generated on the token (not imported);
* ``CKA_SENSITIVE`` and ``CKA_ALWAYS_SENSITIVE``: its value is not revealed,
  and never was;
* ``CKA_EXTRACTABLE`` and ``CKA_NEVER_EXTRACTABLE``: it cannot be wrapped out,
  and never could.

An HSM-only set promises that its keys were born on the token and never left
it, so each of its keys must show all five (:data:`HSM_ONLY_REQUIREMENTS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The attribute values an HSM-only set's private key must have (PKCS#11 v2.40 §4.9).
HSM_ONLY_REQUIREMENTS: dict[str, bool] = {
    "CKA_LOCAL": True,
    "CKA_SENSITIVE": True,
    "CKA_ALWAYS_SENSITIVE": True,
    "CKA_EXTRACTABLE": False,
    "CKA_NEVER_EXTRACTABLE": True,
}


def shortfalls(attributes: Mapping[str, bool | None]) -> list[str]:
    """What an HSM-only key lacks, e.g. ``["CKA_LOCAL is false", "CKA_ALWAYS_SENSITIVE is unknown"]``.

    An attribute the token does not report counts as missing: evidence that
    cannot be read is no evidence.
    """
    problems = []
    for name, wanted in HSM_ONLY_REQUIREMENTS.items():
        value = attributes.get(name)
        if value is None:
            problems.append(f"{name} is unknown (the token does not report it)")
        elif value is not wanted:
            problems.append(f"{name} is {str(value).lower()}")
    return problems


@dataclass(frozen=True)
class TokenLocation:
    """The token a key is on, as ``C_GetSlotInfo`` and ``C_GetTokenInfo`` describe it (§5.5)."""

    library: str
    slot_id: int
    slot_description: str
    token_label: str
    serial: str
    model: str
    manufacturer: str
    #: The token's name in HSM_TOKENS ("" for the one token of the plain HSM_* settings).
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "pkcs11-token", "library": self.library, "slot_id": self.slot_id,
                "slot_description": self.slot_description, "token_label": self.token_label,
                "serial": self.serial, "model": self.model, "manufacturer": self.manufacturer,
                **({"token": self.name} if self.name else {})}


#: Where a software key lives: sealed with AES-256-GCM in the database (DESIGN.md, Software manager).
SOFTWARE_LOCATION: dict[str, Any] = {"kind": "software-store", "storage": "SQL, sealed with AES-256-GCM"}


@dataclass(frozen=True)
class KeyEvidence:
    """What is known of one published key's protection (``attributes`` is empty for software keys)."""

    key_set: str
    kid: str
    alg: str
    backend: str
    location: dict[str, Any]
    #: ``CKA_*`` name -> value read from the private key; None where the token did not say.
    attributes: dict[str, bool | None] = field(default_factory=dict)
    #: The mechanism that signs for this key on its token, e.g. ``CKM_SHA256_RSA_PKCS``.
    signing_mechanism: str | None = None
    signing_mechanism_description: str | None = None
    #: ``CKA_KEY_GEN_MECHANISM``: how the token generated the key (None when imported or not said).
    key_gen_mechanism: str | None = None
    certificate: dict[str, Any] | None = None
    #: ``sig`` (the key signs) or ``enc`` (it decrypts, with the mechanism below on its token).
    use: str = "sig"
    #: What the private key may do, read from the token: ``CKA_SIGN``, ``CKA_DECRYPT``, ``CKA_UNWRAP``,
    #: ``CKA_DERIVE``.
    capabilities: dict[str, bool | None] = field(default_factory=dict)
    decryption_mechanism: str | None = None
    decryption_mechanism_description: str | None = None

    def hsm_only_shortfalls(self) -> list[str]:
        """Why this key does not meet an HSM-only set's promise ([] when it does)."""
        if self.backend != "hsm":
            return ["it is a software key, not on the HSM"]
        return shortfalls(self.attributes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "set": self.key_set, "kid": self.kid, "alg": self.alg, "use": self.use, "backend": self.backend,
            "location": self.location, "attributes": dict(self.attributes), "capabilities": dict(self.capabilities),
            "signing_mechanism": self.signing_mechanism,
            "signing_mechanism_description": self.signing_mechanism_description,
            "decryption_mechanism": self.decryption_mechanism,
            "decryption_mechanism_description": self.decryption_mechanism_description,
            "key_gen_mechanism": self.key_gen_mechanism,
            "certificate": self.certificate,
        }
