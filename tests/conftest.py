"""Shared pytest fixtures.

The protocol vectors (RFC 4475 torture messages, real device traffic) live in
the ``shared/`` folder next to the repository, not inside it: CI clones the
repository to some folder and puts a copy of ``shared/`` beside it.

PostgreSQL and ``shared/`` are on every machine of this project, CI's
included: with ``CI`` set (``true``, ``1``, ``yes``) their absence fails the
test instead of skipping it (issue 8, item 27), so a broken CI setup cannot
pass by skipping half the suite. Off CI they skip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "GBP_SHARED_DIR"
POSTGRES_ENV = "GBP_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def ci_requires_everything(env: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` is set to a true value: then nothing may skip for a missing service."""
    value = (os.environ if env is None else env).get("CI", "")
    return value.strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it when running in CI (see the module docstring)."""
    if ci_requires_everything():
        pytest.fail(f"{reason} (CI is set: this must not be skipped)", pytrace=False)
    pytest.skip(reason)


def postgres_admin_url() -> str:
    """The PostgreSQL database the tests create their own databases from (trust auth)."""
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL


def postgres_url(database: str) -> str:
    """The admin URL pointed at another database on the same server."""
    return make_url(postgres_admin_url()).set(database=database).render_as_string(hide_password=False)


def shared_dir_candidates() -> list[Path]:
    """Where the shared folder may be, in order of preference."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return [Path(env)]
    return [REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]


def locate_shared_dir() -> Path | None:
    """The shared folder, or None when it is not there (usable at collection time)."""
    for candidate in shared_dir_candidates():
        if candidate.is_dir():
            return candidate.resolve()
    return None


def missing_shared_reason() -> str:
    tried = ", ".join(str(p) for p in shared_dir_candidates())
    return f"shared vectors folder not found (tried {tried}); set {SHARED_ENV} to its path"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder holding the test vectors; skips the test when absent (fails in CI)."""
    found = locate_shared_dir()
    if found is None:
        skip_or_fail(missing_shared_reason())
    return found
