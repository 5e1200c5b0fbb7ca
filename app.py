"""WSGI entry point: ``gunicorn app:app`` or ``flask --app app ...`` (installed: ``oidc-hsm``)."""

from oidc.wsgi import app

__all__ = ["app"]
