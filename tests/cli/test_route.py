"""`reconcile route`: which server a notification would go through and why (SPEC O2),
from the live store (SQLite and PostgreSQL) or from a config repo validated in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from daemon.app_kit import commit, cond, recipient_filter, rule, smtp_server

from reconciler.cli.main import cli
from reconciler.state import open_store

HR_RULE = """\
apiVersion: reconciler.dev/v1
kind: OutgoingEmailRule
metadata: {name: hr-requests, namespace: acme}
spec:
  module: request
  order: 10
  match: any
  conditions:
    - {field: department, operator: equals, value: HR}
    - {field: technicianGroup, operator: in, values: [Payroll]}
  server: hr
"""


def server_doc(name: str, primary: bool) -> str:
    return f"""\
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: {name}, namespace: acme}}
spec:
  email: {name}@acme.example
  replyTo: support@acme.example
  host: smtp.acme.example
  security: starttls
  primary: {str(primary).lower()}
"""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["route", *map(str, args)])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "acme.yaml").write_text("---\n".join(
        [server_doc("main", True), server_doc("hr", False), HR_RULE]))
    return folder


@pytest.fixture
def db(store_url: str) -> str:
    with open_store(store_url) as store:
        commit(store,
               smtp_server("main", 25, namespace="acme", primary=True),
               smtp_server("hr", 25, namespace="acme", recipientFilter="hr-blocklist"),
               recipient_filter("hr-blocklist", "ignore", emails=["all@acme.example"],
                                namespace="acme"),
               rule("hr-requests", 10, "hr", cond("department", "HR"), namespace="acme"),
               smtp_server("no-reply", 25, namespace="broken", primary=True, replyTo=None),
               smtp_server("disabled", 25, namespace="off", primary=True, enabled=False))
    return store_url


def test_rule_match_from_the_live_store_explains_every_condition(db: str) -> None:
    result = run("--store", db, "--namespace", "acme", "--module", "request",
                 "--set", "department=hr")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("live store ") and "at revision 1, namespace acme" in lines[0]
    assert lines[1] == "module request, context: department=hr"
    assert "rule hr-requests (order 10, match all) -> hr: matched" in result.stdout
    assert "[ok  ] department equals 'HR': holds for department='hr'" in result.stdout
    assert "=> server hr (rule hr-requests)" in result.stdout
    assert "recipients are filtered by ignore list hr-blocklist" in result.stdout


def test_no_match_goes_to_the_primary(db: str) -> None:
    result = run("--store", db, "--namespace", "acme", "--module", "request",
                 "--set", "department=IT")
    assert result.exit_code == 0, result.output
    assert "[FAIL] department equals 'HR': does not hold for department='IT'" in result.stdout
    assert "=> server main (primary; no rule matched)" in result.stdout


def test_a_server_that_cannot_send_says_why_and_exits_1(db: str) -> None:
    result = run("--store", db, "--namespace", "broken", "--module", "request")
    assert result.exit_code == 1
    assert "=> server no-reply (primary; no enabled rules for module request)" in result.stdout
    assert "not sent: SEND_FAILED: the chosen outgoing server has no Reply-To address" in (
        result.stdout)


def test_unknown_namespace_is_an_error(db: str) -> None:
    result = run("--store", db, "--namespace", "nobody", "--module", "request")
    assert result.exit_code == 1
    assert "namespace 'nobody' has no configuration in live store" in result.output


def test_config_folder_is_validated_and_routed_in_memory(config: Path) -> None:
    result = run("--config", config, "--namespace", "acme", "--module", "request",
                 "--set", "technicianGroup=payroll")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"config {config} (validated, not applied), namespace acme")
    assert "rule hr-requests (order 10, match any) -> hr: matched" in result.stdout
    assert "=> server hr (rule hr-requests)" in result.stdout


def test_invalid_config_folder_shows_the_errors(config: Path) -> None:
    (config / "acme.yaml").write_text(server_doc("main", True) + "---\n" + HR_RULE)
    result = run("--config", config, "--namespace", "acme", "--module", "request")
    assert result.exit_code == 1
    assert "spec.server" in result.output and "is not valid" in result.output


def test_no_server_at_all_says_not_sent(db: str) -> None:
    result = run("--store", db, "--namespace", "off", "--module", "request")
    assert result.exit_code == 1
    assert "=> no rule matched and the namespace has no enabled primary server" in result.stdout
    assert "not sent: SEND_FAILED (no server)" in result.stdout


def test_store_and_config_together_are_refused(db: str, config: Path) -> None:
    result = run("--store", db, "--config", config, "--module", "request")
    assert result.exit_code == 1 and "either --store or --config" in result.output


def test_the_namespace_default_filter_is_shown_and_derived(config: Path) -> None:
    (config / "settings.yaml").write_text("""\
apiVersion: reconciler.dev/v1
kind: MailSettings
metadata: {name: settings, namespace: acme}
spec: {recipientFilter: no-partners}
---
apiVersion: reconciler.dev/v1
kind: RecipientFilter
metadata: {name: no-partners, namespace: acme}
spec: {type: ignore, domains: [partner.example]}
""")
    result = run("--config", config, "--namespace", "acme", "--module", "request",
                 "--set", "department=HR")
    assert result.exit_code == 0, result.output
    assert ("recipients are filtered by ignore list no-partners (the namespace default, "
            "MailSettings.recipientFilter)") in result.output
    shown = CliRunner().invoke(cli, ["validate", str(config), "--show-derived"])
    hr = shown.output.split("OutgoingServer/acme/hr")[1]
    assert ('spec.recipientFilter = "no-partners"  # the namespace default, '
            "MailSettings.recipientFilter") in hr


def test_a_rule_server_down_for_longer_than_the_delay_shows_the_primary_fallback(
    db: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from reconciler.config.desired import ResourceKey
    from reconciler.health import record as rec

    since = datetime.now(UTC) - timedelta(hours=1)
    down = rec.HostHealth("127.0.0.1:25", rec.UNREACHABLE, "connection refused", "tcp",
                          cannot_reach=True)
    with open_store(db) as store:
        store.status_put(ResourceKey("OutgoingServer", "acme", "hr"), rec.merged({}, (
            rec.HealthRecord(rec.UNREACHABLE, since, since, hosts={rec.MAIN: down}))))
    result = run("--store", db, "--namespace", "acme", "--module", "request",
                 "--set", "department=HR")
    assert result.exit_code == 0, result.output
    assert "=> server hr (rule hr-requests)" in result.stdout
    assert (f"=> server hr has had every host Unreachable since "
            f"{since.isoformat(timespec='seconds')}; sent through the primary main") in (
        result.stdout)
    # main's own (lack of a) filter applies now, not hr's
    assert "hr-blocklist" not in result.stdout
