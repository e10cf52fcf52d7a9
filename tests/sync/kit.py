"""A config repository the syncer follows: one namespace, one SMTP server, a SyncPolicy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from health.kit import WebhookReceiver
from peers.git_repo import Repo

from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import Notifier
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Store
from reconciler.sync.syncer import Syncer


def server_yaml(port: int, *, name: str = "desk", label: bool = True, primary: str = "true",
                **extra: Any) -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    labels = "\n  labels: {env: dev}" if label else ""
    return (f"apiVersion: reconciler.dev/v1\nkind: OutgoingServer\nmetadata:\n  name: {name}\n"
            f"  namespace: acme{labels}\nspec:\n  protocol: smtp\n"
            f"  email: helpdesk@desk.example\n  replyTo: support@desk.example\n"
            f"  host: 127.0.0.1\n  port: {port}\n  security: none\n  primary: {primary}\n{lines}")


def policy_yaml(**spec: Any) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in spec.items())
    return ("apiVersion: reconciler.dev/v1\nkind: SyncPolicy\n"
            f"metadata: {{name: acme, namespace: acme}}\nspec: {{{body}}}\n")


APPLY = policy_yaml(mode="apply", verify="{enabled: false}")


def syncer_for(store: Store, repo: Repo, tmp_path: Path, *, webhook: WebhookReceiver | None
               = None, **settings: Any) -> Syncer:
    given = DaemonSettings(**{"store_url": "unused", "sync_repo": f"file://{repo.bare}",
                              "sync_path": "config", "sync_cache_dir": str(tmp_path / "cache"),
                              **settings})
    notifier = Notifier(webhook.url) if webhook is not None else None
    return Syncer(store, given, metrics=DaemonMetrics(), notifier=notifier)
