"""Concurrent applies queue instead of failing (issue 11 item 7).

Twenty real `reconcile apply DIR --yes` processes on one store (SQLite and
PostgreSQL), each applying its own config: an apply of a folder plans under
the apply lock, against the head of that moment, so all of them succeed in
turn, every revision builds on the one before, and the history verifies.
A saved plan is different: it still refuses when its base is stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from plan.kit import initialised, write_tenants

from reconciler.config.desired import CanonicalResource
from reconciler.state import open_store

APPLIES = 20
TENANTS = {"north": 1, "south": 1}  # 4 resources, each apply updates 2 of them
LOCK_WAIT = "600"  # seconds: the queue must never time out on a loaded machine
DEADLINE_S = 900.0
WAITING = "waiting for the apply lock held by"


@dataclass
class Apply:
    """One `reconcile apply` process, its output in files we can read while it runs."""

    actor: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start(target: Path, store_url: str, actor: str, work: Path, *args: str) -> Apply:
    out, err = work / f"{actor}.out", work / f"{actor}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", str(target), "--store", store_url,
             "--actor", actor, "--lock-timeout", LOCK_WAIT, *args],
            stdout=o, stderr=e, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Apply(actor, proc, out, err)


def finish(applies: list[Apply]) -> None:
    for a in applies:
        try:
            a.proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            a.proc.wait()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


@contextmanager
def gate(store_url: str) -> Iterator[None]:
    """Hold the apply lock like a long apply would, so the applies pile up behind it."""
    with open_store(store_url) as store, store.lock("gate@ci", "apply", timeout=0):
        yield


def domain_of(resource: CanonicalResource) -> str:
    return next(d for d in resource.spec["domains"] if d.startswith("partner"))


def test_twenty_simultaneous_applies_queue_and_all_succeed(store_url: str, tmp_path: Path,
                                                          ) -> None:
    work = tmp_path / "work"
    work.mkdir()
    base = write_tenants(tmp_path / "base", TENANTS)
    first = start(base, store_url, "setup", work, "--yes")
    finish([first])
    assert first.proc.returncode == 0, first.stderr()
    # A plan saved now and applied after the queue: its base is stale by then.
    saved = tmp_path / "saved-plan.json"
    planned = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", str(write_tenants(
            tmp_path / "late", TENANTS, domain="late.example")), "--store", store_url,
         "--out", str(saved)], capture_output=True, text=True, timeout=300, check=False)
    assert planned.returncode == 2, planned.stderr

    configs = {f"applier-{i}": write_tenants(tmp_path / f"c{i}", TENANTS,
                                             domain=f"partner-{i}.example")
               for i in range(APPLIES)}
    with gate(store_url):
        applies = [start(config, store_url, actor, work, "--yes", "-m", f"change by {actor}")
                   for actor, config in configs.items()]
        try:
            # Every apply is now queued behind the gate, or (the hole this test is
            # about) has already planned against a head that is about to move.
            wait_until(lambda: all(
                a.proc.poll() is not None or WAITING in a.stderr() or "Plan:" in a.stdout()
                for a in applies), "all applies queued")
        except BaseException:
            for a in applies:
                a.proc.kill()
            raise
    finish(applies)

    failed = {a.actor: a.stdout()[-300:] + a.stderr() for a in applies if a.proc.returncode}
    assert not failed, f"{len(failed)} of {APPLIES} applies failed: {failed}"
    for a in applies:
        assert f"{WAITING} gate@ci (apply) since " in a.stderr(), a.stderr()
        assert "--lock-timeout" in a.stderr()
        assert "Applied revision " in a.stdout()

    with open_store(store_url) as store:
        assert store.head() == 1 + APPLIES
        revisions = [store.revision(n) for n in range(1, 2 + APPLIES)]
        live = store.snapshot()
        assert store.verify().ok
    assert sorted(r.meta.actor for r in revisions[1:]) == sorted(configs)
    for prev, rev in pairwise(revisions):
        # Each apply planned against what the one before it wrote: no update was lost.
        assert rev.meta.message == f"change by {rev.meta.actor}"
        before = {c.key: c.after for c in prev.changes}
        for change in rev.changes:
            assert change.before == before[change.key], (rev.number, change.key)
    last = revisions[-1].meta.actor
    assert {domain_of(r) for r in live if r.key.kind == "RecipientFilter"} == {
        f"partner-{last.removeprefix('applier-')}.example"}
    verify = subprocess.run([sys.executable, "-m", "reconciler", "history", "verify",
                             "--store", store_url], capture_output=True, text=True,
                            timeout=300, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    stale = start(saved, store_url, "late", work)
    finish([stale])
    assert stale.proc.returncode == 1
    assert "the live store changed since this plan was made" in stale.stderr()
    assert f"now at revision {1 + APPLIES}" in stale.stderr()
    with open_store(store_url) as store:
        assert store.head() == 1 + APPLIES


def test_a_waiting_apply_says_whom_it_waits_for_and_gives_up_in_time(
        store_url: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "config", TENANTS)
    url = initialised(store_url)
    with gate(url):
        waiting = start(config, url, "erin", tmp_path, "--yes")
        try:
            wait_until(lambda: waiting.proc.poll() is not None or WAITING in waiting.stderr()
                       or "Plan:" in waiting.stdout(), "the apply to wait")
            assert "Plan:" not in waiting.stdout()  # it plans only once it holds the lock
            assert waiting.proc.poll() is None, waiting.stderr()
            assert f"{WAITING} gate@ci (apply) since " in waiting.stderr()
        except BaseException:
            waiting.proc.kill()
            raise
    finish([waiting])
    assert waiting.proc.returncode == 0, waiting.stderr()
    with open_store(url) as store:
        assert store.head() == 1

    with gate(url):
        timed_out = subprocess.run(
            [sys.executable, "-m", "reconciler", "apply", str(config), "--store", url, "--yes",
             "--lock-timeout", "0"], capture_output=True, text=True, timeout=300, check=False)
    assert timed_out.returncode == 1
    assert "Traceback" not in timed_out.stderr
    assert "locked by gate@ci" in timed_out.stderr and "--lock-timeout" in timed_out.stderr
    with open_store(url) as store:
        assert store.head() == 1
