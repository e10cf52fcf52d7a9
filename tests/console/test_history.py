"""View History screen (SPEC X6, P4): revisions, side-by-side diffs, the config as of a
revision, the chain check, and what a namespace-scoped reader may see."""

from __future__ import annotations

from typing import Any

import yaml
from peers.postgres import RawSql
from state.kit import res

from console.conftest import Console
from reconciler.config.desired import CanonicalResource, DesiredState
from reconciler.plan.diff import diff
from reconciler.runtime.access import Principal
from reconciler.state import RevisionKind, RevisionMeta, SqlStore

AUDITOR = Principal.of("auditor", ["auditor"])
ACME_ONLY = Principal.of("acme-auditor", ["auditor"], ["acme"])
REPO = "https://git.example/it/mail-config.git"


def apply(store: SqlStore, *resources: CanonicalResource, **meta: Any) -> int:
    live = store.snapshot()
    changes = diff(DesiredState.of(resources), live, prune=True).changes
    meta.setdefault("actor", "alice")
    return store.commit(changes, RevisionMeta(**meta), base_revision=live.revision).number


def history(store: SqlStore) -> None:
    acme = res("smtp", ns="acme", host="old.acme.example",
               password={"secretRef": "env:ACME_SMTP_PASSWORD"})
    beta = res("smtp", ns="beta", host="beta.example")
    apply(store, acme, beta, git_commit="0123456789abcdef0123", pull_request="42",
          message="first config")
    apply(store, res("smtp", ns="acme", host="new.acme.example",
                     password={"secretRef": "env:ACME_SMTP_PASSWORD"}),
          beta, message="move acme", kind=RevisionKind.OUT_OF_BAND, actor="bob")
    apply(store, res("smtp", ns="acme", host="new.acme.example",
                     password={"secretRef": "env:ACME_SMTP_PASSWORD"}),
          res("smtp", ns="beta", host="beta2.example"), message="beta secret project")


def test_list_shows_actor_kind_commit_link_pr_and_a_verified_chain(
        console_store: SqlStore, console_as: Console) -> None:
    history(console_store)
    page = console_as(AUDITOR, sync_repo=REPO).get("/console/history")
    assert page.status_code == 200
    assert "Verified" in page.text and "3 revisions checked" in page.text
    assert 'href="https://git.example/it/mail-config/commit/0123456789abcdef0123"' in page.text
    assert 'href="https://git.example/it/mail-config/pull/42"' in page.text
    assert "out-of-band" in page.text and "bob" in page.text
    assert page.text.index("beta secret project") < page.text.index("first config")


def test_no_link_without_an_http_repository(console_store: SqlStore,
                                            console_as: Console) -> None:
    history(console_store)
    page = console_as(AUDITOR).get("/console/history")
    assert "<code>0123456789ab</code>" in page.text and "/commit/" not in page.text


def test_revision_page_diffs_side_by_side(console_store: SqlStore,
                                         console_as: Console) -> None:
    history(console_store)
    page = console_as(AUDITOR).get("/console/history/2")
    assert page.status_code == 200
    assert '<td class="old"><code>&#34;old.acme.example&#34;</code></td>' in page.text
    assert '<td class="new"><code>&#34;new.acme.example&#34;</code></td>' in page.text
    assert 'scope="col">Before' in page.text


def test_config_as_of_a_revision_downloads_as_yaml(console_store: SqlStore,
                                                   console_as: Console) -> None:
    history(console_store)
    got = console_as(AUDITOR).get("/console/history/1/config.yaml")
    assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
    docs = [d for d in yaml.safe_load_all(got.text) if d]
    assert [(d["metadata"]["namespace"], d["spec"]["host"]) for d in docs] == [
        ("acme", "old.acme.example"), ("beta", "beta.example")]
    assert docs[0]["spec"]["password"] == {"secretRef": "env:ACME_SMTP_PASSWORD"}


def test_a_scoped_reader_never_sees_another_namespace(console_store: SqlStore,
                                                     console_as: Console) -> None:
    history(console_store)
    client = console_as(ACME_ONLY)
    listing = client.get("/console/history")
    assert "move acme" in listing.text and "first config" in listing.text
    assert "beta secret project" not in listing.text  # it changed beta alone
    first = client.get("/console/history/1")
    assert "acme" in first.text and "beta.example" not in first.text
    assert "OutgoingServer beta/smtp" not in first.text
    config = client.get("/console/history/1/config.yaml").text
    assert "beta" not in config


def test_unknown_or_invisible_revisions_are_not_found(console_store: SqlStore,
                                                      console_as: Console) -> None:
    history(console_store)
    apply(console_store, *console_store.snapshot().resources.values(),
          res("other", ns="beta", host="only-beta.example"), message="beta only")
    scoped = console_as(ACME_ONLY)
    for path in ("/console/history/4", "/console/history/4/config.yaml",
                 "/console/history/99"):
        response = scoped.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
    assert "beta only" not in scoped.get("/console/history").text
    assert console_as(AUDITOR).get("/console/history/99").status_code == 404
    assert console_as(Principal.of("app", ["sender"])).get("/console/history").status_code == 403


def test_a_tampered_chain_is_reported(console_store: SqlStore, console_as: Console,
                                      raw_sql: RawSql) -> None:
    history(console_store)
    raw_sql("UPDATE revisions SET message = 'nothing to see' WHERE number = 2")
    page = console_as(AUDITOR).get("/console/history")
    assert "Broken at revision 2" in page.text
    assert "was changed after it was written" in page.text
