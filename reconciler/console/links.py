"""Links from history rows to the git host: a commit, a pull request.

Only when the sync repository is an http(s) URL (GitHub, Gitea, GitLab share the
``/commit/<sha>`` form; a PR number links as ``/pull/<n>``). A local path or an
ssh URL gives no link: the text is shown as it is.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def repo_base(sync_repo: str | None) -> str | None:
    if not sync_repo:
        return None
    parts = urlsplit(sync_repo)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")  # no user:password@
    path = parts.path.rstrip("/").removesuffix(".git")
    return f"{parts.scheme}://{host}{path}"


def commit_url(base: str | None, sha: str | None) -> str | None:
    if base is None or not sha or not all(c in "0123456789abcdef" for c in sha.lower()):
        return None
    return f"{base}/commit/{sha}"


def pull_url(base: str | None, number: str | None) -> str | None:
    if base is None or not number or not number.isdigit():
        return None
    return f"{base}/pull/{number}"
