"""Read-only questions to a PKCS#11 module, for ``oidc-hsm doctor``.

Independent of the key service (:mod:`keys.hsm`): it never generates, signs
or changes anything, and its messages never include the PIN.  The mechanisms
each JWS algorithm needs are read from the key service's own table
(:func:`keys.mechanisms.mechanism_requirements`), so doctor checks what it signs with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import PinIncorrect, PinLenRange, PinLocked, PKCS11Error, UserAlreadyLoggedIn

from keys import mechanism_name, module_environment
from keys import mechanism_requirements as requirements


class ProbeError(Exception):
    """A question the module could not answer; the message says why (never the PIN)."""


def load(library: str, module_env: tuple[tuple[str, str], ...] = ()) -> Any:
    """The module loaded; ``module_env`` (HSM_<NAME>_MODULE_ENV) set while it loads, as the provider does."""
    try:
        with module_environment(module_env):
            return pkcs11.lib(library)
    except (PKCS11Error, OSError, RuntimeError) as exc:
        raise ProbeError(str(exc).strip() or type(exc).__name__) from None


def find_slot(lib: Any, label: str | None, slot_id: int | None) -> tuple[Any, list[str]]:
    """The slot holding the configured token (or None) and the labels of every token present."""
    try:
        slots = lib.get_slots(token_present=True)
    except PKCS11Error as exc:
        raise ProbeError(f"cannot list slots ({type(exc).__name__})") from None
    labels: list[str] = []
    found = None
    for slot in slots:
        try:
            token = slot.get_token()
        except PKCS11Error:
            continue
        labels.append(f"{token.label!r} (slot {slot.slot_id})")
        if found is None and ((label and token.label == label) or (not label and slot.slot_id == slot_id)):
            found = slot
    return found, labels


def mechanisms(slot: Any) -> set[Any]:
    try:
        return set(slot.get_mechanisms())
    except PKCS11Error as exc:
        raise ProbeError(f"cannot read the mechanism list ({type(exc).__name__})") from None


def missing_mechanisms(available: set[Any], alg: str) -> list[str]:
    """The requirements of ``alg`` the token meets with none of their alternatives ("A or B")."""
    return [" or ".join(mechanism_name(m) for m in group) for group in requirements(alg)
            if not any(m in available for m in group)]


def usable_mechanisms(available: set[Any], alg: str) -> list[str]:
    """For each requirement of ``alg``, the first alternative the token has."""
    return [mechanism_name(next(m for m in group if m in available)) for group in requirements(alg)
            if any(m in available for m in group)]


class LoginFailed(ProbeError):
    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.fix = fix


def login(slot: Any, pin: str) -> Any:
    """A read-only session logged in as the user."""
    token = slot.get_token()
    try:
        return token.open(user_pin=pin)
    except UserAlreadyLoggedIn:
        return token.open()
    except (PinIncorrect, PinLenRange):
        raise LoginFailed("the token refused the PIN", "set HSM_PIN to the token's user PIN") from None
    except PinLocked:
        raise LoginFailed("the user PIN is locked", "have the token's security officer reset the user PIN") from None
    except PKCS11Error as exc:
        raise LoginFailed(f"login failed ({type(exc).__name__})",
                          "check that the token is initialised and its user PIN is set") from None


@dataclass(frozen=True)
class KeyFacts:
    label: str
    key_id: str
    sensitive: bool
    extractable: bool
    #: CKA_* name -> value of the evidence attributes (keys.evidence); None where the token does not say.
    attributes: dict[str, bool | None]


#: The attributes doctor reads as evidence (PKCS#11 v2.40 §4.4, §4.9).
_EVIDENCE = {"CKA_LOCAL": Attribute.LOCAL, "CKA_SENSITIVE": Attribute.SENSITIVE,
             "CKA_ALWAYS_SENSITIVE": Attribute.ALWAYS_SENSITIVE, "CKA_EXTRACTABLE": Attribute.EXTRACTABLE,
             "CKA_NEVER_EXTRACTABLE": Attribute.NEVER_EXTRACTABLE}


def _flag(key: Any, attribute: Attribute) -> bool | None:
    try:
        value = key[attribute]
    except (PKCS11Error, ValueError):
        return None  # CKR_ATTRIBUTE_TYPE_INVALID: the token does not say
    return value if isinstance(value, bool) else None


def private_keys(session: Any, label: str) -> list[KeyFacts]:
    """Every private key labelled ``label``: whether it is sensitive and extractable, and its evidence attributes."""
    facts = []
    try:
        for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}):
            key_id = key[Attribute.ID]
            facts.append(KeyFacts(label=label, key_id=bytes(key_id).decode("ascii", "replace"),
                                  sensitive=bool(key[Attribute.SENSITIVE]), extractable=bool(key[Attribute.EXTRACTABLE]),
                                  attributes={name: _flag(key, attribute) for name, attribute in _EVIDENCE.items()}))
    except PKCS11Error as exc:
        raise ProbeError(f"cannot read the keys labelled {label!r} ({type(exc).__name__})") from None
    return facts
