"""Liveness and readiness for load balancers and orchestrators.

``/health/alive`` says the process answers.  ``/health/ready`` says it can do
its job: the database answers, every key set has a signing key that passed the
sign-and-verify self-test at start-up, and the HSM session is usable.  When not
ready it answers 503 with a reason *code* per failed check.  With several tokens
(``HSM_TOKENS``) it is ready while every key set signs on one of them, and
reports each token's state by its code.  The certificates attached to published
keys are reported too (``certificate_expiring`` within CERTIFICATE_WARNING_DAYS,
``certificate_expired``), without ever making it unready (see :func:`_check_certificates`).
With the audit chain on, a worker whose audit queue is full (the database could not be
written for AUDIT_QUEUE_LIMIT events) is not ready (``audit_queue_full``).

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
from oidc.observability import metrics
from oidc.settings import CERTIFICATE_WARNING_DAYS
from oidc.state import current_state
from oidc.web.errors import no_store

bp = Blueprint("health", __name__)


@bp.get(urls.HEALTH_ALIVE)
def alive() -> Response:
    return no_store(jsonify(status="alive"))


def _check_database() -> tuple[dict[str, Any], dict[str, Any]]:
    """The database answers; and, read on the same connection, the certificates of the published keys."""
    try:
        with db.engine.connect() as connection:
            queries.ping(connection)
            expiries = queries.certificate_expiries(connection)
    except SQLAlchemyError:
        return {"ok": False, "reason": "database_unreachable"}, {"ok": True}
    return {"ok": True}, _check_certificates(expiries)


def _check_certificates(expiries: Any) -> dict[str, Any]:
    """Certificates attached to published keys that end within CERTIFICATE_WARNING_DAYS, or have ended.

    Never a reason to be unready, not even once expired: every instance publishes the same
    certificates, so taking this one out of the load balancer would route around nothing, and
    stopping every token for a chain most relying parties never read would be the larger outage.
    The reason codes (``certificate_expiring``, ``certificate_expired``), the gauge
    ``oidc_key_certificate_expiry_seconds`` and doctor (which fails on an expired chain) say it
    before it matters.
    """
    now = current_state().clock.time()
    seconds_left = {(str(key_set), str(kid)): float(not_after) - now for key_set, kid, not_after in expiries}
    metrics.set_certificate_expiries(seconds_left)
    window = CERTIFICATE_WARNING_DAYS * 86400
    soon = {f"{key_set}/{kid}": int(left) for (key_set, kid), left in sorted(seconds_left.items()) if left <= window}
    check: dict[str, Any] = {"ok": True}
    if soon:
        check["reason"] = "certificate_expired" if min(soon.values()) < 0 else "certificate_expiring"
        check["seconds_left"] = soon
    return check


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
    checks: dict[str, Any] = {}
    checks["database"], certificates = _check_database()
    checks["keys"], checks["hsm"] = _check_keys()
    checks["certificates"] = certificates
    trail = current_state().audit_trail
    if trail is not None:  # a worker that drops audit events (its queue full) is not doing its job
        checks["audit"] = {"ok": False, "reason": "audit_queue_full"} if trail.queue_full() else {"ok": True}
    is_ready = all(check["ok"] for check in checks.values())
    response = jsonify(status="ready" if is_ready else "unavailable", checks=checks)
    response.status_code = 200 if is_ready else 503
    return no_store(response)
