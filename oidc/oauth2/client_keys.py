"""A client's public keys: :func:`client_key_set`, the one place every verifier asks.

A client registers its keys by value (``jwks``) or by reference (``jwks_uri``, RFC 7591 §2;
never both).  Keys by reference are fetched with :mod:`oidc.oauth2.outbound` (https only, public
addresses only outside development mode, timeouts, a size limit) and kept in a per-process cache
for ``CLIENT_JWKS_CACHE_SECONDS``: a request never waits for a fetch while the cached set is
fresh.  A signature whose ``kid`` the cached set lacks (the client rotated its keys) refreshes it
at once, but at most once per ``CLIENT_JWKS_MIN_REFRESH_SECONDS`` per URL, so a stream of
made-up ``kid``\\ s cannot make the provider fetch on every request.  A failed refresh keeps the
keys last fetched.

The same cache serves the JWK Sets of software statement issuers given as URLs
(:func:`remote_key_set`).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from oidc.oauth2.outbound import FetchError, fetch_json
from oidc.state import current_state

log = logging.getLogger(__name__)

_CACHE = "client key sets"


class ClientKeyError(Exception):
    """The client has no usable keys (none registered, or its ``jwks_uri`` could not be fetched)."""


@dataclass
class _Entry:
    keys: KeySet | None
    fetched_at: float
    attempted_at: float


class _RemoteKeySets:
    """Key sets fetched by URL, with when each was fetched and last tried."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def lock(self, url: str) -> threading.Lock:
        """The lock of one URL: one fetch of it at a time, while other URLs' keys are read freely."""
        with self._locks_lock:
            return self._locks.setdefault(url, threading.Lock())


def client_key_set(client: Any, *, kid: str | None = None) -> KeySet:
    """The public keys ``client`` registered: by value, or fetched from its ``jwks_uri`` (cached).

    ``kid``: the key id a signature names; a cached set without it is refreshed (rate-limited).
    Raises :class:`ClientKeyError`.
    """
    if client.jwks:
        try:
            return _registered_key_set(str(client.jwks))
        except (ValueError, TypeError, JoseError):
            raise ClientKeyError("the client's registered JWK Set is unusable") from None
    if client.jwks_uri:
        return remote_key_set(str(client.jwks_uri), kid=kid)
    raise ClientKeyError("the client has registered no keys (jwks or jwks_uri)")


@functools.lru_cache(maxsize=256)
def _registered_key_set(jwks: str) -> KeySet:
    """A JWK Set registered by value, parsed once per text (importing RSA keys costs more than verifying
    with them); a new registration is a new text, so nothing here outlives a change."""
    return KeySet.import_key_set(json.loads(jwks))


def remote_key_set(url: str, *, kid: str | None = None) -> KeySet:
    """The JWK Set at ``url`` from the per-process cache, fetched when missing, stale, or without ``kid``."""
    state = current_state()
    cache: _RemoteKeySets = state.caches.setdefault(_CACHE, _RemoteKeySets())
    settings, now = state.settings, state.clock.time()
    with cache.lock(url):
        entry = cache.entries.get(url)
        if entry is not None and entry.keys is not None:
            fresh = now - entry.fetched_at < settings.client_jwks_cache_seconds
            known = kid is None or any(key.kid == kid for key in entry.keys)
            may_retry = now - entry.attempted_at >= settings.client_jwks_min_refresh_seconds
            if (fresh and known) or not may_retry:
                return entry.keys
        elif entry is not None and now - entry.attempted_at < settings.client_jwks_min_refresh_seconds:
            raise ClientKeyError("the client's jwks_uri could not be fetched (not retried yet)")
        # Fetched under the URL's lock: one fetch per URL at a time in this process, never a stampede.
        try:
            keys = _fetch(url, development=settings.development)
        except ClientKeyError as exc:
            log.warning("client keys not fetched: %s", exc)
            if entry is None:
                entry = cache.entries[url] = _Entry(None, 0.0, now)
            entry.attempted_at = now
            if entry.keys is None:
                raise
            return entry.keys
        cache.entries[url] = _Entry(keys, now, now)
        return keys


def _fetch(url: str, *, development: bool) -> KeySet:
    try:
        document = fetch_json(url, development=development)
    except FetchError as exc:
        raise ClientKeyError(f"{url}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ClientKeyError(f"{url}: not a JWK Set")
    public = [key for key in document["keys"] if isinstance(key, dict) and "d" not in key and key.get("kty") != "oct"]
    try:
        return KeySet.import_key_set({"keys": public})
    except (ValueError, TypeError, JoseError):
        raise ClientKeyError(f"{url}: the key set could not be read") from None
