"""WSGI entry point: ``gunicorn app:app`` or ``flask --app app ...``."""

from oidc import create_app

app = create_app()
