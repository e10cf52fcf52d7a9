"""Bench corpora: `examples/config/` cloned to N resources, and the octoDNS counterpart.

The reconciler corpus keeps acme, globex and policies as they are and adds
namespace clones ``acmeNNNN``/``globexNNNN`` (every name, reference and domain
that spells the namespace follows it; each globex clone gets its own copy of
the PolicyException globex has), so plans see every kind the product ships
with, not only outgoing servers. The octoDNS corpus holds the same number of
A records in zones of ``ZONE_RECORDS``, source and target written alike.
"""

from __future__ import annotations

import compileall
import importlib.util
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "config"
NAMESPACES = ("acme", "globex")
ZONE_RECORDS = 100  # a mid-sized zone; octoDNS plans zone by zone

_EXCEPTION = """apiVersion: reconciler.dev/v1
kind: PolicyException
metadata:
  name: {ns}-graph-volume
  namespace: {ns}
spec:
  policy: graph-outgoing-throughput
  resources: [OutgoingServer/graph-desk]
  reason: Low-volume desk, reviewed by the messaging team.
"""


def _example_files() -> dict[str, list[tuple[str, str]]]:
    """Per cloned namespace: (file name, text) of its example folder."""
    return {ns: [(p.name, p.read_text(encoding="utf-8"))
                 for p in sorted((EXAMPLES / ns).glob("*.yaml"))] for ns in NAMESPACES}


def per_pair() -> int:
    """Resources in one acme + globex pair of namespaces."""
    return sum(text.count("\nkind: ") + text.startswith("kind: ")
               for files in _example_files().values() for _, text in files)


def clone_examples(root: Path, n: int) -> list[Path]:
    """Write about ``n`` resources below ``root``; returns the clones' files."""
    shutil.copytree(EXAMPLES, root)
    written: list[Path] = []
    examples = _example_files()
    for i in range(1, max(1, round(n / per_pair()))):
        for ns, files in examples.items():
            clone = f"{ns}{i:04}"
            folder = root / clone
            folder.mkdir()
            word = re.compile(rf"\b{ns}\b")
            for name, text in files:
                path = folder / name
                path.write_text(word.sub(clone, text), encoding="utf-8")
                written.append(path)
            if ns == "globex":
                written.append(folder / "exceptions.yaml")
                written[-1].write_text(_EXCEPTION.format(ns=clone))
    return written


def change_examples(files: list[Path], share: float = 0.01) -> int:
    """Change the mail addresses in ``share`` of all files (not hosts: no credential moves)."""
    every = max(1, round(1 / share))
    candidates = [p for p in files if f"@{p.parent.name}.example" in p.read_text()]
    wanted = max(1, len(files) // every)
    step = max(1, len(candidates) // wanted)
    for path in candidates[::step][:wanted]:
        ns = path.parent.name
        path.write_text(path.read_text().replace(f"@{ns}.example", f"@{ns}-v2.example"))
    return wanted


_OCTODNS_CONFIG = """providers:
  config: {{class: octodns.provider.yaml.YamlProvider, directory: {source}}}
  target: {{class: octodns.provider.yaml.YamlProvider, directory: {target}}}
zones:
{zones}"""


def octodns_corpus(root: Path, n: int, share: float = 0.01) -> Path:
    """``n`` A records, source and target alike but ``share`` of them; returns the config."""
    source, target = root / "source", root / "target"
    source.mkdir(parents=True)
    target.mkdir()
    every = max(1, round(1 / share))
    zones = []
    for z in range(max(1, n // ZONE_RECORDS)):
        zone = f"zone{z:04}.example."
        zones.append(f"  {zone}: {{sources: [config], targets: [target]}}\n")
        lines, old = [], []
        for r in range(ZONE_RECORDS):
            i = z * ZONE_RECORDS + r
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            lines.append(f"host{r:03}:\n  type: A\n  value: {ip}\n")
            changed = ip if i % every else f"192.0.2.{r}"
            old.append(f"host{r:03}:\n  type: A\n  value: {changed}\n")
        (source / f"{zone}yaml").write_text("---\n" + "".join(lines))
        (target / f"{zone}yaml").write_text("---\n" + "".join(old))
    config = root / "octodns.yaml"
    config.write_text(_OCTODNS_CONFIG.format(source=source, target=target, zones="".join(zones)))
    return config


def octodns_available() -> bool:
    """octoDNS 1.x is a bench-only tool (`pip install octodns`), not a project dependency."""
    return importlib.util.find_spec("octodns") is not None and bool(shutil.which("octodns-sync"))


def octodns_command(config: Path) -> list[str]:
    """`octodns-sync` without --doit: it plans (and logs the plan) but writes nothing."""
    return [shutil.which("octodns-sync") or "octodns-sync", "--config-file", str(config)]


def compile_checkout() -> None:
    """Byte-compile the checkout, as `pip install` does: the children then load
    bytecode even where PYTHONDONTWRITEBYTECODE is set (it is on the dev machines),
    instead of compiling ~80 modules each (~0.1 s CPU a process, octoDNS never pays it)."""
    compileall.compile_dir(ROOT / "reconciler", quiet=1)
