"""``POST /par``: pushed authorization requests (RFC 9126); the protocol is :mod:`oidc.oauth2.par`'s."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, Response, jsonify, request

from oidc import urls
from oidc.db import db
from oidc.oauth2 import dpop, par
from oidc.oauth2.authorization import ErrorRedirect, validate_pushed_request
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.server import authorization_server
from oidc.oauth2.token_request import precheck
from oidc.web.errors import error_response, no_store

bp = Blueprint("par", __name__)


@bp.post(urls.PAR)
def pushed_authorization_request() -> Response:
    server = authorization_server()
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    try:
        problem = precheck(flask_request)
        if problem is not None:
            raise problem
        oauth_request = server.create_request_with_proof(urls.PAR)  # its DPoP proof verified (RFC 9449 §4.3)
        client = par.authenticate(server, oauth_request)
        params = par.pushed_parameters(request.form, client, oauth_request.dpop)
        validate_pushed_request(params)
    except OAuth2Error as error:
        db.session.rollback()
        return dpop.with_nonce(server.handle_error_response(None, error))
    except ErrorPage as page:
        db.session.rollback()
        return dpop.with_nonce(error_response(400, page.error, page.description))
    except ErrorRedirect as refusal:
        db.session.rollback()
        cause = refusal.error
        code = cause.error if cause is not None and cause.error else "invalid_request"
        description = (cause.get_error_description() if cause is not None else None) or "invalid request"
        return dpop.with_nonce(error_response(400, code, description))
    body = par.store(client, params)
    db.session.commit()
    response = jsonify(body)
    response.status_code = 201
    return dpop.with_nonce(no_store(response))
