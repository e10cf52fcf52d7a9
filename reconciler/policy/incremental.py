"""Incremental validation: the pipeline of :mod:`reconciler.policy.validate`, redone
only where an input changed, with the same diagnostics and desired state.

Two kinds of cache entry, both content-addressed (see :mod:`cache_pack`):

- **file**: load and model-validation diagnostics of one file and the keys of
  its resources. Key: the pipeline's version, the file's path and bytes. Files
  holding Policy/PolicyException documents are parsed on every run.
- **namespace**: its resources (canonical spec, derivations) and everything the
  checks said about them: duplicates, references, semantics (all confined to
  one namespace) and each resource's policy findings before exceptions. Key:
  the version, the namespace, the (path, digest) of every file holding one of
  its resources, and the digests of the policies of the kinds it has.

The dependency rule that follows: a changed file re-runs every check of the
namespaces it touches (before or after the change); a changed policy re-runs
the namespaces holding a kind it checks. Outside the namespace, a reference
check only reads which namespaces hold the missing name (its hint): an entry
records that answer and is re-run when it differs. Three stages are cheap and
global, so they run every time on the cached facts: PolicyExceptions (waivers,
expiry: they depend on today), secret places (they depend on the operator's
environment) and the policy documents themselves. A run that meets a policy
evaluation error or no resources at all is done cold (its per-policy error
summary counts across namespaces).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from reconciler.config.checks import check_semantics
from reconciler.config.derive import defaulted_paths, derive_all
from reconciler.config.desired import (
    CanonicalResource,
    DesiredState,
    LazyResources,
    ResourceKey,
)
from reconciler.config.diagnostics import Diagnostic, Diagnostics, Severity
from reconciler.config.gcpause import gc_paused
from reconciler.config.loaded import Derivation, LoadedResource
from reconciler.config.loader import Document, config_files, load_text, locate, value_at
from reconciler.config.references import check_references, elsewhere, iter_references
from reconciler.config.secret_checks import CODE as SECRET_CODE
from reconciler.config.secret_checks import check_secret_places, model_refs
from reconciler.config.secret_places import PlaceRefused, current
from reconciler.config.yaml_errors import decode_file
from reconciler.policy import cache_files
from reconciler.policy import engine as policy_engine
from reconciler.policy.cache_pack import context_digest, pack_path, read_pack, write_pack
from reconciler.policy.validate import ValidationResult, _duplicates, canonical, parse_documents
from reconciler.policy.waivers import Waivers


class _Cold(Exception):
    """This run must take the cold path (see the module's docstring)."""


class _Keyed(NamedTuple):
    key: tuple[str, str, str]  # what Waivers reads of a resource


@dataclass(frozen=True, slots=True)
class Row:
    """One resource of a cached validation, as plan and `validate --show-derived` see it."""

    key: ResourceKey
    file: str
    index: int  # document position in its file
    derivations: list[Derivation]
    policy: list[Diagnostic]  # findings before PolicyExceptions
    secrets: list[list[Any]]  # [path, reference, line, col]: references, never values
    defaulted: list[str]  # dotted paths the model filled in because the YAML did not write them

    @property
    def display(self) -> str:
        return str(self.key)


@dataclass
class CachedValidation:
    """A :class:`ValidationResult` read from the cache: same diagnostics and desired state."""

    diagnostics: Diagnostics
    # the rows as cached, in load order: made into Rows only if asked (a plan reads the
    # derivations of its few changes; `validate --show-derived` reads them all)
    # [key, file, index, policy findings, secrets, namespace number, position in it]
    raw: list[list[Any]] = field(default_factory=list)
    # per namespace: the JSON of its rows' [derivations, defaulted paths], parsed if read
    derived: list[str] = field(default_factory=list)
    # per namespace: the JSON of its canonical resources, parsed only if a plan reads
    # one of them, and their [kind, namespace, name, digest]
    specs: list[str] = field(default_factory=list)
    digests: list[list[list[str]]] = field(default_factory=list)
    _desired: DesiredState | None = field(default=None, init=False, repr=False)
    _rows: list[Row] | None = field(default=None, init=False, repr=False)
    _opened: dict[int, list[Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.diagnostics.has_errors

    @property
    def count(self) -> int:
        return len(self.raw)

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = [_row(r, self._derived_of(r)) for r in self.raw]
        return self._rows

    @property
    def desired(self) -> DesiredState | None:
        if self._desired is None and self.ok:
            self._desired = DesiredState(CachedResources(self.specs, self.digests))
        return self._desired

    def derivations(self) -> Mapping[ResourceKey, set[str]]:
        """As the cold result's: derived values and the model's defaults (plans hide both)."""
        return _Derived({ResourceKey(*r[0]): r for r in self.raw}, self._derived_of)

    def _derived_of(self, row: list[Any]) -> list[Any]:
        """[derivations, defaulted paths] of a raw row."""
        ns, at = row[5], row[6]
        if ns not in self._opened:
            self._opened[ns] = orjson.loads(self.derived[ns])
        return self._opened[ns][at]

    def derived_listing(self) -> list[tuple[str, str, list[Derivation]]]:
        return [(r.display, r.file, r.derivations) for r in self.rows]


class _Derived(Mapping[ResourceKey, set[str]]):
    """Per resource, the dotted paths of its derived and defaulted values, made when read."""

    def __init__(self, raw: dict[ResourceKey, list[Any]],
                 derived_of: Callable[[list[Any]], list[Any]]) -> None:
        self._raw, self._of = raw, derived_of

    def __getitem__(self, key: ResourceKey) -> set[str]:
        derived, defaulted = self._of(self._raw[key])
        return {".".join(path) for path, _, _ in derived} | set(defaulted)

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def resources_of(specs: str) -> list[CanonicalResource]:
    """The canonical resources of one namespace's cached spec JSON."""
    return [CanonicalResource(ResourceKey(*key), api_version, spec, labels, digest)
            for key, api_version, labels, spec, digest in orjson.loads(specs)]


class CachedResources(LazyResources):
    """A cached validation's desired state: every digest at hand, a namespace's specs
    parsed when one of its resources is read (a plan reads only the changed ones)."""

    def __init__(self, specs: list[str], digests: list[list[list[str]]]) -> None:
        self._specs = specs
        found = {ResourceKey(kind, ns, name): (digest, i)
                 for i, rows in enumerate(digests) for kind, ns, name, digest in rows}
        self._where = {key: found[key] for key in sorted(found)}
        super().__init__(self._where)

    def digest(self, key: ResourceKey) -> str:
        return self._where[key][0]

    def _make(self, key: ResourceKey) -> CanonicalResource:
        for made in resources_of(self._specs[self._where[key][1]]):
            self._made.setdefault(made.key, made)
        return self._made[key]


@gc_paused()
def validate_incremental(root: Path, folder: Path, *,
                         today: date | None = None) -> ValidationResult | CachedValidation:
    """Validate ``root`` reusing (and refreshing) the cache in ``folder``."""
    today = today or date.today()
    if root.is_dir():
        context = context_digest()
        path = pack_path(folder, context)
        run = _Run(root, folder, context, read_pack(path), today)
        try:
            result = run.result()
        except _Cold:
            pass
        else:
            if run.changed:
                write_pack(path, run.pack)
                cache_files.prune(folder, set(run.pack["files"]))
            cache_files.save(folder, run.blobs)
            return result
    from reconciler.policy.validate import validate_path
    return validate_path(root, today=today)


# A file written less than this before its stat was recorded is read again
# (it may have been rewritten within the file system's timestamp resolution).
_RACY_NS = 2_000_000_000


def _stat(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _dump(d: Diagnostic) -> list[Any]:
    return [d.code, d.message, d.file, d.line, d.col, d.path, d.hint, str(d.severity)]


def _load(row: list[Any]) -> Diagnostic:
    return Diagnostic(*row[:7], severity=Severity(row[7]))


def _sha(*parts: Any) -> str:
    try:
        data = orjson.dumps(parts, default=str,
                            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits in a policy document
        data = repr(parts).encode()
    return hashlib.sha256(data).hexdigest()


class _Run:
    """One incremental validation: which entries still hold, and the ones made anew."""

    def __init__(self, root: Path, folder: Path, context: str, old: dict[str, Any],
                 today: date) -> None:
        self.root, self.folder, self.context, self.old, self.today = (root, folder, context,
                                                                      old, today)
        self.blobs: list[tuple[str, bytes]] = []  # (file key, parsed resources) to keep
        self.pack: dict[str, Any] = {"files": {}, "namespaces": {}}
        self.changed = False
        self.files: list[tuple[str, str]] = []  # (path, file key) in load order
        self.parsed: dict[str, tuple[list[LoadedResource], list[Document]]] = {}
        self.strings: dict[str, str] = {}

    # -- files ---------------------------------------------------------------
    def _scan(self) -> None:
        stats = self.old.get("stats", {})
        self.pack["stats"] = {}
        for name, path in config_files(self.root):
            try:
                st = path.stat()
                seen = stats.get(name)
                # like git's index: a file whose stat matches, and that was last written
                # well before it was recorded, still has the bytes it had then
                if seen and seen[:4] == _stat(st) and st.st_mtime_ns + _RACY_NS < seen[4]:
                    digest, data = seen[5], None
                else:
                    data = path.read_bytes()
                    digest = hashlib.sha256(data).hexdigest()
                    self.changed = True  # record the new stat
            except OSError as exc:  # the cold path reports it
                raise _Cold from exc
            self.pack["stats"][name] = [*_stat(st), time.time_ns(), digest]
            key = _sha(self.context, name, digest)
            entry = self.old["files"].get(key)
            if entry is None or entry["policies"]:
                entry = self._parse(name, key,
                                    data if data is not None else self._read(name, digest))
                self.changed |= key not in self.old["files"]
            self.files.append((name, key))
            self.pack["files"][key] = entry

    def _read(self, name: str, digest: str) -> bytes:
        try:
            data = (self.root / name).read_bytes()
        except OSError as exc:
            raise _Cold from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise _Cold  # changed while this run was reading the repo
        return data

    def _parse(self, name: str, key: str, data: bytes) -> dict[str, Any]:
        loaded = Diagnostics()
        text = decode_file(data, name)
        documents: list[Document] = []
        if isinstance(text, Diagnostic):
            loaded.add(text)
        else:
            documents = load_text(text, name, loaded, self.strings)
        validated = Diagnostics()
        self.parsed[name] = resources, policy_docs = parse_documents(documents, validated)
        if resources and not policy_docs and not (loaded.has_errors or validated.has_errors):
            kept = cache_files.blob(resources)  # before any check adds to the models
            if kept is not None:
                self.blobs.append((key, kept))
        return {"load": [_dump(d) for d in loaded.items],
                "parse": [_dump(d) for d in validated.items], "documents": len(documents),
                "policies": bool(policy_docs), "keys": [list(r.key) for r in resources]}

    def _resources(self, name: str, key: str) -> list[LoadedResource]:
        """The file's resources: parsed this run, kept from an earlier one, or parsed now.
        (A file holding policies was parsed by the scan: none come from the keep.)"""
        if name not in self.parsed:
            kept = cache_files.load(self.folder, key)
            if kept is not None:
                self.parsed[name] = kept, []
            else:
                self._parse(name, key, self._read(name, self.pack["stats"][name][5]))
        return self.parsed[name][0]

    # -- policies ------------------------------------------------------------
    def _policies(self, diags: Diagnostics) -> tuple[policy_engine.PolicySet, dict[str, str]]:
        documents = [*policy_engine.shipped_documents(diags),
                     *(d for name, _ in self.files if name in self.parsed
                       for d in self.parsed[name][1])]
        policy_set = policy_engine.parse_policies(documents, diags)
        by_kind: dict[str, list[Any]] = {}
        for doc in documents:
            if doc.data.get("kind") != "Policy":
                continue  # exceptions are applied on every run, after the cache
            kinds = value_at(doc.data, ("spec", "kinds"))
            if not (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)):
                kinds = ["*"]  # unreadable kinds: conservatively every kind
            for kind in kinds:
                by_kind.setdefault(kind, []).append([doc.file, doc.index, doc.data])
        return policy_set, {kind: _sha(docs) for kind, docs in by_kind.items()}

    # -- namespaces ----------------------------------------------------------
    def result(self) -> CachedValidation:
        self._scan()
        entries = [self.pack["files"][key] for _, key in self.files]
        _warm_or_cold(entries)
        policy_diags = Diagnostics()
        policy_set, policy_digests = self._policies(policy_diags)
        files_of: dict[str, list[tuple[str, str]]] = {}
        kinds_of: dict[str, set[str]] = {}
        names: dict[tuple[str, str], set[str]] = {}
        for (name, key), entry in zip(self.files, entries, strict=True):
            for kind, ns, res_name in entry["keys"]:
                if not files_of.setdefault(ns, []) or files_of[ns][-1][0] != name:
                    files_of[ns].append((name, key))
                kinds_of.setdefault(ns, set()).add(kind)
                names.setdefault((kind, ns), set()).add(res_name)
        plain = policy_engine.PolicySet.of(policy_set.policies.values())
        order = {name: i for i, (name, _) in enumerate(self.files)}
        by_ns = {}
        # namespaces each file still has to go through: its models are dropped after
        # the last, so a run that fills the cache peaks no higher than a cold one
        pending: dict[str, int] = {}
        for files in files_of.values():
            for name, _ in files:
                pending[name] = pending.get(name, 0) + 1
        for ns, files in files_of.items():
            digests = sorted((k, policy_digests[k]) for k in {*kinds_of[ns], "*"}
                             if k in policy_digests)
            key = _sha(self.context, ns, files, digests)
            entry = self.old["namespaces"].get(key)
            if entry is None or any(elsewhere(names, kind, target, ns) != where
                                    for kind, target, where in entry["elsewhere"]):
                entry = self._check(ns, files, names, plain)
                self.changed = True
            self.pack["namespaces"][key] = by_ns[ns] = entry
            for name, _ in files:
                pending[name] -= 1
                if not pending[name]:
                    self.parsed.pop(name, None)
        return self._assemble(entries, by_ns, order, policy_diags, policy_set)

    def _check(self, ns: str, files: list[tuple[str, str]],
               names: dict[tuple[str, str], set[str]],
               plain: policy_engine.PolicySet) -> dict[str, Any]:
        """Run every check of one namespace on its freshly parsed resources."""
        resources = [r for name, key in files for r in self._resources(name, key)
                     if r.model.metadata.namespace == ns]
        duplicates = Diagnostics()
        resources = _duplicates(resources, duplicates)
        derive_all(resources)
        rows, specs, digests, derived = [], [], [], []
        for res in resources:
            found = policy_engine.evaluate(plain, [res], today=self.today)
            if any(d.code == "policy-error" for d in found):
                raise _Cold
            made = canonical(res)
            specs.append([list(made.key), made.api_version, made.labels, made.spec, made.digest])
            digests.append([*made.key, made.digest])
            rows.append([list(made.key), res.file, res.document.index, [_dump(d) for d in found],
                         [[list(p), ref, *locate(res.document.data, p)]
                          for p, ref in model_refs(res.model)]])
            derived.append([[[list(d.path), d.value, d.reason] for d in res.derivations],
                            sorted(defaulted_paths(res.model.spec, ("spec",)))])
        missing = {(f.kind, target) for res in resources for f, target, _ in iter_references(res)
                   if target not in names.get((f.kind, ns), ())}
        # a string in the pack: a validate that needs no desired state never parses it
        # strings in the pack: parsed only when read (a plan reads a few of them)
        return {"rows": rows, "specs": orjson.dumps(specs).decode(), "digests": digests,
                "derived": orjson.dumps(derived).decode(),
                "duplicates": [_dump(d) for d in duplicates.items],
                "references": [_dump(d) for d in check_references(resources, names=names)],
                "semantics": [_dump(d) for d in check_semantics(resources)],
                "elsewhere": [[k, t, elsewhere(names, k, t, ns)] for k, t in sorted(missing)]}

    def _assemble(self, entries: list[dict[str, Any]], by_ns: dict[str, dict[str, Any]],
                  order: dict[str, int], policy_diags: Diagnostics,
                  policy_set: policy_engine.PolicySet) -> CachedValidation:
        """The diagnostics in the order the cold pipeline adds them (ties keep it)."""
        diags = Diagnostics()
        for stage in ("load", "parse"):
            diags.extend(_load(d) for e in entries for d in e[stage])
        for stage in ("duplicates", "references", "semantics"):
            diags.extend(_load(d) for e in by_ns.values() for d in e[stage])
        raw = sorted(([*r, i, at] for i, e in enumerate(by_ns.values())
                      for at, r in enumerate(e["rows"])), key=lambda r: (order[r[1]], r[2]))
        diags.extend(_secret_places(raw))
        diags.extend(policy_diags.items)
        findings: list[Diagnostic] = []
        waivers = Waivers.of(policy_set.exceptions, policy_set.policies,
                             [_Keyed(ResourceKey(*r[0])) for r in raw],  # type: ignore[misc]
                             self.today, findings)
        for row in raw:
            key = ResourceKey(*row[0])
            findings.extend(d for d in map(_load, row[3])
                            if not (waivers and waivers.use(d.code[len("policy:"):], key)))
        diags.extend(findings)
        diags.extend(waivers.unused())
        return CachedValidation(diags, raw, [e["derived"] for e in by_ns.values()],
                                [e["specs"] for e in by_ns.values()],
                                [e["digests"] for e in by_ns.values()])


def _warm_or_cold(entries: list[dict[str, Any]]) -> None:
    """Raise _Cold for an empty repo, or a file or document that did not load: the
    checks across resources must not report its knock-ons, which only the cold
    pipeline works out (its ``Unloaded``)."""
    if not any(e["documents"] for e in entries) or any(
            row[7] == Severity.ERROR for e in entries for row in (*e["load"], *e["parse"])):
        raise _Cold


def _row(raw: list[Any], extra: list[Any]) -> Row:
    key, file, index, policy, secrets = raw[:5]
    derived, defaulted = extra
    return Row(ResourceKey(*key), file, index,
               [Derivation(tuple(p), v, why) for p, v, why in derived],
               [_load(d) for d in policy], secrets, defaulted)


def _secret_places(raw: list[list[Any]]) -> Iterator[Diagnostic]:
    """The secret-places stage on cached references (the places are the environment's)."""
    setting = check_secret_places([])  # the environment's own problem, if it has one
    if setting:
        yield from setting
        return
    places = current()
    for row in raw:
        for path, ref, line, col in row[4]:
            try:
                places.check(ref)
            except PlaceRefused as exc:
                yield Diagnostic(code=SECRET_CODE, message=exc.message, file=row[1], line=line,
                                 col=col, path=".".join(str(p) for p in path), hint=exc.hint)
