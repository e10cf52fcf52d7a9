"""The live state the syncer plans against, kept between syncs (SPEC X5).

Reading the whole store decodes every resource's JSON: about a second at
10,000 resources, for a commit that usually changes one. The syncer keeps the
snapshot it last read and brings it to the head with the revisions written
since (each revision records every resource it changed, before and after),
so a sync reads what changed, not the repository. The result is the same
``LiveState`` :meth:`Store.snapshot` returns; whenever catching up is not
plainly possible (another lineage, a long gap, a revision the store cannot
give) it reads the whole snapshot instead.
"""

from __future__ import annotations

from reconciler.state import LiveState, Revision, Store, StoreError

# More revisions than this since the last sync: one full read is cheaper and simpler.
MAX_CATCH_UP = 50


class LiveCache:
    def __init__(self) -> None:
        self._live: LiveState | None = None

    def snapshot(self, store: Store) -> LiveState:
        """The live state at the store's head now (call it under the apply lock)."""
        head = store.head()
        live = self._live
        if live is not None and live.lineage == store.lineage and live.revision == head:
            return live
        if (live is not None and live.lineage == store.lineage
                and 0 <= head - live.revision <= MAX_CATCH_UP):
            try:
                live = _caught_up(store, live, head)
            except StoreError:
                live = store.snapshot()
        else:
            live = store.snapshot()
        self._live = live
        return live

    def applied(self, revision: Revision) -> None:
        """The syncer wrote ``revision`` on top of the state it planned against: follow it
        in memory rather than reading it back (a first import is every resource)."""
        live = self._live
        if live is not None and live.revision == revision.number - 1:
            self._live = _advanced(live, [revision])


def _caught_up(store: Store, live: LiveState, head: int) -> LiveState:
    return _advanced(live, [store.revision(n) for n in range(live.revision + 1, head + 1)])


def _advanced(live: LiveState, revisions: list[Revision]) -> LiveState:
    resources = dict(live.resources)
    for revision in revisions:
        for change in revision.changes:
            if change.after is None:
                resources.pop(change.key, None)
            else:
                resources[change.key] = change.after
    head = revisions[-1].number if revisions else live.revision
    return LiveState(live.lineage, head, {k: resources[k] for k in sorted(resources)})
