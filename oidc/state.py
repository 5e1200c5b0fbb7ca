"""Per-process state, in one place: settings, the clock, hashers, the key service.

One :class:`State` is made by :func:`oidc.app.create_app` and kept in
``app.extensions``; code that runs in a request or an app context reads it with
:func:`current_state`.  Nothing here touches the HSM or the database when it is
made: the key service starts on first use in the serving process (or in
gunicorn's ``post_worker_init``), because the PKCS#11 library must be loaded and
logged in inside each worker, after ``fork()``.

The clock is the one every part of the provider reads (token lifetimes, code
expiry, login age, key rotation), so a test moves time by setting
``state.clock`` instead of patching modules.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine

from keys import (
    HSMConfig,
    HSMManager,
    KeyService,
    KeyServiceError,
    KeySetPolicy,
    KeyStore,
    RotationPolicy,
    Sealer,
    SoftwareManager,
    provisioning_lock,
)
from oidc import hashing
from oidc.db import db, key_certificates, signing_keys
from oidc.hashing_keys import hashing_key
from oidc.observability import audit, audit_chain, metrics
from oidc.observability.audit_chain import AuditTrail
from oidc.settings import Settings
from oidc.statements import release_held_connection
from oidc.vocabulary import AUDIT_CHECKPOINT_SET, FAPI2_ALGORITHMS

_EXTENSION = "oidc.state"


class Clock:
    """Wall-clock time in whole seconds since the epoch; ``offset`` moves it (tests)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> int:
        # time()'s sum written out: a request reads the clock several times, and each call costs.
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class State:
    """Everything one provider process keeps between requests."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.clock = Clock()
        self.passwords = hashing.PasswordHasher(settings.password_hash_cost)
        self._hashers: dict[str, hashing.KeyedHasher] = {}
        self._key_service: KeyService | None = None
        self._key_service_lock = threading.Lock()
        #: Public documents built once (discovery), by name.
        self.documents: dict[str, Any] = {}
        #: Per-process caches of the layers above (the fetched client key sets, ...), by name.
        self.caches: dict[str, Any] = {}
        #: The hash-chained audit trail in the database, while AUDIT_CHAIN is on.
        self.audit_trail: AuditTrail | None = self.build_audit_trail() if settings.audit_chain else None
        #: Its handler on the ``oidc.audit`` logger (removed by :meth:`close`).
        self.audit_handler: audit_chain.AuditHandler | None = None
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        """The app's database engine (read once; usable outside an app context, e.g. by a thread)."""
        if self._engine is None:
            with self.app.app_context():
                self._engine = db.engine
        return self._engine

    def build_audit_trail(self) -> AuditTrail:
        settings = self.settings
        return AuditTrail(
            engine=self.engine,
            clock=self.clock.time,
            issuer=settings.issuer,
            signer=lambda: self.key_service().signer(AUDIT_CHECKPOINT_SET),
            public_key=lambda kid: self.key_service().public_key(kid, AUDIT_CHECKPOINT_SET),
            checkpoint_entries=settings.audit_checkpoint_entries,
            checkpoint_seconds=settings.audit_checkpoint_seconds,
            seal_seconds=settings.audit_seal_seconds,
            write_delay_seconds=settings.audit_write_delay_seconds,
            queue_limit=settings.audit_queue_limit,
        )

    def hasher(self, purpose: str) -> hashing.KeyedHasher:
        """The keyed hasher for ``purpose`` (one of ``hashing.PURPOSES``).

        Its key is the purpose's stored hashing key (:mod:`oidc.hashing_keys`), then the
        keys derived from each system secret (hashes made before hashing keys were stored).
        """
        hasher = self._hashers.get(purpose)
        if hasher is None:
            self.load_hashers()
            hasher = self._hashers[purpose]
        return hasher

    def load_hashers(self) -> None:
        """Read (or make) every purpose's hashing key at once, on a connection of its own.

        Done when the key service starts, before any request's transaction: a
        hashing key made in the middle of a request would wait for that request's
        own write lock on SQLite.
        """
        for purpose in hashing.PURPOSES:
            if purpose not in self._hashers:
                derived = hashing.derived_hash_keys(self.settings.secrets_system, purpose)
                self._hashers[purpose] = hashing.KeyedHasher([hashing_key(self, purpose), *derived])

    def sealer(self) -> Sealer:
        return Sealer.from_setting(",".join(self.settings.secrets_system))

    # -- the key service ------------------------------------------------------------

    @property
    def key_service_started(self) -> KeyService | None:
        """The key service if this process has started it (never starts it)."""
        return self._key_service

    def key_service(self, *, degraded_ok: bool = False) -> KeyService:
        """This process's key service, built and started once (thread-safe).

        ``degraded_ok``: a token that cannot be reached does not stop the start
        (see :meth:`keys.service.KeyService.start`); gunicorn's replacement workers use it.
        """
        if self._key_service is None:
            with self._key_service_lock:
                if self._key_service is None:
                    service = self.build_key_service()
                    service.start(wait_seconds=self.settings.hsm_startup_wait_seconds, degraded_ok=degraded_ok)
                    if service.hsm_available is not None:
                        metrics.set_hsm_available(service.hsm_available)
                    for token, available in service.token_availability().items():
                        metrics.set_token_available(token, available)
                    self.check_profile_algorithms(service)
                    self.load_hashers()
                    self._key_service = service
        return self._key_service

    def check_profile_algorithms(self, service: KeyService) -> None:
        """Under SECURITY_PROFILE=fapi2, refuse to start while a key set signs with RS256 (or another alg
        the FAPI 2.0 Security Profile does not allow, §5.4.1), whatever the configured algorithm."""
        if not self.settings.fapi2:
            return
        for key_set in self.settings.key_set_algorithms:
            alg = service.signer(key_set).alg
            if alg not in FAPI2_ALGORITHMS:
                service.close()
                raise KeyServiceError(
                    f"SECURITY_PROFILE=fapi2 allows {', '.join(FAPI2_ALGORITHMS)} signatures only, but the active "
                    f"key of key set {key_set!r} signs with {alg}: generate a key of an allowed algorithm "
                    f"(flask keys generate {key_set} --alg ES256) and switch the profile on once it is active "
                    f"(KEY_PREPUBLICATION_SECONDS later)")

    def build_key_service(self) -> KeyService:
        settings = self.settings
        sealer = Sealer.from_setting(",".join(settings.secrets_system))
        with self.app.app_context():
            engine = db.engine
        store = KeyStore(engine, signing_keys, key_certificates)
        hsm: list[HSMManager] = []
        # The plain HSM_* settings (one token), whose resilience settings apply to every token of HSM_TOKENS.
        single = HSMConfig(
            library=settings.hsm_library, pin=settings.hsm_pin, token_label=settings.hsm_token_label,
            slot=settings.hsm_slot, key_set_prefix=settings.hsm_key_set_prefix,
            retry_initial_seconds=settings.hsm_retry_initial_seconds, retry_max_seconds=settings.hsm_retry_max_seconds,
            probe_interval_seconds=settings.hsm_readiness_cache_seconds,
            allow_extractable_keys=settings.hsm_allow_extractable_keys,
        )
        for token in settings.hsm_tokens:  # HSM_TOKENS: each token its own manager, events and gauge
            config = dataclasses.replace(single, library=token.library, pin=token.pin, token_label=token.token_label,
                                         slot=token.slot, name=token.name, module_env=token.module_env,
                                         busy_seconds=settings.hsm_token_timeout_seconds or single.busy_seconds,
                                         bounded_calls=settings.hsm_token_timeout_seconds > 0)
            hsm.append(HSMManager(config, on_event=functools.partial(hsm_token_event, token.name)))
        if settings.hsm_enabled and not settings.hsm_tokens:
            hsm.append(HSMManager(single, on_event=hsm_event))
        return KeyService(
            key_sets=[KeySetPolicy(name, alg) for name, alg in
                      {**settings.key_set_algorithms, **settings.decryption_key_sets}.items()],
            store=store,
            software=SoftwareManager(store, sealer),
            hsm=hsm or None,
            rotation=RotationPolicy(
                prepublication_seconds=settings.key_prepublication_seconds,
                retention_seconds=settings.key_retention_seconds,
                destroy_retired_hsm_keys=settings.hsm_destroy_retired_keys,
            ),
            rsa_bits=settings.rsa_key_size,
            lock=functools.partial(provisioning_lock, engine),
            refresh_seconds=settings.keys_refresh_seconds,
            clock=self.clock.time,
            sign_observer=metrics.observe_signature if settings.metrics else None,
            hsm_only_sets=settings.hsm_only_key_sets,
            generate_on_hsm=settings.hsm_generate_keys,
            token_observer=metrics.observe_token_signature if settings.hsm_tokens and settings.metrics else None,
        )

    def close(self) -> None:
        """Log out of the HSM and drop database connections (tests, tools)."""
        if self.audit_trail is not None:
            self.audit_trail.stop()
        if self.audit_handler is not None:
            audit_chain.detach(self.audit_handler)
            self.audit_handler = None
        service = self._key_service
        if service is not None:
            service.close()
        # This thread's kept connection back to the pool first, so that dispose closes it
        # (another thread's goes back at its next use, which finds the pool replaced).
        release_held_connection()
        with self.app.app_context():
            db.engine.dispose()


