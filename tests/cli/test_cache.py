"""`--no-cache` on validate and plan, and `reconcile cache clear`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from config.helpers import EXAMPLES

from reconciler.cli.main import cli

CACHE = Path(".reconcile") / "cache"


def test_validate_uses_the_cache_unless_told_and_clear_deletes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXAMPLES, "config")
    runner = CliRunner()
    cold = runner.invoke(cli, ["validate", "config", "--show-derived"])
    assert cold.exit_code == 0, cold.output
    assert not Path(".reconcile").exists()  # never made by validate or plan
    Path(".reconcile").mkdir()  # as the first apply into the default store makes it
    assert runner.invoke(cli, ["validate", "config", "--no-cache"]).exit_code == 0
    assert not CACHE.exists()
    for _ in range(2):  # fills the cache, then reads it
        warm = runner.invoke(cli, ["validate", "config", "--show-derived"])
        assert (warm.exit_code, warm.output) == (0, cold.output)
        assert list(CACHE.glob("plan-*.json"))
    plan = runner.invoke(cli, ["plan", "config", "--no-cache"])
    assert plan.exit_code == 1 and "no state store" in plan.output
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0 and "deleted .reconcile/cache/" in cleared.output
    assert not CACHE.exists()
