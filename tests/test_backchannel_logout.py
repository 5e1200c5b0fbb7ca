"""OpenID Connect Back-Channel Logout 1.0: logout tokens owed when a login session ends, and their delivery.

Through the app (its test client) with the sender threads running as a
worker runs them, and a relying party's endpoint on loopback
(tests/logout_receiver.py) that verifies each logout token with PyJWT against
the published JWK Set.  Loopback http receivers need DEVELOPMENT_MODE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import software_env
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from logout_receiver import Receiver, verify_logout_token
from oidc_fixtures import ISSUER, Provider, jwt_parts, registered_client

FAST = {"DEVELOPMENT_MODE": "true", "BACKCHANNEL_LOGOUT_POLL_SECONDS": "0.2",
        "BACKCHANNEL_LOGOUT_RETRY_INITIAL_SECONDS": "1", "BACKCHANNEL_LOGOUT_TIMEOUT": "2"}


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def make_provider(make_app: Any, provisioned_database_url: str, system_secret: str,
                  admin_key: str) -> Iterator[Callable[..., Provider]]:
    """A provider on the test database; ``sender=True`` starts its back-channel sender as a worker does."""
    from oidc.oauth2.backchannel import start_sender, stop_sender

    started: list[Any] = []

    def make(*, sender: bool = True, **env: str) -> Provider:
        app = make_app({**software_env(provisioned_database_url, system_secret, admin_key), **FAST, **env})
        provider = Provider(app)
        if sender:
            start_sender(app)
            started.append(app)
        return provider

    yield make
    for app in started:
        stop_sender(app)


@pytest.fixture
def audit_events() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("oidc.audit")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("oidc_backchannel_logouts_total", {"outcome": outcome}) or 0.0


def _outbox(provider: Provider) -> list[Any]:
    from oidc.db import db
    from oidc.models import BackchannelLogout

    with provider.app.app_context():
        rows = db.session.query(BackchannelLogout).order_by(BackchannelLogout.id).all()
        db.session.expunge_all()
        return rows


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _logout(provider: Provider, id_token: str) -> Any:
    return provider.get("/logout", query_string={"id_token_hint": id_token})


# -- registration and discovery -------------------------------------------------------------------


def test_discovery_advertises_back_channel_logout_with_sessions(make_provider):
    document = make_provider(sender=False).get("/.well-known/openid-configuration").json
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True


@pytest.mark.parametrize(("uri", "development", "accepted"), [
    ("https://rp.example.test/logout?x=1", False, True),
    ("http://127.0.0.1:8080/logout", True, True),
    ("http://[::1]:8080/logout", True, True),
    ("http://127.0.0.1:8080/logout", False, False),
    ("http://rp.example.test/logout", True, False),
    ("https://rp.example.test/logout#frag", False, False),
    ("https:///logout", False, False),
    ("javascript:alert(1)", True, False),
])
def test_the_logout_uri_is_https_or_loopback_in_development_mode(make_provider, uri, development, accepted):
    from oidc.accounts.clients import ClientError

    provider = make_provider(sender=False, DEVELOPMENT_MODE="true" if development else "false")
    if accepted:
        client_id, _ = provider.add_client(backchannel_logout_uri=uri)
        with provider.app.app_context():
            assert registered_client(client_id).backchannel_logout_uri == uri
    else:
        with pytest.raises(ClientError, match="backchannel_logout_uri"):
            provider.add_client(backchannel_logout_uri=uri)


@settings(max_examples=150, deadline=None, database=None)
@seed(24)
@given(value=st.one_of(st.none(), st.text(max_size=80), st.from_regex(r"(https?|ftp)://[a-z0-9.:\[\]@/?#%-]{0,40}"),
                       st.integers(), st.lists(st.text(max_size=5), max_size=2)))
def test_the_logout_uri_check_refuses_anything_else_with_a_client_error(value):
    from urllib.parse import urlsplit

    from oidc.accounts.clients import ClientError, check_backchannel_logout_uri

    for development in (False, True):
        try:
            checked = check_backchannel_logout_uri(value, development=development)
        except ClientError as exc:
            assert "backchannel_logout_uri" in str(exc)
            continue
        if checked is not None:
            parts = urlsplit(checked)
            assert not parts.fragment and parts.hostname
            assert parts.scheme == "https" or (development and parts.hostname in ("127.0.0.1", "::1", "localhost"))


def test_cli_and_admin_api_register_and_change_the_metadata(make_provider, admin_key):
    provider = make_provider(sender=False)
    runner = provider.app.test_cli_runner()
    result = runner.invoke(args=["clients", "create", "--name", "RP", "--redirect-uri", "https://rp.example.test/cb",
                                 "--backchannel-logout-uri", "https://rp.example.test/bcl",
                                 "--backchannel-logout-session-required", "--json"])
    assert result.exit_code == 0, result.output
    import json

    created = json.loads(result.output)
    assert created["backchannel_logout_uri"] == "https://rp.example.test/bcl"
    assert created["backchannel_logout_session_required"] is True
    result = runner.invoke(args=["clients", "set-backchannel-logout", created["client_id"], "--uri",
                                 "http://rp.example.test/bcl"])
    assert result.exit_code != 0 and "https" in result.output

    headers = {"Authorization": f"Bearer {admin_key}"}
    response = provider.http.patch(f"/admin/clients/{created['client_id']}", base_url=ISSUER, headers=headers,
                                   json={"backchannel_logout_uri": "https://rp.example.test/other",
                                         "backchannel_logout_session_required": False})
    assert response.status_code == 200, response.json
    assert response.json["backchannel_logout_uri"] == "https://rp.example.test/other"
    assert response.json["backchannel_logout_session_required"] is False
    refused = provider.http.patch(f"/admin/clients/{created['client_id']}", base_url=ISSUER, headers=headers,
                                  json={"backchannel_logout_uri": "ftp://rp.example.test/", "logo_uri": ""})
    assert refused.status_code == 400 and refused.json["error"] == "invalid_request"
    response = provider.http.post("/admin/clients", base_url=ISSUER, headers=headers, json={
        "name": "API RP", "redirect_uris": ["https://rp.example.test/cb"],
        "backchannel_logout_uri": "https://rp.example.test/bcl"})
    assert response.status_code == 201 and response.json["backchannel_logout_uri"] == "https://rp.example.test/bcl"
    schema = provider.get("/admin/openapi.json").json["components"]["schemas"]
    assert "backchannel_logout_uri" in schema["ClientRegistration"]["properties"]
    assert "backchannel_logout_session_required" in schema["ClientUpdate"]["properties"]


# -- delivery -----------------------------------------------------------------------------------------


@pytest.mark.both_databases
def test_rp_initiated_logout_sends_each_client_of_the_session_a_verified_logout_token(make_provider, receivers,
                                                                                       audit_events):
    provider = make_provider()
    provider.add_user()
    with_sid, plain, silent = receivers(), receivers(), receivers()
    first = provider.add_client(backchannel_logout_uri=with_sid.url, backchannel_logout_session_required=True)
    second = provider.add_client(backchannel_logout_uri=plain.url)
    third = provider.add_client(backchannel_logout_uri=silent.url)  # gets no tokens in this session
    tokens = provider.tokens(*first)
    provider.tokens(*second, scope="openid")  # no refresh token: found by its code
    _, id_claims = jwt_parts(tokens["id_token"])
    sent_before = _count("sent")

    response = _logout(provider, tokens["id_token"])
    assert response.status_code == 200

    jwks = provider.jwks()
    [delivery] = with_sid.wait_for(1)
    assert delivery.content_type == "application/x-www-form-urlencoded"
    assert delivery.path == "/backchannel-logout"
    claims = verify_logout_token(delivery.token, jwks, issuer=ISSUER, audience=first[0])
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    assert claims["exp"] > claims["iat"] and claims["jti"]
    [delivery] = plain.wait_for(1)
    claims = verify_logout_token(delivery.token, jwks, issuer=ISSUER, audience=second[0])
    assert claims["sub"] == id_claims["sub"] and "sid" not in claims
    time.sleep(0.5)
    assert silent.deliveries == [] and third
    assert _count("sent") - sent_before == 2
    _wait(lambda: all(row.delivered_at is not None for row in _outbox(provider)))
    assert [row.attempts for row in _outbox(provider)] == [1, 1]
    sent = [record for record in audit_events if getattr(record, "event", "") == "logout.backchannel.sent"]
    assert {record.client_id for record in sent} == {first[0], second[0]}
    assert all(getattr(record, "sid", None) is None for record in sent)  # the session id is not logged

    # The same session cannot end twice: nothing more is owed.
    _logout(provider, tokens["id_token"])
    assert len(_outbox(provider)) == 2


def test_the_logout_page_waits_for_no_receiver(make_provider, receivers):
    provider = make_provider()
    provider.add_user()
    slow = receivers(delay=1.5)
    client = provider.add_client(backchannel_logout_uri=slow.url)
    tokens = provider.tokens(*client)
    started = time.monotonic()
    response = _logout(provider, tokens["id_token"])
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.0, elapsed  # the receiver takes 1.5 s to answer
    assert slow.wait_for(1)


def test_a_failed_delivery_is_retried_with_backoff(make_provider, receivers, audit_events):
    provider = make_provider()
    provider.add_user()
    flaky = receivers(statuses=[500])
    client = provider.add_client(backchannel_logout_uri=flaky.url)
    tokens = provider.tokens(*client)
    failed_before, sent_before = _count("failed"), _count("sent")
    _logout(provider, tokens["id_token"])
    first, second = flaky.wait_for(2)
    # BACKCHANNEL_LOGOUT_RETRY_INITIAL_SECONDS=1: the next whole second after the first attempt's, or later.
    assert 0 < second.at - first.at < 3
    jwks = provider.jwks()
    claims = [verify_logout_token(d.token, jwks, issuer=ISSUER, audience=client[0]) for d in (first, second)]
    assert claims[0]["jti"] == claims[1]["jti"]  # a retry: the receiver may recognise it
    _wait(lambda: _outbox(provider)[0].delivered_at is not None)
    [row] = _outbox(provider)
    assert row.attempts == 2 and row.next_attempt_at is None and row.last_error is None
    assert _count("failed") - failed_before == 1 and _count("sent") - sent_before == 1
    events = [getattr(record, "event", "") for record in audit_events]
    assert "logout.backchannel.failed" in events and "logout.backchannel.sent" in events


def test_delivery_is_given_up_after_the_retry_window(make_provider, receivers, audit_events):
    provider = make_provider(BACKCHANNEL_LOGOUT_RETRY_WINDOW="2")
    provider.add_user()
    down = receivers(statuses=[503] * 10)
    client = provider.add_client(backchannel_logout_uri=down.url)
    tokens = provider.tokens(*client)
    given_up_before = _count("given_up")
    _logout(provider, tokens["id_token"])
    _wait(lambda: _outbox(provider)[0].gave_up_at is not None)
    [row] = _outbox(provider)
    # Attempts at 0 s and 1 s; the next would be at 3 s, past the 2 s window.
    assert row.attempts == 2 and row.delivered_at is None and row.next_attempt_at is None
    # The receiver records a delivery once it has answered it: possibly after the sender has read the answer.
    _wait(lambda: len(down.deliveries) == 2)
    assert _count("given_up") - given_up_before == 1
    assert any(getattr(record, "event", "") == "logout.backchannel.given_up" for record in audit_events)
    time.sleep(1.5)
    assert len(down.deliveries) == 2  # never tried again


def test_redirects_are_not_followed(make_provider, receivers):
    provider = make_provider(BACKCHANNEL_LOGOUT_RETRY_WINDOW="0")
    provider.add_user()
    elsewhere = receivers()
    redirecting = receivers(statuses=[307], location=elsewhere.url)
    client = provider.add_client(backchannel_logout_uri=redirecting.url)
    tokens = provider.tokens(*client)
    _logout(provider, tokens["id_token"])
    _wait(lambda: _outbox(provider)[0].gave_up_at is not None)
    _wait(lambda: len(redirecting.deliveries) == 1)  # recorded once the receiver has answered
    assert elsewhere.deliveries == []
    assert _outbox(provider)[0].last_error == "HTTP 307 (redirects are not followed)"


def test_an_http_uri_is_not_contacted_outside_development_mode(make_provider, receivers):
    """Registered in development mode, then the provider runs without it: the loopback http URI is refused."""
    receiver = receivers()
    registering = make_provider(sender=False)
    registering.add_user()
    client = registering.add_client(backchannel_logout_uri=receiver.url)
    tokens = registering.tokens(*client)
    provider = make_provider(DEVELOPMENT_MODE="false", BACKCHANNEL_LOGOUT_RETRY_WINDOW="0")
    _logout(registering, tokens["id_token"])  # owed by one process, sent by the other
    _wait(lambda: _outbox(provider)[0].gave_up_at is not None)
    assert receiver.deliveries == []
    assert _outbox(provider)[0].last_error == "refused: the URI is not https"


@pytest.mark.parametrize("trusted", [True, False])
def test_an_https_receiver_gets_its_token_only_when_its_certificate_verifies(make_provider, receivers, tmp_path,
                                                                            monkeypatch, trusted):
    """Outside development mode, over TLS: verified against the CA store (SSL_CERT_FILE names the tests' own)."""
    from tls_proxy import throwaway_certificate

    certificate = throwaway_certificate(tmp_path)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    receiver = receivers(tls=(str(certificate.cert), str(certificate.key)))
    provider = make_provider(DEVELOPMENT_MODE="false", BACKCHANNEL_LOGOUT_RETRY_WINDOW="0")
    provider.add_user()
    client = provider.add_client(backchannel_logout_uri=receiver.url)
    tokens = provider.tokens(*client)
    _logout(provider, tokens["id_token"])
    _wait(lambda: _outbox(provider)[0].next_attempt_at is None)
    [row] = _outbox(provider)
    if trusted:
        [delivery] = receiver.wait_for(1)  # recorded once the receiver has answered
        verify_logout_token(delivery.token, provider.jwks(), issuer=ISSUER, audience=client[0])
        assert row.delivered_at is not None
    else:
        assert receiver.deliveries == []
        assert row.gave_up_at is not None and row.last_error == "network: SSLCertVerificationError"


@pytest.mark.hsm
def test_logout_tokens_are_signed_on_the_hsm_from_the_sender_threads(make_app, hsm_env, receivers):
    """The ID token key set on a SoftHSM2 token: the sender threads sign through the key service, while
    requests sign too (one PKCS#11 lock per process), with the key that signs ID tokens."""
    from oidc.oauth2.backchannel import start_sender, stop_sender

    app = make_app({**hsm_env, **FAST})
    provider = Provider(app)
    start_sender(app)
    try:
        provider.add_user()
        receiver = receivers()
        clients = [provider.add_client(backchannel_logout_uri=receiver.url) for _ in range(4)]
        id_tokens = [provider.tokens(*client)["id_token"] for client in clients]
        _logout(provider, id_tokens[0])
        other = provider.new_browser()
        for client in clients:  # requests sign while the sender threads do
            other.tokens(*client)
        deliveries = receiver.wait_for(4)
        jwks = provider.jwks()
        id_kid = jwt_parts(id_tokens[0])[0]["kid"]
        for delivery in deliveries:
            header, _ = jwt_parts(delivery.token)
            assert header["kid"] == id_kid and header["typ"] == "logout+jwt"
        audiences = {verify_logout_token(d.token, jwks, issuer=ISSUER, audience=jwt_parts(d.token)[1]["aud"])["aud"]
                     for d in deliveries}
        assert audiences == {client[0] for client in clients}
    finally:
        stop_sender(app)


def test_the_users_own_sign_out_and_an_operator_end_every_session(make_provider, receivers, admin_key):
    """A browser's sign-out with no hint (confirmed), a new password from the admin API, and a disabled user
    from the CLI (a process with no sender: a worker's sender finds the rows by polling)."""
    from oidc_fixtures import hidden_fields

    provider = make_provider()
    provider.add_user()
    receiver = receivers()
    client = provider.add_client(backchannel_logout_uri=receiver.url, backchannel_logout_session_required=True)
    sids = []

    # 1. The user's own sign-out: the confirmation form, posted.
    tokens = provider.tokens(*client)
    sids.append(jwt_parts(tokens["id_token"])[1]["sid"])
    page = provider.get("/logout")
    response = provider.post("/logout", data={**dict(hidden_fields(page.text)), "confirm": "yes"})
    assert response.status_code == 200
    receiver.wait_for(1)

    # 2. A new password with revoke_grants through the admin API, with two browsers signed in.
    other = provider.new_browser()
    for browser in (provider, other):
        sids.append(jwt_parts(browser.tokens(*client)["id_token"])[1]["sid"])
    response = provider.post("/admin/users/alice/password", headers={"Authorization": f"Bearer {admin_key}"},
                             json={"password": "another long password", "revoke_grants": True})
    assert response.status_code == 204, response.json
    receiver.wait_for(3)

    # 3. Disabled from the CLI, in a process that sends nothing itself.
    from oidc.oauth2.backchannel import running_sender

    sids.append(jwt_parts(provider.tokens(*client, password="another long password")["id_token"])[1]["sid"])
    cli_app = make_provider(sender=False).app
    result = cli_app.test_cli_runner().invoke(args=["users", "disable", "alice"])
    assert result.exit_code == 0, result.output
    with cli_app.app_context():
        assert running_sender() is None
    deliveries = receiver.wait_for(4)
    jwks = provider.jwks()
    received = [verify_logout_token(d.token, jwks, issuer=ISSUER, audience=client[0])["sid"] for d in deliveries]
    assert sorted(received) == sorted(sids)


def test_deleting_a_user_owes_the_logout_tokens_of_its_open_sessions(make_provider, receivers):
    provider = make_provider()
    provider.add_user()
    receiver = receivers()
    client = provider.add_client(backchannel_logout_uri=receiver.url)
    tokens = provider.tokens(*client)
    result = provider.app.test_cli_runner().invoke(args=["users", "delete", "alice"])
    assert result.exit_code == 0, result.output
    [delivery] = receiver.wait_for(1)
    claims = verify_logout_token(delivery.token, provider.jwks(), issuer=ISSUER, audience=client[0])
    assert claims["sub"] == jwt_parts(tokens["id_token"])[1]["sub"]


@pytest.mark.both_databases
def test_two_senders_racing_on_the_same_rows_deliver_each_once(make_provider, receivers):
    """Two providers on one database (as two instances), each sender claiming the same due rows at once."""
    from oidc.oauth2.backchannel import Sender
    from oidc.oauth2.logins import end_login

    writer = make_provider(sender=False)
    writer.add_user()
    receiver = receivers(delay=0.05)
    clients = [writer.add_client(backchannel_logout_uri=receiver.url) for _ in range(3)]
    sids = []
    for _ in range(8):
        browser = writer.new_browser()
        for client in clients:
            sids.append(jwt_parts(browser.tokens(*client)["id_token"])[1]["sid"])
    with writer.app.app_context():
        for sid in dict.fromkeys(sids):
            end_login(sid)
            end_login(sid)  # ended already: nothing more is owed
    rows = _outbox(writer)
    assert len(rows) == 24

    senders = [Sender(make_provider(sender=False).app) for _ in range(2)]
    for sender in senders:
        sender.start(poll=False)
    barrier = threading.Barrier(2)

    def run(sender: Sender) -> None:
        barrier.wait()
        while sender.deliver_due():
            pass

    threads = [threading.Thread(target=run, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for sender in senders:
        sender.stop()
    deliveries = receiver.wait_for(24)
    time.sleep(0.3)
    jtis = [jwt_parts(d.token)[1]["jti"] for d in receiver.deliveries]
    assert len(jtis) == 24 and len(set(jtis)) == 24
    assert all(row.attempts == 1 and row.delivered_at is not None for row in _outbox(writer))
    assert deliveries


def test_a_claim_whose_lease_ended_is_claimed_again_and_only_its_claimer_records(make_provider):
    """A worker that died holding a row: once its lease ends another claims it; the first cannot record."""
    from oidc import queries
    from oidc.db import db
    from oidc.models import BackchannelLogout

    provider = make_provider(sender=False)
    provider.add_user()
    client = provider.add_client(backchannel_logout_uri="https://rp.example.test/bcl")
    with provider.app.app_context():
        client_pk = registered_client(client[0]).id
        queries.add(BackchannelLogout(client_pk=client_pk, sid="s" * 32, subject="u", jti="j", created_at=100,
                                      next_attempt_at=100, attempts=0, claimed_until=0))
        db.session.commit()
        with db.engine.begin() as connection:
            [row_id] = queries.due_backchannel_logouts(connection, 100, 10)
            assert queries.claim_backchannel_logout(connection, row_id, 100, 150, "first")
            assert not queries.claim_backchannel_logout(connection, row_id, 149, 200, "second")
            assert queries.due_backchannel_logouts(connection, 149, 10) == []
            assert queries.claim_backchannel_logout(connection, row_id, 150, 200, "second")
            assert not queries.finish_backchannel_logout(connection, row_id, "first", delivered_at=151,
                                                         gave_up_at=None, error=None)
            assert queries.finish_backchannel_logout(connection, row_id, "second", delivered_at=152,
                                                     gave_up_at=None, error=None)
            assert queries.due_backchannel_logouts(connection, 10**12, 10) == []


def test_the_admin_api_answers_any_back_channel_metadata_with_200_or_400(make_provider, admin_key):
    """Whatever JSON is sent for the two fields: a 200 with what was asked, or a 400 naming the problem, never a 500."""
    provider = make_provider(sender=False)
    client_id, _ = provider.add_client()
    headers = {"Authorization": f"Bearer {admin_key}"}
    json_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=60),
                            st.from_regex(r"https?://[a-z0-9.:\[\]/?#%-]{0,30}", fullmatch=True),
                            st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3), st.none()))

    @settings(max_examples=60, deadline=None, database=None)
    @seed(24)
    @given(uri=json_values, required=json_values)
    def check(uri: Any, required: Any) -> None:
        response = provider.http.patch(f"/admin/clients/{client_id}", base_url=ISSUER, headers=headers,
                                       json={"backchannel_logout_uri": uri, "backchannel_logout_session_required": required})
        assert response.status_code in (200, 400), (uri, required, response.status_code)
        if response.status_code == 400:
            assert response.json["error"] == "invalid_request" and "Traceback" not in response.text
        else:
            assert response.json["backchannel_logout_uri"] == (uri or None)

    check()
