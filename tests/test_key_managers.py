"""The strategy over the two managers (Ory Hydra's jwk.ManagerStrategy), without a token or a database:
the hardware first, software where it has no key for the set, HSM-only sets never in software."""

from __future__ import annotations

from typing import Any

import pytest

from keys.errors import HSMError
from keys.manager import ManagerStrategy, NoToken
from keys.signer import KeyRecord


def _record(kid: str, backend: str, use: str = "sig") -> KeyRecord:
    return KeyRecord(key_set="s", kid=kid, alg="ES256", use=use, backend=backend, public_jwk={"kid": kid})


class _Token(NoToken):
    """A configured token holding the given records."""

    configured = True

    def __init__(self, held: list[KeyRecord]) -> None:
        super().__init__()
        self.held = held

    def records(self, key_set: str, stored: Any, *, alg: str | None = None, stored_only: bool = False) -> list[KeyRecord]:
        return list(self.held)


class _Software:
    backend = "software"

    def __init__(self, unpublishable: frozenset[str] = frozenset()) -> None:
        self.unpublishable = unpublishable

    def records(self, key_set: str, stored: Any, **_: Any) -> list[KeyRecord]:
        return [record for record in stored if record.backend == "software"]

    def publishable(self, record: KeyRecord) -> bool:
        return record.kid not in self.unpublishable


STORED = [_record("soft", "software")]


def _strategy(hardware: NoToken, hsm_only: tuple[str, ...] = (), software: _Software | None = None) -> ManagerStrategy:
    return ManagerStrategy(hardware, software or _Software(), hsm_only)  # type: ignore[arg-type]


def test_the_hardware_serves_a_set_it_has_a_signing_key_for_and_software_keys_are_only_published():
    backend, records = _strategy(_Token([_record("hard", "hsm")])).records("s", STORED)
    assert backend == "hsm"
    assert [record.kid for record in records] == ["hard", "soft"]


def test_a_software_key_that_does_not_open_is_not_published_beside_the_hardware():
    strategy = _strategy(_Token([_record("hard", "hsm")]), software=_Software(frozenset({"soft"})))
    assert strategy.records("s", STORED) == ("hsm", [_record("hard", "hsm")])


@pytest.mark.parametrize("hardware", [_Token([]), _Token([_record("dec", "hsm", use="enc")]), NoToken()],
                         ids=["token-without-key", "token-with-a-decryption-key-only", "no-token"])
def test_software_serves_a_set_the_hardware_cannot_sign_for(hardware):
    backend, records = _strategy(hardware).records("s", STORED)
    assert backend == "software"
    assert "soft" in [record.kid for record in records]


@pytest.mark.parametrize("hsm_only", [("s",), ("*",)])
@pytest.mark.parametrize("hardware", [_Token([]), NoToken()], ids=["token-without-key", "no-token"])
def test_an_hsm_only_set_never_falls_back_nor_publishes_software_keys(hardware, hsm_only):
    assert _strategy(hardware, hsm_only).records("s", STORED) == (None, [])


def test_new_keys_go_where_the_set_lives():
    token = _Token([])
    strategy = _strategy(token, ("only",))
    assert strategy.target("only", pytest.fail, configured=True) is token  # no look-up needed
    assert strategy.target("s", lambda: ("hsm", [_record("hard", "hsm")]), configured=False) is token
    assert strategy.target("s", lambda: ("software", []), configured=True) is token  # provisioning
    assert strategy.target("s", lambda: ("software", STORED), configured=True) is strategy.software


def test_without_a_token_new_keys_are_software_and_hsm_only_sets_are_refused():
    strategy = _strategy(NoToken(), ("only",))
    assert strategy.target("s", pytest.fail, configured=True) is strategy.software
    with pytest.raises(HSMError, match="HSM-only and no HSM is configured"):
        strategy.target("only", pytest.fail, configured=True)


def test_no_token_has_nothing_and_is_never_lost():
    hardware = NoToken()
    assert (hardware.configured, hardware.available, hardware.token) == (False, True, None)
    assert hardware.records("s", STORED) == [] and hardware.delete("s", "soft") is False
    assert hardware.health() == (True, None)
    with pytest.raises(HSMError):
        hardware.generate("s", "ES256", rsa_bits=2048, created_at=0, active_at=0)
