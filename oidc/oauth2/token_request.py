"""Checks of a request to the token, introspection or revocation endpoint before Authlib sees it.

Refusals Authlib would not give, or would give as a 500: the body must be a
form (RFC 6749 §3.2), credentials never come in the URL (§2.3.1), no
parameter is repeated (§3.1, except RFC 8707's ``resource``) or sent both in
the URL and in the body, no value holds a control character (Appendix A),
``grant_type`` is present at the token endpoint (§5.2: a missing parameter is
``invalid_request``), HTTP Basic credentials must decode (RFC 7617, with any
whitespace after the scheme, as Authlib parses it), and a client uses one
authentication method per request (§2.3).
"""

from __future__ import annotations

import binascii
import re
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization

from oidc.oauth2.parameters import (
    FORM,
    ParameterError,
    has_control_character,
    longest_value,
    repeated_parameter,
    request_parameters,
)

#: Parameters that carry secrets must never come in the URL (RFC 6749 §2.3.1, §3.2).
SECRET_PARAMETERS = ("client_secret", "code", "code_verifier", "refresh_token", "client_assertion", "token")
#: Parameters that may be repeated (RFC 8707 §2: one ``resource`` per target).
REPEATABLE_PARAMETERS = ("resource",)
#: Longest value of any parameter of a token, introspection, revocation or PAR request.
MAX_FORM_PARAMETER_LENGTH = 16384
#: ``Basic`` followed by any whitespace (Authlib splits the header on whitespace, not on one space).
_BASIC = re.compile(r"basic\s", re.IGNORECASE)
#: Where :func:`precheck` leaves the HTTP Basic credentials it decoded, in the request's WSGI environ,
#: so that client authentication does not decode the header a second time (:func:`basic_credentials`).
_BASIC_CREDENTIALS = "oidc.basic_credentials"


def precheck(request: Any, *, token_endpoint: bool = False) -> OAuth2Error | None:
    """The error to answer ``request`` (a Flask request) with, or None to let Authlib handle it."""
    if request.mimetype != FORM:
        return InvalidRequestError("The body must be application/x-www-form-urlencoded.")
    if request.query_string and any(name in request.args for name in SECRET_PARAMETERS):
        return InvalidRequestError("Credentials must be sent in the request body, not in the URL.")
    try:
        form = request_parameters(request)
    except ParameterError as exc:
        return InvalidRequestError(str(exc))
    if longest_value(form) > MAX_FORM_PARAMETER_LENGTH:
        return InvalidRequestError("A parameter is too long.")
    repeated = repeated_parameter(form, (name for name in form if name not in REPEATABLE_PARAMETERS))
    if repeated is not None:
        return InvalidRequestError(str(repeated))
    if token_endpoint and not form.get("grant_type"):
        return InvalidRequestError("The grant_type parameter is missing.")
    secret, assertion = form.get("client_secret"), form.get("client_assertion")
    if secret and assertion:
        return InvalidRequestError("Use one client authentication method, not several.")
    # The header from the WSGI environ (PEP 3333), the value the request's headers would give:
    # they look it up through three calls.
    environ = request.environ
    return _authorization_error(environ.get("HTTP_AUTHORIZATION", ""), bool(secret or assertion), environ)


def basic_credentials(oauth_request: Any) -> tuple[str | None, str | None]:
    """The client id and secret of the HTTP Basic header of ``oauth_request`` (an Authlib request), as
    Authlib's ``extract_basic_authorization`` reads them (RFC 6749 §2.3.1: each form-urlencoded):
    decoded once, by :func:`precheck`, or here for a request that did not go through it."""
    flask_request = getattr(oauth_request, "_request", None)
    decoded = getattr(flask_request, "environ", {}).get(_BASIC_CREDENTIALS)
    if decoded is not None:
        return decoded  # type: ignore[no-any-return]
    return extract_basic_authorization(oauth_request.headers)  # type: ignore[no-any-return]


def _authorization_error(authorization: str, credentials_in_body: bool, environ: dict[str, Any]) -> OAuth2Error | None:
    """The error of a request whose Authorization header (``authorization``) is not usable HTTP Basic, or
    that authenticates in its body too (``credentials_in_body``: a ``client_secret`` or ``client_assertion``),
    or None.

    Usable credentials are left in ``environ`` for :func:`basic_credentials`.
    """
    if not authorization:
        return None  # no HTTP Basic: the client authenticates in the body, or not at all
    if not _BASIC.match(authorization + " "):
        # RFC 6749 §2.3.1, §5.2: clients authenticate here with HTTP Basic only; another
        # scheme is an unsupported authentication method (and would reach Authlib's
        # header parsing, which fails on a scheme without credentials).
        return InvalidClientError(status_code=401, description="Use HTTP Basic to authenticate the client.")
    try:
        # base64.b64decode(..., validate=True) is these two steps (ASCII, then strict base64), in Python.
        decoded = binascii.a2b_base64(authorization[6:].strip().encode("ascii"), strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        decoded = ""
    if ":" not in decoded or has_control_character(decoded):
        return InvalidClientError(status_code=401, description="Malformed HTTP Basic credentials.")
    if credentials_in_body:
        return InvalidRequestError("Use one client authentication method, not several.")
    client_id, _, secret = decoded.partition(":")
    # (unquote returns a value without "%" as it is: it is called only for one with an escape.)
    environ[_BASIC_CREDENTIALS] = (unquote(client_id) if "%" in client_id else client_id,
                                   unquote(secret) if "%" in secret else secret)
    return None
