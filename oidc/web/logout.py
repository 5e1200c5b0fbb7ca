"""``/logout``: OpenID Connect RP-Initiated Logout 1.0.

Without an ID token hint issued for the current login session (its ``sub``
and ``sid``), the user is asked first: a third party must not be able to sign
users out with a bare link or an old token (§2, §6).  Without a current session
there is no one to sign out and nothing vouches for the request (§2: a hint
whose ``sid`` matches no current session is suspect): the signed-out page
offers the way back to the post-logout redirect URI instead of redirecting.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request
from flask_wtf import FlaskForm

from oidc import urls
from oidc.oauth2.end_session import validate_end_session_request
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.parameters import ParameterError, request_parameters
from oidc.observability import audit
from oidc.state import current_state
from oidc.web.origin import form_posted_from_our_page
from oidc.web.session import current_login, sign_out

bp = Blueprint("logout", __name__)


class LogoutForm(FlaskForm):  # type: ignore[misc]  # the base class is untyped
    pass


@bp.route(urls.LOGOUT, methods=["GET", "POST"])
def logout() -> Any:
    """End the session; then go back to the RP (an exact registered post-logout URI) or say so."""
    try:
        params = request_parameters(request)
    except ParameterError as exc:
        raise ErrorPage("invalid_request", str(exc)) from None
    end_session = validate_end_session_request(params)  # ErrorPage: oidc.web.errors shows it

    login = current_login()
    if login is not None and not end_session.hint_is_current(str(login.user.subject), login.sid):
        form = LogoutForm()
        if (request.method == "GET" or request.form.get("confirm") != "yes"
                or not form_posted_from_our_page(request, form, current_state().settings)):
            return render_template("logout_confirm.html", form=form, hidden=end_session.params,
                                   client=end_session.client)
    sign_out()  # (without a login, it forgets what the browser holds)
    if login is not None:
        audit.record("logout", "logout", sub=login.user.subject)
    location = end_session.redirect_location()
    if location is not None and login is None:  # suspect (§2): the user may go back; it is not done for them
        return render_template("logged_out.html", return_to=location, client=end_session.client)
    if location is not None:
        return redirect(location, code=303)
    return render_template("logged_out.html")
