"""Prometheus metrics (prometheus-client), multiprocess-safe under gunicorn.

Under gunicorn the master serves ``/metrics`` on its own listener
(``METRICS_BIND``, loopback by default, so never public by default) and
aggregates every worker's samples from ``PROMETHEUS_MULTIPROC_DIR`` (see
gunicorn.conf.py).  Nothing here is exposed on the provider's own port.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import Counter, Gauge, Histogram
from werkzeug.exceptions import HTTPException

from oidc import urls
from oidc.vocabulary import GRANT_TYPES

TOKENS_ISSUED = Counter(
    "oidc_tokens_issued_total", "Token responses issued, by grant type and client.", ["grant_type", "client_id"]
)
TOKEN_REQUEST_SECONDS = Histogram(
    "oidc_token_request_duration_seconds", "Time to answer a request to the token endpoint.", ["grant_type", "status"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SIGNING_SECONDS = Histogram(
    "oidc_signing_duration_seconds", "Time to produce one JWS signature, by key set and backend.",
    ["key_set", "backend"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
)
HSM_ERRORS = Counter("oidc_hsm_errors_total", "PKCS#11 operations that failed, by kind of error.", ["error"])
HSM_TOKEN_SIGNATURES = Counter(
    "oidc_hsm_token_signatures_total", "Signatures asked of each token (HSM_TOKENS), by result.", ["token", "result"]
)
HSM_TOKEN_ERRORS = Counter("oidc_hsm_token_errors_total", "PKCS#11 trouble on each token, by kind.", ["token", "error"])
HSM_TOKEN_SIGNING_SECONDS = Histogram(
    "oidc_hsm_token_signing_duration_seconds", "Time to produce one signature on each token.", ["token"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
)
HSM_RECONNECTS = Counter("oidc_hsm_reconnects_total", "PKCS#11 sessions reopened after they broke.")
HSM_RECONNECT_ATTEMPTS = Counter(
    "oidc_hsm_reconnect_attempts_total", "Re-initialisations of a lost PKCS#11 module, by result.", ["result"]
)
HSM_OUTAGES = Counter("oidc_hsm_outages_total", "Times a process lost the HSM.")
HSM_UNAVAILABLE_SECONDS = Counter(
    "oidc_hsm_unavailable_seconds_total", "Seconds processes spent without the HSM (summed over processes)."
)
BACKCHANNEL_LOGOUTS = Counter(
    "oidc_backchannel_logouts_total",
    "Back-channel logout token attempts, by outcome: sent, failed (to be retried), given_up.", ["outcome"],
)
BACKCHANNEL_LOGOUT_DELAY_SECONDS = Histogram(
    "oidc_backchannel_logout_delay_seconds", "Time from the end of a login session to its logout token's delivery.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
CERTIFICATE_EXPIRY_SECONDS = Gauge(
    "oidc_key_certificate_expiry_seconds",
    "Seconds until the notAfter of the certificate chain attached to a published key (negative: expired), "
    "by key set and kid; updated at each readiness check.",
    ["key_set", "kid"], multiprocess_mode="livemin",
)
AUDIT_EVENTS_DROPPED = Counter(
    "oidc_audit_events_dropped_total",
    "Audit events a worker could not queue for the audit chain: its queue was full (AUDIT_QUEUE_LIMIT) while the "
    "database could not be written; each run of them is recorded in the chain as an audit.dropped entry.",
)
LOGIN_FAILURES = Counter("oidc_login_failures_total", "Failed login attempts (wrong user or password, or rate-limited).",
                         ["reason"])

# The one gauge, ``oidc_hsm_available``, is made by the first process that has an HSM to report on
# (a worker, after it opened the token), never at import.  In multiprocess mode a gauge writes its
# first 0 to this process's file as soon as it is made, and that 0 counts as a live process's value:
# made at import, the gunicorn master (which imports the app only to migrate) and every worker
# without an HSM would export a 0 that no worker ever raises, and the minimum would stay 0.
_hsm_available: list[Gauge] = []
_hsm_available_lock = threading.Lock()


def set_hsm_available(available: bool) -> None:
    """Report whether this process can use the HSM now (1) or has lost it or not reached it yet (0)."""
    with _hsm_available_lock:  # the recovery thread and requests can both report
        if not _hsm_available:
            _hsm_available.append(Gauge(
                "oidc_hsm_available", "1 while the HSM can be used, 0 while it is lost or not reached yet.",
                multiprocess_mode="livemin",  # aggregated over live workers: 0 as soon as one has lost it
            ))
        _hsm_available[0].set(1 if available else 0)


_token_available: list[Gauge] = []
#: Whether each token is usable in this process (the process's oidc_hsm_available: any of them).
_token_up: dict[str, bool] = {}


def set_token_available(token: str, available: bool) -> None:
    """Report one token of several (1 usable, 0 lost); the process has the HSM while any token is usable."""
    with _hsm_available_lock:
        if not _token_available:
            _token_available.append(Gauge(
                "oidc_hsm_token_available", "1 while the token can be used, 0 while it is lost or not reached yet.",
                ["token"], multiprocess_mode="livemin",
            ))
        _token_available[0].labels(token).set(1 if available else 0)
        _token_up[token] = available
        anyone = any(_token_up.values())
    set_hsm_available(anyone)


def hsm_token_event(token: str, event: str, error: str | None = None) -> None:
    """:func:`hsm_event` for one token of several: its own gauge and errors, and the process's totals."""
    if event in ("lost", "available"):
        set_token_available(token, event == "available")
    elif event in ("error", "reconnect"):
        HSM_TOKEN_ERRORS.labels(token, error or event).inc()
    if event == "lost":
        HSM_OUTAGES.inc()
        if not any(_token_up.values()) and not _unavailable_since:
            _unavailable_since.append(time.monotonic())
    elif event == "available":
        _count_unavailable_time()
        _unavailable_since.clear()
    else:
        hsm_event(event, error)


