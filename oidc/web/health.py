"""Liveness and readiness for load balancers and orchestrators.

``/health/alive`` says the process answers.  ``/health/ready`` says it can do
its job: the database answers, every key set has a signing key that passed the
sign-and-verify self-test at start-up, and the HSM session is usable.  When not
ready it answers 503 with a JSON reason per failed check.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from keys.errors import KeyServiceError
from oidc import urls
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
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return {"ok": False, "reason": f"database unreachable ({type(exc).__name__})"}
    return {"ok": True}


def _check_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        service = current_state().key_service()
    except (KeyServiceError, SQLAlchemyError) as exc:
        reason = str(exc) if isinstance(exc, KeyServiceError) else f"database unreachable ({type(exc).__name__})"
        return {"ok": False, "reason": f"key service not started: {reason}"}, {"ok": False, "reason": "not started"}
    failed = {name: result.get("error") for name, result in service.start_self_test.items() if not result["ok"]}
    for name in service.policies:
        try:
            service.signer(name)
        except KeyServiceError as exc:
            failed[name] = str(exc)
    keys = {"ok": not failed, "sets": sorted(service.policies)}
    if failed:
        keys["reason"] = "; ".join(f"{name}: {error}" for name, error in sorted(failed.items()))
    usable = service.hsm_usable()
    if usable is None:
        hsm: dict[str, Any] = {"ok": True, "configured": False}
    else:
        hsm = {"ok": usable, "configured": True}
        if not usable:
            hsm["reason"] = "the PKCS#11 session is not usable"
    return keys, hsm


@bp.get(urls.HEALTH_READY)
def ready() -> Response:
    checks: dict[str, Any] = {"database": _check_database()}
    checks["keys"], checks["hsm"] = _check_keys()
    is_ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if is_ready else "unavailable", checks=checks)
    response.status_code = 200 if is_ready else 503
    return no_store(response)
