"""``oidc-hsm``: the operator command, installed by ``pip install`` (``[project.scripts]``).

Every ``flask --app app <group> ...`` command is here without ``--app``
(``keys``, ``clients``, ``users``, ``tokens``, ``audit``, ``db``), plus ``serve`` (gunicorn
with the shipped configuration) and ``doctor`` (checks of the settings, the
database and the HSM).  Settings come from the environment, as for the server.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from flask.cli import FlaskGroup
from flask_migrate.cli import db as flask_migrate_db

from oidc.cli import doctor
from oidc.cli.output import database_errors_in_one_line
from oidc.cli.settings_help import GROUPS, SERVE_SETTINGS, describe_settings, settings_epilog

#: The gunicorn configuration shipped in the package (the repository's gunicorn.conf.py).
GUNICORN_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gunicorn.conf.py")
WSGI_APP = "oidc.wsgi:app"


def _create_app() -> Any:
    from oidc.app import create_app
    from oidc.settings import ConfigError, describe_unknown_names, unknown_names

    try:
        app = create_app()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    if sys.stderr.isatty():
        # A person reads the command's output: its log lines (an audit event, a migration step) in words,
        # not JSON between the lines of a table.  Scripts and services keep the configured format.
        from oidc.observability.logs import use_text_format

        use_text_format()
    unknown = unknown_names()
    if unknown:  # HSM_ENABLE=true would otherwise make keys in software without a word
        click.echo(f"warning: {describe_unknown_names(unknown)}", err=True)
    return app


@click.command("serve", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
               epilog=settings_epilog(SERVE_SETTINGS))
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(gunicorn_args: tuple[str, ...]) -> None:
    """Serve the provider with gunicorn and the shipped gunicorn.conf.py.

    The settings are checked and the database schema brought up to date first,
    then the port is bound; the HSM is opened in each worker.  Extra arguments
    go to gunicorn, e.g. oidc-hsm serve --workers 4.
    """
    from oidc.serving import ServeError, prepare

    if not os.path.isfile(GUNICORN_CONF):
        raise click.ClickException(f"the shipped gunicorn configuration is missing: {GUNICORN_CONF}")
    try:
        # Here, before gunicorn starts, so that a bad setting or database is the one line printed;
        # gunicorn's master runs it again (a no-op then) for those who start gunicorn themselves.
        prepare()
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    argv = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, *gunicorn_args, WSGI_APP]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


class OperatorGroup(FlaskGroup):
    """The app's commands and Flask-Migrate's ``db``; not the other plugins' (Flask-Limiter's needs an
    extra this project does not install, and its limits live in the login view)."""

    HIDDEN = frozenset({"limiter"})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in super().list_commands(ctx) if name not in self.HIDDEN]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return None if name in self.HIDDEN else super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a database that cannot be used is one line naming DATABASE_URL, no traceback."""
        with database_errors_in_one_line(ctx):
            return super().invoke(ctx)


cli = OperatorGroup(
    name="oidc-hsm",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
    help="Operate an OpenID Connect provider whose signing keys live in a PKCS#11 HSM.\n\n"
         "Settings are read from the environment (see README.md, Configuration).",
)
# FlaskGroup's --app, --env-file and --debug belong to ``flask``: this command always serves this app.
cli.params = [param for param in cli.params if param.name not in ("app", "env_file", "debug")]
cli.add_command(serve_command)
# Flask-Migrate's ``db`` is a plugin, found before any app is made: describe it here too.
describe_settings(flask_migrate_db, GROUPS["db"])
cli.add_command(doctor.doctor_command)


def main() -> None:
    cli.main(prog_name="oidc-hsm")
