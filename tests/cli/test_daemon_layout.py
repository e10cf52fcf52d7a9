"""`reconcile daemon`'s default process layout (`--workers auto`) and the option's checks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli.daemon import MAX_AUTO_WORKERS, auto_workers
from reconciler.cli.main import cli


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (3, 2), (64, MAX_AUTO_WORKERS)])
def test_auto_uses_the_cores_beyond_the_first(cores: int, workers: int) -> None:
    # One core: one process (no split to pay for); more: one intake and the workers.
    assert auto_workers(cores) == workers


def test_auto_on_this_machine_is_a_count_it_can_run() -> None:
    assert 0 <= auto_workers() <= MAX_AUTO_WORKERS


@pytest.mark.parametrize("value", ["many", "-1", "65"])
def test_workers_takes_a_count_or_auto(value: str) -> None:
    result = CliRunner().invoke(cli, ["daemon", "--workers", value])
    assert result.exit_code == 2
    assert "write a number of worker processes (0-64) or auto" in result.output


def test_auto_and_role_together_are_refused() -> None:
    result = CliRunner().invoke(cli, ["daemon", "--workers", "auto", "--role", "intake"])
    assert result.exit_code != 0
    assert "--workers starts both roles itself" in result.output
