"""A repo parsed by forked workers loads exactly as one parsed in this process."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from reconciler.config import forkpool
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import PARALLEL_FILES, Document, load_tree
from reconciler.config.positions import PosDict, PosList
from reconciler.policy.validate import validate_documents

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"

_GOOD = """apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: out-{i}, namespace: team-{i}}}
spec:
  email: desk@team-{i}.example
  protocol: smtp
  host: smtp.team-{i}.example
  security: starttls
"""
# each a different way for a file to go wrong, or to need the node-based reader
_ODD = [
    "a: 1\nb: [unclosed\n",  # syntax error
    "a: 1\nb: 2\na: 3\n",  # duplicate key
    "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n",  # anchors, aliases, merge keys
    "kind: OutgoingServer\napiVersion: reconciler.dev/v1\nmetadata: {name: x}\nspec: {}\n",
    "- just\n- a list\n",
    "plain scalar\n",
    "a: " + "[" * 200 + "]" * 200 + "\n",  # nested past the limit
    "kind: Nope\n---\nkind: [1]\n---\n",
    "n: 0x" + "f" * 20000 + "\n",  # an int too large to print
]


def _shape(value: Any) -> Any:
    """The value with every container's marks, for an exact comparison."""
    if isinstance(value, PosDict):
        return ("map", bytes(value.marks), [(k, _shape(v)) for k, v in value.items()])
    if isinstance(value, PosList):
        return ("seq", bytes(value.marks), [_shape(v) for v in value])
    return (type(value).__name__, value)


def _load(root: Path, workers: int) -> tuple[list[Any], list[Any]]:
    diags = Diagnostics()
    docs = load_tree(root, diags, workers=workers)
    return _documents(docs), list(diags.items)


def _documents(docs: list[Document]) -> list[Any]:
    return [(d.file, d.index, d.start, d.mark, _shape(d.data)) for d in docs]


def _corpus(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"ns{i % 7}"
        folder.mkdir(exist_ok=True)
        text = _GOOD.format(i=i) if i % 5 else _ODD[(i // 5) % len(_ODD)]
        (folder / f"f{i:04}.yaml").write_text(text, encoding="utf-8")
    (root / "ns0" / "latin1.yaml").write_bytes(b"name: caf\xe9\n")


def test_examples_load_the_same_in_workers() -> None:
    serial = _load(EXAMPLES, 1)
    assert serial == _load(EXAMPLES, 2)
    assert serial[0]  # the examples did load


def test_a_corpus_with_errors_loads_and_validates_the_same_in_workers(tmp_path: Path) -> None:
    _corpus(tmp_path, 300)
    serial_docs, serial_diags = _load(tmp_path, 1)
    for workers in (2, 3):
        assert _load(tmp_path, workers) == (serial_docs, serial_diags)
    codes = {d.code for d in serial_diags}
    assert {"yaml-syntax", "duplicate-key", "file-unreadable"} <= codes, codes

    def validated(workers: int) -> list[Any]:
        diags = Diagnostics()
        docs = load_tree(tmp_path, diags, workers=workers)
        result = validate_documents(docs, diags, root=tmp_path)
        return [d.as_dict() for d in result.diagnostics]

    assert validated(1) == validated(2)


def test_only_a_large_repo_with_idle_cores_and_no_other_thread_is_split() -> None:
    # threads=1: alone in the process (other tests of the session may leave threads).
    assert forkpool.workers_for(PARALLEL_FILES - 1, PARALLEL_FILES, load=0.0, threads=1) == 1
    wanted = min(forkpool.cpus(), forkpool.MAX_WORKERS)
    assert forkpool.workers_for(PARALLEL_FILES, PARALLEL_FILES, load=0.0, threads=1) == wanted
    busy = float(forkpool.cpus())
    assert forkpool.workers_for(PARALLEL_FILES, PARALLEL_FILES, load=busy, threads=1) == 1
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert forkpool.workers_for(10 * PARALLEL_FILES, PARALLEL_FILES, load=0.0) == 1
    finally:
        release.set()
        other.join()


def test_the_pool_leaves_no_thread_behind(tmp_path: Path) -> None:
    _corpus(tmp_path, 40)
    before = threading.active_count()
    _load(tmp_path, 2)
    assert threading.active_count() == before


def test_batches_keep_every_item_in_order() -> None:
    items = list(range(1001))
    for workers in (1, 2, 5):
        runs = forkpool.batched(items, workers)
        assert [x for run in runs for x in run] == items
        assert len(runs) <= workers * 8


def test_cores_kept_busy_by_other_processes_right_now_leave_the_load_on_one_core() -> None:
    # Spinning children are runnable at every instant, so the count can only be higher
    # on a loaded machine, never lower: the assertions hold whatever else runs.
    hogs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('x'); "
                              "sys.stdout.flush()\nwhile True: pass"], stdout=subprocess.PIPE)
            for _ in range(forkpool.cpus())]
    try:
        for hog in hogs:
            assert hog.stdout is not None and hog.stdout.read(1) == b"x"  # spinning now
        assert forkpool.busy_cores() >= forkpool.cpus() - 0.5
        assert forkpool.workers_for(10 * PARALLEL_FILES, PARALLEL_FILES, threads=1) == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
