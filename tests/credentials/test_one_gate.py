"""SPEC S2: a secret reference of the config is resolved only through credentials.gate, so
no code path can present one without the binding check. Other modules may resolve only
the daemon's own settings (API tokens, webhook URLs, the token-sealing key), which are
not config and have no endpoint to bind."""

from __future__ import annotations

import ast
from pathlib import Path

import reconciler

PACKAGE = Path(next(iter(reconciler.__path__)))
# module -> what it resolves
SETTINGS = {
    "credentials/gate.py": "every credential of the config, after the binding check",
    "cli/daemon.py": "the daemon's --api-token references, checked at start",
    "cli/secret.py": "`reconcile secret check`: resolves to report, presents nothing",
    "runtime/api_tokens.py": "the API's own tokens",
    "health/notifier.py": "the notification webhook URL (a daemon setting)",
    "incoming/sink.py": "the events webhook secret (a daemon setting)",
    "oauth/cache.py": "the key that seals cached tokens (a daemon setting)",
}


def resolvers() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "reconciler.config.secrets" \
                    and any(alias.name == "resolve" for alias in node.names):
                found.add(path.relative_to(PACKAGE).as_posix())
            if isinstance(node, ast.Attribute) and node.attr == "resolve" and \
                    isinstance(node.value, ast.Name) and node.value.id == "secrets":
                found.add(path.relative_to(PACKAGE).as_posix())
    return found


def test_only_the_gate_resolves_config_credentials() -> None:
    unexpected = resolvers() - set(SETTINGS)
    assert not unexpected, (
        f"{sorted(unexpected)} resolve secret references themselves; present a config "
        "credential through reconciler.credentials.gate (present_secret, require) so the "
        "binding check cannot be skipped")
