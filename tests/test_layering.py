"""The layering of DESIGN.md, read from the imports of the source itself.

* ``keys/`` knows nothing about OAuth or Flask: it never imports ``oidc``, Flask, Authlib or Werkzeug;
* the protocol core (``oidc.oauth2``, ``oidc.accounts``) never imports the web layer (``oidc.web``);
* the provider (``oidc``, with ``gunicorn.conf.py``, read as ``oidc.gunicorn.conf`` through its link)
  imports the key service only as ``keys``, never one of its modules (``keys.hsm``, ``keys.service``, ...);
* no import cycles among the project's modules.

Every ``import`` counts, at module level or inside a function: an import
deferred into a function is still a dependency.  Imports under
``if TYPE_CHECKING:`` are not run and do not count (as in import-linter).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("oidc", "keys")

#: (importing modules' prefix, forbidden imported prefixes, why); a prefix ending in "." forbids
#: the package's modules but not the package itself.
#: The modules every layer may read; they read none of the layers above them.
FOUNDATION = ("oidc.settings", "oidc.state", "oidc.db", "oidc.models", "oidc.queries", "oidc.statements",
              "oidc.vocabulary", "oidc.text", "oidc.urls", "oidc.hashing", "oidc.hashing_keys", "oidc.schema")
_ABOVE_THE_FOUNDATION = ("oidc.oauth2", "oidc.accounts", "oidc.web", "oidc.cli")

RULES = [
    ("keys", ("oidc", "flask", "authlib", "werkzeug"), "keys/ knows nothing of the provider, OAuth or Flask"),
    ("oidc", ("keys.",), "the provider imports the key service only through keys/__init__, its one surface"),
    *[(module, _ABOVE_THE_FOUNDATION, "the foundation never imports the layers above it") for module in FOUNDATION],
    ("oidc.observability", _ABOVE_THE_FOUNDATION, "observability never imports the core, the services, web or CLI"),
    ("oidc.oauth2", ("oidc.accounts", "oidc.web", "oidc.cli"),
     "the protocol core never imports the account services, the web layer or the CLI"),
    ("oidc.accounts", ("oidc.web", "oidc.cli"), "the account services never import the web layer or the CLI"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources() -> dict[str, str]:
    """Every module of the project's packages, by dotted name (migration scripts excluded)."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            sources[_module_name(path)] = path.read_text()
    return sources


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    nodes, pending = [], [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return nodes


def imports_of(module: str, source: str, known: set[str], *, run_time_only: bool = False) -> set[str]:
    """The modules ``module`` imports: project modules by their exact name, others by their top name.

    ``run_time_only``: leave out the imports under ``if TYPE_CHECKING:``.
    """
    found: set[str] = set()
    is_package = any(name.startswith(module + ".") for name in known)
    tree = ast.parse(source)
    for node in _run_time_nodes(tree) if run_time_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}"
                found.add(candidate if candidate in known else prefix)
    return found


def import_graph(sources: dict[str, str], *, run_time_only: bool = False) -> dict[str, set[str]]:
    known = set(sources)
    return {module: imports_of(module, source, known, run_time_only=run_time_only)
            for module, source in sources.items()}


