"""Liveness and readiness for load balancers and orchestrators.

``/health/alive`` says the process answers.  ``/health/ready`` says it can do
its job: the database answers, every key set has a signing key that passed the
sign-and-verify self-test at start-up, and the HSM session is usable.  When not
ready it answers 503 with a reason *code* per failed check.  With several tokens
(``HSM_TOKENS``) it is ready while every key set signs on one of them, and
reports each token's state by its code.

The endpoint is unauthenticated, so it never returns exception text (library
paths, token labels, sealing errors): only fixed codes.  The HSM check touches
the token at most once per ``HSM_READINESS_CACHE_SECONDS`` whatever the probe
rate, and not at all while the token is known to be lost.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from keys import KeyServiceError, reason_code
from oidc import queries, urls
from oidc.db import db
from oidc.state import current_state
from oidc.web.errors import no_store

bp = Blueprint("health", __name__)


@bp.get(urls.HEALTH_ALIVE)
def alive() -> Response:
    return no_store(jsonify(status="alive"))


def _check_database() -> dict[str, Any]:
    try:
        with db.engine.connect() as connection:
            queries.ping(connection)
    except SQLAlchemyError:
        return {"ok": False, "reason": "database_unreachable"}
    return {"ok": True}


def _reason(exc: Exception) -> str:
    """A fixed code for an error starting the key service (its text may name paths and labels)."""
    if isinstance(exc, SQLAlchemyError):
        return "database_unreachable"
    return reason_code(exc) if isinstance(exc, KeyServiceError) else "key_service_error"


def _check_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        service = current_state().key_service()
    except (KeyServiceError, SQLAlchemyError) as exc:
        reason = _reason(exc)
        return {"ok": False, "reason": "key_service_not_started", "detail": reason}, {"ok": False, "reason": reason}
    health = service.health()
    keys: dict[str, Any] = {"ok": not health.failed, "sets": list(health.sets)}
    if health.failed:
        keys["reason"] = "key_set_unavailable"
        keys["failed"] = health.failed
    hsm: dict[str, Any] = {"ok": health.hsm_usable, "configured": health.hsm_configured}
    if health.hsm_reason is not None:
        hsm["reason"] = health.hsm_reason
    if health.tokens:  # HSM_TOKENS: ready while every set signs on one token; each token's state by code
        hsm["tokens"] = {name: {"ok": reason is None, **({"reason": reason} if reason else {})}
                         for name, reason in health.tokens.items()}
    return keys, hsm


@bp.get(urls.HEALTH_READY)
def ready() -> Response:
    checks: dict[str, Any] = {"database": _check_database()}
    checks["keys"], checks["hsm"] = _check_keys()
    is_ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if is_ready else "unavailable", checks=checks)
    response.status_code = 200 if is_ready else 503
    return no_store(response)
