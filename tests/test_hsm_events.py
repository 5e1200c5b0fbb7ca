"""HSM trouble reported to the operator: the manager's ``on_event`` hook, wired to the metrics.

On a real SoftHSM2 token: a session that lost its login is reopened and
reported as ("reconnect", None); an operation the token refuses is reported as
("error", <exception class>) and still raised.  The provider passes
:func:`oidc.observability.metrics.hsm_event` as the hook.
"""

from __future__ import annotations

import pytest


def test_reconnect_and_refused_operation_are_reported(softhsm, token):
    from keys.algorithms import get_algorithm
    from keys.errors import HSMOperationError
    from keys.hsm import HSMConfig, HSMManager

    config = HSMConfig(library=softhsm.library, pin=softhsm.pin, token_label=token)
    events: list[tuple[str, str | None]] = []
    # Logged in first: closing its session later logs out the whole process (PKCS#11 login is per process).
    other = HSMManager(config)
    other.open()
    manager = HSMManager(config, on_event=lambda event, error: events.append((event, error)))
    try:
        manager.open()
        record = manager.generate("events.test", "ES256", rsa_bits=2048)
        es256 = get_algorithm("ES256")
        assert len(manager.sign(record, es256, b"before")) == 64
        assert events == []

        other.close()  # logs our session out behind its back
        assert len(manager.sign(record, es256, b"after")) == 64  # reopened, looked up again, signed
        assert events == [("reconnect", None)]

        # An EC key asked for an RSA signature: the token refuses, the error is reported and raised.
        with pytest.raises(HSMOperationError) as refused:
            manager.sign(record, get_algorithm("RS256"), b"refused")
        assert events[-1] == ("error", refused.value.code) and "CKM_" in str(refused.value)
        assert [event for event, _ in events].count("error") == 1
    finally:
        manager.close()
        other.close()


def test_a_failing_hook_never_breaks_signing(softhsm, token):
    from keys.algorithms import get_algorithm
    from keys.hsm import HSMConfig, HSMManager

    def broken(event: str, error: str | None) -> None:
        raise RuntimeError("metrics are down")

    config = HSMConfig(library=softhsm.library, pin=softhsm.pin, token_label=token)
    other = HSMManager(config)
    other.open()
    manager = HSMManager(config, on_event=broken)
    try:
        manager.open()
        record = manager.generate("events.test", "ES256", rsa_bits=2048)
        other.close()
        assert len(manager.sign(record, get_algorithm("ES256"), b"after")) == 64
    finally:
        manager.close()
        other.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_provider_reports_hsm_events_to_the_metrics(make_app, hsm_env):
    from oidc.observability import metrics
    from oidc.state import hsm_event

    from support import build_key_service

    service = build_key_service(make_app(hsm_env))
    # counted in the metrics, and an outage and its end audited (oidc.state.hsm_event)
    assert service.hsm is not None and service.hsm.on_event is hsm_event
    before = metrics.HSM_RECONNECTS._value.get()
    service.hsm.on_event("reconnect", None)
    assert metrics.HSM_RECONNECTS._value.get() == before + 1
    errors = metrics.HSM_ERRORS.labels("GeneralError")
    before = errors._value.get()
    service.hsm.on_event("error", "GeneralError")
    assert errors._value.get() == before + 1
