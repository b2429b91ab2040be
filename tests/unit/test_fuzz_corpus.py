"""The fuzz seed corpora replayed through their targets, without atheris.

``fuzz/run.py`` (docs/fuzzing.md) mutates these seeds under atheris; here every
seed, and a few fixed damages of it, goes through the same target in the
normal test run, so the corpora and the targets stay in step with the parsers.
A target raises only what its parser does not document (fuzz/targets.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
SEEDS = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def damaged(data: bytes) -> list[bytes]:
    """The seed, and the same truncated, with a byte flipped, doubled, and with trailing bytes."""
    half = len(data) // 2
    flipped = data[:half] + bytes([data[half] ^ 0xFF]) + data[half + 1:] if data else b""
    return [data, data[:half], data[:-1], flipped, data + data, data + b"\x00\xff\r\n"]


def test_every_target_has_seeds() -> None:
    assert {p.parent.name for p in SEEDS} == set(TARGETS)
    for name in TARGETS:
        seeds = [p for p in SEEDS if p.parent.name == name]
        assert 3 <= len(seeds) <= 20 and all(p.stat().st_size <= 8192 for p in seeds), name


@pytest.mark.parametrize("seed", SEEDS, ids=[f"{p.parent.name}/{p.name}" for p in SEEDS])
def test_seed_goes_through_its_target(seed: Path) -> None:
    target = TARGETS[seed.parent.name]
    for data in damaged(seed.read_bytes()):
        target(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_take_empty_and_odd_input(name: str) -> None:
    for data in (b"", b"\x00", b"\r\n\r\n", b"\xff" * 64, bytes(range(256))):
        TARGETS[name](data)
