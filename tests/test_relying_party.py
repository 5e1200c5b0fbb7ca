"""A relying party we did not write, in a real browser, through the TLS proxy: sign in, then sign out.

The RP is Apache's mod_auth_openidc from Debian (libapache2-mod-auth-openidc),
a widely deployed OpenID Connect module: it reads our discovery document,
sends the browser to ``/authorize`` with PKCE, redeems the code with
``client_secret_basic``, verifies the ID token against our JWK Set, calls
``/userinfo``, and signs out with RP-Initiated Logout (``id_token_hint`` and
``post_logout_redirect_uri``).  It trusts the throwaway certificate as a CA
file; Chromium trusts both (the provider's and the RP's) by their pinned keys.
The provider is served as deployed: gunicorn behind nginx on an https issuer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from oidc_fixtures import PASSWORD, free_port, serve_with_gunicorn
from support import chromium_executable, missing
from tls_proxy import Certificate, chromium_args, throwaway_certificate

pytestmark = [pytest.mark.e2e, pytest.mark.both_databases]

MODULES = "/usr/lib/apache2/modules"

APACHE_CONF = """
ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
LogLevel warn auth_openidc:info
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule ssl_module {modules}/mod_ssl.so
LoadModule auth_openidc_module {modules}/mod_auth_openidc.so
TypesConfig /etc/mime.types
SSLEngine on
SSLCertificateFile {cert}
SSLCertificateKeyFile {key}
DocumentRoot {docroot}
<Directory {docroot}>
    Require all granted
</Directory>

OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCCABundlePath {ca}
OIDCClientID {client_id}
OIDCClientSecret {client_secret}
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI https://127.0.0.1:{port}/protected/redirect_uri
OIDCScope "openid email"
OIDCPKCEMethod S256
OIDCCryptoPassphrase {passphrase}
OIDCRemoteUserClaim sub
OIDCInfoHook id_token userinfo access_token
<Location /protected/>
    AuthType openid-connect
    Require valid-user
