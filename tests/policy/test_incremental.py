"""The incremental validation gives exactly what a cold one gives, over random edits."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config.desired import digest_at
from reconciler.policy import cache_files
from reconciler.policy.cache_pack import context_digest, pack_path
from reconciler.policy.incremental import CachedValidation, validate_incremental
from reconciler.policy.validate import ValidationResult, validate_path
from tests.policy.kit import TODAY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"
CLONES = ("acme", "globex", "initech")  # namespaces: the examples' two, and a copy of acme
REFERENCE_FIELDS = ("recipientFilter", "proxy", "server", "servers", "filters")
OLD_NS = 1_700_000_000 * 10**9  # a fixed time long ago
VALUES: list[Any] = ["x", "off", 25, 465, True, False, None, "smtp", "graph", "acme-no-external",
                     ["a@example.com"], {"nested": 1}]


def _corpus() -> dict[str, list[Any]]:
    """File -> documents: the examples, with acme cloned into a third namespace."""
    files = {p.relative_to(EXAMPLES).as_posix(): list(yaml.safe_load_all(p.read_text()))
             for p in sorted(EXAMPLES.rglob("*.yaml"))}
    for name, docs in list(files.items()):
        if name.startswith("acme/"):
            text = yaml.safe_dump_all(docs).replace("acme", "initech")
            files["initech/" + name.split("/", 1)[1]] = list(yaml.safe_load_all(text))
    return files


def _write(root: Path, files: dict[str, Any]) -> None:
    """Write the files that differ, with an old mtime: the cache's stat index then
    trusts every file it has seen, and must notice the rewritten ones by their ctime."""
    texts = {name: docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
             for name, docs in files.items()}
    for path in [p for p in root.rglob("*") if p.is_file()]:
        if path.relative_to(root).as_posix() not in texts:
            path.unlink()
    for name, text in texts.items():
        path = root / name
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, ns=(OLD_NS, OLD_NS))


def _resource_docs(files: dict[str, Any], rng: random.Random) -> tuple[str, int] | None:
    spots = [(name, i) for name, docs in files.items() if not isinstance(docs, str)
             for i, doc in enumerate(docs) if isinstance(doc, dict)]
    return rng.choice(spots) if spots else None


def change_field(files: dict[str, Any], rng: random.Random) -> None:
    spot = _resource_docs(files, rng)
    if spot is None:
        return
    doc = files[spot[0]][spot[1]]
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else doc
    field = rng.choice(sorted(spec, key=str)) if spec else "senderName"
    if rng.random() < 0.2:
        spec.pop(field, None)
    else:
        spec[field] = rng.choice(VALUES)


def add_resource(files: dict[str, Any], rng: random.Random) -> None:
    spot = _resource_docs(files, rng)
    if spot is None:
        return
    copy = yaml.safe_load(yaml.safe_dump(files[spot[0]][spot[1]]))
    metadata = copy.get("metadata") if isinstance(copy.get("metadata"), dict) else {}
    if rng.random() < 0.7:  # else an exact duplicate
        metadata["name"] = f"{metadata.get('name', 'x')}-{rng.randrange(3)}"
    if rng.random() < 0.3:
        metadata["namespace"] = rng.choice(CLONES)
    target = rng.choice([spot[0], f"extra/new-{rng.randrange(3)}.yaml"])
    existing = files.get(target)
    files[target] = [*(existing if isinstance(existing, list) else []), copy]


def remove_resource(files: dict[str, Any], rng: random.Random) -> None:
    spot = _resource_docs(files, rng)
    if spot is not None:
        del files[spot[0]][spot[1]]


def change_policy(files: dict[str, Any], rng: random.Random) -> None:
    docs = files.get("policies/org.yaml")
    if not isinstance(docs, list) or not docs:
        return
    doc = rng.choice(docs)
    spec = doc.setdefault("spec", {})
    if doc.get("kind") == "Policy":
        choice = rng.randrange(4)
        if choice == 0:
            spec["severity"] = rng.choice(["deny", "warn"])
        elif choice == 1:
            spec["condition"] = rng.choice(["spec.replyTo != null", "has(spec.port)",
                                            "spec.senderName.size() > 12"])
        elif choice == 2:
            spec["kinds"] = rng.choice([["OutgoingServer"], ["IncomingServer"],
                                        ["OutgoingServer", "RecipientFilter"]])
        else:
            spec["enabled"] = rng.choice([True, False])
    else:
        spec["resources"] = rng.choice([["OutgoingServer/graph-desk"], ["OutgoingServer/nope"],
                                        ["OutgoingServer/acme/dev-relay"]])


def break_reference(files: dict[str, Any], rng: random.Random) -> None:
    spots = [(doc["spec"], field) for docs in files.values() if isinstance(docs, list)
             for doc in docs if isinstance(doc, dict) and isinstance(doc.get("spec"), dict)
             for field in REFERENCE_FIELDS if field in doc["spec"]]
    if spots:
        spec, field = rng.choice(spots)
        name = rng.choice(["missing", "acme-no-external", "globex-egress", "hr-blocklist"])
        spec[field] = [name] if isinstance(spec[field], list) else name


def yaml_error(files: dict[str, Any], rng: random.Random) -> None:
    name = rng.choice(sorted(files))
    docs = files[name]
    text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
    files[name] = text + rng.choice(["\nkey: [unclosed\n", "\n\tbad: tab\n", "\na: 1\na: 2\n"])


def fix_file(files: dict[str, Any], rng: random.Random) -> None:
    broken = sorted(n for n, docs in files.items() if isinstance(docs, str))
    if broken:
        files[rng.choice(broken)] = []


EDITS = (change_field, add_resource, remove_resource, change_policy, break_reference,
         yaml_error, fix_file)


def _seen(result: ValidationResult | CachedValidation) -> tuple[Any, ...]:
    """Everything validate and plan show: diagnostics, count, desired state, derived values."""
    return ([d.as_dict() for d in result.diagnostics], result.count, _desired(result),
            result.derivations(),
            [(display, file, [(d.path, d.value, d.reason) for d in derived])
             for display, file, derived in result.derived_listing()])


def _desired(result: ValidationResult | CachedValidation) -> tuple[Any, ...] | None:
    """The desired state: its digest and each resource's as a plan reads them (a warm
    result before parsing any spec), then every resource in full."""
    desired = result.desired
    if desired is None:
        return None
    digests = [(key, digest_at(desired.resources, key)) for key in desired.resources]
    return desired.digest, digests, [(r.key, r.digest, r.body()) for r in desired]


def _same(root: Path, cache: Path) -> CachedValidation | ValidationResult:
    warm = validate_incremental(root, cache, today=TODAY)
    assert _seen(warm) == _seen(validate_path(root, today=TODAY))
    return warm


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 2**32)), min_size=1,
                max_size=4))
def test_random_edits_give_the_cold_result(edits: list[tuple[Any, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "config", Path(tmp) / "cache"
        files = _corpus()
        _write(root, files)
        _same(root, cache)  # records the stats
        assert isinstance(_same(root, cache), CachedValidation)  # fills the cache
        for edit, seed in edits:
            edit(files, random.Random(seed))
            _write(root, files)
            _same(root, cache)


def test_a_namespace_added_elsewhere_changes_a_cached_reference_hint(tmp_path: Path) -> None:
    files = _corpus()
    files["acme/outgoing-servers.yaml"][0]["spec"]["proxy"] = "globex-only"
    _write(tmp_path / "config", files)
    _same(tmp_path / "config", tmp_path / "cache")
    # an unchanged namespace's hint names the namespace that now has the proxy
    extra = next(d for d in files["acme/incoming.yaml"] if d["kind"] == "ProxyServer")
    extra = yaml.safe_load(yaml.safe_dump(extra))
    extra["metadata"].update(name="globex-only", namespace="globex")
    files["globex/proxy.yaml"] = [extra]
    _write(tmp_path / "config", files)
    warm = _same(tmp_path / "config", tmp_path / "cache")
    assert any("exists in namespace 'globex'" in d.hint for d in warm.diagnostics)


def test_damaged_or_forged_packs_are_ignored_and_rebuilt(tmp_path: Path) -> None:
    root, cache = tmp_path / "config", tmp_path / "cache"
    shutil.copytree(EXAMPLES, root)
    _same(root, cache)
    pack = pack_path(cache, context_digest())
    good = pack.read_bytes()
    for damaged in (good[: len(good) // 2], b"", b"0" * 64 + b"\n{}", good[:64] + b"\n[1]",
                    good.replace(b"helpdesk@acme.example", b"forged@acme.example")):
        pack.write_bytes(damaged)
        _same(root, cache)
        assert pack.read_bytes() != damaged  # rebuilt


def test_the_cache_holds_secret_references_never_values(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("ACME_GMAIL_CLIENT_SECRET", "s3cr3t-value-never-stored")
    root, cache = tmp_path / "config", tmp_path / "cache"
    shutil.copytree(EXAMPLES, root)
    _same(root, cache)
    stored = pack_path(cache, context_digest()).read_bytes()
    assert b"env:ACME_GMAIL_CLIENT_SECRET" in stored
    assert b"s3cr3t-value-never-stored" not in stored
    kept = [p.read_bytes() for p in (cache / cache_files.FOLDER).iterdir()]
    assert kept and not any(b"s3cr3t-value-never-stored" in k for k in kept)


def test_kept_parses_are_used_only_when_signed_for_their_file(tmp_path: Path) -> None:
    """A changed file re-checks its namespace from the kept parses of the namespace's other
    files; a kept parse that is forged, cut short or another file's is parsed again."""
    root, cache = tmp_path / "config", tmp_path / "cache"
    files = _corpus()
    _write(root, files)
    _same(root, cache)
    kept = {p.name: p for p in (cache / cache_files.FOLDER).iterdir()}
    assert len(kept) >= 10  # one per file of resources, policies aside
    blobs = sorted(kept.values(), key=lambda p: p.stat().st_size)
    small, large = blobs[0].read_bytes(), blobs[-1].read_bytes()
    # every acme file: each re-checked namespace reads its other files from the keep
    for path in blobs:
        path.write_bytes(b"0" * 64 + path.read_bytes()[64:])  # forged signature
    blobs[0].write_bytes(large)  # another file's, validly signed
    blobs[-1].write_bytes(small[: len(small) // 2])
    files["acme/filters.yaml"] = files["acme/filters.yaml"] + [
        {**files["acme/filters.yaml"][0], "metadata": {"name": "extra", "namespace": "acme"}}]
    _write(root, files)
    assert [cache_files.load(cache, p.name) for p in (blobs[0], blobs[1], blobs[-1])] == [
        None, None, None]
    _same(root, cache)
    assert any(cache_files.load(cache, name) is not None for name in kept)  # parsed, kept
