"""How `reconcile validate` scales with the size of a config repo.

Generates N realistic resources (every kind; outgoing servers with varied
protocols and auth, rules and filters that reference them) spread over
namespaces and files of about 50 resources each, then measures for each N:

- a fresh `reconcile validate DIR --format json > /dev/null` process: wall
  time, CPU time and peak memory (rusage of that one child, read in a helper
  process so earlier runs do not mask it);
- the same pipeline in-process, stage by stage, in CPU seconds (on a shared
  machine wall time mostly measures the neighbours);
- for the first N, the bare parse of the same files with PyYAML's CSafeLoader
  and with ruamel.yaml's round-trip loader, next to our positional loader.

Prints figures only, asserts nothing. Target: about 2 s for 10,000 resources,
growing linearly.

    python bench/validate_scale.py                 # N = 1000, 10000, 50000
    python bench/validate_scale.py --n 1000 --n 10000
    python bench/validate_scale.py --n 10000 --profile   # cProfile of the in-process run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_FILE = 50
PER_NAMESPACE = 100

T = TypeVar("T")

# --------------------------------------------------------------------------- generation

HEADER = "# yaml-language-server: $schema=../../schemas/reconciler.json\n"
MODULES = ("request", "problem", "change", "release", "task")
DEPARTMENTS = ("HR", "IT", "Finance", "Legal", "Sales", "Facilities", "Payroll")
SITES = ("Berlin", "Chennai", "Austin", "Lab", "Annex", "HQ")


def _variant(i: int) -> int:
    """Server ``i`` of a namespace: 0 is the primary, the others cycle through 1-7."""
    return 0 if i == 0 else 1 + (i - 1) % 7


def _outgoing(rnd: random.Random, ns: str, i: int, filters: list[str], proxy: str) -> str:
    name = f"out-{i:03d}"
    variant = _variant(i)
    labels = "{env: prod, team: desk}" if variant != 6 else "{env: dev}"
    extra = ""
    if rnd.random() < 0.4:
        extra += f"  recipientFilter: {rnd.choice(filters)}\n"
    if rnd.random() < 0.2:
        extra += f"  proxy: {proxy}\n"
    if rnd.random() < 0.3:
        extra += f"  attachmentLimitMB: {rnd.choice((10, 15, 25))}\n"
    head = f"""apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata:
  name: {name}
  namespace: {ns}
  labels: {labels}
spec:
  email: desk-{i}@{ns}.example
  senderName: {ns.title()} Desk {i}
  replyTo: support-{i}@{ns}.example
"""
    if variant == 0:  # the namespace's primary: Gmail SMTP with OAuth
        body = f"""  protocol: smtp
  host: smtp.gmail.com
  alternateHost: smtp-relay.gmail.com
  security: starttls            # port 587 is derived
  auth:
    type: oauth2
    provider: google
    clientId: {rnd.randrange(10**9)}-{ns}.apps.googleusercontent.com
    clientSecret: {{secretRef: env:{ns.upper().replace('-', '_')}_GMAIL_SECRET}}
  primary: true
"""
    elif variant == 1:  # Office 365 SMTP with XOAUTH2
        body = f"""  protocol: smtp
  host: smtp.office365.com
  port: 587
  security: starttls
  auth:
    type: oauth2
    provider: microsoft
    tenant: {ns}.onmicrosoft.com
    clientId: {rnd.randrange(16**8):08x}-0b7d-4e55-9a61-5d2c8e7f1a01
    clientSecret: {{secretRef: file:/run/secrets/{ns}-o365}}
"""
    elif variant == 2:  # on-prem relay, implicit TLS, basic auth
        body = f"""  protocol: smtp
  host: relay{i}.mail.{ns}.example
  security: tls
  auth:
    type: basic
    username: svc-desk-{i}
    password: {{secretRef: env:RELAY_{i}_PASSWORD}}
