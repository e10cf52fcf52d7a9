"""Builders shared by the plan tests and the plan/apply CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import reconciler
from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.secrets import encrypt
from reconciler.state import LiveState, open_store

REPO = Path(next(iter(reconciler.__path__))).parent
EXAMPLES = REPO / "examples" / "config"
API = "reconciler.dev/v1"

# Every env: reference in examples/config, each given a real-looking value
# that must never show up anywhere.
SECRET_ENV = {
    "ACME_GMAIL_CLIENT_SECRET": "gmail-secret-VALUE-1f3e",
    "ACME_PROXY_PASSWORD": "proxy-secret-VALUE-77aa",
    "GLOBEX_EWS_PASSWORD": "ews-secret-VALUE-9b0c",
    "GLOBEX_GRAPH_READ_SECRET": "graph-read-VALUE-2d4d",
    "GLOBEX_GRAPH_SEND_SECRET": "graph-send-VALUE-5e6f",
    "GLOBEX_SUPPLIER_POP_PASSWORD": "pop-secret-VALUE-8a8a",
}
ENC_KEY = b"JnqSF4NYwuVfeVZEJo4IGQlLxZdwRvNgv4vD9Vtkmxg="
ENC_PLAINTEXT = "enc-plaintext-VALUE-c0ffee"


def res(
    name: str,
    *,
    ns: str = "default",
    kind: str = "OutgoingServer",
    labels: dict[str, str] | None = None,
    api: str = API,
    **spec: Any,
) -> CanonicalResource:
    return CanonicalResource.build(ResourceKey(kind, ns, name), api, spec or {"host": name},
                                   labels)


def desired(*resources: CanonicalResource) -> DesiredState:
    return DesiredState.of(resources)


def live(*resources: CanonicalResource, lineage: str = "lineage-1", revision: int = 3) -> LiveState:
    return LiveState(lineage, revision, {r.key: r for r in resources})


def example_count(kind: str | None = None) -> int:
    """How many resources (of ``kind``) examples/config holds: it grows over time."""
    from reconciler.policy.validate import validate_path

    result = validate_path(EXAMPLES)
    assert result.desired is not None, "examples/config must validate"
    return sum(1 for k in result.desired.resources if kind in (None, k.kind))


def initialised(url: str) -> str:
    """``url`` with an empty store in it. On the command line only `reconcile apply`
    creates stores, so a test that plans before anything was applied makes one first."""
    open_store(url).close()
    return url


def copy_examples(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(EXAMPLES, target)
    return target


def set_secret_env(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Put real values behind the example's references; return every value to look for."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECONCILE_SECRET_KEY", ENC_KEY.decode())
    return [*SECRET_ENV.values(), ENC_PLAINTEXT]


def use_encrypted_secret(config: Path) -> str:
    """Swap the HR server's file: reference for an encrypted one; return the reference."""
    ref = encrypt(ENC_PLAINTEXT, ENC_KEY)
    path = config / "acme" / "outgoing-servers.yaml"
    text = path.read_text()
    old = "{secretRef: file:/run/secrets/acme-o365-client-secret}"
    assert old in text
    path.write_text(text.replace(old, "{secretRef: " + ref + "}"))
    return ref


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def tenant_yaml(namespace: str, filters: int, *, domain: str = "partner.example") -> str:
    """A valid namespace: its primary server plus ``filters`` recipient filters."""
    docs = [f"""apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: primary, namespace: {namespace}}}
spec:
  email: desk@{namespace}.example
  senderName: {namespace} desk
  replyTo: support@{namespace}.example
  protocol: smtp
  host: smtp.{namespace}.example
  security: tls
  auth: {{type: basic, username: desk, password: {{secretRef: env:{namespace.upper()}_PW}}}}
  primary: true
"""]
    docs += [f"""apiVersion: reconciler.dev/v1
kind: RecipientFilter
metadata: {{name: filter-{i}, namespace: {namespace}}}
spec:
  type: allow
  domains: [{namespace}.example, {domain}]
""" for i in range(filters)]
    return "---\n".join(docs)


def write_tenants(root: Path, tenants: dict[str, int], *, domain: str = "partner.example") -> Path:
    """One file per namespace; returns ``root``. Independent of examples/config."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.yaml"):
        old.unlink()
    for namespace, filters in tenants.items():
        (root / f"{namespace}.yaml").write_text(tenant_yaml(namespace, filters, domain=domain))
    return root
