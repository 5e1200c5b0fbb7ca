"""gunicorn configuration for the provider (``gunicorn -c gunicorn.conf.py app:app``).

The PKCS#11 library is loaded and logged in inside each worker, after fork
(``post_worker_init``), never in the master: a PKCS#11 context does not survive
``fork()`` on real HSMs.  The master only brings the database schema up to date.
Settings come from the environment (see README.md).
"""

from __future__ import annotations

import os
import sys

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS") or os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# X-Forwarded-* from these addresses only (the proxy); see TRUSTED_PROXY_HOPS too.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"

WORKER_BOOT_ERROR = 3  # makes the gunicorn master stop instead of respawning


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """In the master, before any worker: migrate the schema (no HSM here)."""
    from oidc import create_app
    from oidc.schema import upgrade_schema

    upgrade_schema(create_app())


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """In each worker: open the HSM, provision key sets, self-test the signers."""
    from keys.errors import KeyServiceError
    from oidc.key_service import start_key_service

    try:
        start_key_service(worker.wsgi)
    except KeyServiceError as exc:
        worker.log.error("key service cannot start: %s", exc)
        sys.exit(WORKER_BOOT_ERROR)
