"""Onboarding (GB/T 28181-2016 §9.5): DeviceInfo, BasicParam and Catalog for every
newly registered device, pipelined so that devices which never answer do not
hold up the ones that do."""

from __future__ import annotations

from typing import Any

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
    # ... and, the devices being online, are asked once more (5 queries each) without a slot.
    assert [len(d.queries()) for d in silent] == [5, 5, 3]
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


def test_a_queued_device_whose_row_is_written_costs_no_state_batch(h: Harness) -> None:
    """Issue 12: with 50,000 devices onboarding, every device's turn and every catalog store forced a
    state batch of its own (``flush``). Now they wait only for changes of that device still unwritten."""
    queries = h.platform.queries
    queries.concurrency = 3
    first = h.registered_device()
    second = silent_devices(h, 1)[0]
    assert second.queries() == []  # queued behind the first
    h.advance(1)  # both registrations are written
    batches: list[str] = []
    run = h.db.run

    def counted(desc: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append(desc)
        return run(desc, fn, *args, **kwargs)

    h.platform.db.run = counted  # type: ignore[method-assign]
    answer_all(first, items=[])  # an empty catalog: the store still waits for the device's row
    h.pump()
    assert [m.cmd_type for m in second.queries()] == ["DeviceInfo", "ConfigDownload", "Catalog"]
    # The first device's DeviceInfo and BasicParam are unwritten when its catalog is stored: one batch
    # for them, before the catalog; the second device's turn needs none.
    assert batches.count("device_state_batch") == 1 and batches.index("device_state_batch") < batches.index(
        "store_catalog")
    h.advance(1)
    assert h.record(first.device_id).catalog_status == "done"
    assert h.record(first.device_id).manufacturer == "Hikvision"


def test_onboarding_a_written_device_does_not_cut_the_batch_short(h: Harness) -> None:
    """Issue 12: a device's turn used to ``flush`` the state writer, writing whatever other devices had
    pending at once; in a storm, one transaction per onboarded device instead of one per 0.5 s."""
    dev = silent_devices(h, 1)[0]
    h.advance(1)  # its registration is written
    batches: list[str] = []
    run = h.db.run

    def counted(desc: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append(desc)
        return run(desc, fn, *args, **kwargs)

    h.platform.db.run = counted  # type: ignore[method-assign]
    at = h.record(dev.device_id).registered_at
    h.devices.writer.add("keepalive", dev_id(999), at, "127.0.0.1", 7999, "UDP")  # another device's, pending
    h.run(h.platform.queries.onboard(dev.device_id))
    assert len(dev.queries("DeviceInfo")) == 2  # asked again at once (its first Catalog still runs)
    assert "device_state_batch" not in batches  # the pending keepalive waits for its timer
    h.advance(1)
    assert batches.count("device_state_batch") == 1
