"""Structured JSON logs: one JSON object per line, for the access and audit logs.

* ``oidc.access``: one line per request: method, path (never the query string,
  which can carry an ``id_token_hint``), status, duration, client address.
* ``oidc.audit``: security events (logins, consents, token issuance, key
  generation, rotation, deletion, re-sealing) with their fields as JSON members.
  Callers pass identifiers (client, user, grant, kid), never a secret or token.
"""

from __future__ import annotations

import logging
import sys
import time

from flask import Flask, Response, g, request
from gunicorn.glogging import Logger as _GunicornLogger
from pythonjsonlogger.json import JsonFormatter

access_log = logging.getLogger("oidc.access")

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_configured = False


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        _FORMAT,
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


class GunicornLogger(_GunicornLogger):  # type: ignore[misc]  # the base class is untyped
    """gunicorn's logger without its access log.

    gunicorn builds an access line for every request whenever a logging
    configuration is given, with the query string in it; the app logs each
    request itself (``oidc.access``), so gunicorn's line is never built.
    """

    access_log_enabled = False

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        return None


def configure_logging(log_format: str, level: str) -> None:
    """Send every log record to stderr, as JSON (or text for development), once per process."""
    global _configured
    if _configured or logging.getLogger().handlers:
        return  # already set up (by gunicorn's logconfig_dict, or by the operator)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    _configured = True


def use_text_format() -> None:
    """Log in words instead of JSON (a command run on a terminal, whose output a person reads).

    Only the handler :func:`configure_logging` installed: one set up by the operator is left alone.
    """
    if _configured:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def init_app(app: Flask, log_format: str, level: str) -> None:
    if not app.testing:
        configure_logging(log_format, level)
    for name in ("oidc", "keys"):
        logging.getLogger(name).setLevel(level)

    @app.before_request
    def start_timer() -> None:
        # flask.g: what this before_request hook hands its after_request hook, for every
        # request (pages, static files, errors), most of which never have an OAuth 2.0 request.
        # Only while the access log is on: with it off, log_request reads nothing.
        if access_log.isEnabledFor(logging.INFO):
            g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        # Checked first: with the access log off (LOG_LEVEL above INFO), a
        # request should not pay for building a record nobody will see.
        if not access_log.isEnabledFor(logging.INFO):
            return response
        started = g.get("request_started")
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
                "remote_addr": request.remote_addr,
            },
        )
        return response
