"""The interaction: an authorization request kept on the server while the user logs in and consents.

/authorize validates a request once; the login page and the consent form carry
only the interaction's id, which is single-use, bound to the browser that
started it, and short-lived (oidc/oauth2/interactions.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.datastructures import MultiDict

from oidc_fixtures import PASSWORD, REDIRECT_URI, Provider, hidden_fields, jwt_parts, pkce_pair, query_of, registered_client


def _params(client_id: str, **extra: str | None) -> dict[str, str | None]:
    _, challenge = pkce_pair()
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid profile email", "state": "the-state", "nonce": "the-nonce",
            "code_challenge": challenge, "code_challenge_method": "S256", **extra}


def _interaction_of(url: str) -> str:
    (value,) = parse_qs(urlsplit(url).query)["interaction"]
    return value


def _rows(op: Provider) -> list[Any]:
    from oidc.models import Interaction

    with op.app.app_context():
        return Interaction.query.order_by(Interaction.id).all()


def _consent_form(op: Provider, client_id: str, **extra: str) -> MultiDict[str, str]:
    page = op.authorize(_params(client_id, **extra), consent=None)
    assert page.status_code == 200 and 'action="/authorize/consent"' in page.text
    return MultiDict(hidden_fields(page.text))


def _unusable(response: Any) -> None:
    """The provider's own error page: 400, nothing sent to the client."""
    assert response.status_code == 400, response.status_code
    assert "Location" not in response.headers and response.mimetype == "text/html"
    assert "This sign-in request has expired or was already used" in response.text
    assert "Traceback" not in response.text


@pytest.fixture
def rp(op: Provider) -> str:
    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer")
    return client_id


# -- what goes through the browser ---------------------------------------------------------------


def test_the_login_url_carries_the_interaction_id_only(op: Provider, rp: str) -> None:
    params = _params(rp, login_hint="alice", ui_locales="en", claims_locales="en", acr_values="x" * 200)
    response = op.get("/authorize", query_string=params)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert urlsplit(location).path == "/login" and list(parse_qs(urlsplit(location).query)) == ["interaction"]
    assert len(location) < 80 and "the-state" not in location and "code_challenge" not in location
    page = op.get(location)
    assert page.status_code == 200 and 'value="alice"' in page.text  # login_hint, read from the interaction
    assert "Photo Printer" in page.text  # "to continue to" the interaction's client
    fields = dict(hidden_fields(page.text))
    assert set(fields) == {"csrf_token", "interaction"} and fields["interaction"] == _interaction_of(location)
    # Only hashes are stored: neither the id nor the browser's binding is on the row.
    (row,) = _rows(op)
    assert row.interaction_hash != fields["interaction"] and len(row.interaction_hash) == 43
    assert row.sid is None and row.used_at is None and row.client_pk is not None
    assert dict(row.parameters)["state"] == "the-state"


def test_the_consent_form_carries_the_interaction_id_and_csrf_token_only(op: Provider, rp: str) -> None:
    page = op.authorize(_params(rp), consent=None)
    fields = hidden_fields(page.text)
    assert sorted(name for name, _ in fields) == ["csrf_token", "interaction"]
    assert "the-state" not in page.text and "the-nonce" not in page.text and REDIRECT_URI not in page.text
    switch = op.get("/login?interaction=" + dict(fields)["interaction"])  # "Not you?" is the same interaction
    assert switch.status_code == 200 and "Photo Printer" in switch.text


def test_the_login_page_visited_directly_signs_in_and_says_so(op: Provider, rp: str) -> None:
    page = op.get("/login")
    assert dict(hidden_fields(page.text))["interaction"] == ""
    response = op.login()
    assert response.status_code == 200 and "Signed in" in response.text and "Location" not in response.headers
    assert _rows(op) == []