"""
    elif variant == 3:  # Graph, app-only
        body = f"""  protocol: graph
  nationalCloud: {rnd.choice(("global", "usGovL4", "germany"))}
  auth:
    type: oauth2
    provider: microsoft
    grant: clientCredentials
    tenant: {rnd.randrange(16**8):08x}-4a5e-46f7-9081-a2b3c4d5e6f7
    clientId: {rnd.randrange(16**8):08x}-1f8a-4b2c-a3d4-e5f60718293a
    clientSecret: {{secretRef: env:GRAPH_SEND_{i}}}
"""
    elif variant == 4:  # Exchange on-premises over EWS
        body = f"""  protocol: ews
  host: exchange.{ns}.example
  auth:
    type: basic
    username: svc-ews-{i}
    password: {{secretRef: env:EWS_{i}_PASSWORD}}
  saveToSentItems: false
"""
    elif variant == 5:  # generic OAuth provider
        body = f"""  protocol: smtp
  host: smtp.mailhost{i}.example
  port: 465
  security: tls
  auth:
    type: oauth2
    provider: generic
    clientId: desk-{i}
    clientSecret: {{secretRef: enc:v1:gAAAAABm{rnd.randrange(16**12):012x}AbCdEf==}}
    authorizationUrl: https://id.mailhost{i}.example/oauth2/authorize
    tokenUrl: https://id.mailhost{i}.example/oauth2/token
    scope: [mail.send, offline_access]
"""
    elif variant == 6:  # plain relay in the lab (allowed: env: dev)
        body = f"""  protocol: smtp
  host: relay.dev.{ns}.example
  security: none                # port 25 is derived
  enabled: false
"""
    else:  # unauthenticated internal relay with STARTTLS
        body = f"""  protocol: smtp
  host: smtp-int-{i}.{ns}.example
  security: starttls
  timeoutSeconds: {rnd.choice((30, 60, 120))}
"""
    return f"# Outgoing server {i} of {ns}.\n" + head + body + extra


def _rule(rnd: random.Random, ns: str, i: int, servers: list[str]) -> str:
    conditions = []
    for _ in range(rnd.randint(0, 3)):
        if rnd.random() < 0.3:
            picks = ", ".join(rnd.sample(DEPARTMENTS, 2))
            conditions.append(f"    - {{field: department, operator: in, values: [{picks}]}}")
        elif rnd.random() < 0.2:
            conditions.append('    - {field: location, operator: regex, '
                              'value: "^(Building [AB]|Annex)$"}')
        else:
            site = rnd.choice(SITES)
            conditions.append(f"    - {{field: site, operator: equals, value: {site}}}")
    cond = ("  conditions:\n" + "\n".join(conditions) + "\n") if conditions else ""
    return f"""apiVersion: reconciler.dev/v1
kind: OutgoingEmailRule
metadata:
  name: rule-{i:03d}
  namespace: {ns}
spec:
  module: {rnd.choice(MODULES)}
  order: {i * 10}
  match: {rnd.choice(("all", "any"))}
{cond}  server: {rnd.choice(servers)}
  description: Route {rnd.choice(DEPARTMENTS)} notifications
"""


def _incoming(rnd: random.Random, ns: str, i: int, filters: list[str], spam: list[str],
              command: str) -> str:
    variant = i % 4
    head = f"""apiVersion: reconciler.dev/v1
kind: IncomingServer
metadata:
  name: in-{i:03d}
  namespace: {ns}
spec:
  email: inbox-{i}@{ns}.example
  recipientFilter: {rnd.choice(filters)}
  spamFilters: [{", ".join(spam)}]
  emailCommand: {command}
  defaults: {{technicianGroup: Service Desk, category: General}}
"""
    if variant == 0:
        body = f"""  protocol: imaps
  host: imap.{ns}.example
  auth:
    type: basic
    password: {{secretRef: env:IMAP_{i}_PASSWORD}}
  errorFolder: {{enabled: true, name: desk-errors, stopFetchingAfter: 50}}
