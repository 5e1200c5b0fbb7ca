"""What every page shares: the theme, the static assets, the language and the CSP.

* **Theme.**  ``THEME_DIR/templates/<name>.html`` replaces the shipped template
  of that name and ``THEME_DIR/static/<file>`` the shipped asset (``logo.svg``,
  ``pages.css``), file by file; everything else stays as shipped.  A theme
  template that does not parse stops start-up with one line naming the file.
* **Assets** are served by the provider itself under ``/assets/`` with a
  content hash in their URL, so they are cached for ``STATIC_MAX_AGE`` and
  still change the moment a file does.  ``/assets/settings.css`` carries the
  colour settings (``PRIMARY_COLOR``).  No page loads anything from elsewhere,
  and no page has inline script or style, so the CSP allows neither.
* **Language**: ``ui_locales`` of the authorization request (OIDC Core
  §3.1.2.1; on the login and consent pages of an interaction, the one it
  holds: :func:`continue_request`), else the browser's ``Accept-Language``,
  among ``LANGUAGES``, else ``DEFAULT_LANGUAGE``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, request
from flask_babel import Babel, get_locale, refresh
from jinja2 import BytecodeCache, ChoiceLoader, FileSystemLoader, TemplateSyntaxError
from jinja2.bccache import Bucket
from werkzeug.exceptions import HTTPException

from oidc import urls
from oidc.settings import ConfigError, Settings
from oidc.web.session import current_login

HERE = os.path.dirname(__file__)
SHIPPED_TEMPLATES = os.path.join(HERE, "templates")
SHIPPED_STATIC = os.path.join(HERE, "static")
SHIPPED_TRANSLATIONS = os.path.join(HERE, "translations")
ASSETS = "/assets"
SETTINGS_CSS = "settings.css"

#: The browser pages: errors on these paths are pages, elsewhere JSON.
PAGE_PATHS = frozenset({urls.AUTHORIZE, urls.AUTHORIZE_RESUME, urls.CONSENT, urls.SELECT_ACCOUNT, urls.LOGIN,
                        urls.LOGOUT, urls.DEVICE, urls.DEVICE_CONFIRM})


class ThemeError(ConfigError):
    """A theme file cannot be used; the message names it."""


# -- colours ------------------------------------------------------------------------------------


def _rgb(colour: str) -> tuple[float, float, float]:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255)


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g_, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g_ + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two hex colours."""
    la, lb = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _hex(rgb: Iterable[float]) -> str:
    return "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in rgb)


def _mix(colour: str, towards: str, amount: float) -> str:
    a, b = _rgb(colour), _rgb(towards)
    return _hex(x + (y - x) * amount for x, y in zip(a, b, strict=True))


def _readable_on(background: str, colour: str, towards: str) -> str:
    """``colour``, moved towards ``towards`` until text in it reads on ``background`` (WCAG AA, 4.5:1)."""
    step = 0.0
    candidate = colour
    while contrast(candidate, background) < 4.5 and step < 1:
        step += 0.05
        candidate = _mix(colour, towards, step)
    return candidate


#: Page backgrounds of the shipped stylesheet, light and dark (pages.css).
LIGHT_SURFACE = "#ffffff"
DARK_SURFACE = "#1c1f26"


def settings_css(primary: str) -> str:
    """The colour variables: the primary colour as given, made readable in each scheme."""
    light = _readable_on(LIGHT_SURFACE, primary, "#000000")
    dark = _readable_on(DARK_SURFACE, primary, "#ffffff")

    def on(colour: str) -> str:
        return "#ffffff" if contrast(colour, "#ffffff") >= contrast(colour, "#111111") else "#111111"

    return (
        f":root{{--primary:{light};--primary-hover:{_mix(light, '#000000', 0.15)};--on-primary:{on(light)};}}\n"
        "@media (prefers-color-scheme: dark){"
        f":root{{--primary:{dark};--primary-hover:{_mix(dark, '#ffffff', 0.15)};--on-primary:{on(dark)};}}}}\n"
    )


# -- assets -------------------------------------------------------------------------------------


#: The name of an asset under ``/assets/``: a few path segments of letters, digits, ``-``, ``_`` and
#: ``.``, none starting with a dot (so no ``..`` and no hidden file).  Any other name is a 404 with no
#: look-up at all.
ASSET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){0,3}")


class Asset(NamedTuple):
    content: bytes
    digest: str  # the ETag and the ``?v=`` of its URL
    mimetype: str


def _asset(name: str, content: bytes) -> Asset:
    return Asset(content, hashlib.sha256(content).hexdigest()[:16],
                 mimetypes.guess_type(name)[0] or "application/octet-stream")


