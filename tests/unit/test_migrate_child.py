"""``upgrade_in_subprocess``: the migration ``gbplatform run`` does at start, in a child interpreter.

The child is real (``python -m gbplatform.db.migrate``), so these tests also
check that the parent never imports Alembic for it (docs/performance.md "Memory").
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gbplatform.db import migrate


def test_upgrade_in_subprocess_migrates_to_head(tmp_path: Path) -> None:
    db = tmp_path / "gbp.db"
    migrate.upgrade_in_subprocess(f"sqlite:///{db}", "head")

    with sqlite3.connect(db) as conn:
        (version,), = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version == migrate.head_revision()
    assert {"devices", "channels"} <= tables


def test_a_database_at_head_starts_no_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'gbp.db'}"
    assert not migrate.at_head(url)  # never migrated: no alembic_version table
    migrate.upgrade_in_subprocess(url, "head")
    assert migrate.at_head(url)

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("started a migration child for a database at head")

    monkeypatch.setattr(subprocess, "run", no_child)
    migrate.upgrade_in_subprocess(url, "head")


def test_a_database_behind_head_is_not_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gbp.db'}"
    migrate.upgrade(url, "0001")
    assert not migrate.at_head(url)
    migrate.upgrade_in_subprocess(url, "head")
    assert migrate.current_revision(url) == migrate.head_revision()


def test_packaged_head_agrees_with_alembic() -> None:
    assert migrate.packaged_head() == migrate.head_revision()


def test_packaged_head_gives_up_on_what_it_does_not_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    monkeypatch.setattr(migrate, "script_location", lambda: tmp_path)
    assert migrate.packaged_head() == "b"
    (versions / "m.py").write_text('revision = "m"\ndown_revision = ("a", "b")\n')  # a merge
    assert migrate.packaged_head() is None
    (versions / "m.py").write_text('revision = "c"\ndown_revision = "a"\n')  # two heads
    assert migrate.packaged_head() is None


def test_upgrade_in_subprocess_failure_carries_the_childs_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gbp.db'}"
    with pytest.raises(migrate.MigrationError, match="(?s)exit 1.*Can't locate revision identified by 'f00d'"):
        migrate.upgrade_in_subprocess(url, "f00d")


def test_url_goes_through_stdin_not_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], bytes]] = []
    real_run = subprocess.run

    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.append((list(args), kwargs["input"]))  # type: ignore[arg-type]
        return real_run(args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(subprocess, "run", run)
    url = f"sqlite:///{tmp_path / 'gbp.db'}"
    migrate.upgrade_in_subprocess(url, "head")
    (args, stdin), = seen
    assert args == [sys.executable, "-m", "gbplatform.db.migrate", "head"]
    assert stdin == url.encode()


def test_child_without_url_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "gbplatform.db.migrate", "head"], input=b"",
                            capture_output=True, check=False, cwd=Path(migrate.__file__).parents[2])
    assert result.returncode == 2
    assert b"no database URL on stdin" in result.stderr


def test_importing_the_helper_does_not_import_alembic() -> None:
    code = ("import sys; import gbplatform.db.migrate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako', 'pygments')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                            cwd=Path(migrate.__file__).parents[2])
    assert result.stdout.strip() == b"[]"