def hsm_event(event: str, error: str | None = None) -> None:
    """The HSM manager's events: counted (metrics), and an outage and its end audited."""
    metrics.hsm_event(event, error)
    _audit_hsm_event(event, error)


def hsm_token_event(token: str, event: str, error: str | None = None) -> None:
    """:func:`hsm_event` for one token of several (``HSM_TOKENS``): its own metrics, and audited with its name."""
    metrics.hsm_token_event(token, event, error)
    # Not ``token``: the trail never stores a field of that name (it would be a bearer token).
    _audit_hsm_event(event, error, hsm_token=token)


def _audit_hsm_event(event: str, error: str | None, **fields: Any) -> None:
    if event == "lost":
        audit.record("hsm.lost", "HSM lost", level=logging.WARNING, error=error, **fields)
    elif event == "available":
        audit.record("hsm.available", "HSM available", **fields)


def init_app(app: Flask, settings: Settings) -> State:
    state = State(app, settings)
    app.extensions[_EXTENSION] = state
    return state


def state_of(app: Flask) -> State:
    state: State = app.extensions[_EXTENSION]
    return state


def current_state(given: State | None = None) -> State:
    """The state of the app handling the current request or command; ``given`` instead when there is one
    (a pipeline hands down the state it looked up once, and its helpers take it when they are handed it)."""
    if given is not None:
        return given
    # The app itself, not an attribute through its context-local proxy: a request asks
    # for the state a dozen times, and each proxied attribute costs a few lookups.  An
    # annotation rather than typing.cast, which is a function call at run time.
    state: State = current_app._get_current_object().extensions[_EXTENSION]  # type: ignore[attr-defined]
    return state


def settings() -> Settings:
    return current_state().settings


def now() -> int:
    """The current time, in whole seconds since the epoch, by the app's clock."""
    return current_state().clock.now()


def key_service() -> KeyService:
    return current_state().key_service()
