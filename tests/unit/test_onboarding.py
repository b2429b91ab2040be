"""Onboarding (GB/T 28181-2016 §9.5): DeviceInfo, BasicParam and Catalog for every
newly registered device, pipelined so that devices which never answer do not
hold up the ones that do."""

from __future__ import annotations

from sip import manscdp
from tests.unit.platform_harness import DEV, FakeDevice, Harness


def dev_id(n: int) -> str:
    return f"340200000013200{n:05d}"


def silent_devices(h: Harness, count: int, first: int = 100) -> list[FakeDevice]:
    """Devices that 200 every MESSAGE but never answer a query (like many that ignore ConfigDownload)."""
    devices = []
    for n in range(first, first + count):
        dev = h.device(dev_id(n), ("UDP", "127.0.0.1", 6000 + n), seed=n)
        assert dev.register_auth().status == 200
        devices.append(dev)
    return devices


def answer_all(dev: FakeDevice, *, name: str | None = "Gate camera",
               items: list[manscdp.CatalogItem] | None = None) -> None:
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, dev.device_id, device_name=name,
                                                    manufacturer="Hikvision"))
    cfg = dev.last_query("ConfigDownload")
    dev.message(manscdp.encode_config_download_response(
        cfg.sn, dev.device_id, manscdp.BasicParam(heart_beat_interval=30, heart_beat_count=3)))
    cat = dev.last_query("Catalog")
    if items is None:
        items = [manscdp.CatalogItem(device_id="34020000001310000001", name="Gate", status="ON",
                                     parent_id=dev.device_id)]
    dev.message(manscdp.encode_catalog_response(cat.sn, dev.device_id, len(items), items))


def test_a_device_that_answers_is_not_held_up_by_silent_ones(h: Harness) -> None:
    """Issue 8 item 16: 40 silent devices used to take all 32 workers for 30 s each."""
    silent_devices(h, 40)
    dev = h.registered_device()
    assert [m.cmd_type for m in dev.queries()] == ["DeviceInfo", "ConfigDownload", "Catalog"]
    answer_all(dev)
    h.advance(1)
    record = h.record()
    assert record.catalog_status == "done" and record.channel_count == 1
    assert record.manufacturer == "Hikvision" and record.keepalive_interval == 30
    assert h.platform.queries.backlog == 0


def test_queries_in_flight_are_bounded_across_devices(h: Harness) -> None:
    queries = h.platform.queries
    queries.concurrency = 6  # two devices' worth of queries
    silent = silent_devices(h, 3)
    assert [len(d.queries()) for d in silent] == [3, 3, 0]
    assert queries.backlog == 1 and queries.in_flight == 6
    h.advance(10.5)  # DeviceInfo and ConfigDownload time out: two slots each come free
    assert [len(d.queries()) for d in silent] == [3, 3, 3]
    assert queries.backlog == 0
    h.advance(60)
    assert queries.in_flight == 0
    assert [h.record(d.device_id).catalog_status for d in silent] == ["timeout"] * 3


def test_a_slot_comes_free_when_a_device_answers(h: Harness) -> None:
    queries = h.platform.queries
    queries.concurrency = 3
    first = h.registered_device()
    second = silent_devices(h, 1)[0]
    assert second.queries() == []
    answer_all(first)
    h.pump()
    assert [m.cmd_type for m in second.queries()] == ["DeviceInfo", "ConfigDownload", "Catalog"]


def test_onboarding_of_a_device_gone_before_its_turn_frees_its_slots(h: Harness) -> None:
    queries = h.platform.queries
    queries.concurrency = 3
    first = silent_devices(h, 1)[0]
    second = h.registered_device()
    second.register_auth(0)  # unregisters while queued
    h.advance(31)
    assert first.queries() and second.queries() == []
    assert queries.in_flight == 0 and queries.backlog == 0


def test_the_name_comes_from_the_catalog_when_device_info_has_none(h: Harness) -> None:
    """Issue 8 item 17: an NVR lists itself in its own catalog with its name."""
    dev = h.registered_device()
    items = [
        manscdp.CatalogItem(device_id=DEV, name="Gate NVR", status="ON"),
        manscdp.CatalogItem(device_id="34020000001310000001", name="Gate", status="ON", parent_id=DEV),
    ]
    answer_all(dev, name=None, items=items)
    h.advance(1)
    assert h.record().name == "Gate NVR"


def test_device_info_name_wins_over_the_catalog_one(h: Harness) -> None:
    dev = h.registered_device()
    items = [manscdp.CatalogItem(device_id=DEV, name="Gate NVR", status="ON")]
    answer_all(dev, name="Front gate", items=items)
    h.advance(1)
    assert h.record().name == "Front gate"


def test_many_devices_gone_before_their_turn_do_not_recurse(h: Harness) -> None:
    """Each one ends within its own start and frees its slots at once."""
    queries = h.platform.queries
    queries.concurrency = 0
    for n in range(3000):
        queries.device_registered(dev_id(n + 1000), True)  # registered, then gone: not known
    queries.concurrency = 3
    queries.device_registered(dev_id(999), True)  # any registration restarts the queue
    assert queries.backlog == 0 and queries.in_flight == 0