def _list_assets(folders: list[str]) -> dict[str, Asset]:
    """Every file of ``folders`` with a valid :data:`ASSET_NAME`, the first folder's first.

    A symbolic link that leads out of its folder is not an asset.
    """
    found: dict[str, Asset] = {}
    for folder in folders:
        root = os.path.realpath(folder)
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # no hidden folder holds an asset
            for file in sorted(files):
                path = os.path.join(directory, file)
                name = os.path.relpath(path, root).replace(os.sep, "/")
                if (name in found or not ASSET_NAME.fullmatch(name)
                        or not os.path.realpath(path).startswith(root + os.sep) or not os.path.isfile(path)):
                    continue
                with open(path, "rb") as opened:
                    found[name] = _asset(name, opened.read())
    return found


class Assets:
    """Static files, the theme's first; their URLs carry a hash of their content.

    The folders are read once, when the app is made (a worker's start): a request only looks its
    name up in that fixed table, so it never adds to anything the process keeps.
    """

    def __init__(self, settings: Settings) -> None:
        folders = [os.path.join(settings.theme_dir, "static")] if settings.theme_dir else []
        folders.append(SHIPPED_STATIC)
        self.max_age = settings.static_max_age
        self.logo_url = settings.service_logo_url or None
        images = {"'self'"}
        if self.logo_url and "://" in self.logo_url:
            parts = urlsplit(self.logo_url)
            images.add(f"{parts.scheme}://{parts.netloc}")
        #: Where a page's images may come from (ours, the service logo's origin), and its CSP when
        #: it shows no client's logo: made once, not on each page.
        self.image_sources = frozenset(images)
        self.csp = _content_security_policy(self.image_sources)
        generated = {SETTINGS_CSS: _asset(SETTINGS_CSS, settings_css(settings.primary_color).encode("utf-8"))}
        self.files: Mapping[str, Asset] = MappingProxyType({**_list_assets(folders), **generated})

    def find(self, filename: str) -> Asset | None:
        """The asset named ``filename``, or None (for a name outside :data:`ASSET_NAME` too)."""
        return self.files.get(filename) if ASSET_NAME.fullmatch(filename) else None

    def url(self, filename: str) -> str:
        found = self.find(filename)
        return f"{ASSETS}/{filename}" + (f"?v={found.digest}" if found else "")

    def logo(self) -> str | None:
        """The service logo: SERVICE_LOGO_URL, else the theme's or the shipped logo file."""
        if self.logo_url:
            return self.logo_url
        for name in ("logo.svg", "logo.png"):
            if self.find(name):
                return self.url(name)
        return None

    def serve(self, filename: str) -> Response:
        found = self.find(filename)
        if found is None:
            abort(404)
        response = Response(found.content, mimetype=found.mimetype)
        response.set_etag(found.digest)
        if request.args.get("v") == found.digest:
            response.headers["Cache-Control"] = f"public, max-age={self.max_age}, immutable"
        else:
            response.headers["Cache-Control"] = "public, max-age=300"
        response.make_conditional(request)
        return response


# -- templates ----------------------------------------------------------------------------------


def _check_theme_templates(app: Flask, folder: str) -> None:
    """Parse every theme template now: a broken one is a start-up error naming the file."""
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            if not name.endswith((".html", ".txt", ".xml")):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as file:
                source = file.read()
            try:
                app.jinja_env.parse(source, name=name, filename=path)
            except TemplateSyntaxError as exc:
                raise ThemeError(f"THEME_DIR template {path}, line {exc.lineno}: {exc.message}") from None


# -- language -----------------------------------------------------------------------------------


def continue_request(params: Any) -> None:
    """This page continues the authorization request of ``params`` (an interaction's): its language is the request's."""
    # flask.g: Flask-Babel calls the locale selector with no arguments, so the language
    # of the authorization request this page continues reaches it through the request context.
    ui_locales = params.get("ui_locales")
    request_globals = g._get_current_object()
    if request_globals.get("request_ui_locales") == ui_locales:
        return  # what the locale selector reads is unchanged (absent reads as None)
    request_globals.request_ui_locales = ui_locales
    refresh()  # the language may have been chosen already (a form's CSRF check reads it)


def _requested_ui_locales() -> list[str]:
    """``ui_locales`` of this request, or of the authorization request it continues (:func:`continue_request`)."""
    try:
        value = request.values.get("ui_locales")
    except HTTPException:  # a form too large to read: the 413 page being rendered must not raise it again
        value = None
    if value is None:
        value = g.get("request_ui_locales")
    return (value or "").split()[:10]


def select_locale(languages: tuple[str, ...], default: str) -> str:
    """The page language: ui_locales first (in its order), then Accept-Language, then the default."""
    for tag in _requested_ui_locales():
        code = tag.replace("-", "_")
        for candidate in (code, code.split("_")[0]):
            if candidate in languages:
                return candidate
    hyphenated = [language.replace("_", "-") for language in languages]
    best = request.accept_languages.best_match(hyphenated)
    return best.replace("-", "_") if best else default


def language_tag() -> str:
    """The BCP 47 tag of the page language, for ``<html lang>``."""
    return str(get_locale() or "en").replace("_", "-")


# -- CSP ----------------------------------------------------------------------------------------


