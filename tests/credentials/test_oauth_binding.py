"""SPEC S2 for OAuth clients, against real identity-provider peers: a client's secret
goes only to the token URL an apply bound it to. A store edited behind apply's back
(here a direct out-of-band revision, as `live set` or an admin tool writes) cannot
redirect it; an approved apply can, and says so in the history."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from oauth.kit import CLIENT, SECRET, SECRET_ENV, oauth_server
from peers.oauth_server import OAuthPeer
from peers.smtp import PeerCerts

from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.credentials import gate
from reconciler.oauth.cache import TokenCache
from reconciler.oauth.provider import OAuthTokenProvider
from reconciler.oauth.source import TokenError, fetch_token
from reconciler.plan.apply import CredentialMoveRefused, apply_plan
from reconciler.plan.diff import diff
from reconciler.plan.model import Plan
from reconciler.state import Action, Change, RevisionKind, RevisionMeta, SqlStore

KEY = ResourceKey("OutgoingServer", "default", "o365")


@pytest.fixture(autouse=True)
def _client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def elsewhere(certs: PeerCerts) -> Iterator[OAuthPeer]:
    """A second identity provider: where a moved tokenUrl points."""
    peer = OAuthPeer(certs).start()
    yield peer
    peer.stop()


def canonical(server: OutgoingServer) -> CanonicalResource:
    spec = server.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    return CanonicalResource.build(KEY, "reconciler.dev/v1", spec, None)


def tokens(store: SqlStore, key: bytes, idp: OAuthPeer) -> OAuthTokenProvider:
    return OAuthTokenProvider(TokenCache(store.tokens, key), ca_file=str(idp.certs.ca_file))


def plan_for(store: SqlStore, server: OutgoingServer) -> Plan:
    live = store.snapshot()
    desired = DesiredState.of([canonical(server)])
    return Plan.build(diff(desired, live), desired, live, prune=False,
                      bound=store.credential_bindings())


async def test_a_token_url_moved_in_the_store_never_receives_the_client_secret(
        store: SqlStore, token_key: bytes, idp: OAuthPeer, elsewhere: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    elsewhere.register(CLIENT, SECRET)
    bound = oauth_server(idp, provider="generic")
    apply_plan(store, plan_for(store, bound), RevisionMeta(actor="dana"), lock_timeout=5,
               force=False)
    moved = oauth_server(elsewhere, provider="generic")
    live = store.snapshot()
    store.commit([Change(Action.UPDATE, KEY, live.resources[KEY], canonical(moved))],
                 RevisionMeta(actor="mallory", kind=RevisionKind.OUT_OF_BAND),
                 base_revision=live.revision)

    gate.load(store)  # what the daemon does when it loads a revision
    with pytest.raises(TokenError) as refused:
        await fetch_token(tokens(store, token_key, elsewhere), moved)
    assert refused.value.permanent
    assert f"not bound to https://127.0.0.1:{elsewhere.port}/generic/token" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert elsewhere.token_requests == []  # nothing reached it: no secret, no client id
    # The bound token URL still works for the configuration that was applied.
    assert idp.valid_access(await fetch_token(tokens(store, token_key, idp), bound)) is not None


async def test_an_approved_apply_moves_the_client_and_records_the_approver(
        store: SqlStore, token_key: bytes, idp: OAuthPeer, elsewhere: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    elsewhere.register(CLIENT, SECRET)
    apply_plan(store, plan_for(store, oauth_server(idp, provider="generic")),
               RevisionMeta(actor="dana"), lock_timeout=5, force=False)
    moved = oauth_server(elsewhere, provider="generic")
    plan = plan_for(store, moved)
    token_url = f"https://127.0.0.1:{elsewhere.port}/generic/token"
    assert {(m.shown, m.endpoint) for m in plan.credential_moves} == {
        (f"oauth:generic/-/{CLIENT}", token_url), (f"secret:env:{SECRET_ENV}", token_url)}

    approve = "--approve-credential-move OutgoingServer/o365"
    with pytest.raises(CredentialMoveRefused, match=approve):
        apply_plan(store, plan, RevisionMeta(actor="erin"), lock_timeout=5, force=False)
    assert store.head() == 1
    gate.load(store)
    with pytest.raises(TokenError):
        await fetch_token(tokens(store, token_key, elsewhere), moved)
    assert elsewhere.token_requests == []

    rev = apply_plan(store, plan, RevisionMeta(actor="maria"), lock_timeout=5, force=False,
                     approvals=("OutgoingServer/o365",))
    assert {(m.credential, m.endpoint, m.approval, m.approved_by)
            for m in rev.meta.credential_moves} == {
        (f"oauth:generic/-/{CLIENT}", token_url, "OutgoingServer/o365", "maria"),
        (f"secret:env:{SECRET_ENV}", token_url, "OutgoingServer/o365", "maria")}
    assert store.revision(rev.number).meta.credential_moves == rev.meta.credential_moves
    assert store.verify().ok

    gate.load(store)
    token = await fetch_token(tokens(store, token_key, elsewhere), moved)
    assert elsewhere.valid_access(token) is not None
    assert elsewhere.count("client_credentials") == 1
