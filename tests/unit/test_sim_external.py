"""The simulator's external-sender option: INVITEs answered here, the media handed to another process."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbplatform.app.config import ConfigError
from gbplatform.simulator.device import SimConfig, Simulator
from gbplatform.simulator.external import ExternalMedia, ExternalSender
from sip import sdp
from tests.unit.test_sim_media import SSRC, MediaNet, offer, tiny_clip


@pytest.fixture
def control() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def external_net(ours: socket.socket) -> MediaNet:
    m = MediaNet(clip=tiny_clip())
    m.sim.media = ExternalMedia(m.reactor, random.Random(5), ours, clip=tiny_clip())
    return m


def receive(theirs: socket.socket) -> tuple[list[str], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(theirs, 512, 1)
    return data.decode("ascii").split(), fds


def test_udp_offer_hands_the_bound_socket_then_start_and_stop(
        control: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = control
    m = external_net(ours)
    req, resp = m.invite(offer())
    assert resp.status == 200
    media = sdp.parse(resp.body).first_media()
    assert media is not None
    words, fds = receive(theirs)
    assert words[0] == "open" and words[2:] == ["udp", "127.0.0.1", "30000", str(int(SSRC)), "96"]
    assert len(fds) == 1
    with socket.socket(fileno=fds[0]) as handed:
        # The answer's m= port is the socket handed over, bound before the 200 OK left.
        assert handed.type == socket.SOCK_DGRAM and handed.getsockname() == ("127.0.0.1", media.port)
    key = words[1]
    assert m.udp == []  # nothing sent or bound by the simulator itself
    dialog = m.ack_and_dialog(req, resp)
    assert receive(theirs) == (["start", key], [])
    m.run_frames(10)
    sender = m.sim.devices[0].plays[req.call_id].sender
    assert isinstance(sender, ExternalSender) and (sender.frames, sender.packets) == (0, 0)
    assert m.bye(dialog).status == 200
    assert receive(theirs) == (["stop", key], [])


def test_setup_active_offer_hands_a_listening_socket(control: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = control
    m = external_net(ours)
    _req, resp = m.invite(offer(proto="TCP/RTP/AVP", setup="active"))
    assert resp.status == 200
    media = sdp.parse(resp.body).first_media()
    assert media is not None
    words, fds = receive(theirs)
    assert words[2] == "tcp-passive" and len(fds) == 1
    with socket.socket(fileno=fds[0]) as handed:
        assert handed.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert handed.getsockname()[1] == media.port
        # RFC 4145 §4: the platform (setup:active) can connect as soon as it has the answer.
        with socket.create_connection(("127.0.0.1", media.port), timeout=5):
            pass


def test_setup_passive_offer_sends_no_socket_and_answers_port_9(
        control: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = control
    m = external_net(ours)
    _req, resp = m.invite(offer(proto="TCP/RTP/AVP", setup="passive", port=30004))
    media = sdp.parse(resp.body).first_media()
    assert resp.status == 200 and media is not None and media.port == 9
    words, fds = receive(theirs)
    assert words[2:5] == ["tcp-active", "127.0.0.1", "30004"] and fds == []


def test_a_sender_gone_before_the_answer_makes_the_invite_fail_500(
        control: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = control
    m = external_net(ours)
    theirs.close()
    _req, resp = m.invite(offer())
    assert resp.status == 500
    assert m.sim.devices[0].plays == {}


def test_a_sender_gone_after_the_answer_is_logged_not_raised(
        control: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = control
    m = external_net(ours)
    req, resp = m.invite(offer())
    receive(theirs)
    theirs.close()
    dialog = m.ack_and_dialog(req, resp)  # "start" fails: logged
    assert m.bye(dialog).status == 200


def test_sim_config_option_connects_or_says_why(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    path = tmp_path / "sender.sock"
    with pytest.raises(ConfigError, match="no external sender"):
        Simulator(SimConfig(devices=1, channels=1, external_sender=str(path)), Clock(), random.Random(1))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
        server.bind(str(path))
        server.listen(1)
        sim = Simulator(SimConfig(devices=1, channels=1, external_sender=str(path)), Clock(), random.Random(1))
        assert isinstance(sim.media, ExternalMedia)
        sim.media.control.close()
    assert not isinstance(Simulator(SimConfig(devices=1, channels=1), Clock(), random.Random(1)).media,
                          ExternalMedia)
