"""What a validated authorization request needs next, decided without HTTP (oidc/oauth2/steps.py).

OIDC Core §3.1.2.1 (``prompt``, ``max_age``, ``id_token_hint``) and §11 (consent
to ``offline_access``), one row per case: real validated requests, real users
and ID tokens signed by the provider's keys, but no request to the provider.
The pages and redirects each step becomes are tested over HTTP in
test_oidc_authorize.py and test_interactions.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from oidc_fixtures import REDIRECT_URI, Provider

#: The time of every case, and the login's: signed in 100 seconds before it.
NOW = 1_900_000_000
AUTH_TIME = NOW - 100


@dataclass(frozen=True)
class World:
    """An app context, alice signed in, a client of each kind, and ID tokens naming alice or bob."""

    client: Any
    first_party: Any
    alice: Any
    hint_alice: str
    hint_bob: str
    expired_hint_bob: str


@pytest.fixture
def world(op: Provider) -> Iterator[World]:
    from oidc.models import Client, User
    from oidc.oauth2.jwt import issue_id_token
    from oidc.oauth2.logins import AuthenticatedUser
    from oidc.state import current_state

    alice, bob = op.add_user("alice"), op.add_user("bob")
    client_id, _ = op.add_client(name="Photo Printer")
    first_party_id, _ = op.add_client(name="Our Own App", first_party=True)
    with op.app.app_context():
        issuer, issued_at = current_state().settings.issuer, current_state().clock.now()

        def hint(subject: str, age: int = 0) -> str:
            return issue_id_token({"iss": issuer, "sub": subject, "aud": client_id, "iat": issued_at - age,
                                   "exp": issued_at - age + 60}, None).token

        yield World(client=Client.query.filter_by(client_id=client_id).one(),
                    first_party=Client.query.filter_by(client_id=first_party_id).one(),
                    alice=AuthenticatedUser(User.query.filter_by(subject=alice).one(), "sid-of-alice", AUTH_TIME),
                    hint_alice=hint(alice), hint_bob=hint(bob), expired_hint_bob=hint(bob, age=3600))


def _authorization(client: Any, scope: str, **params: str) -> Any:
    """A request as validation accepted it (restored as an interaction is: nothing checked again)."""
    from oidc.oauth2.authorization import restore_authorization_request

    query = MultiDict({"response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT_URI,
                       "scope": scope, "state": "s", **params})
    return restore_authorization_request(query, client, REDIRECT_URI, scope, ["https://rs.example.test"], None)


class RememberedConsent:
    """A stand-in for the consent table: its answer, and what it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[int, str]] = []

    def __call__(self, user_pk: int, client: Any, scope: str) -> bool:
        self.asked.append((user_pk, scope))
        return self.answer


