"""Decimal numbers in SIP text, read the one safe way.

RFC 3261 §25.1 writes every number of a SIP message (CSeq, ports, status
codes, Content-Length, Max-Forwards, Expires) as ``1*DIGIT``: ASCII digits.
``str.isdigit()`` is not that test: it also takes "²" or full-width "１",
which ``int()`` then refuses with a ``ValueError``, and ``int()`` refuses
more than 4,300 digits too (CPython's limit). A parser that checks
``isdigit()`` and then calls ``int()`` crashes on both, where the rule for
network input is a clear parse error. ``ascii_uint`` is the check and the
conversion in one.
"""

from __future__ import annotations

__all__ = ["ascii_uint", "is_ascii_digits"]


def is_ascii_digits(text: str) -> bool:
    """Whether ``text`` is ``1*DIGIT`` (RFC 5234 §B.1: %x30-39), nothing else."""
    return text.isascii() and text.isdigit()


def ascii_uint(text: str, max_digits: int) -> int | None:
    """The value of ``text`` when it is ASCII digits with at most ``max_digits`` significant ones (leading
    zeros are not counted), else None."""
    if not is_ascii_digits(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > max_digits:
        return None
    return int(significant or "0")
