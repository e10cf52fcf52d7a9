"""JSON Schemas (SPEC C3): generated from the models, committed, usable by third-party tools."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.config.models import KINDS
from reconciler.policy.schema import BUNDLE, bundle_schema, kind_schema, render_all, stale
from tests.config.helpers import EXAMPLES, REPO, SCHEMAS

MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<target>\S+)$")
_SEPARATOR = re.compile(r"(?m)^---[ \t]*\n?")


def test_committed_schemas_match_the_models() -> None:
    outdated = stale(SCHEMAS)
    assert not outdated, (
        f"schemas/ is out of date for {', '.join(outdated)}; "
        "run `reconcile schema --out schemas/` and commit the result"
    )


def test_stale_detects_drift_and_extra_files(tmp_path: Path) -> None:
    for name, text in render_all().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert stale(tmp_path) == []
    (tmp_path / "proxyserver.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "retired.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "spamfilter.json").unlink()
    assert stale(tmp_path) == ["proxyserver.json", "spamfilter.json", "retired.json"]


def test_one_schema_per_kind_plus_bundle() -> None:
    names = set(render_all())
    expected = {f"{kind.lower()}.json" for kind in KINDS} | {
        "policy.json", "policyexception.json", BUNDLE}
    assert names == expected


def test_schema_uses_camel_case_and_forbids_unknown_fields() -> None:
    schema = kind_schema("OutgoingServer", KINDS["OutgoingServer"])
    spec = schema["$defs"]["OutgoingServerSpec"]
    assert spec["additionalProperties"] is False
    assert {"replyTo", "attachmentLimitMB", "recipientFilter"} <= set(spec["properties"])
    assert "reply_to" not in spec["properties"]
    port = spec["properties"]["port"]["anyOf"][0]
    assert (port["minimum"], port["maximum"]) == (1, 65535)


def test_bundle_dispatches_on_kind() -> None:
    bundle = bundle_schema()
    assert set(bundle["properties"]["kind"]["enum"]) == {*KINDS, "Policy", "PolicyException"}
    consts = {b["if"]["properties"]["kind"]["const"] for b in bundle["allOf"]}
    assert consts == set(bundle["properties"]["kind"]["enum"])
    json.dumps(bundle)  # plain JSON data


def test_secret_fields_accept_only_references() -> None:
    secret = bundle_schema()["$defs"]["SecretRef"]
    assert secret["required"] == ["secretRef"]
    pattern = re.compile(secret["properties"]["secretRef"]["pattern"])
    assert pattern.match("env:SMTP_PASSWORD")
    assert pattern.match("file:/run/secrets/smtp")
    assert not pattern.match("Hunter2")


def _example_files() -> list[Path]:
    files = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert files, "examples/config has no YAML files"
    return files


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_points_editors_at_an_existing_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path}: first line must be '# yaml-language-server: $schema=...'"
    target = (path.parent / match["target"]).resolve()
    assert target.is_file(), f"{path}: schema {match['target']} does not exist"
    assert target.parent == SCHEMAS.resolve()


def _split_documents(files: list[Path], out: Path) -> list[Path]:
    """check-jsonschema reads one document per file; write each document of each file alone,
    byte for byte as in the original (YAML 1.2 scalars included)."""
    out.mkdir()
    written = []
    for path in files:
        rel = path.relative_to(EXAMPLES).with_suffix("").as_posix().replace("/", "__")
        chunks = _SEPARATOR.split(path.read_text(encoding="utf-8"))
        for i, chunk in enumerate(c for c in chunks if c.strip()):
            target = out / f"{rel}__{i}.yaml"
            target.write_text(chunk, encoding="utf-8")
            written.append(target)
    return written


def _check_jsonschema(*instances: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMAS / BUNDLE),
         *map(str, instances)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )


def test_check_jsonschema_accepts_every_example_document(tmp_path: Path) -> None:
    documents = _split_documents(_example_files(), tmp_path / "docs")
    assert len(documents) >= 20
    proc = _check_jsonschema(*documents)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_jsonschema_rejects_a_broken_document(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: reconciler.dev/v1\nkind: ProxyServer\nmetadata: {name: egress}\n"
        "spec: {host: proxy.example.com, port: 70000, passwd: {secretRef: env:X}}\n",
        encoding="utf-8")
    proc = _check_jsonschema(bad)
    assert proc.returncode != 0
    assert "70000" in proc.stdout
    assert "passwd" in proc.stdout
