"""Registered clients kept in memory for a few seconds, for client authentication.

Every token, introspection and revocation request authenticates a client.
Reading it from the database on each of them would cost more than everything
else a ``client_credentials`` request does, so each process keeps the clients
it has recently seen for
``CLIENT_CACHE_SECONDS`` (default 5; 0 turns the cache off).

The trade-off, stated plainly: a change made through :mod:`oidc.accounts.clients` (the
CLI or the admin API: disabling, deleting, a new secret) applies at once in the
process that made it, and in every other process within ``CLIENT_CACHE_SECONDS``.
Tokens already issued are not affected by the cache: introspection and userinfo
look the token's own row up every time.

Entries are :class:`CachedClient` copies of the rows: plain objects with the
row's fields and :class:`~oidc.models.Client`'s methods, never ORM instances,
so no request can load or write through them, and reading one of their fields
costs an attribute look-up rather than SQLAlchemy's instrumented access (a
token request reads a dozen).  They are read-only.  Unknown client_ids are never
cached (a caller could otherwise fill the memory with them).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import inspect

from oidc.models import Client, ClientRules
from oidc.queries import find_client

if TYPE_CHECKING:
    # To the type checker a cached client is a Client: it has the same fields and methods.
    _ClientType = Client
else:
    _ClientType = ClientRules

#: The fields of a client row (its mapped columns).
_FIELDS = tuple(attribute.key for attribute in inspect(Client).column_attrs)


class CachedClient(_ClientType):
    """A client row's fields as plain attributes, with the row's methods (:class:`~oidc.models.ClientRules`);
    read-only."""

    def __init__(self, row: Client) -> None:
        # Into the instance's dict directly: ``__setattr__`` refuses every write.
        self.__dict__.update({key: getattr(row, key) for key in _FIELDS})

    def __setattr__(self, name: str, value: Any) -> None:
        # Shared by every request of the process until the entry expires: a change goes to the row
        # (oidc.accounts.clients), never to a copy.
        raise AttributeError(f"a cached client is read-only ({name})")

    def __repr__(self) -> str:
        return f"<CachedClient {self.client_id}>"


#: More distinct clients than this in one period and the cache starts again empty.
MAX_ENTRIES = 10_000


class ClientCache:
    """Enabled clients by client_id, each kept ``ttl`` seconds (0: no caching)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Client]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: object) -> Client | None:
        """The enabled client registered as ``client_id`` (a :class:`CachedClient` while the cache is on), or None."""
        if self.ttl <= 0 or not isinstance(client_id, str):
            return find_client(client_id)
        entry = self._entries.get(client_id)
        moment = time.monotonic()
        if entry is not None and entry[0] > moment:
            return entry[1]
        client = find_client(client_id)
        if client is None:
            self.forget(client_id)
            return None
        copy = CachedClient(client)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[client_id] = (moment + self.ttl, copy)
        return copy

    def forget(self, client_id: str) -> None:
        with self._lock:
            self._entries.pop(client_id, None)


_EXTENSION = "oidc.client_cache"


def init_app(app: Flask, ttl: float) -> ClientCache:
    """This app's cache (one per process: gunicorn's workers each have their own)."""
    cache = app.extensions[_EXTENSION] = ClientCache(ttl)
    return cache


def current_client_cache() -> ClientCache:
    """The cache of the app handling the current request or command."""
    # The app itself, not an attribute through its context-local proxy (as oidc.state.current_state).
    cache: ClientCache = current_app._get_current_object().extensions[_EXTENSION]  # type: ignore[attr-defined]
    return cache
