"""Rules the provider applies in several places, each written once and read by every place that needs it."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from oidc.oauth2.parameters import holds_control_character, repeated_parameter


def test_a_repeated_parameter_is_named_only_among_those_asked_about() -> None:
    """RFC 6749 §3.1: each endpoint names the parameters it reads once (``resource`` may repeat)."""
    params = MultiDict([("resource", "https://a"), ("resource", "https://b"), ("scope", "x"), ("state", "1"),
                        ("state", "2")])
    assert repeated_parameter(params, ("scope", "resource")) is not None
    assert str(repeated_parameter(params, ("client_id", "state"))) == "The state parameter is repeated."
    assert repeated_parameter(params, ("client_id", "scope")) is None


def test_a_control_character_in_a_name_or_a_value_is_found() -> None:
    """RFC 6749 Appendix A: parameters are printable; tab, CR and LF are not refused here."""
    assert holds_control_character(MultiDict([("state", "a\x00b")]))
    assert holds_control_character(MultiDict([("st\x7fate", "ab")]))
    assert not holds_control_character(MultiDict([("state", "a\tb\r\n"), ("nonce", "é")]))
