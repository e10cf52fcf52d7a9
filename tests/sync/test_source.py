"""The git source: real repositories over file:// and smart HTTP with a token."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers.git_repo import GitHttp, Repo

from reconciler.sync.source import GitError, GitSource


def test_follows_a_branch_over_file_url(repo: Repo, tmp_path: Path) -> None:
    first = repo.commit({"config/a.yaml": "a: 1\n", "other/x": "x"}, "first")
    source = GitSource(f"file://{repo.bare}", tmp_path / "cache", path="config")
    assert source.fetch() == first
    second = repo.commit({"config/a.yaml": "a: 2\n"}, "second\n\nwhy it changed")
    assert source.fetch() == second
    got = source.checkout(second)
    assert (got.sha, got.author, got.message) == (
        second, "Ada Admin <ada@example.test>", "second\n\nwhy it changed")
    assert (got.tree / "a.yaml").read_text() == "a: 2\n"
    (got.tree / "a.yaml").write_text("tampered")  # the tree is made the commit's again
    third = repo.commit({"config/a.yaml": None, "config/b.yaml": "b: 1\n"}, "third")
    assert source.fetch() == third
    tree = source.checkout(third).tree
    assert sorted(p.name for p in tree.iterdir()) == ["b.yaml"]
    assert (source.checkout(second).tree / "a.yaml").read_text() == "a: 2\n"


def test_a_pushed_symlink_is_a_plain_file(repo: Repo, tmp_path: Path) -> None:
    (repo.work / "config").mkdir()
    (repo.work / "config" / "leak.yaml").symlink_to("/etc/hostname")
    sha = repo.commit({}, "link")
    source = GitSource(str(repo.bare), tmp_path / "cache", path="config")
    leak = source.checkout(source.fetch()).tree / "leak.yaml"
    assert sha and not leak.is_symlink() and leak.read_text() == "/etc/hostname"


def test_a_missing_branch_or_folder_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit({"a.yaml": "a: 1\n"}, "first")
    with pytest.raises(GitError, match="--sync-branch 'prod'"):
        GitSource(str(repo.bare), tmp_path / "c", branch="prod").fetch()
    source = GitSource(str(repo.bare), tmp_path / "c", path="missing")
    source.fetch()
    with pytest.raises(GitError, match="no folder 'missing'"):
        source.checkout(sha)
    with pytest.raises(GitError, match="inside the repository"):
        GitSource(str(repo.bare), tmp_path / "c", path="../etc")


def test_smart_http_with_a_token(repo: Repo, git_http: GitHttp, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sha = repo.commit({"a.yaml": "a: 1\n"}, "first")
    monkeypatch.setenv("SYNC_TOKEN", git_http.token)
    source = GitSource(git_http.url, tmp_path / "c", token_ref="env:SYNC_TOKEN")
    assert source.fetch() == sha
    assert (source.checkout(sha).tree / "a.yaml").exists()


def test_a_wrong_token_is_refused_without_showing_it(repo: Repo, git_http: GitHttp,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    repo.commit({"a.yaml": "a: 1\n"}, "first")
    monkeypatch.setenv("SYNC_TOKEN", "wrong-token-9f8e")
    source = GitSource(git_http.url, tmp_path / "c", token_ref="env:SYNC_TOKEN")
    with pytest.raises(GitError) as caught:
        source.fetch()
    text = str(caught.value)
    assert "refused the credential" in text and "--sync-token-ref" in text
    assert "wrong-token-9f8e" not in text and git_http.refused >= 1


def test_a_password_in_the_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="carries a password") as caught:
        GitSource("https://bot:hunter2@git.example.test/r.git", tmp_path)
    assert "hunter2" not in str(caught.value)
