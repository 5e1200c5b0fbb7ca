"""Wiring of the key service into the Flask app.

The service is built per process and started on first use (or explicitly by
the gunicorn ``post_worker_init`` hook), never at import time: the PKCS#11
library must be loaded and logged in inside each worker, after ``fork()``.
"""

from __future__ import annotations

import functools
import threading

from flask import Flask, current_app

from keys.hsm import HSMConfig, HSMManager
from keys.locking import provisioning_lock
from keys.sealing import Sealer
from keys.service import KeyService, KeySetPolicy, RotationPolicy
from keys.software import SoftwareManager
from keys.store import KeyStore
from oidc import metrics
from oidc.config import key_set_algorithms
from oidc.models import db, signing_keys

_EXTENSION = "oidc.key_service"


class _Holder:
    def __init__(self) -> None:
        self.service: KeyService | None = None
        self.lock = threading.Lock()


def build_key_service(app: Flask) -> KeyService:
    """A key service from the app's configuration (not started)."""
    config = app.config
    sealer = Sealer.from_setting(config["SECRETS_SYSTEM"])
    with app.app_context():
        engine = db.engine
    store = KeyStore(engine, signing_keys)
    hsm = None
    if config["HSM_ENABLED"]:
        hsm = HSMManager(
            HSMConfig(
                library=config["HSM_LIBRARY"],
                pin=config["HSM_PIN"],
                token_label=config["HSM_TOKEN_LABEL"],
                slot=config["HSM_SLOT"],
                key_set_prefix=config["HSM_KEY_SET_PREFIX"],
                retry_initial_seconds=config["HSM_RETRY_INITIAL_SECONDS"],
                retry_max_seconds=config["HSM_RETRY_MAX_SECONDS"],
                probe_interval_seconds=config["HSM_READINESS_CACHE_SECONDS"],
                allow_extractable_keys=config["HSM_ALLOW_EXTRACTABLE_KEYS"],
            ),
            on_event=metrics.hsm_event,
        )
    policies = [KeySetPolicy(name, alg) for name, alg in key_set_algorithms(config).items()]
    return KeyService(
        key_sets=policies,
        store=store,
        software=SoftwareManager(store, sealer),
        hsm=hsm,
        rotation=RotationPolicy(
            prepublication_seconds=config["KEY_PREPUBLICATION_SECONDS"],
            retention_seconds=config["KEY_RETENTION_SECONDS"],
            destroy_retired_hsm_keys=config["HSM_DESTROY_RETIRED_KEYS"],
        ),
        rsa_bits=config["RSA_KEY_SIZE"],
        lock=functools.partial(provisioning_lock, engine),
        refresh_seconds=config["KEYS_REFRESH_SECONDS"],
        sign_observer=metrics.observe_signature,
        hsm_only_sets=config["HSM_ONLY_KEY_SETS"],
        generate_on_hsm=config["HSM_GENERATE_KEYS"],
    )


def init_app(app: Flask) -> None:
    app.extensions[_EXTENSION] = _Holder()


def start_key_service(app: Flask, *, degraded_ok: bool = False) -> KeyService:
    """Build and start this process's key service once (thread-safe).

    ``degraded_ok``: a token that cannot be reached does not stop the start
    (see :meth:`keys.service.KeyService.start`); gunicorn's replacement workers use it.
    """
    holder: _Holder = app.extensions[_EXTENSION]
    if holder.service is None:
        with holder.lock:
            if holder.service is None:
                service = build_key_service(app)
                service.start(wait_seconds=app.config["HSM_STARTUP_WAIT_SECONDS"], degraded_ok=degraded_ok)
                if service.hsm is not None:
                    metrics.HSM_AVAILABLE.set(1 if service.hsm.available else 0)
                holder.service = service
    return holder.service


def key_service() -> KeyService:
    """The current app's key service, started on first use."""
    return start_key_service(current_app._get_current_object())  # type: ignore[attr-defined]