def observe_token_signature(token: str, seconds: float, succeeded: bool) -> None:
    _child(HSM_TOKEN_SIGNATURES, token, "ok" if succeeded else "failed").inc()
    if succeeded:
        _child(HSM_TOKEN_SIGNING_SECONDS, token).observe(seconds)


def hsm_available() -> float | None:
    """This process's ``oidc_hsm_available``, or None if it has no HSM to report on."""
    if not _hsm_available:
        return None
    return next(sample.value for family in _hsm_available[0].collect() for sample in family.samples)


#: The blueprint of the token endpoints, whose requests the token histogram measures.
TOKEN_BLUEPRINT = "token"


# A metric's child for some label values, looked up once per process: ``labels()`` checks and
# joins the values and takes the metric's lock on every call, a per-request cost for a constant.
# The values are few (grant types, statuses, key sets; clients of one deployment), so the cache
# is bounded only to stay bounded if a label ever took caller-chosen values.
@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *values: str) -> Any:
    return metric.labels(*values)


def observe_signature(key_set: str, backend: str, seconds: float) -> None:
    _child(SIGNING_SECONDS, key_set, backend).observe(seconds)


#: When this process last counted time without the HSM (monotonic), while it is without it.
_unavailable_since: list[float] = []


def _count_unavailable_time() -> None:
    if _unavailable_since:
        now = time.monotonic()
        HSM_UNAVAILABLE_SECONDS.inc(now - _unavailable_since[0])
        _unavailable_since[0] = now


def hsm_event(event: str, error: str | None = None) -> None:
    """Count HSM trouble reported by the key service (see keys.hsm.HSMManager.on_event)."""
    if event == "reconnect":
        HSM_RECONNECTS.inc()
    elif event == "lost":
        HSM_OUTAGES.inc()
        set_hsm_available(False)
        if not _unavailable_since:
            _unavailable_since.append(time.monotonic())
    elif event == "attempt":
        HSM_RECONNECT_ATTEMPTS.labels(error or "unknown").inc()
        _count_unavailable_time()  # grows during an outage, not only once it ends
    elif event == "available":
        _count_unavailable_time()
        _unavailable_since.clear()
        set_hsm_available(True)
    else:
        HSM_ERRORS.labels(error or "unknown").inc()


#: The (key set, kid) of each certificate gauge this process has set, so one whose chain is gone is removed.
_certificate_labels: set[tuple[str, str]] = set()


def set_certificate_expiries(seconds_left: dict[tuple[str, str], float]) -> None:
    """Report the seconds left of each attached chain, by (key set, kid); drop the gauges of chains gone."""
    for labels in _certificate_labels - set(seconds_left):
        CERTIFICATE_EXPIRY_SECONDS.remove(*labels)
    for (key_set, kid), seconds in seconds_left.items():
        CERTIFICATE_EXPIRY_SECONDS.labels(key_set, kid).set(seconds)
    _certificate_labels.clear()
    _certificate_labels.update(seconds_left)


def token_issued(grant_type: str, client_id: str) -> None:
    _child(TOKENS_ISSUED, grant_type, client_id).inc()


def backchannel_logout(outcome: str, delay: float | None = None) -> None:
    """Count a logout token attempt (``sent``, ``failed``, ``given_up``); ``delay``: since the logout, if sent."""
    BACKCHANNEL_LOGOUTS.labels(outcome).inc()
    if delay is not None:
        BACKCHANNEL_LOGOUT_DELAY_SECONDS.observe(max(delay, 0.0))


def login_failed(reason: str) -> None:
    LOGIN_FAILURES.labels(reason).inc()


def _grant_type() -> str:
    """The request's grant_type, read without raising: this runs after every response,
    the answer to a body too large or malformed to parse included (a hook that raised
    here would turn that 413 or 400 into a 500)."""
    if request.method != "POST":
        return ""
    try:
        return str(request.form.get("grant_type", ""))
    except HTTPException:
        return ""


def init_app(app: Flask, enabled: bool = True) -> None:
    """Time the token endpoint's requests, unless nothing serves the metrics (``enabled`` False)."""
    if not enabled:
        return  # decided once: no hook runs, rather than hooks that measure what no one reads
    # Hooks of the token blueprint's requests only (/token, /introspect, /revoke):
    # nothing on every other request.
    def start_token_timer() -> None:
        if request.path == urls.TOKEN:
            # flask.g: from this before_request hook to its after_request hook, which runs
            # for refusals made before an OAuth 2.0 request exists (a body too large, a precheck).
            g.token_started = time.perf_counter()

    def observe_token_request(response: Response) -> Response:
        started = g.get("token_started")
        if started is not None:
            grant_type = _grant_type()
            if grant_type not in GRANT_TYPES:
                grant_type = "other"  # never a caller-chosen label value
            _child(TOKEN_REQUEST_SECONDS, grant_type, str(response.status_code)).observe(time.perf_counter() - started)
        return response

    app.before_request_funcs.setdefault(TOKEN_BLUEPRINT, []).append(start_token_timer)
    app.after_request_funcs.setdefault(TOKEN_BLUEPRINT, []).append(observe_token_request)