def _matches(target: str, forbidden: str) -> bool:
    if forbidden.endswith("."):
        return target.startswith(forbidden)
    return target == forbidden or target.startswith(forbidden + ".")


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        for prefix, forbidden, why in RULES:
            if module != prefix and not module.startswith(prefix + "."):
                continue
            for target in sorted(imported):
                if any(_matches(target, bad) for bad in forbidden):
                    problems.append(f"{module} imports {target}: {why}")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:  # noqa: C901 - Tarjan's algorithm, kept whole
    """Strongly connected groups of more than one project module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue  # not a project module
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_project_keeps_its_layers_and_has_no_import_cycles():
    sources = project_sources()
    graph = import_graph(sources)
    assert {"oidc.oauth2.server", "oidc.web.token", "keys.hsm", "oidc.gunicorn.conf"} <= set(graph)  # the tree was read
    assert set(FOUNDATION) <= set(graph)  # every module the rules name exists
    assert layering_violations(graph) == []
    assert import_cycles(import_graph(sources, run_time_only=True)) == []


@pytest.mark.parametrize("sources, expected", [
    pytest.param({"keys.hsm": "import flask\n"}, "keys.hsm imports flask", id="keys-imports-flask"),
    pytest.param({"keys.service": "if True:\n    from authlib.jose import jwt\n"}, "keys.service imports authlib",
                 id="keys-imports-authlib-in-a-block"),
    pytest.param({"keys.hsm": "def f():\n    from oidc import state\n", "oidc.state": ""},
                 "keys.hsm imports oidc.state", id="keys-imports-oidc-in-a-function"),
    pytest.param({"oidc.oauth2.jwt": "from oidc.web.errors import no_store\n", "oidc.web.errors": ""},
                 "oidc.oauth2.jwt imports oidc.web.errors", id="core-imports-web"),
    pytest.param({"oidc.accounts.users": "from ..web import login\n", "oidc.web.login": "", "oidc.web": "",
                  "oidc.accounts": ""},
                 "oidc.accounts.users imports oidc.web.login", id="accounts-imports-web-relatively"),
    pytest.param({"oidc.state": "from keys.hsm import HSMManager\n", "keys.hsm": "", "keys": ""},
                 "oidc.state imports keys.hsm", id="provider-imports-a-keys-module"),
    pytest.param({"oidc.gunicorn.conf": "def post_worker_init(worker):\n    import keys.errors\n", "keys.errors": ""},
                 "oidc.gunicorn.conf imports keys.errors", id="gunicorn-conf-imports-a-keys-module-in-a-function"),
    pytest.param({"oidc.state": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from oidc.oauth2.server import AuthorizationServer\n", "oidc.oauth2.server": ""},
                 "oidc.state imports oidc.oauth2.server", id="foundation-imports-the-core-for-a-type"),
    pytest.param({"oidc.queries": "from oidc.web import errors\n", "oidc.web.errors": "", "oidc.web": ""},
                 "oidc.queries imports oidc.web.errors", id="foundation-imports-web"),
    pytest.param({"oidc.observability.audit": "from oidc.oauth2 import jwt\n", "oidc.oauth2.jwt": "",
                  "oidc.oauth2": ""},
                 "oidc.observability.audit imports oidc.oauth2.jwt", id="observability-imports-the-core"),
    pytest.param({"oidc.oauth2.steps": "from oidc.accounts import consents\n", "oidc.accounts.consents": "",
                  "oidc.accounts": ""},
                 "oidc.oauth2.steps imports oidc.accounts.consents", id="core-imports-an-account-service"),
    pytest.param({"oidc.accounts.users": "from oidc.cli import users\n", "oidc.cli.users": "", "oidc.cli": ""},
                 "oidc.accounts.users imports oidc.cli.users", id="accounts-imports-the-cli"),
])
def test_the_check_notices_a_layering_violation(sources, expected):
    assert expected in " ".join(layering_violations(import_graph(sources)))


def test_the_provider_may_import_the_key_service_package_itself():
    sources = {"oidc.state": "from keys import KeyService\nimport keys\n", "keys": "", "keys.service": ""}
    assert layering_violations(import_graph(sources)) == []


def test_the_check_notices_an_import_cycle():
    sources = {"oidc.a": "from oidc import b\n", "oidc.b": "def f():\n    import oidc.c\n", "oidc.c": "import oidc.a\n",
               "oidc.d": "import oidc.a\n",
               "oidc.e": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import oidc.f\n",
               "oidc.f": "import oidc.e\n"}
    assert import_cycles(import_graph(sources, run_time_only=True)) == [["oidc.a", "oidc.b", "oidc.c"]]


def flask_g_uses(module: str, source: str) -> list[str]:
    """Where ``module`` reaches ``flask.g``: ``from flask import g`` (or ``flask.globals``), or ``flask.g``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("flask", "flask.globals"):
            found += [f"{module}:{node.lineno} imports flask.g" for alias in node.names if alias.name == "g"]
        elif (isinstance(node, ast.Attribute) and node.attr == "g" and isinstance(node.value, ast.Name)
              and node.value.id == "flask"):
            found.append(f"{module}:{node.lineno} reads flask.g")
    return found


def test_the_protocol_core_keeps_request_state_on_its_requests_not_in_flask_g():
    """DESIGN.md: request state travels on the request objects (Authlib's OAuth2Request), not through flask.g."""
    sources = project_sources()
    assert "oidc.oauth2.grants.refresh_token" in sources
    assert [use for module, source in sorted(sources.items()) if module.startswith("oidc.oauth2")
            for use in flask_g_uses(module, source)] == []


@pytest.mark.parametrize("source", ["from flask import Response, g\n", "from flask.globals import g as ctx\n",
                                    "import flask\n\ndef f():\n    return flask.g.get('x')\n"])
def test_the_check_notices_flask_g(source):
    assert flask_g_uses("oidc.oauth2.x", source)
