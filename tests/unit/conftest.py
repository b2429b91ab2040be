"""Fixtures shared by the unit tests of the platform's SIP side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.platform_harness import Harness, sip_config


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    """Harness factory; fails the test if any harness logged a failure."""
    made: list[Harness] = []

    def factory(**sip: Any) -> Harness:
        harness = Harness(sip_config(**sip))
        made.append(harness)
        return harness

    yield factory
    failures = [f for harness in made for f in harness.failures()]
    for harness in made:
        harness.close()
    assert not failures, "\n".join(failures)


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    """A platform harness on the default configuration."""
    return make()
