"""The pages without a browser: CSP and assets, themes, languages, error pages, client display metadata,
and the admin API's OpenAPI document (which shares its field tables with the handlers)."""

from __future__ import annotations

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, hidden_fields

#: Rendering does not depend on the database: SQLite only.

REPO = Path(__file__).resolve().parent.parent
_INLINE = re.compile(r"<style|<script|\sstyle=|\son[a-z]+=", re.I)


def op_issuer() -> str:
    return ISSUER


def _params(client_id: str, **extra: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid profile email offline_access", "state": "s", "nonce": "n",
            "code_challenge": "E" * 43, "code_challenge_method": "S256", **extra}


def _consent_page(op: Provider, client_id: str, **extra: str) -> Any:
    return op.authorize(_params(client_id, **extra), consent=None)


# -- CSP and assets ---------------------------------------------------------------------------------


def test_every_page_has_a_strict_csp_and_no_inline_style_or_script(op: Provider) -> None:
    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer")
    pages = [op.get("/login"), op.get("/authorize?" + urlencode(_params("unknown")))]
    pages.append(_consent_page(op, client_id))
    pages.append(op.get("/logout"))
    pages.append(op.post("/logout", data={"confirm": "yes", **dict(hidden_fields(pages[-1].text))}))
    pages.append(op.login())
    assert [page.status_code for page in pages] == [200, 400, 200, 200, 200, 200]
    for page in pages:
        csp = page.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none'; style-src 'self'; img-src 'self'") and "unsafe" not in csp, csp
        assert "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["Cache-Control"] == "no-store"
        assert not _INLINE.search(page.text), _INLINE.search(page.text)
        assert re.search(r'<html lang="en">', page.text)
        assert not re.search(r'(src|href)="(https?:)?//', page.text.replace('href="https://rp.example.test', ""))


def test_assets_are_cached_by_content_hash(op: Provider) -> None:
    page = op.get("/login").text
    urls = re.findall(r'(?:href|src)="(/assets/[^"]+)"', page)
    assert {url.split("?")[0] for url in urls} == {"/assets/pages.css", "/assets/settings.css", "/assets/logo.svg"}
    for url in urls:
        response = op.get(url.replace("&amp;", "&"))
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Content-Security-Policy" not in response.headers and response.headers["X-Content-Type-Options"]
        etag = response.headers["ETag"]
        assert op.get(url, headers={"If-None-Match": etag}).status_code == 304
    # Without the current hash (an old or guessed URL): a short lifetime.
    assert op.get("/assets/pages.css?v=old").headers["Cache-Control"] == "public, max-age=300"
    assert op.get("/assets/../settings.py").status_code == 404
    assert op.get("/assets/%2e%2e/settings.py").status_code == 404
    assert op.get("/assets/nothing.css").status_code == 404


def _per_process_sizes(assets: Any) -> dict[str, int]:
    """The size of every container the assets object keeps (what a cache would grow)."""
    return {name: len(value) for name, value in vars(assets).items() if hasattr(value, "__len__")}


def test_requests_for_missing_assets_keep_nothing(op: Provider) -> None:
    """A request for a name that is not an asset adds nothing to any per-process structure: the
    assets are listed once, at start-up, and a request never becomes a key of anything."""
    assets = op.app.extensions["oidc.assets"]
    assert op.get("/assets/pages.css").status_code == 200
    before = _per_process_sizes(assets)
    for number in range(2000):
        assert op.get(f"/assets/missing-{number}.css").status_code == 404
    assert _per_process_sizes(assets) == before


@pytest.mark.parametrize("name", [
    "..%2fsettings.py", "%2e%2e/%2e%2e/settings.py", "./pages.css", ".hidden", "pages.css%00", "pages.css%20",
    "p%C3%A4ges.css", "pages.css;x", "pages%5Ccss", "a//pages.css", "static/pages.css", "PAGES.CSS",
    "x" * 300 + ".css", "%ff%fe",
])
def test_odd_asset_names_are_404(op: Provider, name: str) -> None:
    response = op.get("/assets/" + name)
    assert response.status_code == 404 and "Traceback" not in response.text


@seed(20240611)
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=60))
def test_any_asset_name_is_an_asset_or_a_404(op: Provider, name: str) -> None:
    assets = op.app.extensions["oidc.assets"]
    before = _per_process_sizes(assets)
    response = op.get("/assets/" + quote(name, safe="/"))
    assert response.status_code in (200, 404, 308), (name, response.status_code)
    assert response.status_code != 200 or name in assets.files
    assert _per_process_sizes(assets) == before


