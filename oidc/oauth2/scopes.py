"""The scope a client gets for what it asks (RFC 6749 §3.3)."""

from __future__ import annotations

from oidc.models import Client
from oidc.state import current_state


def allowed_scope(client: Client, scope: str | None) -> str | None:
    """The requested scope if every scope in it is registered for ``client``, else None (invalid_scope).

    With no scope requested, every registered scope but ``offline_access`` and the
    admin scope (RFC 9700 §2.3: privileges only when asked for by name).
    """
    registered = client.scopes
    if not scope:
        never_by_default = ("offline_access", current_state().settings.admin_scope)
        return " ".join(s for s in registered if s not in never_by_default)
    requested = list(dict.fromkeys(scope.split()))
    if not set(requested) <= set(registered):
        return None
    return " ".join(requested)
