"""`reconcile daemon`'s default process layout (`--workers auto`) and the option's checks."""

from __future__ import annotations

from pathlib import Path

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


def test_a_bad_access_file_stops_the_daemon_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text("tokens:\n  - name: a\n    secretRef: env:A\n    role: root\n",
                    encoding="utf-8")
    result = CliRunner().invoke(cli, ["daemon", "--access-file", str(path)])
    assert result.exit_code == 1
    assert f"--access-file: {path}:4:11: tokens.0.role.0: this value is not one of" \
        in result.output
    assert "Traceback" not in result.output


def test_daemon_help_names_the_access_file() -> None:
    result = CliRunner().invoke(cli, ["daemon", "--help"])
    assert "--access-file" in result.output and "requireToken" in result.output
