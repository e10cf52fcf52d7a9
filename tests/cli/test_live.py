"""`reconcile live get|set` (SPEC P5): out-of-band edits, validated and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from plan.kit import ENC_KEY, copy_examples, example_count

from reconciler.config.secrets import encrypt
from reconciler.state import RevisionKind, open_store

from .helpers_history import (
    GMAIL,
    HR,
    apply,
    assert_user_error,
    fingerprint,
    live_set,
    run,
)


@pytest.fixture
def applied(tmp_path: Path, store_url: str) -> str:
    apply(copy_examples(tmp_path), store_url)
    return store_url


def test_set_is_recorded_as_out_of_band_with_actor_and_reason(applied: str) -> None:
    out = live_set(applied, "OutgoingServer/acme/o365-hr", "spec.enabled=false",
                   actor="alice", reason="HR mailbox migration").stdout
    assert out.startswith(f"revision 2 (out-of-band) by alice: ~ {HR}\n")
    assert "    spec.enabled: true → false" in out and "reconcile drift" in out
    with open_store(applied) as store:
        rev = store.revision(2)
        assert rev.meta.kind is RevisionKind.OUT_OF_BAND
        assert (rev.meta.actor, rev.meta.message) == ("alice", "HR mailbox migration")
        assert store.snapshot().resources[HR].spec["enabled"] is False
        assert store.verify().ok
    listed = run("history", "--kind", "out-of-band", "--store", applied).stdout
    assert "alice" in listed and "HR mailbox migration" in listed


def test_values_are_yaml_and_spec_prefix_is_optional(applied: str) -> None:
    live_set(applied, "OutgoingServer/acme/o365-hr", "port=2525", "senderName='HR: nights'",
             "timeoutSeconds=90", "primary=false")
    with open_store(applied) as store:
        spec = store.snapshot().resources[HR].spec
        message = store.revision(2).meta.message
    assert (spec["port"], spec["senderName"], spec["timeoutSeconds"]) == (2525, "HR: nights",
                                                                          90.0)
    assert message == "live set spec.port, spec.senderName, spec.timeoutSeconds, spec.primary"


def test_namespace_option_and_null_restores_the_default(applied: str) -> None:
    run("live", "set", "OutgoingServer/o365-hr", "port=2525", "--namespace", "acme",
        "--store", applied)
    run("live", "set", "OutgoingServer/o365-hr", "port=null", "-n", "acme", "--store", applied)
    with open_store(applied) as store:
        assert store.snapshot().resources[HR].spec["port"] == 587  # derived again


def test_setting_the_same_value_writes_nothing(applied: str) -> None:
    before = fingerprint(applied)
    out = live_set(applied, "OutgoingServer/acme/o365-hr", "enabled=true").stdout
    assert out.startswith("no change:")
    assert fingerprint(applied) == before


def test_secret_reference_can_be_set_and_stays_redacted(applied: str) -> None:
    ref = encrypt("rotated-secret-VALUE-4242", ENC_KEY)
    result = live_set(applied, "OutgoingServer/acme/gmail-notifications",
                      "auth.clientSecret={secretRef: " + ref + "}")
    ciphertext = ref.removeprefix("enc:v1:")
    assert "enc:v1:***" in result.stdout and ciphertext[:24] not in result.stdout
    for args in (("history", "show", "2"), ("live", "get", str(GMAIL))):
        out = run(*args, "--store", applied).stdout
        assert "enc:v1:***" in out and ciphertext[:24] not in out


def test_get_prints_the_live_spec_redacted(applied: str) -> None:
    out = run("live", "get", "OutgoingServer/gmail-notifications", "-n", "acme",
              "--store", applied).stdout
    assert out.startswith(f"# {GMAIL} as live at revision 1\n")
    doc = yaml.safe_load(out)
    assert doc["spec"]["auth"]["clientSecret"] == {"secretRef": "env:ACME_GMAIL_CLIENT_SECRET"}
    assert doc["spec"]["port"] == 587
    data = json.loads(run("live", "get", str(GMAIL), "--format", "json",
                          "--store", applied).stdout)
    assert data["revision"] == 1 and data["resource"]["metadata"]["name"] == GMAIL.name


BAD = [
    pytest.param(["OutgoingServer/acme/nope", "enabled=false"],
                 ["OutgoingServer/acme/nope is not in the live store"], id="unknown-resource"),
    pytest.param(["OutgoingServr/acme/o365-hr", "enabled=false"],
                 ["unknown kind 'OutgoingServr'", "did you mean OutgoingServer"],
                 id="unknown-kind"),
    pytest.param(["o365-hr", "enabled=false"], ["is not KIND/NAME"], id="not-a-key"),
    pytest.param(["OutgoingServer/acme/o365-hr", "enabled"], ["argument 1 is not FIELD=VALUE"],
                 id="no-equals"),
    pytest.param(["OutgoingServer/acme/o365-hr", "=false"], ["argument 1 is not FIELD=VALUE"],
                 id="no-field"),
    pytest.param(["OutgoingServer/acme/o365-hr", "spec..port=1"], ["is not a field path"],
                 id="empty-segment"),
    pytest.param(["OutgoingServer/acme/o365-hr", "enabeld=false"],
                 ["spec.enabeld", "unknown field 'enabeld'", "did you mean 'enabled'"],
                 id="unknown-field"),
    pytest.param(["OutgoingServer/acme/o365-hr", "port=70000"],
                 ["spec.port", "70000 is above the maximum 65535"], id="out-of-range"),
    pytest.param(["OutgoingServer/acme/o365-hr", "enabled=maybe"],
                 ["spec.enabled", "is not a boolean"], id="wrong-type"),
    pytest.param(["OutgoingServer/acme/o365-hr", "security=ssl3"],
                 ["spec.security", "is not one of"], id="bad-choice"),
    pytest.param(["OutgoingServer/acme/o365-hr", "recipientFilter=no-such-filter"],
                 ["RecipientFilter 'no-such-filter' does not exist"], id="dangling-reference"),
    pytest.param(["OutgoingServer/acme/o365-hr", "senderName=[unclosed"],
                 ["spec.senderName: the value is not valid YAML"], id="bad-yaml"),
    pytest.param(["OutgoingServer/acme/o365-hr", "port.number=1"],
                 ["spec.port is a single value"], id="into-a-scalar"),
    pytest.param(["OutgoingServer/acme/o365-hr", "metadata.name=x"],
                 ["only spec fields can be set live"], id="metadata"),
    pytest.param(["OutgoingServer/acme/o365-hr", "status.health=ok"],
                 ["only spec fields can be set live", "daemon"], id="status"),
    pytest.param(["OutgoingServer/acme/o365-hr", "auth.clientSecret=hunter2-literal"],
                 ["spec.auth.clientSecret is a secret field", "{secretRef: env:NAME}"],
                 id="literal-secret"),
    pytest.param(["OutgoingServer/acme/o365-hr", "auth.clientSecret={secretRef: hunter2}"],
                 ["spec.auth.clientSecret is a secret field"], id="bad-secret-reference"),
    pytest.param(["OutgoingServer/acme/o365-hr", "auth.password=hunter2-literal"],
                 ["spec.auth.password is a secret field"], id="literal-secret-new-field"),
]


@pytest.mark.parametrize("args, fragments", BAD)
def test_bad_input_is_one_message_and_changes_nothing(
    applied: str, args: list[str], fragments: list[str]
) -> None:
    before = fingerprint(applied)
    result = run("live", "set", *args, "--store", applied, code=None)
    assert_user_error(result, *fragments)
    assert "hunter2" not in result.output
    assert fingerprint(applied) == before


def test_a_semantic_error_warns_but_an_emergency_disable_goes_through(applied: str) -> None:
    # Disabling the only primary server is what `validate` refuses in git, and
    # exactly what an admin needs during an incident.
    result = live_set(applied, "OutgoingServer/acme/gmail-notifications", "enabled=false")
    assert "warning: `reconcile validate` would reject this in git" in result.output
    assert "no enabled primary OutgoingServer" in result.output
    with open_store(applied) as store:
        assert store.snapshot().resources[GMAIL].spec["enabled"] is False


def test_get_unknown_resource(applied: str) -> None:
    assert_user_error(run("live", "get", "OutgoingServer/acme/nope", "--store", applied,
                          code=None), "not in the live store")


def test_set_waits_for_the_apply_lock(applied: str) -> None:
    with open_store(applied) as store, store.lock("ci-bot", "apply", timeout=1) as info:
        result = run("live", "set", str(HR), "enabled=false", "--lock-timeout", "0",
                     "--store", applied, code=None)
        assert_user_error(result, "locked by ci-bot", info.id)
    with open_store(applied) as store:
        assert store.head() == 1


def test_list_shows_what_the_store_holds_filtered_by_namespace_and_kind(applied: str) -> None:
    everything = run("live", "list", "--store", applied)
    assert str(HR) in everything.stdout and "OutgoingServer/globex/" in everything.stdout
    n = example_count()
    assert everything.stderr.strip() == f"{n} of {n} resources at revision 1"
    only = run("live", "list", "-n", "acme", "--kind", "OutgoingServer", "--store", applied)
    lines = only.stdout.splitlines()
    assert lines and all(line.startswith("OutgoingServer/acme/") for line in lines)
    assert lines == sorted(lines) and str(HR) in lines
    listed = json.loads(run("live", "list", "-n", "globex", "--format", "json",
                            "--store", applied).stdout)
    assert listed["revision"] == 1
    assert {r["namespace"] for r in listed["resources"]} == {"globex"}


def test_list_refuses_an_unknown_kind_and_names_the_kinds(applied: str) -> None:
    result = run("live", "list", "--kind", "OutgoingSrever", "--store", applied, code=None)
    assert_user_error(result, "unknown kind OutgoingSrever")
    assert "OutgoingServer" in result.output.split("kinds are ")[1]
