"""With ``CI=true``, a missing ``shared/`` folder or PostgreSQL fails the run.

Issue 8, item 27: PostgreSQL and the shared vectors are on every machine of
this project, CI's included, so in CI their absence is a broken setup, not a
reason to skip 22 files or the PostgreSQL half of the registry tests. Off CI
(a laptop without PostgreSQL) they still skip.

These run a small pytest in a subprocess: a missing folder and a PostgreSQL
URL on a Unix socket path that does not exist, so no network is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ENV, REPO_ROOT, SHARED_ENV, ci_requires_everything

NO_POSTGRES = "postgresql://postgres@/test?host=/nonexistent-gbp-socket-dir"
SKIPPED = re.compile(r"\d+ skipped")


def run_pytest(tmp_path: Path, args: list[str], ci: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", SHARED_ENV, POSTGRES_ENV)}
    environ.update(env)
    if ci is not None:
        environ["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-o", "addopts=", *args],
        cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("1", True), ("True", True), ("yes", True),
    ("", False), ("false", False), ("0", False), (None, False),
])
def test_ci_flag(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"CI": value}
    assert ci_requires_everything(env) is expected


def test_missing_shared_folder_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-shared")
    target = ["tests/unit/test_sip_wire.py", "tests/unit/test_sip_rfc4475.py"]
    ci = run_pytest(tmp_path, target, "true", GBP_SHARED_DIR=missing)
    assert ci.returncode != 0, ci.stdout
    assert "shared vectors folder not found" in ci.stdout and not SKIPPED.search(ci.stdout), ci.stdout
    local = run_pytest(tmp_path, target, None, GBP_SHARED_DIR=missing)
    assert local.returncode == 0, local.stdout
    assert SKIPPED.search(local.stdout) and "failed" not in local.stdout and "error" not in local.stdout


def test_unreachable_postgres_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    target = ["tests/unit/test_migrations.py", "tests/unit/test_db.py", "-m", "postgres"]
    ci = run_pytest(tmp_path, target, "true", GBP_TEST_POSTGRES_URL=NO_POSTGRES)
    assert ci.returncode != 0, ci.stdout
    assert "PostgreSQL not available" in ci.stdout and not SKIPPED.search(ci.stdout), ci.stdout
    local = run_pytest(tmp_path, target, None, GBP_TEST_POSTGRES_URL=NO_POSTGRES)
    assert local.returncode == 0, local.stdout
    assert SKIPPED.search(local.stdout) and "failed" not in local.stdout and "error" not in local.stdout
