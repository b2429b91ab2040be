"""A simulated camera ending its own streams with BYE (RFC 3261 §15.1.1): on stop and on SIGUSR1."""

from __future__ import annotations

import re

from sip.message import Request, Response
from tests.unit.test_sim_media import MediaNet, offer


def tag(header: str | None) -> str | None:
    found = re.search(r";\s*tag=([^;>\s]+)", header or "")
    return found.group(1) if found else None


def assert_in_dialog(bye: Request, invite: Request, answer: Response) -> None:
    """The device's BYE belongs to the dialog its 200 made (RFC 3261 §12.2.1.1, §15.1.1)."""
    assert bye.call_id == invite.call_id
    assert tag(bye.headers.get("From")) == tag(answer.headers.get("To")) is not None
    assert tag(bye.headers.get("To")) == tag(invite.headers.get("From")) is not None
    assert bye.cseq[1] == "BYE"


def test_hang_up_sends_bye_in_the_dialog_and_stops_the_media() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    m.ack_and_dialog(req, resp)
    m.run_frames(5)
    device = m.sim.devices[0]
    assert device.hang_up() == 1
    m.net.pump()
    byes = [r for _, r, _ in m.platform.requests if r.method == "BYE"]
    assert len(byes) == 1
    assert_in_dialog(byes[0], req, resp)
    assert device.plays == {} and m.udp[0].closed
    before = len(m.udp[0].sent)
    m.run_frames(10)
    assert len(m.udp[0].sent) == before


def test_a_stream_never_acked_stops_without_bye() -> None:
    m = MediaNet()
    m.invite(offer())
    device = m.sim.devices[0]
    assert device.hang_up() == 0 and device.plays == {}


def test_stopping_the_simulator_hangs_up_first() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    m.ack_and_dialog(req, resp)
    registered = len(m.platform.requests)
    m.sim.stop()
    m.net.pump()
    after = [r for _, r, _ in m.platform.requests[registered:]]
    # Exactly: the BYE in the stream's dialog, then the un-REGISTER (RFC 3261 §10.2.2), nothing else.
    assert [r.method for r in after] == ["BYE", "REGISTER"]
    bye, unregister = after
    assert_in_dialog(bye, req, resp)
    register = m.platform.requests[0][1]
    assert unregister.call_id == register.call_id and unregister.cseq[0] > register.cseq[0]
    assert unregister.headers.get("Expires") == "0"