def allow_image(url: str | None) -> str | None:
    """Allow this page to show an image from ``url``'s origin (a client's logo), and return ``url``."""
    if url:
        parts = urlsplit(url)
        if parts.scheme in ("https", "http") and parts.netloc:
            # flask.g: templates allow images as they render; the CSP header is written
            # after them, by an after_request hook that has nothing else to read them from.
            g.setdefault("csp_images", set()).add(f"{parts.scheme}://{parts.netloc}")
    return url


def _content_security_policy(images: Iterable[str]) -> str:
    return ("default-src 'none'; style-src 'self'; img-src " + " ".join(sorted(images))
            + "; base-uri 'none'; frame-ancestors 'none'")


def content_security_policy() -> str:
    """The CSP of a page: nothing but our own styles and images (and the logos' origins)."""
    assets = current_app._get_current_object().extensions["oidc.assets"]  # type: ignore[attr-defined]
    client_logos = g._get_current_object().get("csp_images")
    if not client_logos:
        return str(assets.csp)
    return _content_security_policy(assets.image_sources | client_logos)


def signed_in_user() -> Any:
    """The user signed in in this browser, if any (the account shown on the page)."""
    login = current_login()
    return login.user if login is not None else None


def is_page_request() -> bool:
    """Whether this request is for a browser page (errors become pages, not JSON)."""
    return request.path in PAGE_PATHS


class _ProcessBytecodeCache(BytecodeCache):
    """Jinja bytecode kept in memory for the life of the process."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _ProcessBytecodeCache()


def init_app(app: Flask, settings: Settings) -> Assets:
    assets = Assets(settings)
    app.extensions["oidc.assets"] = assets
    loaders: list[Any] = []
    if settings.theme_dir:
        theme_templates = os.path.join(settings.theme_dir, "templates")
        if os.path.isdir(theme_templates):
            loaders.append(FileSystemLoader(theme_templates))
    loaders.append(FileSystemLoader(SHIPPED_TEMPLATES))
    app.jinja_loader = ChoiceLoader(loaders)
    # Compiled templates shared by every app of the process (each app has its own Jinja
    # environment; Jinja checks each entry against the template's source before using it).
    app.jinja_options = {**app.jinja_options, "bytecode_cache": _BYTECODE}
    if settings.theme_dir and os.path.isdir(os.path.join(settings.theme_dir, "templates")):
        _check_theme_templates(app, os.path.join(settings.theme_dir, "templates"))

    directories = [SHIPPED_TRANSLATIONS]
    if settings.theme_dir and os.path.isdir(os.path.join(settings.theme_dir, "translations")):
        directories.insert(0, os.path.join(settings.theme_dir, "translations"))
    for language in settings.languages:
        if language != "en" and not any(
                os.path.isfile(os.path.join(folder, language, "LC_MESSAGES", "messages.mo")) for folder in directories):
            raise ConfigError(f"LANGUAGES names {language!r} but there is no {language}/LC_MESSAGES/messages.mo "
                              "in the shipped translations or THEME_DIR/translations")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(directories)
    Babel(app, default_locale=settings.default_language,
          locale_selector=lambda: select_locale(settings.languages, settings.default_language))

    app.add_url_rule(f"{ASSETS}/<path:filename>", "assets", assets.serve)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"service_name": settings.service_name, "service_logo": assets.logo(), "asset_url": assets.url,
                "language_tag": language_tag, "allow_image": allow_image, "signed_in_user": signed_in_user}

    return assets


_PAGE_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
    # The one referrer policy of our pages (no <meta> overrides it): browsers post our forms with
    # our Origin and a Referer to us, which the same-origin check reads (oidc.web.origin), and no
    # query string (an interaction id, an id_token_hint) reaches another site.
    ("Referrer-Policy", "same-origin"),
)
_PAGE_HEADERS_LOWERED = tuple((name.lower(), name, value) for name, value in _PAGE_HEADERS)


def security_headers(response: Response) -> Response:
    """Pages of ours are never framed (clickjacking of the consent page) nor sniffed.

    Their CSP allows styles and images from the provider only (plus the
    origin of a configured service logo and of a client's logo on its consent
    page), no script at all, and no inline style.
    """
    # The names present and the media type are read in one pass: each ``in``, each assignment and
    # ``response.mimetype`` scans the headers again (and ``headers.setdefault`` raises and catches
    # an exception for each header it adds); a name known absent is added, not set.
    headers = response.headers
    present: dict[str, str] = {}
    for name, value in headers:  # its (name, value) list, not the generator of ``items()``
        present.setdefault(name.lower(), value)
    if "x-content-type-options" in present:
        headers["X-Content-Type-Options"] = "nosniff"
    else:
        headers.add("X-Content-Type-Options", "nosniff")
    content_type = present.get("content-type")
    if content_type and content_type.split(";")[0].strip() == "text/html":
        for lowered, name, value in _PAGE_HEADERS_LOWERED:
            if lowered not in present:
                headers.add(name, value)
        if "content-security-policy" not in present:
            headers.add("Content-Security-Policy", content_security_policy())
    return response
