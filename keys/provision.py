"""Provision key pairs on a token by hand, non-extractable on every vendor.

``pkcs11-tool --keypairgen`` (OpenSC 0.23) has no way to ask for
``CKA_EXTRACTABLE = false``: it leaves the attribute out, and each token
applies its own default (SoftHSM2: not extractable; openCryptoki: extractable).
The provider refuses an extractable private key, so this tool provisions pairs
with the provider's own template (Ory Hydra's attribute mapping: ``CKA_LABEL``
the set's label, ``CKA_ID`` the kid, both halves sharing them), and ``harden``
fixes a pair made by another tool.  The PIN is read from the environment
(``HSM_PIN``), never from the command line, where other users could read it::

    HSM_PIN=... python -m keys.provision generate --module "$HSM_LIBRARY" --token-label oidc \\
        --label hydra.openid.id-token --id 746573742d6b65792d6964 --key-type rsa:4096
    HSM_PIN=... python -m keys.provision generate --use enc --module "$HSM_LIBRARY" --token-label oidc \\
        --label openid.request-object --id 656e632d31 --key-type rsa:3072
    HSM_PIN=... python -m keys.provision harden --module "$HSM_LIBRARY" --token-label oidc \\
        --label hydra.openid.id-token --id 746573742d6b65792d6964
"""

from __future__ import annotations

import argparse
import os
import sys

from pkcs11 import Attribute, ObjectClass

from keys.algorithms import ENCRYPTION_ALGORITHMS, get_algorithm
from keys.errors import KeyServiceError
from keys.hsm import HSMConfig, HSMManager

#: pkcs11-tool's --key-type spellings -> (JWS alg, RSA bits).
KEY_TYPES = {
    "EC:prime256v1": ("ES256", 0), "EC:secp256r1": ("ES256", 0),
    "EC:secp384r1": ("ES384", 0), "EC:secp521r1": ("ES512", 0),
    "Ed25519": ("EdDSA", 0), "EC:edwards25519": ("EdDSA", 0),
}


def _key_type(value: str) -> tuple[str, int]:
    if value.lower().startswith("rsa:"):
        return "RS256", int(value.split(":", 1)[1])
    if value not in KEY_TYPES:
        raise argparse.ArgumentTypeError(f"unknown key type {value!r}: rsa:BITS or one of {', '.join(KEY_TYPES)}")
    return KEY_TYPES[value]


def generate(manager: HSMManager, label: str, cka_id: bytes, key_type: str, use: str = "sig") -> None:
    """A sensitive, never-extractable pair labelled ``label`` with ``CKA_ID`` ``cka_id``: a signing one, or
    with ``use`` ``enc`` an RSA decryption one (``CKA_DECRYPT``, never ``CKA_SIGN``)."""
    alg, bits = _key_type(key_type)
    if use == "enc" and not bits:
        raise KeyServiceError(f"decryption keys are RSA (RSA-OAEP): {key_type!r} is not")
    algorithm = ENCRYPTION_ALGORITHMS["RSA-OAEP-256"] if use == "enc" else get_algorithm(alg)

    def run() -> None:
        existing = list(manager._session.get_objects({Attribute.LABEL: label, Attribute.ID: cka_id}))
        if existing:
            raise KeyServiceError(f"the token already holds objects labelled {label!r} with this id")
        manager._generate_pair(algorithm, label, cka_id, bits)

    manager._call(run, f"generation of a {key_type} pair labelled {label!r}")


def harden(manager: HSMManager, label: str, cka_id: bytes) -> int:
    """Make the private key(s) labelled ``label`` with ``cka_id`` sensitive and not extractable.

    PKCS#11 v2.40 §4.9 lets ``C_SetAttributeValue`` turn ``CKA_SENSITIVE`` on and
    ``CKA_EXTRACTABLE`` off, never back.  ``CKA_NEVER_EXTRACTABLE`` stays false:
    a key that was extractable may have been copied before; prefer ``generate``.
    """
    def run() -> int:
        keys = list(manager._session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label, Attribute.ID: cka_id}
        ))
        for key in keys:
            key[Attribute.SENSITIVE] = True
            key[Attribute.EXTRACTABLE] = False
        return len(keys)

    return manager._call(run, f"hardening of the private key labelled {label!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keys.provision", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["generate", "harden"])
    parser.add_argument("--module", required=True, help="the vendor's PKCS#11 library")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--token-label")
    where.add_argument("--slot", type=int)
    parser.add_argument("--label", required=True, help="CKA_LABEL: the key set's (prefixed) name")
    parser.add_argument("--id", required=True, help="CKA_ID in hex: the kid (as text when printable)")
    parser.add_argument("--key-type", default="EC:prime256v1", type=str)
    parser.add_argument("--use", choices=["sig", "enc"], default="sig",
                        help="sig: a signing pair (CKA_SIGN); enc: an RSA decryption pair (CKA_DECRYPT, no CKA_SIGN)")
    args = parser.parse_args(argv)
    pin = os.environ.get("HSM_PIN", "")
    if not pin:
        parser.error("set HSM_PIN in the environment (never on the command line)")
    try:
        cka_id = bytes.fromhex(args.id)
        if args.command == "generate":
            _key_type(args.key_type)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    manager = HSMManager(HSMConfig(library=args.module, pin=pin, token_label=args.token_label, slot=args.slot))
    try:
        manager.open()
        if args.command == "generate":
            generate(manager, args.label, cka_id, args.key_type, args.use)
            print(f"generated {args.key_type} pair {args.label!r} id {args.id}")
        else:
            count = harden(manager, args.label, cka_id)
            if not count:
                print(f"no private key labelled {args.label!r} with id {args.id}", file=sys.stderr)
                return 1
            print(f"hardened {count} private key(s) {args.label!r} id {args.id}")
    except KeyServiceError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
