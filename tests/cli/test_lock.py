"""`reconcile lock status` and `reconcile force-unlock` (SPEC P3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest

from reconciler.state import LockInfo, open_store

from .helpers_history import assert_user_error, run, run_installed


@pytest.fixture
def stale_lock(store_url: str) -> Iterator[LockInfo]:
    """A lock whose holder died: taken and never released by its process."""
    store = open_store(store_url)
    held: AbstractContextManager[LockInfo] = store.lock("ci-bot@runner-7", "apply", timeout=1,
                                                        plan_digest="ab" * 32)
    info = held.__enter__()
    try:
        yield info
    finally:
        store.force_unlock(info.id)
        store.close()


def test_status_when_unlocked(store_url: str) -> None:
    open_store(store_url).close()
    assert run("lock", "status", "--store", store_url).stdout.strip() == \
        "unlocked: no apply is running"
    data = json.loads(run("lock", "status", "--format", "json", "--store", store_url).stdout)
    assert data == {"locked": False}


def test_status_names_the_holder_and_how_to_release(store_url: str, stale_lock: LockInfo
                                                    ) -> None:
    out = run("lock", "status", "--store", store_url).stdout
    assert out.startswith("locked: held by ci-bot@runner-7 (apply) since ")
    assert f"lock id {stale_lock.id}" in out and f"applying plan {'ab' * 32}" in out
    assert f"`reconcile force-unlock {stale_lock.id}`" in out
    data = json.loads(run("lock", "status", "--format", "json", "--store", store_url).stdout)
    assert data["locked"] is True and data["id"] == stale_lock.id
    assert data["holder"] == "ci-bot@runner-7"


def test_force_unlock_releases_and_says_what(store_url: str, stale_lock: LockInfo) -> None:
    out = run("force-unlock", stale_lock.id, "--store", store_url).stdout
    assert out.startswith("released the lock held by ci-bot@runner-7 (apply) since ")
    assert stale_lock.id in out
    with open_store(store_url) as store:
        assert store.current_lock() is None
        with store.lock("next", "apply", timeout=0):  # free for the next apply
            pass


def test_force_unlock_unknown_id_is_an_error_and_keeps_the_lock(
    store_url: str, stale_lock: LockInfo
) -> None:
    result = run("force-unlock", "not-the-id", "--store", store_url, code=None)
    assert_user_error(result, "no lock with id 'not-the-id'", stale_lock.id,
                      "nothing was released")
    with open_store(store_url) as store:
        current = store.current_lock()
        assert current is not None and current.id == stale_lock.id


def test_force_unlock_when_nothing_is_locked(store_url: str) -> None:
    open_store(store_url).close()
    assert_user_error(run("lock", "force-unlock", "abc", "--store", store_url, code=None),
                      "the store is not locked")


def test_installed_command_exit_codes(store_url: str, stale_lock: LockInfo) -> None:
    proc = run_installed("force-unlock", "wrong", "--store", store_url)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = run_installed("force-unlock", stale_lock.id, "--store", store_url)
    assert proc.returncode == 0 and "released the lock" in proc.stdout
