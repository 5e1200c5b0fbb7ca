"""JSON error responses: the standard error code, a description, never a trace."""

from __future__ import annotations

import logging
import math

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from keys.errors import HSMUnavailable, KeyServiceError
from oidc.models import db

log = logging.getLogger(__name__)


def error_response(status: int, error: str, description: str):  # type: ignore[no-untyped-def]
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "request_too_large", 429: "too_many_requests"}.get(
            exc.code or 500, "server_error"
        )
        response = error_response(exc.code or 500, code, exc.description or code)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_unavailable(exc: Exception):  # type: ignore[no-untyped-def]
        # The database is down or restarting: a clear, retryable 503 instead
        # of a trace; the pool reconnects by itself (pool_pre_ping).
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            return unexpected(exc)
        log.error("database unavailable: %s", type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__)
        try:
            db.session.rollback()
        except Exception:  # the connection is already gone
            pass
        response = error_response(503, "temporarily_unavailable", "the service is temporarily unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(KeyServiceError)
    def signing_unavailable(exc: Exception):  # type: ignore[no-untyped-def]
        if isinstance(exc, HSMUnavailable):
            # The manager logged one WARNING when the token was lost: no line per request.
            retry_after = str(max(1, math.ceil(exc.retry_after)))
        else:
            log.error("signing unavailable: %s", exc)
            retry_after = "5"
        response = error_response(503, "temporarily_unavailable", "the service is temporarily unavailable")
        response.headers["Retry-After"] = retry_after
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return error_response(500, "server_error", "the server could not complete the request")
