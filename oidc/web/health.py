"""Liveness and readiness for load balancers and orchestrators.

``/health/alive`` says the process answers.  ``/health/ready`` says it can do
its job: the database answers, every key set has a signing key that passed the
sign-and-verify self-test at start-up, and the HSM session is usable.  When not
ready it answers 503 with a reason *code* per failed check.

The endpoint is unauthenticated, so it never returns exception text (library
paths, token labels, sealing errors): only fixed codes.  The HSM check touches
the token at most once per ``HSM_READINESS_CACHE_SECONDS`` whatever the probe
rate, and not at all while the token is known to be lost.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from keys.errors import HSMUnavailable, KeyServiceError, NoSigningKey
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
    """A fixed code for a key service error (its text may name paths and labels)."""
    if isinstance(exc, HSMUnavailable):
        return exc.reason
    if isinstance(exc, NoSigningKey):
        return "no_signing_key"
    if isinstance(exc, SQLAlchemyError):
        return "database_unreachable"
    return "key_service_error"


def _check_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        service = current_state().key_service()
    except (KeyServiceError, SQLAlchemyError) as exc:
        reason = _reason(exc)
        return {"ok": False, "reason": "key_service_not_started", "detail": reason}, {"ok": False, "reason": reason}
    failed = {name: "self_test_failed" for name, result in service.start_self_test.items() if not result["ok"]}
    if service.pending_start:
        failed.update(dict.fromkeys(service.policies, "hsm_unavailable"))
    for name in service.policies:
        try:
            service.signer(name)
        except KeyServiceError as exc:
            failed.setdefault(name, _reason(exc))
    keys: dict[str, Any] = {"ok": not failed, "sets": sorted(service.policies)}
    if failed:
        keys["reason"] = "key_set_unavailable"
        keys["failed"] = dict(sorted(failed.items()))
    manager = service.hsm
    if manager is None:
        hsm: dict[str, Any] = {"ok": True, "configured": False}
    else:
        usable = manager.is_usable()
        hsm = {"ok": usable, "configured": True}
        if not usable:
            hsm["reason"] = manager.unavailable_error().reason if not manager.available else "hsm_session_unusable"
    return keys, hsm


@bp.get(urls.HEALTH_READY)
def ready() -> Response:
    checks: dict[str, Any] = {"database": _check_database()}
    checks["keys"], checks["hsm"] = _check_keys()
    is_ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if is_ready else "unavailable", checks=checks)
    response.status_code = 200 if is_ready else 503
    return no_store(response)
