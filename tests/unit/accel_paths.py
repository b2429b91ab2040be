"""Run a media test module against both receive paths: compiled (media._fastpath) and pure Python.

``pytestmark = pytest.mark.usefixtures("accel_path")`` in a module (with this
fixture imported) runs each of its tests twice. The compiled variant is
skipped when the extension was not built (an install without a compiler).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from media import accel

try:
    from media import _fastpath as compiled
except ImportError:  # no compiler at install time: the Python path alone
    compiled = None


@pytest.fixture(params=["compiled", "python"])
def accel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``media.accel.ext`` set to the compiled module or to None for one test."""
    ext: ModuleType | None = compiled if request.param == "compiled" else None
    if request.param == "compiled" and ext is None:
        pytest.skip("media._fastpath is not built here")
    monkeypatch.setattr(accel, "ext", ext)
    yield request.param
