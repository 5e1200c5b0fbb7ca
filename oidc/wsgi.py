"""The WSGI application, built from the environment: ``gunicorn oidc.wsgi:app`` (what ``oidc-hsm serve`` runs).

A setting or theme file that cannot be used stops the process with one line
naming it (``configuration error: ...``), not a traceback.
"""

from oidc.app import create_app
from oidc.settings import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    raise SystemExit(f"configuration error: {exc}") from None

__all__ = ["app"]
