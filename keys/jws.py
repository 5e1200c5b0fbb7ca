"""The one builder of a JWS in compact serialization (RFC 7515 §7.1), for tokens and the self-test.

``b64url(header) . b64url(payload) . b64url(signer.sign(signing_input))``: the
signature comes from a :class:`~keys.signer.Signer`, so the private key never
leaves the manager (HSM or sealed software key) that holds it.  The header
names the signer's ``alg`` and ``kid`` and the artefact's ``typ`` (RFC 7515
§4.1; RFC 8725 §3.11: each kind of token its own ``typ``).
"""

from __future__ import annotations

import binascii
import functools
import json
from typing import Any

from keys.signer import Signer

#: Standard base64's two letters of its own as base64url's (RFC 4648 §5).
_STANDARD_TO_URL = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2), as JOSE and PKCE use it.

    ``base64.urlsafe_b64encode``'s steps (binascii's encoding, the two letters translated),
    without its two Python calls: every token signs two segments and every keyed hash encodes one.
    """
    return binascii.b2a_base64(data, newline=False).translate(_STANDARD_TO_URL).rstrip(b"=").decode("ascii")


def json_bytes(data: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a header or claims set (no spaces: the token is as short as it can be)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@functools.lru_cache(maxsize=256)
def encoded_header(alg: str, kid: str, typ: str) -> str:
    """The base64url of the protected header ``alg``, ``kid``, ``typ``: made once per key and ``typ``,
    not per token (a process signs with a handful of keys)."""
    return b64url(json_bytes({"alg": alg, "kid": kid, "typ": typ}))


def compact_jws(signer: Signer, claims: dict[str, Any], typ: str) -> str:
    """``claims`` signed by ``signer`` as a compact JWS whose header is ``alg``, ``kid`` and ``typ``."""
    signing_input = f"{encoded_header(signer.alg, signer.kid, typ)}.{b64url(json_bytes(claims))}"
    return f"{signing_input}.{b64url(signer.sign(signing_input.encode('ascii')))}"
