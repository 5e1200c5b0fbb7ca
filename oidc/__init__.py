"""An OpenID Connect provider whose token-signing keys live in an HSM.

The package imports nothing: :func:`oidc.app.create_app` builds the provider
(settings -> state -> extensions -> the web layer -> the CLI).  A request goes
from a view in :mod:`oidc.web` to the protocol core (:mod:`oidc.oauth2`,
:mod:`oidc.accounts`), which signs through the key service (:mod:`keys`) held
by :mod:`oidc.state`.
"""