def test_an_interaction_keeps_only_the_parameters_the_provider_reads(op: Provider, rp: str) -> None:
    """Any browser can start an interaction: parameters nobody reads (RFC 6749 §3.1: ignored) are not stored."""
    from oidc.oauth2.authorization import MAX_AUTHORIZATION_PARAMETER_LENGTH

    padding = dict.fromkeys(("acr_values", "claims", "unknown"), "x" * MAX_AUTHORIZATION_PARAMETER_LENGTH)
    response = op.get("/authorize", query_string=_params(rp, login_hint="alice", ui_locales="de", **padding))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?interaction=")
    (row,) = _rows(op)
    stored = dict(row.parameters)
    assert not set(padding) & set(stored)
    assert stored["state"] == "the-state" and stored["login_hint"] == "alice" and stored["ui_locales"] == "de"
    assert sum(len(name) + len(value) for name, value in row.parameters) < 500
    # What is kept is enough to finish the request as it was asked.
    resumed = op.get(op.login(login_url=response.headers["Location"]).headers["Location"])
    assert resumed.status_code == 200 and 'action="/authorize/consent"' in resumed.text
    answer = op.post("/authorize/consent", data=MultiDict(hidden_fields(resumed.text) + [("decision", "approve")]))
    assert query_of(answer.headers["Location"])["state"] == ["the-state"]


@pytest.mark.parametrize("oversized", ["one parameter", "the request"])
def test_an_oversized_request_is_refused_and_writes_no_row(op: Provider, rp: str, oversized: str) -> None:
    """Past MAX_AUTHORIZATION_PARAMETER_LENGTH for one parameter, or MAX_REQUEST_LENGTH in all:
    invalid_request on the error page (the redirect URI is not trusted with it), and no interaction."""
    from oidc.oauth2.authorization import MAX_AUTHORIZATION_PARAMETER_LENGTH, MAX_REQUEST_LENGTH

    if oversized == "one parameter":
        extra = {"state": "s" * (MAX_AUTHORIZATION_PARAMETER_LENGTH + 1)}
    else:
        count = MAX_REQUEST_LENGTH // MAX_AUTHORIZATION_PARAMETER_LENGTH + 1
        extra = {f"extra{index}": "x" * (MAX_AUTHORIZATION_PARAMETER_LENGTH - 10) for index in range(count)}
    response = op.get("/authorize", query_string=_params(rp, **extra))
    assert response.status_code == 400 and "Location" not in response.headers
    assert "<code>invalid_request</code>" in response.text and "too long" in response.text
    assert _rows(op) == []


# -- single use ----------------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_a_replayed_consent_post_is_refused(op: Provider, rp: str) -> None:
    form = _consent_form(op, rp)
    form.add("decision", "approve")
    first = op.post("/authorize/consent", data=form)
    assert first.status_code == 302 and "code" in query_of(first.headers["Location"])
    _unusable(op.post("/authorize/consent", data=form))
    assert op.count("AuthorizationCode") == 1
    (row,) = _rows(op)
    assert row.used_at is not None
    # Nor does going back to the login step revive it.
    _unusable(op.get("/authorize/resume?interaction=" + form["interaction"]))
    _unusable(op.get("/login?interaction=" + form["interaction"]))


@pytest.mark.both_databases
def test_a_denied_consent_uses_the_interaction_up_too(op: Provider, rp: str) -> None:
    form = _consent_form(op, rp)
    denied = op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "deny")]))
    assert query_of(denied.headers["Location"])["error"] == ["access_denied"]
    _unusable(op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "approve")])))
    assert op.count("AuthorizationCode") == 0 and op.count("Consent") == 0


