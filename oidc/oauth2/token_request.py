"""Checks of a request to the token, introspection or revocation endpoint before Authlib sees it.

Refusals Authlib would not give, or would give as a 500: the body must be a
form (RFC 6749 §3.2), credentials never come in the URL (§2.3.1), no
parameter is repeated (§3.1, except RFC 8707's ``resource``), HTTP Basic
credentials must decode (RFC 7617), and a client uses one authentication
method per request (§2.3).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error

#: Parameters that carry secrets must never come in the URL (RFC 6749 §2.3.1, §3.2).
SECRET_PARAMETERS = ("client_secret", "code", "code_verifier", "refresh_token", "client_assertion", "token")
#: Parameters that may be repeated (RFC 8707 §2: one ``resource`` per target).
REPEATABLE_PARAMETERS = ("resource",)
MAX_PARAMETER_LENGTH = 16384


def precheck(request: Any) -> OAuth2Error | None:
    """The error to answer ``request`` (a Flask request) with, or None to let Authlib handle it."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return InvalidRequestError("The body must be application/x-www-form-urlencoded.")
    if request.query_string and any(name in request.args for name in SECRET_PARAMETERS):
        return InvalidRequestError("Credentials must be sent in the request body, not in the URL.")
    form = request.form
    for name, values in form.lists():
        if any(len(value) > MAX_PARAMETER_LENGTH for value in values):
            return InvalidRequestError("A parameter is too long.")
        if len(values) > 1 and name not in REPEATABLE_PARAMETERS:
            return InvalidRequestError(f"The {name} parameter is repeated.")
    authorization = request.headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        if ":" not in decoded:
            return InvalidClientError(status_code=401, description="Malformed HTTP Basic credentials.")
        if form.get("client_secret") or form.get("client_assertion"):
            return InvalidRequestError("Use one client authentication method, not several.")
    return None
