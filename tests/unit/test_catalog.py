"""Catalog sync (GB/T 28181-2016 §9.5.2, §A.2.6.4): one Query, many answering
MESSAGEs aggregated by SN against SumNum, through the in-memory harness."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gbplatform.db import queries as q
from gbplatform.devices import catalog as catalog_module
from gbplatform.devices.catalog import CatalogSession, to_channel
from sip import manscdp
from tests.unit.platform_harness import DEV, FakeDevice, Harness, has_fired

DATA = Path(__file__).parent / "data" / "manscdp"


def cam(n: int) -> str:
    return f"340200000013100000{n:02d}"


def item(n: int, **kw: Any) -> manscdp.CatalogItem:
    fields: dict[str, Any] = {"device_id": cam(n), "name": f"cam{n}", "status": "ON", "parent_id": DEV}
    fields.update(kw)
    return manscdp.CatalogItem(**fields)




@pytest.fixture
def dev(h: Harness) -> FakeDevice:
    """A registered device; the onboarding Catalog query is running."""
    return h.registered_device()


def session_of(h: Harness) -> CatalogSession:
    return h.platform.catalog.sessions[DEV]


def answer(dev: FakeDevice, sum_num: int, items: Sequence[manscdp.CatalogItem], *, sn: int | None = None,
           charset: str = "GB2312") -> int:
    """Send one Catalog Response part for the last Catalog query; returns the SIP status."""
    sn = dev.last_query("Catalog").sn if sn is None else sn
    return dev.message(manscdp.encode_catalog_response(sn, DEV, sum_num, items, charset=charset)).status


def send_parts(dev: FakeDevice, total: int, per_message: int) -> None:
    numbers = list(range(1, total + 1))
    for start in range(0, total, per_message):
        assert answer(dev, total, [item(n) for n in numbers[start:start + per_message]]) == 200


def new_sync(h: Harness, dev: FakeDevice) -> CatalogSession:
    h.advance(31)  # let the onboarding sync finish first
    session = h.platform.catalog.start(DEV)
    h.pump()
    assert dev.last_query("Catalog").sn == session.sn
    return session


def channel_ids(h: Harness) -> list[str]:
    return [c.channel_id for c in h.channels()]


# --- aggregation ------------------------------------------------------------


def test_parts_are_aggregated_by_sn_against_sumnum(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    assert dev.last_query("Catalog").sn == session.sn
    assert answer(dev, 7, [item(1), item(2), item(3)]) == 200
    progress = h.platform.catalog.progress(DEV)
    assert progress is not None
    assert (progress["status"], progress["total"], progress["received"], progress["parts"]) == ("running", 7, 3, 1)
    record = h.record()
    assert (record.catalog_status, record.catalog_total, record.catalog_received) == ("running", 7, 3)

    answer(dev, 7, [item(4), item(5), item(6)])
    assert session.status == "running"
    answer(dev, 7, [item(7)])
    assert session.status == "done"
    assert has_fired(session.done)
    assert session.finished is not None
    record = h.record()
    assert (record.catalog_status, record.catalog_total, record.catalog_received) == ("done", 7, 7)
    assert record.catalog_synced_at is not None
    assert record.channel_count == 7
    assert channel_ids(h) == [cam(n) for n in range(1, 8)]


def test_duplicates_across_parts_are_counted_once(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 7, [item(1), item(2), item(3)])
    answer(dev, 7, [item(3), item(4), item(5)])
    answer(dev, 7, [item(5, name="renamed"), item(6), item(7)])
    session = session_of(h)
    assert session.status == "done"
    assert (session.parts, session.duplicates, session.received) == (3, 2, 7)
    assert {c.channel_id: c.name for c in h.channels()}[cam(5)] == "renamed"


def test_a_part_with_another_sn_is_ignored(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    assert answer(dev, 1, [item(9)], sn=session.sn + 1) == 200
    assert (session.status, session.parts, len(session.items)) == ("running", 0, 0)
    answer(dev, 1, [item(1)])
    assert session.status == "done"
    assert channel_ids(h) == [cam(1)]


def test_a_part_without_a_running_sync_is_ignored(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 1, [item(1)])
    assert answer(dev, 1, [item(2)]) == 200
    assert channel_ids(h) == [cam(1)]


def test_items_without_device_id_are_skipped(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 2, [manscdp.CatalogItem(name="nameless"), item(1), item(2)])
    assert session_of(h).status == "done"
    assert channel_ids(h) == [cam(1), cam(2)]


def test_an_item_the_registry_cannot_hold_is_dropped_not_fatal(h: Harness, dev: FakeDevice) -> None:
    """A 40-character DeviceID once left the sync "done" in memory but never
    stored, its ``done`` Deferred unfired and the onboarding worker stuck."""
    answer(dev, 2, [manscdp.CatalogItem(device_id="3" * 40, name="too long"), item(1)])
    session = session_of(h)
    assert session.status == "done" and has_fired(session.done)
    assert channel_ids(h) == [cam(1)]
    assert h.record().catalog_status == "done"


def test_a_running_sync_is_not_started_twice(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    assert h.platform.catalog.start(DEV) is session
    assert len(dev.queries("Catalog")) == 1


def test_an_empty_catalog_is_done_and_clears_the_channels(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 2, [item(1), item(2)])
    new_sync(h, dev)
    answer(dev, 0, [])
    assert session_of(h).status == "done"
    assert channel_ids(h) == []
    assert h.record().channel_count == 0


# --- partial, timeout, error ------------------------------------------------


def test_missing_part_ends_partial_after_the_idle_timeout_and_keeps_items(h: Harness, dev: FakeDevice) -> None:
    send_parts(dev, 7, 3)  # complete: channels 1..7
    session = new_sync(h, dev)
    answer(dev, 5, [item(1), item(2)])
    answer(dev, 5, [item(8)])
    h.advance(h.platform.catalog.idle_timeout - 0.1)
    assert session.status == "running"
    h.advance(0.2)
    assert session.status == "partial"
    assert has_fired(session.done)
    record = h.record()
    assert (record.catalog_status, record.catalog_total, record.catalog_received) == ("partial", 5, 3)
    # A partial sync deletes nothing and adds what came.
    assert channel_ids(h) == [cam(n) for n in range(1, 9)]

    new_sync(h, dev)
    answer(dev, 2, [item(1), item(8)])
    assert session_of(h).status == "done"
    assert channel_ids(h) == [cam(1), cam(8)]
    assert h.record().channel_count == 2


def test_parts_that_never_complete_end_partial_at_the_total_timeout(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    for n in range(1, 9):
        answer(dev, 100, [item(n)])
        h.advance(4)
    assert session.status == "partial"
    assert session.finished == pytest.approx(h.clock.time() - 2, abs=0.01)  # at 30 s
    assert len(h.channels()) == 8


def test_no_answer_at_all_is_timeout(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    h.advance(h.config.sip.catalog_timeout - 0.1)
    assert session.status == "running"
    h.advance(0.2)
    assert session.status == "timeout"
    assert has_fired(session.done)
    assert h.record().catalog_status == "timeout"
    assert h.channels() == []


def test_message_answered_4xx_is_error(h: Harness) -> None:
    dev = h.device()
    dev.answer_status = 486
    dev.register_auth()
    session = session_of(h)
    assert session.status == "error"
    assert session.error is not None and "486" in session.error
    assert h.record().catalog_status == "error"
    assert h.platform.catalog.progress(DEV)["error"] == session.error  # type: ignore[index]


def test_message_never_answered_is_error(make: Callable[..., Harness]) -> None:
    h = make(catalog_timeout=60.0)
    dev = h.device()
    dev.answer_status = None
    dev.register_auth()
    session = session_of(h)
    h.advance(33)  # RFC 3261 timer F: 64 x T1
    assert session.status == "error"
    assert session.error is not None and "did not answer" in session.error
    assert h.record().catalog_status == "error"


def test_sync_of_an_offline_device_is_error(h: Harness) -> None:
    h.create_device(DEV)
    session = h.platform.catalog.start(DEV)
    assert session.status == "error"
    assert session.error == f"device {DEV} is not registered"
    assert has_fired(session.done)


def test_an_unexpected_send_failure_is_logged_as_error(h: Harness, dev: FakeDevice,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    h.advance(31)

    async def broken(device_id: str, body: bytes) -> None:
        raise RuntimeError("socket gone")

    monkeypatch.setattr(h.router, "send_manscdp", broken)
    session = h.platform.catalog.start(DEV)
    assert (session.status, session.error) == ("error", "socket gone")
    assert len(h.log_failures) == 1
    h.log_failures.clear()


def test_item_cap(h: Harness, dev: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "MAX_ITEMS", 3)
    answer(dev, 7, [item(n) for n in range(1, 8)])
    session = session_of(h)
    assert len(session.items) == 3
    h.advance(6)
    assert session.status == "partial"
    assert len(h.channels()) == 3


# --- charsets and vendor quirks -----------------------------------------------


def test_gb2312_chinese_names(h: Harness, dev: FakeDevice) -> None:
    sn = dev.last_query("Catalog").sn
    body = manscdp.encode_catalog_response(
        sn, DEV, 2, [item(1, name="大门口摄像机", address="北京市海淀区"), item(2, name="停车场")],
        charset="GB2312")
    assert "大门口".encode("gb2312") in body
    assert dev.message(body).status == 200
    names = {c.channel_id: (c.name, c.address) for c in h.channels()}
    assert names[cam(1)] == ("大门口摄像机", "北京市海淀区")
    assert names[cam(2)][0] == "停车场"
    assert h.devices.charset_of(DEV) == "GB2312"


def test_gb2312_label_on_a_utf8_body(h: Harness, dev: FakeDevice) -> None:
    """eXosip vector: ``encoding="GB2312"`` declared, UTF-8 bytes sent."""
    raw = (DATA / "exosip_catalog_response_gb2312_label_utf8_body.xml").read_bytes()
    assert b'encoding="GB2312"' in raw and "前门".encode() in raw
    body = re.sub(rb"<SN>\d+</SN>", b"<SN>%d</SN>" % dev.last_query("Catalog").sn, raw)
    assert dev.message(body).status == 200
    [channel] = h.channels()
    assert (channel.channel_id, channel.name, channel.manufacturer) == (DEV, "前门摄像头1", "SimTest")
    assert h.devices.charset_of(DEV) == "UTF-8"  # answered in kind from now on


def test_hikvision_bare_ampersand(h: Harness, dev: FakeDevice) -> None:
    sn = dev.last_query("Catalog").sn
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{DEV}</DeviceID>\r\n<SumNum>1</SumNum>\r\n"
        '<DeviceList Num="1">\r\n<Item>\r\n'
        f"<DeviceID>{cam(1)}</DeviceID>\r\n<Name>出入口 Entrance & Exit</Name>\r\n"
        "<Manufacturer>Hikvision</Manufacturer>\r\n<Status>ON</Status>\r\n"
        "</Item>\r\n</DeviceList>\r\n</Response>\r\n"
    ).encode("gb2312")
    assert dev.message(body).status == 200
    [channel] = h.channels()
    assert channel.name == "出入口 Entrance & Exit"


# --- to_channel -----------------------------------------------------------------


def test_to_channel_maps_every_field() -> None:
    src = manscdp.CatalogItem(
        device_id=cam(1), name="Gate", manufacturer="Hikvision", model="DS-2CD", owner="Owner",
        civil_code="340200", block="B1", address="Main St", parental="0", parent_id=f"{DEV}/{cam(9)}",
        business_group_id="34020000002150000001", safety_way="0", register_way="1",
        cert_num="C-1", certifiable="0", err_code="400", end_time="2030-01-01T00:00:00",
        secrecy="0", ip_address="192.0.2.10", port="8000", status="ON",
        longitude="116.397128", latitude="39.916527",
        info={"PTZType": "1", "Resolution": "6/4"}, extra={"Vendor": "x"},
    )
    ch = to_channel(src)
    assert ch.channel_id == cam(1)
    assert (ch.name, ch.manufacturer, ch.model, ch.owner) == ("Gate", "Hikvision", "DS-2CD", "Owner")
    assert (ch.civil_code, ch.block, ch.address) == ("340200", "B1", "Main St")
    assert ch.parental == 0 and ch.parent_id == f"{DEV}/{cam(9)}"
    assert ch.business_group_id == "34020000002150000001"
    assert (ch.safety_way, ch.register_way, ch.cert_num, ch.certifiable) == ("0", "1", "C-1", "0")
    assert (ch.err_code, ch.end_time, ch.secrecy) == ("400", "2030-01-01T00:00:00", "0")
    assert (ch.ip_address, ch.port, ch.status) == ("192.0.2.10", 8000, "ON")
    assert ch.longitude == pytest.approx(116.397128) and ch.latitude == pytest.approx(39.916527)
    assert isinstance(ch.longitude, float)
    assert ch.ptz_type == 1
    assert ch.extra == {"info": {"PTZType": "1", "Resolution": "6/4"}, "Vendor": "x"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", "80x"), ("port", "  "), ("parental", "yes"), ("longitude", "E116"), ("latitude", "")],
)
def test_to_channel_bad_numbers_become_none(field: str, value: str) -> None:
    fields: dict[str, Any] = {field: value}
    ch = to_channel(manscdp.CatalogItem(device_id=cam(1), **fields))
    assert getattr(ch, field) is None


def test_to_channel_minimal_item() -> None:
    ch = to_channel(manscdp.CatalogItem(device_id=cam(1), info={"PTZType": "x"}))
    assert ch.ptz_type is None
    assert ch.extra == {"info": {"PTZType": "x"}}
    bare = to_channel(manscdp.CatalogItem(device_id=cam(1)))
    assert bare.extra is None and bare.ptz_type is None and bare.name is None


def test_ptz_type_and_coordinates_reach_the_registry(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 1, [item(1, longitude="116.5", latitude="bad", info={"PTZType": "3"})])
    [channel] = h.channels()
    assert (channel.longitude, channel.latitude, channel.ptz_type) == (116.5, None, 3)
    assert channel.extra == {"info": {"PTZType": "3"}}


# --- why a sync failed (issue 8 item 18) ------------------------------------------


def api_client(h: Harness) -> Any:
    from gbplatform.api.app import Api
    from tests.unit.test_api import Client

    return Client(Api(h.platform))


def test_a_415_answer_says_why_through_the_api(h: Harness) -> None:
    """baresip answers 415 to a MANSCDP MESSAGE: the sync shows that, not ``error: null``."""
    dev = h.device()
    dev.answer_status = 415
    dev.register_auth()
    progress = api_client(h)("GET", f"/devices/{DEV}/catalog").json
    assert progress["status"] == "error"
    assert progress["error"] == f"device {DEV} answered 415 Unsupported Media Type"


def test_no_answer_says_how_long_was_waited(h: Harness, dev: FakeDevice) -> None:
    h.advance(h.config.sip.catalog_timeout + 1)
    progress = h.platform.catalog.progress(DEV)
    assert progress is not None and progress["status"] == "timeout"
    assert progress["error"] == f"no Catalog answer in {h.config.sip.catalog_timeout:g} s"


def test_a_partial_sync_says_what_is_missing(h: Harness, dev: FakeDevice) -> None:
    answer(dev, 5, [item(1), item(2)])
    h.advance(h.platform.catalog.idle_timeout + 0.1)
    progress = h.platform.catalog.progress(DEV)
    assert progress is not None and progress["status"] == "partial"
    assert progress["error"] == (
        f"2 of 5 items: no part for {h.platform.catalog.idle_timeout:g} s after the last one")


# --- finished sessions are not kept (issue 8 item 24) -------------------------------


def test_a_finished_sync_keeps_its_summary_not_its_items(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    send_parts(dev, 7, 3)
    assert session.status == "done" and not session.items
    progress = h.platform.catalog.progress(DEV)
    assert progress is not None
    assert (progress["status"], progress["total"], progress["received"], progress["parts"]) == ("done", 7, 7, 3)


def test_deleting_a_device_drops_its_catalog_sync(h: Harness, dev: FakeDevice) -> None:
    send_parts(dev, 2, 2)
    assert api_client(h)("DELETE", f"/devices/{DEV}").code == 204
    assert h.platform.catalog.progress(DEV) is None
    assert DEV not in h.platform.catalog.sessions


def test_deleting_a_device_ends_its_running_sync(h: Harness, dev: FakeDevice) -> None:
    session = session_of(h)
    answer(dev, 5, [item(1)])
    h.platform.catalog.forget(DEV)
    assert has_fired(session.done) and session.status == "error"
    assert h.platform.catalog.progress(DEV) is None
    h.advance(60)  # no timer of the dropped sync fires, nothing is stored for it
    assert h.platform.catalog.progress(DEV) is None
    assert h.failures() == []


def test_finished_summaries_are_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "MAX_FINISHED", 2)
    devices = [h.registered_device(f"340200000013200000{n:02d}", ("UDP", "127.0.0.1", 5070 + n), seed=n)
               for n in range(1, 4)]
    for dev in devices:
        assert dev.message(manscdp.encode_catalog_response(
            dev.last_query("Catalog").sn, dev.device_id, 0, [])).status == 200
    catalog = h.platform.catalog
    assert [catalog.progress(d.device_id) is not None for d in devices] == [False, True, True]
    assert len(catalog.sessions) == 2


# --- why a sync failed, from the registry (issue 8 item 18) -------------------------


def _why_415(device_id: str = DEV) -> str:
    return f"device {device_id} answered 415 Unsupported Media Type"


def test_a_415_answer_is_stored_and_shown_by_both_endpoints(h: Harness) -> None:
    """baresip answers 415 to the Catalog MESSAGE: ``GET /devices/{id}`` and
    ``GET /devices/{id}/catalog`` both say why, also once the in-memory
    session is gone (a restarted platform over the same registry)."""
    dev = h.device()
    dev.answer_status = 415
    dev.register_auth()
    h.pump()
    assert h.record().catalog_status == "error"
    assert h.record().catalog_error == _why_415()
    client = api_client(h)
    assert client("GET", f"/devices/{DEV}").json["catalog"]["error"] == _why_415()
    assert client("GET", f"/devices/{DEV}/catalog").json["error"] == _why_415()

    h2 = h.restart()
    assert h2.platform.catalog.progress(DEV) is None
    client = api_client(h2)
    device = client("GET", f"/devices/{DEV}").json
    assert (device["catalog"]["status"], device["catalog"]["error"]) == ("error", _why_415())
    progress = client("GET", f"/devices/{DEV}/catalog").json
    assert (progress["status"], progress["error"]) == ("error", _why_415())
    assert progress["sn"] is None  # read from the registry, not a session


def test_timeout_and_partial_reasons_are_stored(h: Harness, dev: FakeDevice) -> None:
    h.advance(h.config.sip.catalog_timeout + 1)
    assert (h.record().catalog_status, h.record().catalog_error) == (
        "timeout", f"no Catalog answer in {h.config.sip.catalog_timeout:g} s")
    new_sync(h, dev)
    answer(dev, 5, [item(1), item(2)])
    h.advance(h.platform.catalog.idle_timeout + 0.1)
    record = h.record()
    assert (record.catalog_status, record.catalog_error) == (
        "partial", f"2 of 5 items: no part for {h.platform.catalog.idle_timeout:g} s after the last one")


def test_a_new_sync_clears_the_stored_reason(h: Harness, dev: FakeDevice) -> None:
    h.advance(h.config.sip.catalog_timeout + 1)
    assert h.record().catalog_error is not None
    new_sync(h, dev)
    answer(dev, 5, [item(1)])  # the first part writes "running" progress
    assert (h.record().catalog_status, h.record().catalog_error) == ("running", None)
    device = api_client(h)("GET", f"/devices/{DEV}").json
    assert (device["catalog"]["status"], device["catalog"]["error"]) == ("running", None)
    answer(dev, 5, [item(n) for n in range(2, 6)])
    assert (h.record().catalog_status, h.record().catalog_error) == ("done", None)
    assert api_client(h)("GET", f"/devices/{DEV}").json["catalog"]["error"] is None


def test_a_stored_reason_is_bounded_and_cleared_by_done(h: Harness) -> None:
    """The reason can quote a device's reason phrase: the row keeps a bounded prefix."""
    h.create_device()
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    h.call(q.set_catalog_progress_txn, DEV, "error", 0, 0, at, "x" * 5000)
    assert h.record().catalog_error == "x" * q.MAX_CATALOG_ERROR
    h.call(q.set_catalog_progress_txn, DEV, "done", 1, 1, at, "ignored")
    assert h.record().catalog_error is None