</Location>
"""


def _apache_binary() -> str:
    path = shutil.which("apache2") or ("/usr/sbin/apache2" if os.path.exists("/usr/sbin/apache2") else None)
    if path is None or not os.path.exists(f"{MODULES}/mod_auth_openidc.so"):
        missing("Apache with mod_auth_openidc (Debian packages apache2, libapache2-mod-auth-openidc)")
    return path


@contextlib.contextmanager
def _apache_rp(port: int, issuer: str, ca: str, client_id: str, client_secret: str,
               certificate: Certificate, directory: Path) -> Iterator[str]:
    """Apache with mod_auth_openidc on https://127.0.0.1:``port``, protecting /protected/."""
    binary = _apache_binary()
    # The workers (www-data when started as root) read the pages and the CA file: a world-readable
    # folder of their own.
    docroot = Path(tempfile.mkdtemp(prefix="oidc-rp-"))
    docroot.chmod(0o755)
    (docroot / "protected").mkdir(mode=0o755)
    shutil.copyfile(ca, docroot / "provider-ca.pem")  # a public certificate: that Apache serves it too harms nothing
    (docroot / "protected" / "index.html").write_text("<!doctype html><title>RP</title><h1>Welcome back</h1>")
    (docroot / "signed-out.html").write_text("<!doctype html><title>RP</title><h1>Signed out of the RP</h1>")
    for path in docroot.rglob("*.*"):
        path.chmod(0o644)
    conf = directory / "apache.conf"
    conf.write_text(APACHE_CONF.format(
        dir=directory, port=port, modules=MODULES, cert=certificate.cert, key=certificate.key, docroot=docroot,
        issuer=issuer, ca=docroot / "provider-ca.pem", client_id=client_id, client_secret=client_secret,
        passphrase=os.urandom(16).hex(), user="User www-data\nGroup www-data" if os.geteuid() == 0 else ""))
    output = directory / "apache.out"
    with open(output, "wb") as out:
        process = subprocess.Popen([binary, "-f", str(conf), "-DFOREGROUND"], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    try:
        context = ssl.create_default_context(cafile=str(certificate.cert))
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/signed-out.html", context=context, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    logs = [path.read_text() for path in (output, directory / "error.log") if path.exists()]
                    raise AssertionError("Apache did not start:\n" + "\n".join(logs)) from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(docroot, ignore_errors=True)


def test_mod_auth_openidc_signs_in_and_out_through_the_tls_proxy(make_app: Any, base_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    executable = chromium_executable()
    _apache_binary()
    from playwright.sync_api import sync_playwright

    rp_port = free_port()
    rp = f"https://127.0.0.1:{rp_port}"
    (tmp_path / "rp").mkdir()
    rp_certificate = throwaway_certificate(tmp_path / "rp")
    with serve_with_gunicorn(make_app, base_env, tmp_path, tls=True, name="Intranet",
                             redirect_uris=[rp + "/protected/redirect_uri"],
                             post_logout_redirect_uris=[rp + "/signed-out.html"]) as served, \
            _apache_rp(rp_port, served["issuer"], served["verify"], served["client_id"], served["client_secret"],
                       rp_certificate, tmp_path / "rp") as rp_url, \
            sync_playwright() as playwright:
        issuer = served["issuer"]
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=chromium_args(served["certificate"], rp_certificate))
        try:
            page = browser.new_page()
            page.set_default_timeout(20000)
            seen: list[str] = []
            page.on("request", lambda request: seen.append(request.url))

            # Sign in: the RP sends the browser to us, we ask for the password and consent.
            page.goto(rp_url + "/protected/")
            page.wait_for_selector("#username")
            assert page.url.startswith(issuer + "/login?")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_selector("#approve")
            assert "Intranet" in page.content()
            page.click("#approve")
            page.wait_for_url(rp_url + "/protected/")
            assert page.inner_text("h1") == "Welcome back"

            authorize = urlsplit(next(url for url in seen if url.startswith(issuer + "/authorize?")))
            assert "code_challenge_method=S256" in authorize.query and "nonce=" in authorize.query

            # What the RP made of it: an ID token it verified, and our userinfo answer.
            answer = page.goto(rp_url + "/protected/redirect_uri?info=json")
            assert answer is not None
            info = json.loads(answer.text())
            assert info["id_token"]["iss"] == issuer and info["id_token"]["aud"] == served["client_id"]
            assert info["userinfo"]["sub"] == info["id_token"]["sub"]
            assert info["userinfo"]["email"] == "alice@example.test"
            cookies = {cookie["name"]: cookie for cookie in page.context.cookies(issuer)}
            assert cookies["__Host-op_session"]["secure"] is True

            # Sign out: RP-Initiated Logout with the ID token as hint, straight back to the RP.
            seen.clear()
            page.goto(rp_url + "/protected/redirect_uri?logout=" + quote(rp_url + "/signed-out.html", safe=""))
            page.wait_for_url(rp_url + "/signed-out.html")
            assert page.inner_text("h1") == "Signed out of the RP"
            logout = next(url for url in seen if url.startswith(issuer + "/logout?"))
            assert "id_token_hint=" in logout and "post_logout_redirect_uri=" in logout
            # Chromium accepted the deletion of every cookie of ours (a __Host- cookie is deleted only
            # by a Set-Cookie with its own attributes): the login, binding and state cookies are gone.
            assert not [cookie["name"] for cookie in page.context.cookies(issuer)
                        if cookie["name"].startswith("__Host-op_session")]

            # Signed out of the provider too: the RP's next sign-in asks for the password again.  (A URL not
            # visited yet: Chromium may answer a revisit of /protected/ from its HTTP cache, by heuristic
            # freshness of the static page's Last-Modified, without asking the RP at all.)
            page.goto(rp_url + "/protected/?after-logout")
            page.wait_for_selector("#username")
            assert page.url.startswith(issuer + "/login?")
        finally:
            browser.close()
