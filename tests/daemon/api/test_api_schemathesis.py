"""Schemathesis against the live API and its own OpenAPI document (issue 11 item 5).

``st run`` generates requests from ``/openapi.json`` (examples, coverage of every
constraint's edges, fuzzing, stateful sequences; valid and invalid data) and runs
every check it has: no 5xx, every status and header documented, bodies matching
their schemas, invalid requests refused, valid ones accepted, auth enforced. Any
failure it reports fails the test, once with a valid token and once without one
(then every /v1 route must answer its documented 401).

It runs in a subprocess against uvicorn serving the API on 127.0.0.1, so the
requests cross a real socket and reach the intake fast path as a desk's would.
The run is bounded (examples per operation) and seeded, so it is the same run
every time; ``SCHEMATHESIS_SEED`` / ``SCHEMATHESIS_MAX_EXAMPLES`` widen it by hand.
"""
# Fixtures are imported from the kit (no conftest of our own), so parameters named
# like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .api_kit import NAMESPACES, TOKEN, TOKEN_ENV, ServedApi, api, serve_api  # noqa: F401
from .schemathesis_hooks import NAMESPACES_ENV

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "3"))
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))
# Generous: the run takes 10-40 s here; a loaded machine may need several times that.
RUN_TIMEOUT_S = 600
OPERATIONS = 14  # every route in the document, /metrics and /healthz included


def _st() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert found, "schemathesis is a test dependency (pip install -e '.[test]')"
    return [found]


def run_schemathesis(url: str, workdir: Path, *, token: bool) -> tuple[dict[str, Any], str]:
    """One ``st run`` over the live document; its JSON report and its printed output."""
    report = workdir / "report.json"
    command = [
        *_st(), "run", f"{url}/openapi.json",
        "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1", "--continue-on-failure", "--generation-database", "none",
        "--request-timeout", "60", "--no-color",
        "--report", "json", "--report-json-path", str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS),
           NAMESPACES_ENV: ",".join(NAMESPACES)}
    if token:
        # The header's value from the environment, not the command line (config file
        # values expand ${VAR}).
        config = workdir / "schemathesis.toml"
        config.write_text(f'headers = {{ Authorization = "Bearer ${{{TOKEN_ENV}}}" }}\n')
        command[1:1] = ["--config-file", str(config)]
        env[TOKEN_ENV] = TOKEN
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    output = done.stdout + done.stderr
    assert report.exists(), output
    return json.loads(report.read_text()), output


def test_schemathesis_finds_no_failure_with_a_token(api: ServedApi, tmp_path: Path) -> None:
    _check(*run_schemathesis(api.url, tmp_path, token=True), token=True)


# The answers without a token do not depend on the store: SQLite only, to keep it short.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_schemathesis_finds_no_failure_without_a_token(api: ServedApi, tmp_path: Path) -> None:
    _check(*run_schemathesis(api.url, tmp_path, token=False), token=False)


def _check(report: dict[str, Any], output: str, *, token: bool) -> None:
    cases = report["test_cases"]
    # Say what ran, whatever the outcome (pytest -s shows it; the lead's figures).
    print(f"schemathesis seed={report['seed']} token={token}: {cases['generated']} cases, "
          f"{cases['unique_failures']} unique failures, {len(report['errors'])} errors")
    assert report["failures"] == [] and report["errors"] == [], output
    assert cases["with_failures"] == 0, output
    assert report["operations"]["tested"] == OPERATIONS, output
    # a run that generated next to nothing proves nothing
    assert cases["generated"] >= 20 * OPERATIONS, output
    assert report["exit_code"] == 0, output
    if token:
        assert report["warnings"]["missing_auth"] == [], output
