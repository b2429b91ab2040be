"""The platform's own events on the bus: device lifecycle (not keepalives), live streams started, ended and
failed, catalog syncs with the channels added and removed, recording segments closed and write errors."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from gbplatform.core.ids import SsrcAllocator
from gbplatform.events.bus import Event
from gbplatform.events.sources import MAX_IDS, publish_record_event, publish_stream_event
from gbplatform.recording.writer import SegmentClosed, SegmentOpened, WriteFailed
from gbplatform.sessions.live import LiveStreams
from media.ports import PortPool
from sip import manscdp
from tests.unit.platform_harness import DEV, FakeDevice, Harness, result_of
from tests.unit.test_live import CHANNEL, Camera, Receiver

CH2 = "34020000001310000002"
CH3 = "34020000001310000003"


def collect(h: Harness) -> list[Event]:
    seen: list[Event] = []
    h.platform.bus.listen(seen.append)
    return seen


def of(seen: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in seen if e.kind == kind]


def test_device_registered_unregistered_offline_but_no_keepalive_events(h: Harness) -> None:
    seen = collect(h)
    dev = h.registered_device()
    (registered,) = of(seen, "device")
    assert registered == {"device_id": DEV, "channel_id": None, "event": "registered", "online": True,
                          "reason": "registered", "transport": "UDP", "host": "127.0.0.1", "port": 5070}
    assert dev.keepalive().status == 200
    h.advance(60)
    assert dev.keepalive().status == 200
    assert len(of(seen, "device")) == 1  # keepalives are not events
    assert dev.register_auth(expires=0).status == 200
    assert of(seen, "device")[-1] == {"device_id": DEV, "channel_id": None, "event": "unregistered",
                                      "online": False, "reason": "unregistered", "transport": None,
                                      "host": None, "port": None}
    h.registered_device()
    h.advance(60 * 3 + 1)  # three keepalives missed (sip.keepalive_interval x keepalive_count)
    offline = of(seen, "device")[-1]
    assert (offline["event"], offline["online"], offline["reason"]) == ("offline", False, "3 keepalives missed")
    assert [e["event"] for e in of(seen, "device")] == ["registered", "unregistered", "registered", "offline"]


def answer_catalog(dev: FakeDevice, *ids: str) -> None:
    query = dev.last_query("Catalog")
    items = [manscdp.CatalogItem(device_id=i, name=i[-3:], status="ON", parent_id=DEV) for i in ids]
    dev.message(manscdp.encode_catalog_response(query.sn, DEV, len(items), items))


def test_a_catalog_sync_reports_the_channels_added_and_removed(h: Harness) -> None:
    seen = collect(h)
    dev = h.registered_device()
    answer_catalog(dev, CHANNEL, CH2)
    h.advance(1)
    first = of(seen, "channel")[-1]
    assert first == {"device_id": DEV, "channel_id": None, "event": "synced", "status": "done", "total": 2,
                     "received": 2, "error": None, "added": [CHANNEL, CH2], "removed": [], "added_count": 2,
                     "removed_count": 0}
    h.platform.catalog.start(DEV)
    h.pump()
    answer_catalog(dev, CH2, CH3)
    h.advance(1)
    second = of(seen, "channel")[-1]
    assert (second["added"], second["removed"]) == ([CH3], [CHANNEL])
    assert MAX_IDS == 1000


def test_a_sync_with_no_answer_reports_nothing_changed(h: Harness) -> None:
    seen = collect(h)
    h.registered_device()
    h.advance(h.platform.config.sip.catalog_timeout + 1)
    synced = [e for e in of(seen, "channel") if e["event"] == "synced"]
    assert synced and synced[-1]["status"] == "timeout" and synced[-1]["added"] == []


def test_streams_started_ended_and_failed(h: Harness) -> None:
    seen = collect(h)
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200
    rng = random.Random(5)
    streams = LiveStreams(
        router=h.platform.router, clock=h.clock, ports=PortPool(30000, 30019, rng),
        ssrcs=SsrcAllocator("3402000000", rng), media_ip="192.0.2.10",
        receiver_factory=lambda ingest, lease, *, mode, on_timeout: Receiver(ingest, lease, mode=mode,
                                                                            on_timeout=on_timeout),
    )
    bus = h.platform.bus
    streams.observers.append(lambda stream, what, reason: publish_stream_event(bus, stream, what, reason))
    stream = result_of(h.run(streams.play(DEV, CHANNEL)))
    started = of(seen, "stream")[-1]
    assert started == {"device_id": DEV, "channel_id": CHANNEL, "event": "started", "transport": "udp",
                       "ssrc": stream.ssrc, "rtp_port": stream.lease.rtp, "reason": None}
    h.advance(5)
    streams.stop(CHANNEL, "stopped through the API")
    ended = of(seen, "stream")[-1]
    assert (ended["event"], ended["reason"], ended["state"], ended["duration"]) == (
        "ended", "stopped through the API", "closed", 5.0)
    assert {"packets", "bytes", "frames"} <= set(ended)
    cam.invite_status = 486
    failed = h.run(streams.play(DEV, CHANNEL))
    h.pump()
    failed.addErrback(lambda _: None)
    last = of(seen, "stream")[-1]
    assert last["event"] == "failed" and "486" in str(last["reason"])


def test_recording_segments_closed_and_errors() -> None:
    from gbplatform.core.clock import FakeClock
    from gbplatform.events.bus import EventBus

    bus = EventBus(FakeClock())
    seen: list[Event] = []
    bus.listen(seen.append)
    manager: Any = SimpleNamespace(channels={CHANNEL: SimpleNamespace(device_id=DEV)})
    publish_record_event(bus, manager, SegmentOpened(CHANNEL, "k", 100.0))  # not an event
    publish_record_event(bus, manager, SegmentClosed(CHANNEL, "k", 100.0, 160.5, 1234, [], 1500, True))
    publish_record_event(bus, manager, WriteFailed(CH2, "k2", "disk full"))
    assert [e.data for e in seen] == [
        {"device_id": DEV, "channel_id": CHANNEL, "event": "segment_closed", "key": "k", "start": 100.0,
         "end": 160.5, "duration": 60.5, "size": 1234, "frames": 1500, "has_audio": True, "error": None},
        {"device_id": None, "channel_id": CH2, "event": "error", "key": "k2", "error": "disk full"},
    ]


def test_the_recording_manager_tells_its_observers(tmp_path: Any) -> None:
    from gbplatform.app.config import Config
    from gbplatform.events.sources import watch_recording
    from tests.unit.test_api import make_platform
    from tests.unit.test_recording import make_manager

    platform, clock = make_platform(Config())
    manager = make_manager(platform, clock, tmp_path / "rec")
    seen: list[Event] = []
    platform.bus.listen(seen.append)
    watch_recording(platform.bus, manager)
    manager.on_event(WriteFailed(CHANNEL, None, "No space left on device"))
    assert [(e.kind, e.data["event"], e.data["error"]) for e in seen] == [
        ("record", "error", "No space left on device")]
    assert manager.stats.write_errors == 1
    platform.db.engine.dispose()
