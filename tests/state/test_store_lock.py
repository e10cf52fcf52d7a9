"""The apply lock across processes: wait, time out naming the holder, force-unlock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import reconciler
from reconciler.state import LockInfo, LockTimeout, SqlStore

REPO = Path(next(iter(reconciler.__path__))).parent

# Holds the lock in another process until its stdin is closed.
HOLDER = """
import sys
from reconciler.state import open_store

with open_store(sys.argv[1]) as store:
    with store.lock("ci-runner-7", "apply", timeout=30, plan_digest="d" * 64) as info:
        print(info.id, flush=True)
        sys.stdin.read()
"""


@contextmanager
def held_elsewhere(store_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lock_id = proc.stdout.readline().strip()
        assert lock_id, f"holder process failed (exit {proc.poll()})"
        yield proc, lock_id
    finally:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=60)


def test_lock_is_taken_and_released(store: SqlStore) -> None:
    assert store.current_lock() is None
    with store.lock("alice@laptop", "apply", timeout=0, plan_digest="p" * 64) as info:
        assert store.current_lock() == info
        assert (info.holder, info.operation, info.plan_digest) == (
            "alice@laptop", "apply", "p" * 64)
    assert store.current_lock() is None


def test_lock_is_released_when_the_body_fails(store: SqlStore) -> None:
    with pytest.raises(RuntimeError), store.lock("alice", "apply", timeout=0):
        raise RuntimeError("apply failed")
    assert store.current_lock() is None


def test_lock_held_by_another_process_times_out_naming_the_holder(
    store: SqlStore, store_url: str
) -> None:
    with held_elsewhere(store_url) as (_proc, lock_id):
        with pytest.raises(LockTimeout) as err, store.lock("me", "apply", timeout=0.2):
            pytest.fail("got a lock another process holds")
        holder = err.value.holder
        assert (holder.id, holder.holder, holder.operation) == (lock_id, "ci-runner-7", "apply")
        assert "ci-runner-7" in str(err.value) and lock_id in str(err.value)
    with store.lock("me", "apply", timeout=0):  # released when the other process finished
        pass


def test_waiter_gets_the_lock_once_the_holder_releases_it(
    store: SqlStore, store_url: str
) -> None:
    got: list[LockInfo] = []
    failures: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            with store.lock("waiter", "apply", timeout=60) as info:
                got.append(info)
        except BaseException as exc:
            failures.append(exc)

    with held_elsewhere(store_url) as (proc, _lock_id):
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        assert proc.stdin is not None
        proc.stdin.close()  # the other process releases and exits
        waiter.join()
    assert failures == [] and [g.holder for g in got] == ["waiter"]


def test_force_unlock_frees_a_lock_left_by_a_dead_process(
    store: SqlStore, store_url: str
) -> None:
    with held_elsewhere(store_url) as (proc, lock_id):
        proc.kill()  # dies holding the lock: nothing releases it
        proc.wait(timeout=60)
    with pytest.raises(LockTimeout), store.lock("me", "apply", timeout=0):
        pytest.fail("got a lock a dead process still holds")
    freed = store.force_unlock(lock_id)
    assert freed is not None and freed.holder == "ci-runner-7" and freed.id == lock_id
    assert store.force_unlock(lock_id) is None
    with store.lock("me", "apply", timeout=0) as info:
        assert store.current_lock() == info


def test_a_waiter_hears_of_each_holder_once(store: SqlStore, store_url: str) -> None:
    seen: list[LockInfo] = []
    with held_elsewhere(store_url) as (_proc, lock_id), pytest.raises(LockTimeout), \
            store.lock("me", "apply", timeout=0.5, on_wait=seen.append):
        pytest.fail("got a lock another process holds")
    assert [(i.id, i.holder, i.operation) for i in seen] == [(lock_id, "ci-runner-7", "apply")]
