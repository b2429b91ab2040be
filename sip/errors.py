"""Error types of the SIP stack.

Remote errors (a peer sent something we cannot use) are kept apart from local
errors (our own code asked for something impossible), as h11 does: a remote
error carries the status code to answer with (``status_hint``), a local one is a
bug or a refused operation on our side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip.message import Message


class SipError(Exception):
    """Base class of all SIP stack errors."""


class RemoteSipError(SipError):
    """The peer sent something unusable; answer ``status_hint`` if it was a request."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


class SipParseError(RemoteSipError):
    """A message could not be parsed (RFC 3261 §7, §25).

    ``message`` holds what could be parsed (start line and headers) when that
    was enough to answer the request with ``status_hint``; it is ``None`` when
    even the start line was unusable.
    """

    def __init__(
        self, reason: str, status_hint: int = 400, message: Message | None = None
    ) -> None:
        super().__init__(reason, status_hint)
        self.message = message
        self.framed: list[Message] = []  # stream framing: messages completed before the error


class LocalSipError(SipError):
    """Our own side asked for something the stack cannot do."""