#: (case, request parameters, signed in as, login made for this request, consent remembered, client,
#:  expected step, its error code if it is a refusal)
CASES = [
    # no login
    ("no login", {}, None, False, True, "client", "Login", None),
    ("no login, prompt=none", {"prompt": "none"}, None, False, True, "client", "Refuse", "login_required"),
    ("no login, select_account", {"prompt": "select_account"}, None, False, True, "client", "Login", None),
    # signed in, consent remembered
    ("signed in, remembered", {}, "alice", False, True, "client", "Respond", None),
    ("signed in, prompt=none, remembered", {"prompt": "none"}, "alice", False, True, "client", "Respond", None),
    # prompt=login
    ("prompt=login", {"prompt": "login"}, "alice", False, True, "client", "Login", None),
    ("prompt=login, its login made", {"prompt": "login"}, "alice", True, True, "client", "Respond", None),
    # max_age (the login is 100 s old)
    ("max_age not exceeded", {"max_age": "200"}, "alice", False, True, "client", "Respond", None),
    ("max_age equal to the login's age", {"max_age": "100"}, "alice", False, True, "client", "Respond", None),
    ("max_age exceeded", {"max_age": "50"}, "alice", False, True, "client", "Login", None),
    ("max_age=0", {"max_age": "0"}, "alice", False, True, "client", "Login", None),
    ("max_age exceeded, prompt=none", {"max_age": "50", "prompt": "none"}, "alice", False, True, "client",
     "Refuse", "login_required"),
    ("max_age exceeded, its login made", {"max_age": "50"}, "alice", True, True, "client", "Respond", None),
    ("max_age not a number", {"max_age": "soon"}, "alice", False, True, "client", "Refuse", "invalid_request"),
    ("max_age superscript digit", {"max_age": "²"}, "alice", False, True, "client", "Refuse", "invalid_request"),
    ("max_age too long", {"max_age": "1" * 11}, "alice", False, True, "client", "Refuse", "invalid_request"),
    ("max_age malformed, no login", {"max_age": "-1"}, None, False, True, "client", "Refuse", "invalid_request"),
    # id_token_hint
    ("hint names the signed-in user", {"id_token_hint": "alice"}, "alice", False, True, "client", "Respond", None),
    ("hint names someone else", {"id_token_hint": "bob"}, "alice", False, True, "client", "Login", None),
    ("hint names someone else, prompt=none", {"id_token_hint": "bob", "prompt": "none"}, "alice", False, True,
     "client", "Refuse", "login_required"),
    ("hint names someone else, its login made", {"id_token_hint": "bob"}, "alice", True, True, "client",
     "Respond", None),
    # expired or not, a hint of ours names its subject (OIDC Core §3.1.2.1)
    ("expired hint names someone else", {"id_token_hint": "expired bob"}, "alice", False, True, "client",
     "Login", None),
    ("hint, no login", {"id_token_hint": "alice"}, None, False, True, "client", "Login", None),
    ("hint not an ID token of ours", {"id_token_hint": "garbage"}, "alice", False, True, "client",
     "Refuse", "invalid_request"),
    ("hint not ours, no login", {"id_token_hint": "garbage"}, None, False, True, "client",
     "Refuse", "invalid_request"),
    # prompt=select_account
    ("select_account", {"prompt": "select_account"}, "alice", False, True, "client", "SelectAccount", None),
    ("select_account, chosen", {"prompt": "select_account"}, "alice", True, True, "client", "Respond", None),
    ("select_account, chosen, consent to ask", {"prompt": "select_account"}, "alice", True, False, "client",
     "Consent", None),
    ("select_account and login", {"prompt": "select_account login"}, "alice", False, True, "client", "Login",
     None),
    # consent
    ("consent not remembered", {}, "alice", False, False, "client", "Consent", None),
    ("consent not remembered, prompt=none", {"prompt": "none"}, "alice", False, False, "client",
     "Refuse", "consent_required"),
    ("first-party client", {}, "alice", False, False, "first_party", "Respond", None),
    ("prompt=consent, remembered", {"prompt": "consent"}, "alice", False, True, "client", "Consent", None),
    ("prompt=consent, first-party", {"prompt": "consent"}, "alice", False, False, "first_party", "Consent", None),
    ("prompt=consent, its login made", {"prompt": "consent"}, "alice", True, True, "client", "Consent", None),
    # OIDC Core §11: offline_access is always asked
    ("offline_access, remembered", {"scope": "openid offline_access"}, "alice", False, True, "client",
     "Consent", None),
    ("offline_access, first-party", {"scope": "openid offline_access"}, "alice", False, False, "first_party",
     "Consent", None),
    ("offline_access, prompt=none", {"scope": "openid offline_access", "prompt": "none"}, "alice", False, True,
     "client", "Refuse", "consent_required"),
]


def test_next_step(world: World, subtests: pytest.Subtests) -> None:
    """Every row of :data:`CASES` on one provider (an app per row would cost a third of a second each)."""
    from oidc.oauth2 import steps

    hints = {"alice": world.hint_alice, "bob": world.hint_bob, "expired bob": world.expired_hint_bob}
    for case, given, signed_in, for_this_request, remembered, client, expected, error in CASES:
        with subtests.test(case):
            params = dict(given)
            scope = params.pop("scope", "openid profile")
            if "id_token_hint" in params:
                params["id_token_hint"] = hints.get(params["id_token_hint"], params["id_token_hint"])
            login = world.alice if signed_in == "alice" else None
            memory = RememberedConsent(remembered)

            authorization = _authorization(getattr(world, client), scope, **params)
            step = steps.next_step(authorization, login, NOW, for_this_request=for_this_request, remembered=memory)

            assert type(step).__name__ == expected, step
            if isinstance(step, steps.Refuse):
                assert step.error.error == error
            elif not isinstance(step, steps.Login):
                assert step.login is login
            # Remembered consent is looked up only when nothing else decides (a database query).
            assert memory.asked in ([], [(world.alice.user.id, scope)])


def test_no_remembered_consent_is_looked_up_where_the_request_or_client_decides(world: World) -> None:
    from oidc.oauth2 import steps

    def never(*_: Any) -> bool:
        raise AssertionError("remembered consent looked up")

    for client, scope, params in ((world.client, "openid offline_access", {}),
                                  (world.client, "openid", {"prompt": "consent"}),
                                  (world.first_party, "openid", {})):
        authorization = _authorization(client, scope, **params)
        assert steps.needs_consent(authorization, world.alice, never) is (client is world.client)