@pytest.mark.both_databases
def test_of_two_consent_posts_racing_one_gets_the_code(op: Provider, rp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both load the interaction before either claims it: the conditional UPDATE lets one through."""
    from oidc.oauth2 import interactions

    form = _consent_form(op, rp)
    form.add("decision", "approve")
    overtaken: list[Any] = []
    original = interactions.load

    def load_then_lose_the_race(*args: Any) -> Any:
        interaction = original(*args)
        if not overtaken:  # the first request is overtaken by a second one, which finishes first
            overtaken.append(None)
            overtaken[0] = op.post("/authorize/consent", data=form)
        return interaction

    monkeypatch.setattr(interactions, "load", load_then_lose_the_race)
    late = op.post("/authorize/consent", data=form)
    assert overtaken[0].status_code == 302 and "code" in query_of(overtaken[0].headers["Location"])
    _unusable(late)
    assert op.count("AuthorizationCode") == 1


# -- bound to the browser ---------------------------------------------------------------------------


@pytest.mark.both_databases
def test_an_interaction_id_is_useless_in_another_browser(op: Provider, rp: str) -> None:
    login_url = op.get("/authorize", query_string=_params(rp)).headers["Location"]
    other = op.new_browser()
    _unusable(other.get(login_url))
    _unusable(other.get("/authorize/resume?interaction=" + _interaction_of(login_url)))
    fields = dict(hidden_fields(other.get("/login").text))
    refused = other.post("/login", data={**fields, "interaction": _interaction_of(login_url), "username": "alice",
                                         "password": PASSWORD})
    _unusable(refused)
    assert op.count("LoginSession") == 0 and _rows(op)[0].sid is None  # nothing written
    # A consent form copied into another signed-in browser is refused as well.
    form = _consent_form(op, rp)
    other.login()
    csrf = dict(hidden_fields(other.get("/logout").text))["csrf_token"]
    _unusable(other.post("/authorize/consent", data={"csrf_token": csrf, "interaction": form["interaction"],
                                                      "decision": "approve"}))
    assert op.count("AuthorizationCode") == 0 and op.count("Consent") == 0
    # In its own browser it still works.
    approved = op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "approve")]))
    assert approved.status_code == 302 and "code" in query_of(approved.headers["Location"])


def test_the_consent_post_is_answered_only_by_the_login_it_was_shown_to(op: Provider, rp: str) -> None:
    op.add_user("bob")
    form = _consent_form(op, rp)
    op.login("bob")  # in another tab of the same browser: a new session, whose CSRF token this form lacks
    stale = op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "approve")]))
    assert stale.status_code == 400 and "The consent form has expired" in stale.text
    csrf = dict(hidden_fields(op.get("/logout").text))["csrf_token"]  # a form of the new session
    response = op.post("/authorize/consent", data={"csrf_token": csrf, "interaction": form["interaction"],
                                                   "decision": "approve"})
    assert response.status_code == 400 and "Location" not in response.headers
    assert "Your session has ended" in response.text
    assert op.count("AuthorizationCode") == 0 and op.count("Consent") == 0


def test_not_you_signs_in_as_someone_else_and_comes_back_to_the_same_interaction(op: Provider, rp: str) -> None:
    op.add_user("bob")
    form = _consent_form(op, rp)
    switched = op.login("bob", login_url="/login?interaction=" + form["interaction"])
    assert switched.status_code == 303
    assert switched.headers["Location"] == "/authorize/resume?interaction=" + form["interaction"]
    page = op.get(switched.headers["Location"])
    assert '<strong class="account-name">bob</strong>' in page.text
    assert dict(hidden_fields(page.text))["interaction"] == form["interaction"]
    response = op.post("/authorize/consent", data=MultiDict(hidden_fields(page.text) + [("decision", "approve")]))
    assert response.status_code == 302 and query_of(response.headers["Location"])["state"] == ["the-state"]
    assert len(_rows(op)) == 1


# -- expiry and unknown ids -------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_an_interaction_expires(op: Provider, rp: str) -> None:
    from oidc.oauth2.interactions import INTERACTION_LIFETIME

    login_url = op.get("/authorize", query_string=_params(rp)).headers["Location"]
    (row,) = _rows(op)
    assert row.expires_at - row.created_at == INTERACTION_LIFETIME
    form = _consent_form(op, rp)
    op.clock.advance(INTERACTION_LIFETIME + 1)
    _unusable(op.get(login_url))
    _unusable(op.get("/authorize/resume?interaction=" + _interaction_of(login_url)))
    _unusable(op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "approve")])))
    assert op.count("AuthorizationCode") == 0 and op.count("Consent") == 0
    from oidc.oauth2.families import prune_expired

    with op.app.app_context():
        assert prune_expired()["interactions"] == 2
    assert _rows(op) == []


@pytest.mark.parametrize("query", ["", "?interaction=", "?interaction=unknown", "?interaction=" + "A" * 43,
                                   "?interaction=" + "A" * 5000, "?interaction=%00"])
def test_an_unknown_interaction_is_the_error_page(op: Provider, rp: str, query: str) -> None:
    op.get("/authorize", query_string=_params(rp))  # this browser has a binding (and an interaction)
    _unusable(op.get("/authorize/resume" + query))
    assert op.post("/authorize/resume" + query).status_code == 405


def test_a_disabled_client_ends_its_interactions(op: Provider, rp: str) -> None:
    from oidc.accounts.clients import set_disabled

    form = _consent_form(op, rp)
    with op.app.app_context():
        set_disabled(registered_client(rp), True)
    response = op.post("/authorize/consent", data=MultiDict([*form.items(multi=True), ("decision", "approve")]))
    assert response.status_code == 400 and "Location" not in response.headers
    assert "This application is not recognised" in response.text
    assert op.count("AuthorizationCode") == 0


# -- the login step resumes the same request ---------------------------------------------------------------


@pytest.mark.both_databases
@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "0"}])
def test_the_login_step_resumes_the_request_and_answers_prompt_login_and_max_age(op: Provider, extra: dict[str, str]) -> None:
    op.add_user()
    client_id, secret = op.add_client(first_party=True)
    op.login()
    op.clock.advance(30)
    response = op.get("/authorize", query_string=_params(client_id, **extra))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?interaction=")
    op.clock.advance(5)
    resumed = op.login(login_url=response.headers["Location"])
    assert resumed.status_code == 303 and resumed.headers["Location"].startswith("/authorize/resume?interaction=")
    op.clock.advance(5)  # max_age=0 is older than that by now: the login made for it still counts
    done = op.get(resumed.headers["Location"])
    assert done.status_code == 302 and done.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query_of(done.headers["Location"])["state"] == ["the-state"]
    (row,) = _rows(op)
    assert row.used_at is not None and row.sid is not None
    # The code carries the new login.
    from oidc.models import AuthorizationCode

    with op.app.app_context():
        code = AuthorizationCode.query.one()
        assert code.sid == row.sid and code.auth_time == row.auth_time and code.nonce == "the-nonce"
    # Resuming again: used.
    _unusable(op.get(resumed.headers["Location"]))
    # A new request with the same prompt asks again: the fresh login was this interaction's only.
    again = op.get("/authorize", query_string=_params(client_id, **extra))
    assert again.status_code == 302 and again.headers["Location"].startswith("/login?interaction=")
    del secret


def test_a_login_for_another_user_than_the_id_token_hint_is_accepted_once_made(op: Provider) -> None:
    """OIDC Core §3.1.2.1: a hint naming someone else asks for a login; the login made is final."""
    op.add_user()
    op.add_user("bob")
    client_id, secret = op.add_client(first_party=True)
    id_token = op.tokens(client_id, secret)["id_token"]
    assert jwt_parts(id_token)[1]["sub"]
    browser = op.new_browser()
    browser.login("bob")
    response = browser.get("/authorize", query_string=_params(client_id, id_token_hint=id_token))
    assert response.headers["Location"].startswith("/login?interaction=")
    resumed = browser.login("bob", login_url=response.headers["Location"])
    done = browser.get(resumed.headers["Location"])
    assert done.status_code == 302 and "code" in query_of(done.headers["Location"])


def test_prompt_none_never_makes_an_interaction(op: Provider, rp: str) -> None:
    refused = op.get("/authorize", query_string=_params(rp, prompt="none"))
    assert query_of(refused.headers["Location"])["error"] == ["login_required"]
    op.login()
    refused = op.get("/authorize", query_string=_params(rp, prompt="none"))
    assert query_of(refused.headers["Location"])["error"] == ["consent_required"]
    assert _rows(op) == []


# -- pushed requests -----------------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_consent_through_a_pushed_request(op: Provider) -> None:
    op.add_user()
    client_id, secret = op.add_client(name="Photo Printer")
    assert secret is not None
    params = _params(client_id)
    pushed = op.post("/par", data={k: v for k, v in params.items() if k != "client_id"}, auth=(client_id, secret))
    request_uri = pushed.json["request_uri"]
    response = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri})
    assert list(parse_qs(urlsplit(response.headers["Location"]).query)) == ["interaction"]
    page = op.get(op.login(login_url=response.headers["Location"]).headers["Location"])
    assert sorted(name for name, _ in hidden_fields(page.text)) == ["csrf_token", "interaction"]
    (row,) = _rows(op)
    assert row.pushed_pk is not None
    answer = op.post("/authorize/consent", data=MultiDict(hidden_fields(page.text) + [("decision", "approve")]))
    assert answer.status_code == 302 and query_of(answer.headers["Location"])["state"] == ["the-state"]
    # The pushed request is used up with the interaction (RFC 9126 §4).
    from oidc.models import PushedAuthorizationRequest

    with op.app.app_context():
        assert PushedAuthorizationRequest.query.one().used_at is not None
    again = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri})
    assert again.status_code == 400 and "invalid_request_uri" in again.text


@pytest.mark.both_databases
def test_the_interaction_of_a_pushed_request_outlives_its_request_uri(op: Provider) -> None:
    """RFC 9126 §2.2: expires_in bounds the use of the request_uri at /authorize; the login and
    consent it started then have the interaction's own lifetime (single use unchanged)."""
    from oidc.models import PushedAuthorizationRequest
    from oidc.oauth2.interactions import INTERACTION_LIFETIME

    op.add_user()
    client_id, secret = op.add_client(name="Photo Printer")
    params = _params(client_id)
    pushed = op.post("/par", data={k: v for k, v in params.items() if k != "client_id"}, auth=(client_id, secret))
    request_uri, lifetime = pushed.json["request_uri"], pushed.json["expires_in"]
    login_url = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri}).headers["Location"]
    (row,) = _rows(op)
    assert row.expires_at - row.created_at == INTERACTION_LIFETIME
    op.clock.advance(lifetime + 1)  # a user slower than PAR_LIFETIME
    late = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri})
    assert late.status_code == 400 and "invalid_request_uri" in late.text  # it starts nothing new
    page = op.get(op.login(login_url=login_url).headers["Location"])
    assert page.status_code == 200 and 'action="/authorize/consent"' in page.text
    op.clock.advance(lifetime)
    answer = op.post("/authorize/consent", data=MultiDict(hidden_fields(page.text) + [("decision", "approve")]))
    assert answer.status_code == 302, answer.text[:300]
    assert query_of(answer.headers["Location"])["state"] == ["the-state"] and "code" in query_of(answer.headers["Location"])
    with op.app.app_context():
        assert PushedAuthorizationRequest.query.one().used_at is not None
    _unusable(op.post("/authorize/consent", data=MultiDict(hidden_fields(page.text) + [("decision", "approve")])))
    assert op.count("AuthorizationCode") == 1


