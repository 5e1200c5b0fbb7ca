"""The audit trail: one ``oidc.audit`` log line per security event.

Each line carries its event name in the ``event`` member (``login.succeeded``,
``token.issued``, ``grant.revoked``, ...; the README lists them) and its
fields as JSON members.  Callers pass identifiers (client, user, grant, kid,
jti), never a secret, code, password or token.  The key service, which knows
nothing of this package, logs its own events (``key.*``) to the same logger.
"""

from __future__ import annotations

import logging
from typing import Any

audit_log = logging.getLogger("oidc.audit")


def record(event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Write one audit line for ``event``."""
    audit_log.log(level, message, extra={"event": event, **fields})
