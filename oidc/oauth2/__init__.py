"""The protocol core: OAuth 2.0 and OpenID Connect on Authlib, one module per RFC or concern.

==========================  ===================================================
``server``                  the authorization server and its registrations
``authorization``           validating an authorization request (RFC 6749 §4.1.1)
``steps``                   what /authorize does next: login, account choice, consent, respond, refuse
``consents``                remembered consent (OIDC Core §11)
``interactions``            a request waiting on the server for login and consent
``par``                     pushed authorization requests (RFC 9126)
``dpop``                    DPoP proofs (RFC 9449)
``security_profile``        the FAPI 2.0 Security Profile's (and Message Signing's) rules, per client
``response_modes``          query, form_post and JARM (jwt, query.jwt, fragment.jwt, form_post.jwt) responses
``encryption``              responses encrypted to a client's public key (JWE)
``grants/``                 authorization code, refresh token, client credentials
``pkce``                    RFC 7636, S256 only
``openid``                  ID tokens, claims and signed userinfo (OIDC Core)
``resources``               resource indicators (RFC 8707)
``families``                issuing, rotating and revoking a grant's tokens
``jwt``                     signing through the key service; verifying our own JWTs
``bearer``                  THE access-token validator; RFC 6750 protection
``tokens``                  any token by value and hint (RFC 7662/7009 §2.1)
``introspection``           RFC 7662, and JWT answers (RFC 9701)
``revocation``              RFC 7009
``end_session``             RP-Initiated Logout 1.0
``client_auth``             private_key_jwt (RFC 7523)
``client_cache``            clients kept in memory for a few seconds
``token_request``           checks before Authlib sees a token request
``logins``                  the grant's user and its login; ending a login with its grants
``errors``                  errors that are pages, not redirects
==========================  ===================================================

What is supported is listed once, in :mod:`oidc.vocabulary`.  Nothing here imports :mod:`oidc.accounts`,
:mod:`oidc.web` or :mod:`oidc.cli` (tests/test_layering.py).
"""
