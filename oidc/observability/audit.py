"""The audit trail: one ``oidc.audit`` log line per security event.

Each line carries its event name in the ``event`` member (``login.succeeded``,
``token.issued``, ``grant.revoked``, ...; the README lists them) and its
fields as JSON members.  Callers pass identifiers (client, user, grant, kid,
jti), never a secret, code, password or token.  The key service, which knows
nothing of this package, logs its own events (``key.*``) to the same logger.

While the audit chain is on (:mod:`oidc.observability.audit_chain`), each event
also goes to the chain: straight from :func:`record` (a sink), and from the
logger for the key service's events.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

audit_log = logging.getLogger("oidc.audit")

#: Where events go besides the log (the audit chain's handler): called with (event, level, fields).
sinks: list[Callable[[str, int, dict[str, Any]], None]] = []
#: True while :func:`record` logs its event, so a sink that also listens to the logger skips it.
recording: contextvars.ContextVar[bool] = contextvars.ContextVar("audit_recording", default=False)


def record(event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Write one audit line for ``event`` (and hand it to the sinks)."""
    for sink in sinks:
        sink(event, level, fields)
    # While the chain is on, oidc.audit itself logs at INFO (for the key service's events) and hands
    # records on to the log at its parent's level (audit_chain._ToParent): that level decides here.
    shown_by = audit_log if audit_log.propagate or audit_log.parent is None else audit_log.parent
    if shown_by.isEnabledFor(level):
        token = recording.set(True)
        try:
            audit_log.log(level, message, extra={"event": event, **fields})
        finally:
            recording.reset(token)
