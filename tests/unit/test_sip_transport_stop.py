"""A stopped SIP transport drops what services still produce (an onboarding query that was waiting when
the platform stopped) instead of writing to a closed port ("'Port' object has no attribute 'socket'")."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock

from sip.endpoint import Endpoint
from sip.transport import SipTransport


class RecordingUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.listening = True

    def write(self, data: bytes, addr: Any) -> None:
        assert self.listening, "written after stopListening"
        self.sent.append((data, addr))

    def stopListening(self) -> None:  # noqa: N802 - Twisted API
        self.listening = False


def test_output_after_stop_is_counted_and_dropped() -> None:
    endpoint = Endpoint(rng=random.Random(1))
    transport = SipTransport(endpoint, Clock(), lambda events: None)
    udp = RecordingUdp()
    transport.udp = udp
    endpoint._out.append((b"OPTIONS before", ("UDP", "127.0.0.1", 5060)))
    transport.flush()
    assert [d for d, _ in udp.sent] == [b"OPTIONS before"]
    transport.stop()
    endpoint._out.extend([(b"MESSAGE late", ("UDP", "127.0.0.1", 5060))] * 2)
    transport.flush()
    transport.flush()
    assert len(udp.sent) == 1 and transport.dropped_after_stop == 2 and endpoint.take_output() == []
