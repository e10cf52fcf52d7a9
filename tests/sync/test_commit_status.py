"""Commit statuses (SPEC X5 item 6) against a loopback peer speaking GitHub's REST format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.github import BAD_STATE, DOCS, GitHubStatuses

from reconciler.sync.commit_status import StatusTarget, post_status

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
TOKEN = "ghs_statusTokenNotForLogs123"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubStatuses]:
    monkeypatch.setenv("SYNC_TEST_GITHUB_TOKEN", TOKEN)
    peer = GitHubStatuses(TOKEN).start()
    yield peer
    peer.stop()


def target(peer: GitHubStatuses, **kw: str) -> StatusTarget:
    return StatusTarget("acme/mail-config", "env:SYNC_TEST_GITHUB_TOKEN", peer.api_url,
                        target_url="https://desk.example/v1/sync", **kw)


async def test_status_posted_in_githubs_format(github: GitHubStatuses) -> None:
    result = await post_status(target(github), SHA, "success", "Synced: applied as revision "
                               "12 " + "x" * 200)
    assert result.ok and result.status_code == 201 and result.attempts == 1
    [stored] = github.statuses
    assert stored["state"] == "success" and stored["context"] == "reconciler/sync"
    assert stored["url"] == f"/repos/acme/mail-config/statuses/{SHA}"
    assert stored["target_url"] == "https://desk.example/v1/sync"
    assert len(stored["description"]) == 140 and stored["description"].endswith("…")
    assert github.requests[0]["X-GitHub-Api-Version"] == "2022-11-28"


async def test_transient_answers_are_retried_honouring_retry_after(
        github: GitHubStatuses) -> None:
    github.faults = [(502, {}, {"message": "Server Error"}),
                     (429, {"Retry-After": "7"}, {"message": "API rate limit exceeded"})]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = await post_status(target(github), SHA, "failure", "Failed: 2 errors",
                               backoff_seconds=0.5, sleep=sleep)
    assert result.ok and result.attempts == 3
    assert waits == [0.5, 7.0]  # backoff, then at least what GitHub asked
    assert [s["state"] for s in github.statuses] == ["failure"]


async def test_final_refusals_say_why_without_the_token(
        github: GitHubStatuses, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):  # a state GitHub does not know never leaves
        await post_status(target(github), SHA, "degraded", "Degraded")
    assert github.requests == []
    github.faults = [(422, {}, {"message": "Validation Failed", "errors": [BAD_STATE],
                                "documentation_url": DOCS})]
    refused = await post_status(target(github), SHA, "error", "Failed")
    assert not refused.ok and refused.status_code == 422 and refused.attempts == 1
    assert refused.error == "HTTP 422: Validation Failed: state is not included in the list"
    monkeypatch.setenv("SYNC_TEST_GITHUB_TOKEN", "ghs_wrong")
    denied = await post_status(target(github), SHA, "error", "Failed")
    assert not denied.ok and denied.error == "HTTP 401: Bad credentials"
    assert denied.attempts == 1 and "ghs_" not in denied.error + refused.error
    assert github.statuses == []