def test_assets_are_listed_once_at_start_up(make_app: Any, base_env: dict[str, str], tmp_path: Path) -> None:
    """A theme file added after start-up is not served (theme files are read once per worker);
    the theme's files, in a sub-folder too, and the shipped ones are."""
    static = tmp_path / "theme" / "static"
    (static / "img").mkdir(parents=True)
    (static / "img" / "banner.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (static / ".secret").write_text("not an asset")
    app = make_app({**base_env, "THEME_DIR": str(tmp_path / "theme")})
    http = app.test_client()
    banner = http.get("/assets/img/banner.svg")
    assert banner.status_code == 200 and banner.mimetype == "image/svg+xml"
    assert banner.headers["Cache-Control"] == "public, max-age=300"
    assert http.get("/assets/pages.css").status_code == 200
    assert http.get("/assets/.secret").status_code == 404
    (static / "late.css").write_text("body{}")
    assert http.get("/assets/late.css").status_code == 404


def test_primary_colour_is_made_readable_in_both_schemes(make_app: Any, base_env: dict[str, str]) -> None:
    from oidc.web.pages import DARK_SURFACE, LIGHT_SURFACE, contrast

    app = make_app({**base_env, "PRIMARY_COLOR": "#ffd000"})  # a yellow: unreadable on white as it is
    css = app.test_client().get("/assets/settings.css").get_data(as_text=True)
    light, dark = re.findall(r"--primary:(#[0-9a-f]{6})", css)
    on_light, on_dark = re.findall(r"--on-primary:(#[0-9a-f]{6})", css)
    assert contrast(light, LIGHT_SURFACE) >= 4.5 and contrast(dark, DARK_SURFACE) >= 4.5
    assert contrast(light, on_light) >= 4.5 and contrast(dark, on_dark) >= 4.5
    from oidc.settings import ConfigError

    with pytest.raises(ConfigError, match="PRIMARY_COLOR"):
        make_app({**base_env, "PRIMARY_COLOR": "blue; } body { display:none"})


def test_service_name_and_an_external_logo_url(make_app: Any, base_env: dict[str, str]) -> None:
    app = make_app({**base_env, "SERVICE_NAME": "Example Corp", "SERVICE_LOGO_URL": "https://cdn.example.test/l.svg"})
    page = app.test_client().get("/login")
    assert "Example Corp" in page.text and 'src="https://cdn.example.test/l.svg"' in page.text
    assert "img-src 'self' https://cdn.example.test;" in page.headers["Content-Security-Policy"]
    from oidc.settings import ConfigError

    with pytest.raises(ConfigError, match="SERVICE_LOGO_URL"):
        make_app({**base_env, "SERVICE_LOGO_URL": "javascript:alert(1)"})


# -- themes -----------------------------------------------------------------------------------------


def test_theme_overrides_templates_and_static_files_one_by_one(make_app: Any, base_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    theme = tmp_path / "theme"
    (theme / "templates").mkdir(parents=True)
    (theme / "static").mkdir()
    (theme / "templates" / "login.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Welcome to the intranet</h1>'
        '<form method="post" action="{{ url_for(\'login.login\') }}">{{ form.csrf_token }}{{ form.interaction }}'
        '{{ form.username(id="username") }}{{ form.password(id="password") }}'
        '<button id="sign-in">Go</button></form>{% endblock %}')
    (theme / "static" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><title>ours</title></svg>')
    app = make_app({**base_env, "THEME_DIR": str(theme)})
    http = app.test_client()
    login = http.get("/login")
    assert "Welcome to the intranet" in login.text and "pages.css" in login.text  # the shipped base.html
    logo_url = re.search(r'src="(/assets/logo.svg\?v=[0-9a-f]+)"', login.text)
    assert logo_url is not None
    assert "<title>ours</title>" in http.get(logo_url.group(1)).get_data(as_text=True)
    assert http.get("/assets/pages.css").status_code == 200
    # Templates the theme does not have are the shipped ones.
    error = http.get("/authorize?" + urlencode(_params("nobody")))
    assert "This application is not recognised" in error.text


def test_a_broken_theme_template_stops_start_up_naming_the_file(make_app: Any, base_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    from oidc.web.pages import ThemeError

    (tmp_path / "theme" / "templates").mkdir(parents=True)
    broken = tmp_path / "theme" / "templates" / "consent.html"
    broken.write_text('{% extends "base.html" %}\n{% block content %}{{ client.name }\n{% endblock %}')
    with pytest.raises(ThemeError) as raised:
        make_app({**base_env, "THEME_DIR": str(tmp_path / "theme")})
    assert str(broken) in str(raised.value) and "line 2" in str(raised.value)


@pytest.mark.e2e
def test_a_broken_theme_stops_gunicorn_with_one_line(base_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "theme" / "templates").mkdir(parents=True)
    broken = tmp_path / "theme" / "templates" / "login.html"
    broken.write_text("{% block content %}{{ oops }")
    env = {**base_env, "THEME_DIR": str(tmp_path / "theme"), "METRICS_BIND": "", "LOG_FORMAT": "text",
           "BIND": "127.0.0.1:0", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "Starting gunicorn" not in line]
    assert errors == [f"configuration error: THEME_DIR template {broken}, line 1: unexpected '}}'"]


# -- languages --------------------------------------------------------------------------------------


def test_pages_follow_accept_language_and_ui_locales(op: Provider) -> None:
    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer")
    german = op.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert '<html lang="de">' in german.text and "Anmelden" in german.text and "Benutzername" in german.text
    assert "Sign in" not in german.text
    # ui_locales of the authorization request wins over the browser's languages, through the login page too.
    params = _params(client_id, ui_locales="fr-CA de")
    login_url = op.get("/authorize", query_string=params).headers["Location"]
    login = op.get(login_url, headers={"Accept-Language": "de"})
    assert '<html lang="fr">' in login.text and "Se connecter" in login.text and "Photo Printer" in login.text
    consent = op.authorize(params, consent=None)
    assert "Garder l’accès lorsque vous n’utilisez pas l’application" in consent.text
    error = op.get("/authorize?" + urlencode(_params("nobody", ui_locales="de")))
    assert "Diese Anwendung ist nicht bekannt" in error.text and "Die Anwendung ist diesem Anbieter" in error.text
    # A language we do not have: English.
    assert '<html lang="en">' in op.get("/login", headers={"Accept-Language": "ja"}).text


def test_a_language_needs_a_catalogue_shipped_or_in_the_theme(make_app: Any, base_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    from oidc.settings import ConfigError

    with pytest.raises(ConfigError, match="LANGUAGES names 'es'"):
        make_app({**base_env, "LANGUAGES": "en,es"})
    folder = tmp_path / "theme" / "translations" / "es" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    catalog = Catalog(locale="es")
    catalog.add("Sign in", "Iniciar sesión")
    with open(folder / "messages.mo", "wb") as file:
        write_mo(file, catalog)
    app = make_app({**base_env, "LANGUAGES": "en,es,de", "THEME_DIR": str(tmp_path / "theme")})
    spanish = app.test_client().get("/login", headers={"Accept-Language": "es"})
    assert '<html lang="es">' in spanish.text and "Iniciar sesión" in spanish.text
    assert "Benutzername" in app.test_client().get("/login", headers={"Accept-Language": "de"}).text


def test_catalogs_are_complete_and_compiled() -> None:
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    from oidc.oauth2 import device as device_grant
    from oidc.oauth2 import interactions
    from oidc.web import authorize, device, login, messages, origin

    folder = REPO / "oidc" / "web" / "translations"
    with open(folder / "messages.pot", "rb") as file:
        template = {message.id for message in read_po(file) if message.id}
    listed = set(messages.MESSAGES)
    view_texts = {login.GENERIC_LOGIN_ERROR, login.LOCKED_OUT_ERROR, origin.EXPIRED_FORM,
                  *authorize.SCOPE_DESCRIPTIONS.values(), interactions.UNUSABLE, device.TOO_MANY_CODES,
                  device_grant.UNKNOWN_USER_CODE, device_grant.UNUSABLE}
    assert view_texts <= listed <= template
    for language in ("de", "fr"):
        with open(folder / language / "LC_MESSAGES" / "messages.po", "rb") as file:
            catalog = read_po(file)
        translated = {message.id: message.string for message in catalog if message.id}
        assert set(translated) == template, language
        assert all(translated.values()), [key for key, value in translated.items() if not value]
        for msgid, text in translated.items():
            assert re.findall(r"%\(\w+\)s", str(msgid)) == re.findall(r"%\(\w+\)s", str(text)) or \
                sorted(re.findall(r"%\(\w+\)s", str(msgid))) == sorted(re.findall(r"%\(\w+\)s", str(text))), msgid
        # The shipped .mo says what the .po says (run pybabel compile after editing a .po).
        with open(folder / language / "LC_MESSAGES" / "messages.mo", "rb") as file:
            compiled = {message.id: message.string for message in read_mo(file) if message.id}
        assert compiled == translated, f"{language}: messages.mo is older than messages.po"


# -- error pages ------------------------------------------------------------------------------------


def test_error_pages_say_what_went_wrong(op: Provider) -> None:
    op.add_user()
    client_id, _ = op.add_client()
    unknown = op.get("/authorize?" + urlencode(_params("nobody")))
    assert unknown.status_code == 400 and "This application is not recognised" in unknown.text
    bad_redirect = op.get("/authorize?" + urlencode(_params(client_id, redirect_uri="https://evil.example/cb")))
    assert bad_redirect.status_code == 400 and "return address is not registered" in bad_redirect.text
    expired = op.post("/authorize/consent", data={**_params(client_id), "decision": "approve"})
    assert expired.status_code == 400 and "This request has expired" in expired.text
    assert 'id="error-description"' in expired.text
    missing = op.get("/login/nothing")
    assert missing.status_code == 404 and missing.mimetype == "application/json"  # not a page path


def test_database_down_is_a_page_on_browser_paths_and_json_on_the_api(make_app: Any,
                                                                      base_env: dict[str, str]) -> None:
    from oidc.app import create_app

    app = create_app({"TESTING": True}, env={**base_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
    http = app.test_client()
    page = http.get("/authorize?" + urlencode(_params("anyone")))
    assert page.status_code == 503 and page.mimetype == "text/html" and page.headers["Retry-After"]
    assert "The service is temporarily unavailable" in page.text and "Content-Security-Policy" in page.headers
    api = http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic eDp5"})
    assert api.status_code == 503 and api.json is not None and api.json["error"] == "temporarily_unavailable"


def test_hsm_unavailable_is_a_page_on_browser_paths(op: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    from keys.errors import HSMError
    from oidc.oauth2 import end_session

    def hsm_down(*args: Any, **kwargs: Any) -> Any:
        raise HSMError("PKCS#11 module: the token is not present")

    # Verifying an id_token_hint needs the signing keys: with the HSM gone, the logout page says so.
    monkeypatch.setattr(end_session, "verify_artefact", hsm_down)
    page = op.get("/logout?id_token_hint=a.b.c")
    assert page.status_code == 503 and page.mimetype == "text/html" and page.headers["Retry-After"]
    assert "The service is temporarily unavailable" in page.text and "PKCS#11" not in page.text


# -- login and consent ------------------------------------------------------------------------------


def test_failed_login_message_is_tied_to_the_fields_and_the_same_for_unknown_accounts(op: Provider) -> None:
    op.add_user()
    wrong_password = op.login(password="wrong")
    unknown_user = op.login(username="nobody", password="wrong")
    for page in (wrong_password, unknown_user):
        assert page.status_code == 401
        assert 'id="login-error" role="alert"' in page.text
        assert page.text.count('aria-describedby="login-error"') == 2 and 'aria-invalid="true"' in page.text
        assert 'autocomplete="username"' in page.text and 'autocomplete="current-password"' in page.text
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", wrong_password.text.replace("alice", "nobody")) == strip.sub("", unknown_user.text)


def test_consent_page_shows_the_client_its_links_the_account_and_a_way_to_switch(op: Provider) -> None:
    op.add_user()
    op.add_user("bob")
    client_id, _ = op.add_client(name="Photo Printer", logo_uri="https://photos.example.test/logo.png",
                                 policy_uri="https://photos.example.test/privacy",
                                 tos_uri="https://photos.example.test/terms")
    consent = _consent_page(op, client_id)
    text = consent.text
    assert 'src="https://photos.example.test/logo.png"' in text and 'alt="Photo Printer logo"' in text
    assert "img-src 'self' https://photos.example.test;" in consent.headers["Content-Security-Policy"]
    assert 'href="https://photos.example.test/privacy"' in text and 'href="https://photos.example.test/terms"' in text
    assert "Keep access when you are not using the app" in text and "See your email address" in text
    assert '<strong class="account-name">alice</strong>' in text
    switch = re.search(r'class="account-switch" href="([^"]+)"', text)
    assert switch is not None
    switch_url = html.unescape(switch.group(1))
    assert list(parse_qs(urlsplit(switch_url).query)) == ["interaction"]
    switched = op.login("bob", login_url=switch_url)
    assert switched.status_code == 303 and switched.headers["Location"].startswith("/authorize/resume?interaction=")
    again = op.get(switched.headers["Location"])
    assert '<strong class="account-name">bob</strong>' in again.text and 'action="/authorize/consent"' in again.text


def test_client_display_metadata_through_the_admin_api_and_the_cli(op: Provider, base_env: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {base_env['ADMIN_API_KEYS']}"}
    body = {"name": "Photo Printer", "redirect_uris": [REDIRECT_URI], "logo_uri": "https://photos.example.test/l.png",
            "policy_uri": "https://photos.example.test/p", "tos_uri": "https://photos.example.test/t"}
    created = op.post("/admin/clients", json=body, headers=auth)
    assert created.status_code == 201 and created.json["logo_uri"] == body["logo_uri"]
    assert created.json["tos_uri"] == body["tos_uri"]
    for field, value in (("logo_uri", "javascript:alert(1)"), ("policy_uri", "http://photos.example.test/p"),
                         ("tos_uri", 7)):
        refused = op.post("/admin/clients", json={**body, field: value}, headers=auth)
        assert refused.status_code == 400 and refused.json["error_description"].startswith(field), refused.json
    result = op.app.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "CLI app", "--redirect-uri", REDIRECT_URI,
        "--logo-uri", "https://cli.example.test/logo.svg", "--json"])
    assert result.exit_code == 0, result.output
    assert '"logo_uri": "https://cli.example.test/logo.svg"' in result.output
    # Changed later: PATCH (fields left out stay, "" removes one) and clients set-display.
    client_id = created.json["client_id"]
    changed = op.http.patch(f"/admin/clients/{client_id}", base_url=op_issuer(),
                            json={"logo_uri": "https://photos.example.test/new.png", "tos_uri": ""}, headers=auth)
    assert changed.status_code == 200, changed.json
    assert changed.json["logo_uri"] == "https://photos.example.test/new.png" and changed.json["tos_uri"] is None
    assert changed.json["policy_uri"] == body["policy_uri"]
    refused = op.http.patch(f"/admin/clients/{client_id}", base_url=op_issuer(), json={"name": "x"}, headers=auth)
    assert refused.status_code == 400 and refused.json["error_description"] == "unknown field(s): name"
    result = op.app.test_cli_runner().invoke(args=["clients", "set-display", client_id, "--policy-uri", ""])
    assert result.exit_code == 0 and "policy_uri: -" in result.output
    result = op.app.test_cli_runner().invoke(args=["clients", "set-display", client_id, "--logo-uri", "ftp://x"])
    assert result.exit_code != 0 and "logo_uri" in result.output


# -- the admin API's OpenAPI document -----------------------------------------------------------------


def test_openapi_document_covers_every_admin_route_from_the_handlers_tables(op: Provider,
                                                                           base_env: dict[str, str]) -> None:
    from oidc.accounts.clients import build_client
    from oidc.web.admin.api import CLIENT_FIELDS

    response = op.get("/admin/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    routes = {(rule.rule, method) for rule in op.app.url_map.iter_rules() if rule.rule.startswith("/admin/")
              and rule.endpoint != "admin_openapi" for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    documented = {(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
                  for path, item in document["paths"].items() for method in item}
    assert documented == routes
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["summary"] != "(undocumented)" and "401" in operation["responses"]
    schema = document["components"]["schemas"]["ClientRegistration"]
    assert set(schema["properties"]) == set(CLIENT_FIELDS) == set(inspect.signature(build_client).parameters)
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    # The same table refuses what the schema does not allow.
    auth = {"Authorization": f"Bearer {base_env['ADMIN_API_KEYS']}"}
    refused = op.post("/admin/clients", json={"name": "x", "first_party": "yes"}, headers=auth)
    assert refused.status_code == 400 and refused.json["error_description"] == "first_party: must be true or false"
    refused = op.post("/admin/clients", json={"redirect_uris": [REDIRECT_URI]}, headers=auth)
    assert refused.json["error_description"] == "name: required"
    refused = op.post("/admin/users", json={"username": "u", "password": "p" * 12, "colour": "red"}, headers=auth)
    assert refused.json["error_description"] == "unknown field(s): colour"


def test_the_account_choice_page_is_strict_and_translated(op: Provider) -> None:
    """prompt=select_account's page: the CSP of every page, the client named, and in the request's language."""
    op.add_user()
    client_id, _ = op.add_client(name="Photo Printer", first_party=True)
    op.login()
    page = op.get("/authorize", query_string=_params(client_id, prompt="select_account"))
    assert page.status_code == 200 and "Photo Printer" in page.text and "Choose an account" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'self'")
    assert page.headers["Cache-Control"] == "no-store" and not _INLINE.search(page.text)
    german = op.get("/authorize", query_string=_params(client_id, prompt="select_account", ui_locales="de"))
    assert german.status_code == 200 and "Konto auswählen" in german.text and "Weiter" in german.text
