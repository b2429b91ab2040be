"""Media sent by another process: the simulator answers the INVITE, a separate sender sends the RTP.

``gbplatform simulate --external-sender PATH`` (``SimConfig.external_sender``)
keeps the signalling real (REGISTER, Catalog, INVITE, SDP answer, ACK, BYE:
GB/T 28181-2016 §9.2.2) but does not packetise and pace the video in Python:
for each answered offer it tells the process listening on the Unix
``SOCK_SEQPACKET`` socket at ``PATH`` where the stream goes, and that process
(``benchmarks/ps_sender.c``, the ingest benchmark's C sender) sends it. A
Python sender costs about as much CPU as the platform receiving it, which
would blur what the benchmark measures.

One datagram per message, ASCII, fields separated by single spaces:

``open KEY MODE HOST PORT SSRC PT``
    sent while the answer is built. ``MODE`` is the device's role, as in
    ``MediaTarget``: ``udp``; ``tcp-active`` (the platform offered
    ``a=setup:passive``, the sender connects to ``HOST:PORT``, RFC 4145 §4);
    ``tcp-passive`` (the platform offered ``a=setup:active`` and connects to
    the answer's port). For ``udp`` and ``tcp-passive`` the message carries
    (``SCM_RIGHTS``) the socket the answer names, already bound here (UDP) or
    listening (TCP), so the port in the answer's ``m=`` line is live before
    the 200 OK leaves and the RTP comes from the port the answer advertised.
``start KEY``
    on the ACK: media may flow (GB/T 28181-2016 §9.2.2 step 6).
``stop KEY``
    on BYE, a missing ACK or the simulator stopping.

``SSRC`` is the offer's ``y=`` value as an integer (GB/T 28181-2016 Annex F),
``PT`` the payload type the answer took from the offer (RFC 3264 §6.1).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from gbplatform.simulator.media import (
    ACTIVE_TCP_PORT,
    MediaSender,
    MediaTarget,
    PsClip,
    RtpPacer,
    SimMedia,
)

__all__ = ["ExternalMedia", "ExternalSender"]

log = Logger()

_keys = itertools.count(1)


class ExternalSender(MediaSender):
    """A ``MediaSender`` whose packets another process sends; ``open``/``start``/``stop`` become messages.

    Its own counters stay 0: the external sender counts what it sends.
    """

    def __init__(self, control: socket.socket, pacer: RtpPacer, target: MediaTarget, *,
                 local_ip: str, key: str) -> None:
        super().__init__(None, pacer, target, local_ip=local_ip,
                         listen_udp=_unused, listen_tcp=_unused)
        self.control = control
        self.key = key

    def _send(self, line: str, fd: int | None = None) -> None:
        data = (line + "\n").encode("ascii")
        if fd is None:
            self.control.send(data)
        else:
            socket.send_fds(self.control, [data], [fd])

    def open(self) -> int:
        """Bind what the answer advertises (as ``MediaSender.open``) and hand it over with the ``open`` message.

        Raises ``OSError`` when the socket or the control channel fails (the INVITE then gets 500).
        """
        t = self.target
        sock: socket.socket | None = None
        if t.mode == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        elif t.mode == "tcp-passive":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sock is not None:
                sock.bind((self.local_ip, 0))
                if t.mode == "tcp-passive":
                    sock.listen(1)
                port = int(sock.getsockname()[1])
            else:
                port = ACTIVE_TCP_PORT  # RFC 4145 §4: we connect, so no port of ours is used
            self._send(f"open {self.key} {t.mode} {t.host} {t.port} {t.ssrc} {self.pacer.payload_type}",
                       None if sock is None else sock.fileno())
        finally:
            if sock is not None:
                sock.close()  # the sender holds its own copy of the descriptor now
        return port

    def start(self) -> None:
        if self.started or self.stopped:
            return
        self.started = True
        t = self.target
        log.info("media to {host}:{port} over {mode}, SSRC {ssrc}: handed to the external sender",
                 host=t.host, port=t.port, mode=t.mode, ssrc=t.ssrc)
        self._notify("start")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._notify("stop")

    def _notify(self, verb: str) -> None:
        try:
            self._send(f"{verb} {self.key}")
        except OSError as e:
            # The sender died or went away: the stream cannot be sent, the platform will see no RTP.
            log.error("external sender: cannot send {verb} for {key}: {error}",
                      verb=verb, key=self.key, error=str(e))


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an external sender opens its sockets itself")


class ExternalMedia(SimMedia):
    """``SimMedia`` answering offers as usual but sending through the process at ``control``.

    ``control`` is a connected ``SOCK_SEQPACKET`` Unix socket, or the path to connect to.
    """

    def __init__(self, reactor: Any, rng: random.Random, control: socket.socket | str, *,
                 clip: PsClip | None = None,
                 clip_loader: Callable[[], PsClip] = PsClip.default) -> None:
        super().__init__(reactor, rng, clip=clip, clip_loader=clip_loader)
        if isinstance(control, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(control)
            except OSError:
                sock.close()
                raise
            control = sock
        self.control = control
        self._prefix = f"{os.getpid()}."

    def new_sender(self, pacer: RtpPacer, target: MediaTarget, local_ip: str) -> MediaSender:
        return ExternalSender(self.control, pacer, target, local_ip=local_ip,
                              key=f"{self._prefix}{next(_keys)}")
