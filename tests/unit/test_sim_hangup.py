"""A simulated camera ending its own streams with BYE (RFC 3261 §15.1.1): on stop and on SIGUSR1."""

from __future__ import annotations

from tests.unit.test_sim_media import MediaNet, offer


def test_hang_up_sends_bye_in_the_dialog_and_stops_the_media() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    m.ack_and_dialog(req, resp)
    m.run_frames(5)
    device = m.sim.devices[0]
    assert device.hang_up() == 1
    m.net.pump()
    byes = [r for _, r, _ in m.platform.requests if r.method == "BYE"]
    assert len(byes) == 1 and byes[0].call_id == req.call_id
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
    m.sim.stop()
    m.net.pump()
    methods = [r.method for _, r, _ in m.platform.requests]
    assert "BYE" in methods and methods.index("BYE") < len(methods) - 1  # BYE, then un-REGISTER