def test_a_pushed_request_answered_elsewhere_ends_its_other_interactions(op: Provider) -> None:
    op.add_user()
    client_id, secret = op.add_client(name="Photo Printer")
    params = _params(client_id)
    request_uri = op.post("/par", data={k: v for k, v in params.items() if k != "client_id"},
                          auth=(client_id, secret)).json["request_uri"]
    op.login()
    first = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri})
    second = op.get("/authorize", query_string={"client_id": client_id, "request_uri": request_uri})
    answered = op.post("/authorize/consent", data=MultiDict(hidden_fields(first.text) + [("decision", "approve")]))
    assert answered.status_code == 302
    _unusable(op.post("/authorize/consent", data=MultiDict(hidden_fields(second.text) + [("decision", "approve")])))
    assert op.count("AuthorizationCode") == 1


# -- prompt=select_account -----------------------------------------------------------------------------------


def _account_choice(op: Provider, client_id: str, **extra: str) -> Any:
    """A signed-in browser asking with prompt=select_account: the account choice page."""
    page = op.get("/authorize", query_string=_params(client_id, prompt="select_account", **extra))
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    assert 'action="/authorize/select-account"' in page.text
    return page


def test_select_account_shows_the_account_and_continue_proceeds_with_it(op: Provider) -> None:
    """OIDC Core §3.1.2.1: prompt=select_account asks the user to choose the account, signed in or not."""
    alice = op.add_user()
    client_id, secret = op.add_client(first_party=True)
    verifier, challenge = pkce_pair()
    op.login()
    page = _account_choice(op, client_id, code_challenge=challenge)
    assert '<strong class="account-name">alice</strong>' in page.text
    fields = dict(hidden_fields(page.text))
    assert sorted(fields) == ["csrf_token", "interaction"] and "the-state" not in page.text
    assert f'href="/login?interaction={fields["interaction"]}"' in page.text  # "Not you? Switch account"
    assert op.count("AuthorizationCode") == 0
    # Coming back to the request without answering the page does not skip it.
    assert 'action="/authorize/select-account"' in _account_choice(op, client_id).text
    chosen = op.post("/authorize/select-account", data=fields)
    assert chosen.status_code == 302 and chosen.headers["Location"].startswith(REDIRECT_URI + "?")
    query = query_of(chosen.headers["Location"])
    assert query["state"] == ["the-state"]
    token = op.redeem(client_id, secret, {"code": query["code"][0], "verifier": verifier})
    assert jwt_parts(token.json["id_token"])[1]["sub"] == alice
    _unusable(op.post("/authorize/select-account", data=fields))  # single use
    assert _rows(op)[0].used_at is not None


