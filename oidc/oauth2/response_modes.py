"""How an authorization response reaches the client: ``query``, ``form_post``, or a JARM mode.

``query`` is a 302 to the redirect URI with the parameters added (RFC 6749
§4.1.2); ``form_post`` (OAuth 2.0 Form Post Response Mode) is a page that posts
them there, with a CSP that allows only its own one-line submit script.

The JWT Secured Authorization Response Mode (JARM) modes deliver the same
parameters as the claims of one signed JWT, in a single ``response`` parameter
(JARM §2.3): ``query.jwt`` (and ``jwt``, its default for ``code``) in the
query, ``fragment.jwt`` in the fragment, ``form_post.jwt`` posted.  The JWT
carries ``iss``, ``aud`` (the client_id) and a short ``exp`` (JARM §2.1) beside
the code and ``state``, or the error fields; it is signed with the ID token key
set (:func:`oidc.oauth2.jwt.sign_response`) and encrypted to the client when it
registered ``authorization_encrypted_response_alg`` (:mod:`oidc.oauth2.encryption`).
A client under FAPI 2.0 Message Signing gets every response, errors included,
as a JARM one (:func:`effective`).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlparse, urlunparse

from oidc.oauth2 import encryption, security_profile
from oidc.oauth2.jwt import sign_response
from oidc.state import current_state
from oidc.vocabulary import JARM_RESPONSE_MODES, JARM_TYP, RESPONSE_MODES

#: The hash of the one inline script of the form_post page (``document.forms[0].submit()``).
_FORM_POST_CSP = ("default-src 'none'; script-src 'unsafe-hashes' "
                  "'sha256-ePniVEkSivX/c7XWBGafqh8tSpiRrKiqYeqbG7N1TOE='; form-action *; frame-ancestors 'none'")
#: Seconds a JARM response is valid (JARM §2.1 "exp ... short"; the client reads it at once).
JARM_LIFETIME = 60
#: The one parameter a JARM response carries (JARM §2.3.1).
JARM_PARAMETER = "response"

Response = tuple[int, str, list[tuple[str, str]]]


#: A name or value that form encoding leaves as it is (``urllib.parse``'s always-safe characters):
#: a code, most states and parameter names.
_UNCHANGED_BY_ENCODING = re.compile(r"[A-Za-z0-9_.~-]*")


def _form_encoded(name_or_value: str) -> str:
    return name_or_value if _UNCHANGED_BY_ENCODING.fullmatch(name_or_value) else _quoted(name_or_value)


@lru_cache(maxsize=64)
def _quoted(name_or_value: str) -> str:
    """``quote_plus``, remembered: what a response needs quoted is mostly the same on every response of the
    process (``iss``, the issuer URL, RFC 9207; the query values of a registered redirect URI)."""
    return quote_plus(name_or_value)


def add_params_to_uri(uri: str, params: list[tuple[str, str]]) -> str:
    """``uri`` with ``params`` added to its query (RFC 6749 §4.1.2: any query it has is kept).

    The URI Authlib's ``add_params_to_uri`` makes, character for character
    (the query re-encoded by ``urllib.parse.urlencode``), without its
    conversions of each name and value to bytes and back.
    """
    base, kept, fragment = _split(uri)
    encoded = "&".join(f"{_form_encoded(name)}={_form_encoded(value)}" for name, value in (*kept, *params))
    # What urlunparse makes of the parts with this query: the query and fragment each after
    # their separator, when not empty.
    return base + ("?" + encoded if encoded else "") + ("#" + fragment if fragment else "")


@lru_cache(maxsize=256)
def _split(uri: str) -> tuple[str, tuple[tuple[str, str], ...], str]:
    """A redirect URI as the responses to it are built on it, parsed once per URI (registered URIs:
    a few per client): the URI without its query and fragment, its query's pairs, and its fragment."""
    scheme, netloc, path, path_params, query, fragment = urlparse(uri)
    kept = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    return urlunparse((scheme, netloc, path, path_params, "", "")), kept, fragment


def supported(response_mode: Any) -> str | None:
    """``response_mode`` if it is one we deliver, else None (the default, query)."""
    return response_mode if response_mode in RESPONSE_MODES else None


def effective(response_mode: Any, client: Any, profile: str | None = None) -> str | None:
    """The mode a response to ``client`` is delivered in: the requested one if we deliver it, the
    default otherwise; a client that must get JARM responses gets ``jwt`` for a plain mode.

    ``profile``: the client's security profile, when the caller has it.
    """
    mode = supported(response_mode)
    if client is not None and mode not in JARM_RESPONSE_MODES and security_profile.requires_jarm(client, profile=profile):
        return "jwt"
    return mode


def jarm_response(client: Any, params: list[tuple[str, str]]) -> str:
    """``params`` as a JARM response JWT to ``client``: signed, then encrypted if it registered so."""
    moment = current_state().clock.now()
    claims: dict[str, Any] = dict(params)
    claims.update(iss=current_state().settings.issuer, aud=str(client.client_id), exp=moment + JARM_LIFETIME)
    signed = sign_response(claims, JARM_TYP, client.authorization_signed_response_alg)
    return encryption.seal(client, "authorization", signed.token)


def _form_post(redirect_uri: str, params: list[tuple[str, str]]) -> Response:
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params
    )
    body = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Continue</title></head>"
        "<body onload=\"document.forms[0].submit()\">"
        f'<form method="post" action="{html.escape(redirect_uri)}">{fields}'
        "<noscript><button type=\"submit\">Continue</button></noscript></form></body></html>"
    )
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
               ("Content-Security-Policy", _FORM_POST_CSP)]
    return 200, body, headers


def _redirect(location: str) -> Response:
    return 302, "", [("Location", location), ("Cache-Control", "no-store")]


def authorization_response(redirect_uri: str, params: list[tuple[str, str]], response_mode: str | None,
                           client: Any = None, profile: str | None = None) -> Response:
    """``params`` delivered to ``client`` in ``response_mode`` (:func:`effective`): (status, body, headers).

    ``profile``: the client's security profile, when the caller has it.
    """
    mode = effective(response_mode, client, profile)
    if mode in JARM_RESPONSE_MODES:
        params = [(JARM_PARAMETER, jarm_response(client, params))]
        if mode == "form_post.jwt":
            return _form_post(redirect_uri, params)
        if mode == "fragment.jwt":
            return _redirect(f"{redirect_uri}#{JARM_PARAMETER}={params[0][1]}")  # base64url and dots: no escaping
        return _redirect(add_params_to_uri(redirect_uri, params))
    if mode == "form_post":
        return _form_post(redirect_uri, params)
    return _redirect(add_params_to_uri(redirect_uri, params))
