"""gunicorn configuration for the provider (``gunicorn -c gunicorn.conf.py app:app``).

The PKCS#11 library is loaded and logged in inside each worker, after fork
(``post_worker_init``), never in the master: a PKCS#11 context does not survive
``fork()`` on real HSMs.  The master only brings the database schema up to date.
Settings come from the environment (see README.md).
"""

from __future__ import annotations

import gc
import glob
import multiprocessing
import os
import shutil
import sys
import tempfile

from oidc.settings import DEFAULT_FORWARDED_ALLOW_IPS, DEFAULT_LOG_FORMAT

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS") or os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# gunicorn's largest request line (its default is 4094): a request object (RFC 9101) sent by value in
# the URL of GET /authorize takes a few thousand characters.  Larger ones go by POST or through /par.
limit_request_line = 8190
# X-Forwarded-* from these addresses only (the proxy); see TRUSTED_PROXY_HOPS too.  Empty means
# the default, as for every setting, so gunicorn trusts the addresses the app trusts.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or ",".join(DEFAULT_FORWARDED_ALLOW_IPS)
# The app writes its own structured access log (oidc.access), without the query
# string (which can carry an id_token_hint); gunicorn's own is off, and its
# logger does not even build the line (see oidc.observability.logs.GunicornLogger).
accesslog = None
logger_class = "oidc.observability.logs.GunicornLogger"
errorlog = "-"
if (os.environ.get("LOG_FORMAT") or DEFAULT_LOG_FORMAT).lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "oidc.observability.logs.json_formatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }

# Prometheus metrics: workers write samples to a shared directory, the master
# serves them on a separate listener (METRICS_BIND; empty turns it off).
METRICS_BIND = os.environ.get("METRICS_BIND", "127.0.0.1:9464")
if METRICS_BIND and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Set before any worker imports prometheus_client, so it starts in multiprocess mode.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="oidc-metrics-")

WORKER_BOOT_ERROR = 3  # makes the gunicorn master stop instead of respawning

# Set by the first worker that starts its key service, read by every later one.
# Shared memory made here, in the master, before any fork: a replacement worker
# (one gunicorn started after a worker timed out in a hung PKCS#11 call, or
# died) must not stop the whole server because the HSM is away at that moment;
# it starts not ready and waits for the token instead.  Only the server's first
# workers keep the fail-fast start (HSM_STARTUP_WAIT_SECONDS, then one line).
_SERVED = multiprocessing.RawValue("b", 0)


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """In the master, before it binds: validate the settings, migrate the schema (no HSM here), then
    make sure the port is free.  Each failure stops the server with one line that names it."""
    from oidc.serving import ServeError, check_addresses_free, prepare
    from oidc.settings import describe_unknown_names, unknown_names

    unknown = unknown_names()
    if unknown:  # a misspelt setting would otherwise be ignored without a word (HSM_ENABLE=true)
        server.log.warning("%s", describe_unknown_names(unknown))
    try:
        prepare()
        # Not when the sockets are handed over (a re-exec on USR2, systemd socket activation):
        # then the address is in use by design.
        if not (server.LISTENERS or os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS")
                or server.cfg.reuse_port):
            check_addresses_free(server.cfg.address)
    except ServeError as exc:
        raise SystemExit(str(exc)) from None


def when_ready(server) -> None:  # type: ignore[no-untyped-def]
    """In the master: serve aggregated metrics on METRICS_BIND."""
    if not METRICS_BIND:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    class WorkersCollector(multiprocess.MultiProcessCollector):  # type: ignore[misc]
        """Skips a worker's file while it is still empty: prometheus-client creates it before it sizes
        it, and reading it then fails the whole scrape with a 500 (client_python issue 1199)."""

        def collect(self):  # type: ignore[no-untyped-def]
            files = []
            for name in glob.glob(os.path.join(self._path, "*.db")):
                try:
                    if os.path.getsize(name) > 0:
                        files.append(name)
                except OSError:  # removed meanwhile by mark_process_dead
                    continue
            return self.merge(files, accumulate=True)

    host, _, port = METRICS_BIND.rpartition(":")
    registry = CollectorRegistry()
    WorkersCollector(registry)
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    except OSError as exc:
        # Metrics are not worth refusing to serve tokens for.
        server.log.warning("metrics listener %s not started: %s", METRICS_BIND, exc)
        return
    server.log.info("metrics on http://%s/metrics", METRICS_BIND)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if directory.startswith(tempfile.gettempdir() + os.sep + "oidc-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


def on_reload(server) -> None:  # type: ignore[no-untyped-def]
    """kill -HUP: this file is read again, and ``_SERVED`` made anew with it.

    A server that is reloaded has been serving, so the new workers must not stop
    it if the HSM is away at that moment: they start as replacements do.
    """
    _SERVED.value = 1


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """In each worker: open the HSM, provision key sets, self-test the signers.

    A replacement worker of a server that has served starts even while the HSM
    is unreachable (not ready, 503 for signatures, waiting with backoff).
    """
    from keys import KeyServiceError
    from oidc.state import state_of

    replacement = bool(_SERVED.value)
    try:
        service = state_of(worker.wsgi).key_service(degraded_ok=replacement)
    except KeyServiceError as exc:
        if not _SERVED.value:
            worker.log.error("key service cannot start: %s", exc)
            sys.exit(WORKER_BOOT_ERROR)
        # Another worker started serving while this one was starting, and the HSM
        # went away meanwhile: wait for it like a replacement, never stop the server.
        worker.log.warning("key service cannot start yet: %s", exc)
        service = state_of(worker.wsgi).key_service(degraded_ok=True)
    # A lost token is probed from a background thread, never by a request:
    # a probe of a hanging token then blocks that thread, not the worker.
    service.start_recovery()
    # Logout tokens owed to clients are sent from this worker's own threads (never by a request),
    # including those written before a restart or by another process.
    from oidc.oauth2.backchannel import start_sender

    start_sender(worker.wsgi)
    if not service.pending_start:
        worker.log.info("worker started its key service")
        _SERVED.value = 1
    # What exists now lives as long as the worker (the app, its modules, the key service and their
    # caches): frozen, the collector's full passes no longer walk it.  A pass over it took about
    # 80 ms (some 160 k objects), once in every few tens of thousands of requests: a request held
    # up that long each time.
    gc.collect()
    gc.freeze()