"""
    elif variant == 1:
        body = f"""  protocol: graph
  auth:
    type: oauth2
    provider: microsoft
    grant: clientCredentials
    tenant: {ns}.onmicrosoft.com
    clientId: {rnd.randrange(16**8):08x}-9e0f-4a1b-8c2d-3e4f5a6b7c8d
    clientSecret: {{secretRef: env:GRAPH_READ_{i}}}
"""
    elif variant == 2:
        body = f"""  protocol: pop3s
  host: pop.{ns}.example
  fetchIntervalMinutes: 5
  auth:
    type: basic
    username: pop-{i}
    password: {{secretRef: file:/run/secrets/pop-{i}}}
"""
    else:
        body = f"""  protocol: ews
  host: exchange.{ns}.example
  auth:
    type: basic
    password: {{secretRef: env:EWS_IN_{i}}}
"""
    return head + body


def _namespace(rnd: random.Random, index: int) -> Iterator[tuple[str, str]]:
    """(file stem, document) pairs of one namespace, ``PER_NAMESPACE`` in all."""
    ns = f"tenant-{index:04d}"
    filters = [f"filter-{j}" for j in range(4)]
    spam = ["out-of-office", "bounces"]
    proxy, command = "egress", "commands"
    yield "settings", f"""apiVersion: reconciler.dev/v1
kind: MailSettings
metadata:
  name: {ns}
  namespace: {ns}
spec:
  guestTickets: {rnd.choice(("true", "false"))}
  createFromCc: true
  baseDelimiter: "##"
  requestIdPrefixes: {{request: RE, task: TA, change: CH, problem: PB}}
  attachmentLimitMB: {rnd.choice((15, 20, 25))}
  retry: {{maxAttempts: 8, lifetimeMinutes: {rnd.choice((720, 1440, 2880))}}}
"""
    yield "settings", f"""apiVersion: reconciler.dev/v1
kind: ProxyServer
metadata:
  name: {proxy}
  namespace: {ns}
spec:
  type: http
  host: proxy.{ns}.example
  port: 3128
  username: desk-daemon
  password: {{secretRef: env:PROXY_PASSWORD}}
  noProxy: [relay.dev.{ns}.example]
"""
    for j, name in enumerate(filters):
        kind = "allow" if j % 2 == 0 else "ignore"
        yield "settings", f"""apiVersion: reconciler.dev/v1
kind: RecipientFilter
metadata:
  name: {name}
  namespace: {ns}
spec:
  type: {kind}
  emails: [all-staff@{ns}.example, noreply@{ns}.example]
  domains: [{ns}.example, partner-{j}.example]
"""
    for name, value in zip(spam, ("Out of office", "Undeliverable"), strict=True):
        yield "settings", f"""apiVersion: reconciler.dev/v1
kind: SpamFilter
metadata:
  name: {name}
  namespace: {ns}
spec:
  match: any
  conditions:
    - {{field: subject, operator: contains, value: {value}}}
    - {{field: from, operator: startsWith, value: mailer-daemon@}}
"""
    yield "settings", f"""apiVersion: reconciler.dev/v1
kind: EmailCommand
metadata:
  name: {command}
  namespace: {ns}
spec:
  subjectContains: "[desk-cmd]"
  delimiter: $
  allowedFields: [Priority, Urgency, Category, Technician, Status]
"""
    servers = [f"out-{i:03d}" for i in range(30)]
    for i in range(30):
        yield "outgoing", _outgoing(rnd, ns, i, filters, proxy)
    for i in range(10):
        yield "incoming", _incoming(rnd, ns, i, filters, spam, command)
    inboxes = [f"in-{i:03d}" for i in range(10)]
    for i in range(6):
        yield "incoming", f"""apiVersion: reconciler.dev/v1
kind: IncomingEmailRule
metadata:
  name: in-rule-{i}
  namespace: {ns}
spec:
  servers: [{rnd.choice(inboxes)}]
  order: {i * 10}
  match: any
  conditions:
    - {{field: from, operator: endsWith, value: "@board.{ns}.example"}}
  action: setFields
  setFields: {{technicianGroup: Tier 2, priority: High}}