def test_select_account_then_switch_signs_in_as_someone_else_for_the_same_request(op: Provider) -> None:
    op.add_user()
    bob = op.add_user("bob")
    client_id, secret = op.add_client(first_party=True)
    verifier, challenge = pkce_pair()
    op.login()
    page = _account_choice(op, client_id, code_challenge=challenge)
    interaction = dict(hidden_fields(page.text))["interaction"]
    login_page = op.get("/login?interaction=" + interaction)  # the switch link
    assert login_page.status_code == 200 and 'id="sign-in"' in login_page.text
    resumed = op.login("bob", login_url="/login?interaction=" + interaction)
    assert resumed.headers["Location"] == "/authorize/resume?interaction=" + interaction
    done = op.get(resumed.headers["Location"])  # the login made for it is the account chosen: no second choice
    assert done.status_code == 302 and done.headers["Location"].startswith(REDIRECT_URI + "?")
    code = query_of(done.headers["Location"])["code"][0]
    token = op.redeem(client_id, secret, {"code": code, "verifier": verifier})
    assert jwt_parts(token.json["id_token"])[1]["sub"] == bob


def test_select_account_without_a_session_is_the_login_page(op: Provider, rp: str) -> None:
    response = op.get("/authorize", query_string=_params(rp, prompt="select_account"))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?interaction=")


