"""The syncer pulls over SSH with --sync-ssh-key-ref from a real sshd on loopback (SPEC X5):
the key comes from its secret reference, the host key is checked, and the key's text
never reaches a log line, an error or the sync state."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.git_repo import Repo

from reconciler.state import Store, open_store
from reconciler.state.contract import SyncPhase

from .kit import APPLY, server_yaml, syncer_for
from .sshd import Sshd, keygen


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state.db") as opened:
        yield opened


def _key_body(key: str) -> list[str]:
    """The base64 lines of a private key: what must never be shown."""
    return [line for line in key.splitlines() if line and not line.startswith("-----")]


async def test_the_syncer_pulls_over_ssh_with_its_key_reference(
        store: Store, repo: Repo, sshd: Sshd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = sshd.client_key.read_text()
    monkeypatch.setenv("SYNC_TEST_SSH_KEY", key)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "known_hosts").write_text(sshd.known_hosts)  # the pinned host key
    sha = repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "over ssh")
    syncer = syncer_for(store, repo, tmp_path, sync_repo=sshd.url(repo.bare),
                        sync_ssh_key_ref="env:SYNC_TEST_SSH_KEY")
    rec = await syncer.sync_once()
    assert (rec.phase, rec.last_applied) == (SyncPhase.SYNCED, sha), rec.reason
    assert rec.source == sshd.url(repo.bare).replace(f"{sshd.user}@", "")  # no user info
    assert "Accepted publickey" in sshd.logged()  # it came in with the key, over sshd
    key_file = cache / "ssh-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # a key the server does not know: a clear failure, still without the key's text
    keygen(tmp_path / "other", "not-authorized")
    wrong = (tmp_path / "other").read_text()
    monkeypatch.setenv("SYNC_TEST_SSH_KEY", wrong)
    repo.commit({"config/s.yaml": server_yaml(2526)}, "second")
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.FAILED and "refused the key" in rec.reason, rec.reason
    shown = rec.reason + caplog.text + str(store.sync.get().to_json())
    for text in (key, wrong):
        assert not any(line in shown for line in _key_body(text))


async def test_an_unknown_host_key_is_refused(
        store: Store, repo: Repo, sshd: Sshd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_TEST_SSH_KEY", sshd.client_key.read_text())
    repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "first")
    syncer = syncer_for(store, repo, tmp_path, sync_repo=sshd.url(repo.bare),
                        sync_ssh_key_ref="env:SYNC_TEST_SSH_KEY")
    rec = await syncer.sync_once()  # no known_hosts entry: never accepted blindly
    assert rec.phase is SyncPhase.FAILED and "SSH host key is not pinned" in rec.reason
    assert f"{tmp_path / 'cache' / 'known_hosts'}" in rec.reason  # where to pin it
    assert store.head() == 0
