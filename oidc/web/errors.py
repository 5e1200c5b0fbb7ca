"""Error responses: the standard error code and a description, never a trace.

JSON (``{"error", "error_description"}``, ``Cache-Control: no-store``) for the
API endpoints; an HTML page for the browser pages, whose errors must never be
redirected when the client or its redirect URI is not trusted.  The core's
:class:`~oidc.oauth2.errors.ErrorPage` and
:class:`~oidc.oauth2.authorization.ErrorRedirect` become their responses here,
so the views that meet them need not catch them.
"""

from __future__ import annotations

import logging
import math

from flask import Flask, Response, jsonify, render_template
from flask_babel import lazy_gettext as _l
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from keys import HSMUnavailable, KeyServiceError
from oidc.db import db
from oidc.oauth2 import response_modes
from oidc.oauth2.authorization import ErrorRedirect
from oidc.oauth2.errors import ErrorPage
from oidc.web.pages import is_page_request

log = logging.getLogger(__name__)

#: The error code of each HTTP error the framework raises (routing, size limits).  A body
#: too large or unparsable is a malformed request: RFC 6749 §5.2's ``invalid_request``.
_HTTP_ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                     405: "method_not_allowed", 413: "invalid_request", 415: "invalid_request",
                     429: "too_many_requests"}
#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = "5"


def no_store(response: Response) -> Response:
    """Mark a response that carries tokens, secrets or personal data as never cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(status: int, error: str, description: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return no_store(response)


#: What the error page calls each kind of failure (its heading); the description says more.
ERROR_TITLES = {
    "invalid_client": _l("This application is not recognised"),
    "redirect_uri": _l("This application's return address is not registered"),
    "expired": _l("This request has expired"),
    "login_required": _l("Your session has ended"),
    "temporarily_unavailable": _l("The service is temporarily unavailable"),
    "not_found": _l("Page not found"),
}
DEFAULT_ERROR_TITLE = _l("This request cannot be completed")


def error_kind(error: str, description: str) -> str:
    """Which page title fits: an unknown client, an unregistered redirect URI, an expired form..."""
    if error == "invalid_client" or error in ERROR_TITLES:
        return error
    lowered = description.lower()
    if "redirect_uri" in lowered:
        return "redirect_uri"
    if "expired" in lowered or "already been used" in lowered:
        return "expired"
    return error


def error_page(error: str, description: str, status: int = 400) -> tuple[str, int]:
    """The HTML error page."""
    kind = error_kind(error, description)
    return render_template("error.html", error=error, description=description, status=status,
                           title=ERROR_TITLES.get(kind, DEFAULT_ERROR_TITLE), kind=kind), status


def page_response(error: str, description: str, status: int = 400) -> Response:
    """The HTML error page as a response."""
    body, status = error_page(error, description, status)
    return Response(body, status=status, mimetype="text/html")


def core_response(result: response_modes.Response) -> Response:
    """A response the protocol core built (status, body, headers): an authorization response."""
    status, body, headers = result
    # The media type named when the core gave none (a redirect): werkzeug would otherwise look
    # the header up, and a name absent from its Headers raises (and catches) a KeyError.
    if any(name.lower() == "content-type" for name, _ in headers):
        return Response(body, status=status, headers=headers)
    return Response(body, status=status, headers=headers, mimetype=Response.default_mimetype)


def unavailable(retry_after: str = RETRY_AFTER_SECONDS) -> Response:
    """503 ``temporarily_unavailable`` with ``Retry-After``: a dependency is down, retry soon.

    A page for the browser pages, JSON for the API endpoints.
    """
    if is_page_request():
        response = page_response("temporarily_unavailable", "the service is temporarily unavailable", 503)
    else:
        response = error_response(503, "temporarily_unavailable", "the service is temporarily unavailable")
    response.headers["Retry-After"] = retry_after
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(ErrorPage, refused_on_page)
    app.register_error_handler(ErrorRedirect, refused_to_client)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(OperationalError, database_unavailable)
    app.register_error_handler(DBAPIError, database_unavailable)
    app.register_error_handler(RedisConnectionError, shared_store_unavailable)
    app.register_error_handler(RedisTimeoutError, shared_store_unavailable)
    app.register_error_handler(KeyServiceError, signing_unavailable)
    app.register_error_handler(Exception, unexpected)


def refused_on_page(page: ErrorPage) -> Response:
    # Nothing of a refused request is kept (what must outlive it, such as a
    # used-up pushed request, was committed on its own).
    db.session.rollback()
    return page_response(page.error, page.description)


def refused_to_client(refusal: ErrorRedirect) -> Response:
    db.session.rollback()
    try:
        result = refusal.response  # a JARM error response is signed here
    except KeyServiceError as exc:
        return signing_unavailable(exc)
    return core_response(result)


def http_error(exc: HTTPException) -> Response:
    code = _HTTP_ERROR_CODES.get(exc.code or 500, "server_error")
    if is_page_request():
        response = Response(error_page(code, exc.description or code, exc.code or 500)[0],
                            status=exc.code or 500, mimetype="text/html")
    else:
        response = error_response(exc.code or 500, code, exc.description or code)
    valid_methods = getattr(exc, "valid_methods", None)
    if exc.code == 405 and valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def database_unavailable(exc: Exception) -> Response | tuple[str, int]:
    # The database is down or restarting: a clear, retryable 503 instead
    # of a trace; the pool reconnects by itself (oidc.db.ping_idle_connections).
    if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError) and not exc.connection_invalidated:
        return unexpected(exc)
    log.error("database unavailable: %s", type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__)
    try:
        db.session.rollback()
    except Exception:  # the connection is already gone
        pass
    return unavailable()


def shared_store_unavailable(exc: Exception) -> Response:
    # Redis (DPoP proof jtis, login counters shared by instances) is down or slow: a
    # retryable 503, never a trace; the client reconnects on the next request.
    log.error("shared store unavailable: %s", type(exc).__name__)
    return unavailable()


def signing_unavailable(exc: Exception) -> Response:
    if isinstance(exc, HSMUnavailable):
        # The manager logged one WARNING when the token was lost: no line per request.
        return unavailable(str(max(1, math.ceil(exc.retry_after))))
    log.error("signing unavailable: %s", exc)
    return unavailable()


def unexpected(exc: Exception) -> Response | tuple[str, int]:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    if is_page_request():
        return error_page("server_error", "the server could not complete the request", 500)
    return error_response(500, "server_error", "the server could not complete the request")
