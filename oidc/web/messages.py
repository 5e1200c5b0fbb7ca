"""English texts that views and the protocol core hand to the page templates, marked for translation.

The templates translate them with ``_(text)``; listing them here with
:func:`N_` lets ``pybabel extract -k N_`` find them (see README, "Adding a
language").  A test checks that the views' texts are all listed.
"""

from __future__ import annotations


def N_(text: str) -> str:  # gettext's conventional name for "mark, do not translate yet"
    return text


MESSAGES = (
    # oidc.web.login
    N_("Invalid username or password."),
    N_("Too many failed attempts. Please wait a while and try again."),
    N_("The form has expired. Please try again."),
    # oidc.web.authorize: the scopes, and its own errors
    N_("Sign you in and know who you are"),
    N_("See your name and username"),
    N_("See your email address"),
    N_("Keep access when you are not using the app"),
    N_("The consent form has expired. Please start again."),
    N_("Your session has ended. Please start again."),
    # oidc.oauth2.interactions: an interaction that cannot be used (unknown, expired, used, another browser's)
    N_("This sign-in request has expired or was already used. Please go back to the application and start again."),
    # oidc.oauth2.device and oidc.web.device: the device page's messages
    N_("That code is not valid or has expired. Check the code shown on your device and try again."),
    N_("This device sign-in request has expired or was already answered. Start again on your device."),
    N_("Too many wrong codes. Please wait a while and try again."),
    # oidc.oauth2.authorization and end_session: the errors shown on a page
    N_("The request or one of its parameters is too long."),
    N_("The client_id parameter is missing."),
    N_("The client is not known to this provider."),
    N_("The redirect_uri parameter is missing."),
    N_("The redirect_uri is not registered for this client."),
    N_("a parameter is too long"),
    N_("id_token_hint is not an ID token issued by this provider"),
    N_("unknown client_id"),
    N_("client_id does not match the ID token's audience"),
    N_("post_logout_redirect_uri needs client_id or id_token_hint"),
    N_("post_logout_redirect_uri is not registered for this client"),
    # oidc.web.errors
    N_("the service is temporarily unavailable"),
    N_("the server could not complete the request"),
)
