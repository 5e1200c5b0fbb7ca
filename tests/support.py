"""Small helpers shared by the test modules (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from typing import Any, NoReturn

import pytest

#: In CI a missing dependency (SoftHSM2, PostgreSQL, Redis, nginx, Chromium) fails the run.
IN_CI = os.environ.get("CI", "").lower() == "true"

CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
#: Chromium flags for a sandboxless, offline headless run (no calls to Google's services).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def missing(what: str) -> NoReturn:
    """Skip the test where ``what`` is not installed, or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not available")


def chromium_executable() -> str:
    """Debian's Chromium, for Playwright (which must not download a browser of its own)."""
    path = next((candidate for candidate in CHROMIUM_CANDIDATES if os.path.exists(candidate)), None)
    path = path or shutil.which("chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        missing("Chromium (Debian package chromium) and the playwright package")
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log records of a captured output (other lines ignored)."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children; SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_key_service(app: Any, *, degraded_ok: bool = False) -> Any:
    """The app's key service, started (as the first request of a worker would; ``degraded_ok``
    as a replacement worker does, not stopping while the HSM is away)."""
    from oidc.state import state_of

    return state_of(app).key_service(degraded_ok=degraded_ok)


def build_key_service(app: Any) -> Any:
    """A new key service from the app's settings, not started."""
    from oidc.state import state_of

    return state_of(app).build_key_service()