"""
    usable = [s for i, s in enumerate(servers) if _variant(i) != 6]  # not the disabled relay
    for i in range(45):
        yield "rules", _rule(rnd, ns, i, usable)


def generate(root: Path, n: int, seed: int = 7) -> int:
    """Write ``n`` resources below ``root``; returns the number of files."""
    rnd = random.Random(seed)
    files: dict[Path, list[str]] = {}
    count = 0
    index = 0
    while count < n:
        ns = f"tenant-{index:04d}"
        for stem, doc in _namespace(rnd, index):
            if count == n:
                break
            group = files.setdefault(root / ns / f"{stem}.yaml", [])
            group.append(doc)
            count += 1
        index += 1
    written = 0
    for path, docs in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        for part in range(0, len(docs), PER_FILE):
            name = path if part == 0 else path.with_name(f"{path.stem}-{part // PER_FILE}.yaml")
            name.write_text(HEADER + "---\n".join(docs[part:part + PER_FILE]), encoding="utf-8")
            written += 1
    return written


# --------------------------------------------------------------------------- measurement

_CHILD = """
import resource, subprocess, sys, time
cmd = [sys.executable, "-c", "from reconciler.cli.main import main; main()",
       "validate", sys.argv[1], "--format", "json"]
start = time.perf_counter()
rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, rc)
"""


def run_fresh(root: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak MB of one `reconcile validate` process."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]) / 1024  # ru_maxrss: KiB on Linux


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    # CPU time of this process: on a shared machine wall time mostly measures the neighbours.
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


STAGES = ("parse", "models", "derive", "refs+checks", "policies", "desired")


def stages(root: Path) -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds per stage of the validate pipeline, run in this process."""
    from reconciler.config.gcpause import gc_paused

    with gc_paused():  # as validate_path runs
        return _stages(root)


def _stages(root: Path) -> tuple[dict[str, float], dict[str, int]]:
    from reconciler.config.checks import check_semantics
    from reconciler.config.derive import derive_all
    from reconciler.config.desired import DesiredState
    from reconciler.config.diagnostics import Diagnostics, Severity
    from reconciler.config.loader import load_tree
    from reconciler.config.references import check_references
    from reconciler.config.secret_checks import check_secret_places
    from reconciler.policy import engine
    from reconciler.policy import validate as v

    diags = Diagnostics()
    t: dict[str, float] = {}
    documents, t["parse"] = _timed(lambda: load_tree(root, diags))
    (resources, policy_docs), t["models"] = _timed(lambda: v.parse_documents(documents, diags))
    resources, dup = _timed(lambda: v._duplicates(resources, diags))
    _, t["derive"] = _timed(lambda: derive_all(resources))
    t["derive"] += dup

    def cross() -> None:
        diags.extend(check_references(resources))
        diags.extend(check_semantics(resources))
        diags.extend(check_secret_places(resources))

    _, t["refs+checks"] = _timed(cross)

    def policies() -> None:
        parsed = engine.parse_policies([*engine.shipped_documents(diags), *policy_docs], diags)
        diags.extend(engine.evaluate(parsed, resources, today=date.today()))

    _, t["policies"] = _timed(policies)
    _, t["desired"] = _timed(lambda: DesiredState.of(v.canonical(r) for r in resources))
    counts = {str(s): sum(d.severity is s for d in diags.items) for s in Severity}
    counts["resources"] = len(resources)
    return t, counts


def parse_baselines(root: Path) -> dict[str, float]:
    """Bare parse of every file: PyYAML C loader, ruamel round-trip, our positional loader."""
    import yaml
    from ruamel.yaml import YAML

    from reconciler.config.diagnostics import Diagnostics
    from reconciler.config.loader import iter_config_files, load_tree

    texts = [p.read_text(encoding="utf-8") for p in iter_config_files(root)]
    rt = YAML(typ="rt")

    def pyyaml() -> None:
        for text in texts:
            list(yaml.load_all(text, Loader=yaml.CSafeLoader))

    def ruamel() -> None:
        for text in texts:
            list(rt.load_all(text))

    from reconciler.config.gcpause import gc_paused

    with gc_paused():  # the same conditions for all three, as validate_path runs
        return {
            "PyYAML CSafeLoader (yaml.load_all)": _timed(pyyaml)[1],
            "ruamel.yaml round-trip": _timed(ruamel)[1],
            "reconciler loader (C + positions)": _timed(
                lambda: load_tree(root, Diagnostics()))[1],
        }


