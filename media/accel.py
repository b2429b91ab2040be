"""Which RTP receive path runs: the compiled one (``media._fastpath``) or pure Python.

The C extension (media/_fastpath.c, built by setup.py, ``optional``) holds the
inner loops of the receive path: ``recvmmsg`` reads, the single port's SSRC
routing, the in-order PS collection of ``RtpIngest`` and RFC 4571 de-framing.
The Python code beside each loop is the reference and the fallback: it runs
when the extension is missing (an install without a compiler) or when
``GBP_PUREPYTHON=1`` is set, and the tests run both
(docs/performance.md, "Compiled hot path").

Callers read ``accel.ext`` when they build their state (``RtpIngest``,
``Rfc4571Framer``) or per read pass (``RtpUdpPort``), so a test can switch
paths by setting it to None.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

__all__ = ["ext", "forced_python", "load"]

log = logging.getLogger(__name__)


def forced_python() -> bool:
    """``GBP_PUREPYTHON`` set to anything but empty or ``0``.

    Not a ``GBP_MEDIA_*`` name: those are the ``media`` section's settings
    (gbplatform/app/config.py rejects an unknown key there), and this one is
    read before any configuration, at import.
    """
    return os.environ.get("GBP_PUREPYTHON", "") not in ("", "0")


def load() -> ModuleType | None:
    """The compiled module, or None (forced off, or not built here)."""
    if forced_python():
        log.info("GBP_PUREPYTHON set: the RTP receive path runs in pure Python")
        return None
    try:
        from media import _fastpath
    except ImportError as e:
        log.info("compiled RTP receive path not available (%s); using pure Python", e)
        return None
    return _fastpath


ext: ModuleType | None = load()
