"""How an authorization response reaches the client: ``query`` or ``form_post``.

``query`` is a 302 to the redirect URI with the parameters added (RFC 6749
§4.1.2); ``form_post`` (OAuth 2.0 Form Post Response Mode) is a page that posts
them there, with a CSP that allows only its own one-line submit script.
"""

from __future__ import annotations

import html
from typing import Any

from authlib.common.urls import add_params_to_uri

from oidc.vocabulary import RESPONSE_MODES

#: The hash of the one inline script of the form_post page (``document.forms[0].submit()``).
_FORM_POST_CSP = ("default-src 'none'; script-src 'unsafe-hashes' "
                  "'sha256-ePniVEkSivX/c7XWBGafqh8tSpiRrKiqYeqbG7N1TOE='; form-action *; frame-ancestors 'none'")

Response = tuple[int, str, list[tuple[str, str]]]


def supported(response_mode: Any) -> str | None:
    """``response_mode`` if it is one we deliver, else None (the default, query)."""
    return response_mode if response_mode in RESPONSE_MODES else None


def authorization_response(redirect_uri: str, params: list[tuple[str, str]], response_mode: str | None) -> Response:
    """``params`` delivered to the client in its response mode: (status, body, headers)."""
    if response_mode == "form_post":
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
    return 302, "", [("Location", add_params_to_uri(redirect_uri, params)), ("Cache-Control", "no-store")]