def _best(runs: int, fn: Callable[[], T], key: Callable[[T], float]) -> T:
    return min((fn() for _ in range(runs)), key=key)


def measure(root: Path, n: int, repeat: int) -> dict[str, Any]:
    files = generate(root, n)
    wall, cpu, peak = _best(repeat, lambda: run_fresh(root), key=lambda r: r[1])
    timing, counts = _best(repeat, lambda: stages(root), key=lambda r: sum(r[0].values()))
    from reconciler.policy.validate import validate_path

    whole = min(_timed(lambda: validate_path(root))[1] for _ in range(repeat))
    return {"n": n, "files": files, "wall": wall, "cpu": cpu, "peak": peak, "stages": timing,
            "validate_path": whole, "counts": counts}


def report(rows: list[dict[str, Any]], startup: tuple[float, float, float], repeat: int,
           baseline: dict[str, float], baseline_row: dict[str, Any]) -> None:
    print(f"\nvalidate scale  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}; best of {repeat})")
    print(f"fresh process on a 1-resource repo (start-up and imports): wall {startup[0]:.2f} s, "
          f"CPU {startup[1]:.2f} s, peak {startup[2]:.0f} MB\n")
    head = (f"{'N':>7} {'files':>5} {'wall s':>7} {'CPU s':>6} {'CPU/1k ms':>9} "
            f"{'net/1k ms':>9} {'peak MB':>7} |"
            + "".join(f" {s:>11}" for s in STAGES) + f" {'sum':>6} {'validate_path':>13}")
    print(head)
    print("-" * len(head))
    for row in rows:
        n = row["n"]
        stage_cols = "".join(f" {row['stages'][s]:>11.3f}" for s in STAGES)
        print(f"{n:>7} {row['files']:>5} {row['wall']:>7.2f} {row['cpu']:>6.2f} "
              f"{row['cpu'] / n * 1e6:>9.0f} {(row['cpu'] - startup[1]) / n * 1e6:>9.0f} "
              f"{row['peak']:>7.0f} |{stage_cols} {sum(row['stages'].values()):>6.2f} "
              f"{row['validate_path']:>13.2f}")
    print("\nwall/CPU/peak: a fresh `reconcile validate DIR --format json > /dev/null` "
          "process;\nnet/1k: its CPU minus the start-up above; stages, sum and validate_path: "
          "CPU seconds in-process.")
    for row in rows:
        print(f"  N={row['n']}: {json.dumps(row['counts'])}")
    print(f"\nparse only, N={baseline_row['n']} ({baseline_row['files']} files), CPU s:")
    for name, seconds in baseline.items():
        print(f"  {name:<36} {seconds:>7.3f}")
    print("  (CPU seconds, garbage collector paused as during validate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="resources (repeatable)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per N; the best is shown")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of the in-process run of the largest N")
    args = parser.parse_args()
    sizes = sorted(args.n or [1000, 10000, 50000])

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="validate-scale-") as tmp:
        empty = Path(tmp) / "empty"
        generate(empty, 1)
        startup = _best(args.repeat, lambda: run_fresh(empty), key=lambda r: r[1])
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            rows.append(measure(root, n, args.repeat))
            print(f"N={n} done", file=sys.stderr, flush=True)
            if n == sizes[0]:
                baseline = parse_baselines(root)
            if args.profile and n == sizes[-1]:
                _profile(root)
    report(rows, startup, args.repeat, baseline, rows[0])


def _profile(root: Path) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    stages(root)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
