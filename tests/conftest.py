"""Shared pytest fixtures.

The protocol vectors (RFC 4475 torture messages, real device traffic) live in
the ``shared/`` folder next to the repository, not inside it: CI clones the
repository to some folder and puts a copy of ``shared/`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "GBP_SHARED_DIR"


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
    """The ``shared/`` folder holding the test vectors; skips the test when absent."""
    found = locate_shared_dir()
    if found is None:
        pytest.skip(missing_shared_reason())
    return found