def test_the_account_choice_needs_its_form_and_its_login(op: Provider) -> None:
    op.add_user()
    op.add_user("bob")
    client_id, _ = op.add_client(first_party=True)
    op.login()
    fields = dict(hidden_fields(_account_choice(op, client_id).text))
    without_csrf = op.post("/authorize/select-account", data={"interaction": fields["interaction"]})
    assert without_csrf.status_code == 400 and "Location" not in without_csrf.headers
    op.login("bob")  # in another tab: the account shown is no longer the one signed in
    csrf = dict(hidden_fields(op.get("/logout").text))["csrf_token"]
    other = op.post("/authorize/select-account", data={"csrf_token": csrf, "interaction": fields["interaction"]})
    assert other.status_code == 400 and "Location" not in other.headers and "Your session has ended" in other.text
    assert op.count("AuthorizationCode") == 0


@pytest.mark.parametrize("scope", ["openid profile email", None])
def test_prompt_none_with_another_value_is_invalid_request(op: Provider, rp: str, scope: str | None) -> None:
    """OIDC Core §3.1.2.1: none with any other prompt value is an error (a request without scope
    gets the client's default scope, openid included: an OpenID request too)."""
    op.login()
    for prompt in ("none select_account", "select_account none", "none login", "none consent"):
        params = {key: value for key, value in _params(rp, prompt=prompt, scope=scope).items() if value is not None}
        refused = op.get("/authorize", query_string=params)
        assert refused.status_code == 302, prompt
        query = query_of(refused.headers["Location"])
        assert query["error"] == ["invalid_request"] and query["state"] == ["the-state"], (prompt, query)
    assert _rows(op) == [] and op.count("AuthorizationCode") == 0


def test_discovery_lists_select_account(op: Provider) -> None:
    assert "select_account" in op.get("/.well-known/openid-configuration").json["prompt_values_supported"]
