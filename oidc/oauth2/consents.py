"""Remembered consent (OIDC Core §11): a user's approval of a client for a set of scopes.

Part of the core: the decision of /authorize (:mod:`oidc.oauth2.steps`) reads it."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from oidc import queries
from oidc.db import db
from oidc.models import Client, Consent
from oidc.state import current_state


def normalized_scope(scope: str) -> str:
    """A scope set as it is stored: sorted, space-separated, each scope once."""
    return " ".join(sorted(set(scope.split())))


def has_consented(user_pk: int, client: Client, scope: str) -> bool:
    """Whether the user approved ``client`` for every scope in ``scope`` at once."""
    wanted = set(scope.split())
    return any(wanted <= set(consented.split()) for consented in queries.consented_scopes(user_pk, client.id))


def record_consent(user_pk: int, client: Client, scope: str) -> None:
    """Remember the approval, committed on its own.

    The same form submitted twice at once (a double click) records one
    consent; the unique constraint refuses the second, which is not an error.
    """
    if has_consented(user_pk, client, scope):
        return
    queries.add(Consent(user_pk=user_pk, client_pk=client.id, scope=normalized_scope(scope),
                        created_at=current_state().clock.now()))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
