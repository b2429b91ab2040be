"""Choosing the reactor, for ``gbplatform run`` and ``gbplatform simulate`` alike."""

import sys
from collections.abc import Callable

from twisted.logger import Logger

__all__ = ["install_reactor"]

log = Logger()


def install_reactor() -> None:
    """Prefer epoll (thousands of sockets); must run before anything imports
    ``twisted.internet.reactor``, which installs the default one."""
    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        from twisted.internet import epollreactor
    except ImportError:
        log.info("epoll is not available; using the default reactor")
        return
    install: Callable[[], None] = epollreactor.install
    install()
