"""Where a device is reached, and who may move it (issue 8 item 1).

A device's address is the source of its last authenticated REGISTER. A
keepalive or any MANSCDP MESSAGE carrying its ID from another address is
refused and changes nothing, so a stranger who knows a device ID can neither
redirect its INVITEs and queries nor answer them in its place. A device
whose NAT mapping changed is told to register again (404 to its keepalive)
and its authenticated REGISTER moves it. See docs/devices.md.
"""

from __future__ import annotations

import pytest

from sip import manscdp
from tests.unit.platform_harness import DEV, DEVICE_ADDR, FakeDevice, Harness

STRANGER = ("UDP", "203.0.113.66", 5060)
NAT_REBIND = ("UDP", "192.0.2.7", 40001)


def attacker(h: Harness, addr: tuple[str, str, int] = STRANGER) -> FakeDevice:
    """Someone at ``addr`` who knows the device's ID (no password needed to send a MESSAGE)."""
    return h.device(DEV, addr, seed=99)


def test_a_forged_keepalive_does_not_move_the_device(h: Harness) -> None:
    h.registered_device()
    h.advance(30)
    resp = attacker(h).keepalive()
    assert resp.status == 404
    assert h.devices.address_of(DEV) == DEVICE_ADDR
    live = h.devices.live_info(DEV)
    assert live is not None and live.last_seen == 0  # not proof of life either
    record = h.record()
    assert (record.host, record.port) == (DEVICE_ADDR[1], DEVICE_ADDR[2])


def test_a_forged_keepalive_does_not_keep_a_silent_device_online(h: Harness) -> None:
    h.registered_device()
    forger = attacker(h)
    for _ in range(4):
        h.advance(59)
        assert forger.keepalive().status == 404
    assert not h.devices.is_known(DEV)


def test_a_forged_keepalive_does_not_revive_an_offline_device(h: Harness) -> None:
    h.registered_device()
    h.advance(181)
    assert not h.devices.is_known(DEV)
    assert attacker(h).keepalive().status == 404
    assert not h.devices.is_known(DEV)


def test_queries_still_go_to_the_real_device_after_a_forged_keepalive(h: Harness) -> None:
    dev = h.registered_device()
    attacker(h).keepalive()
    before = len(dev.queries("DeviceStatus"))
    h.run(h.platform.queries.device_status(DEV))
    assert len(dev.queries("DeviceStatus")) == before + 1


def test_a_forged_catalog_answer_is_refused_and_the_real_one_accepted(h: Harness) -> None:
    dev = h.registered_device()
    query = dev.last_query("Catalog")
    fake = manscdp.CatalogItem(device_id="34020000001310000099", name="ATTACKER-CAM", status="ON", parent_id=DEV)
    forged = manscdp.encode_catalog_response(query.sn, DEV, 1, [fake])
    resp = attacker(h).message(forged)
    assert resp.status == 403
    real = manscdp.CatalogItem(device_id="34020000001310000001", name="gate", status="ON", parent_id=DEV)
    assert dev.message(manscdp.encode_catalog_response(query.sn, DEV, 1, [real])).status == 200
    h.advance(1)
    assert [(c.channel_id, c.name) for c in h.channels()] == [("34020000001310000001", "gate")]


def test_any_manscdp_message_from_a_stranger_is_refused(h: Harness) -> None:
    h.registered_device()
    forger = attacker(h)
    forger.charset = "UTF-8"
    resp = forger.message(manscdp.encode_notify("Alarm", 5, DEV, charset="UTF-8", extra={"AlarmPriority": "1"}))
    assert resp.status == 403
    assert h.devices.address_of(DEV) == DEVICE_ADDR
    assert h.devices.charset_of(DEV) == "GB2312"


def test_a_device_behind_a_rebinding_nat_moves_on_its_authenticated_register(h: Harness) -> None:
    h.registered_device()
    h.detach(h._devices[DEVICE_ADDR])
    moved = h.device(DEV, NAT_REBIND, seed=21)
    # Told to register again, which it does (on this answer, or at its refresh).
    assert moved.keepalive().status == 404
    assert h.devices.address_of(DEV) == DEVICE_ADDR
    assert moved.register_auth().status == 200
    assert h.devices.address_of(DEV) == NAT_REBIND
    assert moved.keepalive().status == 200
    record = h.record()
    assert (record.host, record.port) == (NAT_REBIND[1], NAT_REBIND[2])


def test_a_wrong_password_register_from_a_stranger_does_not_move_the_device(h: Harness) -> None:
    h.registered_device()
    resp = attacker(h).register_auth(password="guess")
    assert resp.status == 403
    assert h.devices.address_of(DEV) == DEVICE_ADDR


def test_a_tcp_device_that_reconnects_moves_with_its_new_connection(h: Harness) -> None:
    first = ("TCP", "198.51.100.4", 50001)
    h.registered_device(DEV, first)
    h.detach(h._devices[first])
    # TCP source addresses cannot be forged: the same host on a new connection is the device.
    again = h.device(DEV, ("TCP", "198.51.100.4", 50002), seed=22)
    assert again.keepalive().status == 200
    assert h.devices.address_of(DEV) == ("TCP", "198.51.100.4", 50002)
    other_host = h.device(DEV, ("TCP", "198.51.100.5", 50003), seed=23)
    assert other_host.keepalive().status == 404
    assert h.devices.address_of(DEV) == ("TCP", "198.51.100.4", 50002)


def test_after_a_restart_only_the_registered_address_brings_the_device_back(h: Harness) -> None:
    h.registered_device()
    h.advance(100)
    h2 = h.restart()
    assert attacker(h2).keepalive().status == 404
    assert not h2.devices.is_known(DEV)
    dev = h2.device()
    assert dev.keepalive().status == 200
    assert h2.devices.address_of(DEV) == DEVICE_ADDR


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_a_keepalive_from_the_registered_address_is_still_accepted(h: Harness, transport: str) -> None:
    addr = (transport, "127.0.0.1", 5070)
    dev = h.registered_device(DEV, addr)
    h.advance(30)
    assert dev.keepalive().status == 200
    live = h.devices.live_info(DEV)
    assert live is not None and live.last_seen == 30
