"""The installed ``oidc-hsm`` command: every command's help, ``serve`` and ``db upgrade`` without ``--app``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from oidc_fixtures import free_port
from support import stop_process_group

OIDC_HSM = str(Path(sys.executable).with_name("oidc-hsm"))


def _commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, ctx, (*prefix, name)))
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_command_says_what_it_does_and_which_settings_it_reads(base_env: dict[str, str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from oidc.cli.main import cli

    for name, value in base_env.items():
        monkeypatch.setenv(name, value)
    # FlaskGroup.main sets FLASK_RUN_FROM_CLI=true in os.environ; undone after the test, or later
    # subprocesses (the quickstart's demo app) would believe they run under ``flask run``.
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "false")
    runner = CliRunner()
    with cli.make_context("oidc-hsm", ["--help"], resilient_parsing=True) as ctx:
        commands = _commands(cli, ctx)
    names = {command[0] for command in commands}
    assert names == {"serve", "doctor", "db", "keys", "clients", "users", "tokens", "audit"}
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"], prog_name="oidc-hsm")
        assert result.exit_code == 0, (command, result.output)
        assert "Settings read (environment):" in result.output, command
        summary = result.output.split("\n\n")[1].strip()
        assert summary and not summary.startswith("Options"), command


@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_runs_gunicorn_with_the_shipped_configuration(base_env: dict[str, str], tmp_path: Path) -> None:
    import requests

    assert os.path.exists(OIDC_HSM)
    port = free_port()
    env = {**os.environ, **base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'served.sqlite3'}", "METRICS_BIND": "",
           "LOG_FORMAT": "text", "BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "HSM_ENABLE": "true"}
    upgraded = subprocess.run([OIDC_HSM, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    # A misspelt setting is named, with the one it resembles, by every command that builds the app.
    assert ("warning: not a setting of this provider, ignored: HSM_ENABLE (did you mean HSM_ENABLED?)"
            in upgraded.stderr.splitlines()), upgraded.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([OIDC_HSM, "serve", "--workers", "1"], env=env, cwd=tmp_path, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        response: Any = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert response is not None and response.status_code == 200, log.read_text()[-2000:]
        page = requests.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    finally:
        stop_process_group(process, timeout=20)
    # ... and once at start-up by the server (the master), not once per worker.
    warnings = [line for line in log.read_text().splitlines() if "HSM_ENABLE (did you mean HSM_ENABLED?)" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings


def _postgres_address(request: pytest.FixtureRequest) -> str:
    """``host:port`` of the test PostgreSQL server (not always 5432: CI starts a private one on a free port)."""
    from sqlalchemy.engine import make_url

    server = make_url(request.getfixturevalue("postgres_server"))
    return f"{server.host}:{server.port or 5432}"


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OIDC_HSM, *args], env={**os.environ, "METRICS_BIND": "", "LOG_FORMAT": "text", **env},
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("url, says", [
    ("foo://somewhere/db", "DATABASE_URL names the database 'foo', which SQLAlchemy does not know"),
    ("not a url at all", "DATABASE_URL is not a database URL"),
    ("mysql://op:pw-4711@127.0.0.1/db", "DATABASE_URL: the driver of 'mysql' is not installed"),
    ("postgresql://postgres:pw-4711@{postgres}/no_such_database_4711",
     'database "no_such_database_4711" does not exist'),
    ("postgresql://postgres:pw-4711@127.0.0.1:9/db", "Connection refused"),
])
@pytest.mark.parametrize("command", [("keys", "list"), ("users", "list"), ("db", "upgrade")])
def test_a_database_that_cannot_be_used_is_one_line_naming_database_url(base_env: dict[str, str], tmp_path: Path,
                                                                         url: str, says: str,
                                                                         command: tuple[str, ...],
                                                                         request: pytest.FixtureRequest) -> None:
    if "{postgres}" in url:
        url = url.format(postgres=_postgres_address(request))
    result = _run({**base_env, "DATABASE_URL": url}, *command, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr and says in result.stderr, result.stderr
    assert "pw-4711" not in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", [("users", "list"), ("clients", "list"), ("keys", "list")])
def test_the_flask_commands_say_a_database_error_in_one_line_too(base_env: dict[str, str], command: tuple[str, ...]) -> None:
    """``flask --app app ...`` runs the same command groups as ``oidc-hsm``: the same one line, no traceback."""
    url = "postgresql://postgres:pw-4711@127.0.0.1:9/db"
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *command],
                            env={**os.environ, "METRICS_BIND": "", "LOG_FORMAT": "text", **base_env, "DATABASE_URL": url},
                            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr and "Connection refused" in result.stderr and "pw-4711" not in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_without_its_schema_says_what_to_run(base_env: dict[str, str], tmp_path: Path) -> None:
    result = _run({**base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}"}, "keys", "list",
                  cwd=tmp_path)
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.rstrip().endswith("the schema is not there yet: run oidc-hsm db upgrade"), result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_stops_with_one_line_when_the_database_is_missing(base_env: dict[str, str], tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    url = f"postgresql://postgres@{_postgres_address(request)}/no_such_database_4711"
    result = _run({**base_env, "DATABASE_URL": url, "BIND": f"127.0.0.1:{free_port()}"}, "serve", cwd=tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert 'database "no_such_database_4711" does not exist' in result.stderr, result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_validates_before_it_migrates_and_binds(base_env: dict[str, str], tmp_path: Path) -> None:
    """A missing SECRETS_SYSTEM (checked by workers only, after the port was bound) stops serve first."""
    database = tmp_path / "never-made.sqlite3"
    port = free_port()
    result = _run({**base_env, "SECRETS_SYSTEM": "", "DATABASE_URL": f"sqlite:///{database}",
                   "BIND": f"127.0.0.1:{port}"}, "serve", cwd=tmp_path)
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "configuration error: SECRETS_SYSTEM is not set" in result.stderr
    assert not database.exists()  # not migrated


@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_on_a_port_in_use_says_so_in_one_line(base_env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run({**base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'served.sqlite3'}",
                       "BIND": f"127.0.0.1:{port}"}, "serve", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines[-1] == (f"cannot listen on 127.0.0.1:{port} (BIND): the address is already in use "
                         "(another server is running there?)"), result.stderr
    # Before it, only the migration's and gunicorn's INFO lines: not gunicorn's five retries.
    assert all(re.search(r"\bINFO\b", line) for line in lines[:-1]), result.stderr
    assert "Retrying" not in result.stderr and "Connection in use" not in result.stderr


class Terminal:
    """``oidc-hsm`` run on a pseudo-terminal, as an operator runs it: stdin, stdout and stderr are the tty."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path) -> None:
        import pty

        self._master, slave = pty.openpty()
        self.process = subprocess.Popen([OIDC_HSM, *args], env={**os.environ, **env, "METRICS_BIND": ""}, cwd=cwd,
                                        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.output = ""
        self._read = 0  # how much of the output read_until has gone past

    def read_until(self, text: str, timeout: float = 60) -> None:
        """Wait for ``text`` after what the last call found."""
        import select

        deadline = time.monotonic() + timeout
        while text not in self.output[self._read:]:
            assert time.monotonic() < deadline, f"no {text!r} in {self.output!r}"
            if select.select([self._master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self._master, 4096)
                except OSError:  # the command exited and closed the terminal
                    chunk = b""
                assert chunk, f"the command ended without {text!r}: {self.output!r}"
                self.output += chunk.decode(errors="replace").replace("\r\n", "\n")
        self._read = self.output.index(text, self._read) + len(text)

    def type(self, line: str) -> None:
        os.write(self._master, line.encode() + b"\r")

    def finish(self, timeout: float = 60) -> int:
        """Read the output to its end; the exit status."""
        try:
            self.read_until("\0", timeout=timeout)  # never printed: reads until the command closes the terminal
        except AssertionError:
            pass
        status = self.process.wait(timeout=timeout)
        os.close(self._master)
        return status


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_users_create_asks_for_the_password_twice_on_a_terminal(make_app: Any, base_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    terminal = Terminal(base_env, "users", "create", "alice", cwd=tmp_path)
    terminal.read_until("Password: ")
    terminal.type("first try 4711")
    terminal.read_until("Repeat for confirmation: ")
    terminal.type("a typo 4711")
    terminal.read_until("do not match")
    terminal.read_until("Password: ")
    terminal.type("correct horse 4711")
    terminal.read_until("Repeat for confirmation: ")
    terminal.type("correct horse 4711")
    terminal.read_until("created alice")
    assert terminal.finish() == 0
    assert "4711" not in terminal.output  # hidden as typed

    from oidc.accounts.users import authenticate

    with make_app(base_env).app_context():
        assert authenticate("alice", "correct horse 4711") is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_users_create_without_a_terminal_wants_password_stdin(base_env: dict[str, str], tmp_path: Path) -> None:
    result = _run(base_env, "users", "create", "bob", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["Error: no terminal to ask for the password on: pass --password-stdin "
                                          "and write the password to standard input"], result.stderr
    scripted = subprocess.run([OIDC_HSM, "users", "create", "bob", "--password-stdin"], input="a long password\n",
                              env={**os.environ, **base_env}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert scripted.returncode == 0 and scripted.stdout.startswith("created bob"), scripted.stderr


ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tables_have_headers_and_iso_times_and_no_json_log_lines_on_a_terminal(base_env: dict[str, str],
                                                                               tmp_path: Path) -> None:
    env = {**base_env, "LOG_FORMAT": "json"}
    terminal = Terminal(env, "keys", "generate", "jwt.access-token", cwd=tmp_path)
    terminal.read_until("generated ")
    assert terminal.finish() == 0
    # The set has a key already: the new one is published now and signs after the pre-publication period.
    said = re.search(rf"published now, it starts signing at ({ISO_TIME}), in (\d+) s \(KEY_PREPUBLICATION_SECONDS",
                     terminal.output)
    assert said is not None, terminal.output
    assert int(said.group(2)) == 600  # 2 x JWKS_MAX_AGE, the default
    assert not [line for line in terminal.output.splitlines() if line.lstrip().startswith("{")], terminal.output
    assert "INFO oidc.audit: key generated" in terminal.output  # the audit event, in words

    shown = _run(env, "keys", "show", "jwt.access-token", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split() == ["KID", "ALG", "BACKEND", "STATUS", "CREATED", "SIGNS", "FROM", "RETIRES"]
    assert len(rows) == 2 and all(re.search(rf"ES256\s+software\s+\w+\s+{ISO_TIME}\s+{ISO_TIME}", row)
                                  for row in rows), shown.stdout
    # Not on a terminal (a script, a service): the log lines keep the configured JSON format.
    scripted = _run(env, "keys", "generate", "jwt.access-token", cwd=tmp_path)
    assert scripted.returncode == 0 and scripted.stdout.startswith("generated "), scripted.stderr
    assert "published now, it starts signing at" in scripted.stdout
    first = _run(env, "keys", "generate", "partner.set", "--alg", "ES256", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.rstrip().endswith("it signs now (the set had no signing key)"), \
        first.stdout + first.stderr
    assert any(line.startswith("{") and '"key.generated"' in line for line in scripted.stderr.splitlines())

    subprocess.run([OIDC_HSM, "users", "create", "carol", "--password-stdin", "--email", "carol@example.test"],
                   input="a long password\n", env={**os.environ, **env}, cwd=tmp_path, check=True, timeout=120,
                   capture_output=True, text=True)
    listed = _run(env, "users", "list", cwd=tmp_path).stdout.splitlines()
    assert listed[0].split() == ["USERNAME", "SUB", "EMAIL", "STATUS", "CREATED"]
    assert re.fullmatch(rf"carol\s+\S+\s+carol@example\.test\s+enabled\s+{ISO_TIME}", listed[1]), listed
