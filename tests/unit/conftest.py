"""Fixtures shared by the unit tests of the platform's SIP side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gbplatform.app.config import Config
from tests.unit.platform_harness import Harness, sip_config


@pytest.fixture
def harnesses() -> Iterator[Callable[[Config], Harness]]:
    """A harness per configuration asked for; all closed at the end, and the test fails if any logged a
    failure."""
    made: list[Harness] = []

    def factory(config: Config) -> Harness:
        harness = Harness(config)
        made.append(harness)
        return harness

    yield factory
    failures = [f for harness in made for f in harness.failures()]
    for harness in made:
        harness.close()
    assert not failures, "\n".join(failures)


@pytest.fixture
def make(harnesses: Callable[[Config], Harness]) -> Callable[..., Harness]:
    """Harness factory on ``sip_config(**sip)``; fails the test if any harness logged a failure."""

    def factory(**sip: Any) -> Harness:
        return harnesses(sip_config(**sip))

    return factory


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    """A platform harness on the default configuration."""
    return make()
