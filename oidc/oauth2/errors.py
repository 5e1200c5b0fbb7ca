"""Errors of the protocol core that are not OAuth 2.0 error responses."""

from __future__ import annotations


class ErrorPage(Exception):
    """An error to show the user on a page, never to redirect.

    Raised while the client or its redirect URI is not trusted (RFC 6749
    §4.1.2.1, RFC 9700 §4.11: an error redirect to an unchecked URI would make
    the provider an open redirector), and for logout requests (RP-Initiated
    Logout §4).
    """

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
