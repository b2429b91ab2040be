"""The platform's own events on the bus: ``device``, ``stream``, ``record`` and catalog ``channel`` events.

Other packages publish what devices report (alarms, positions, catalog
NOTIFYs, upgrades...). Here the platform reports what it does itself, from
hooks its services already have:

- ``device``: the registrar's lifecycle (``DeviceManager.publish``):
  ``registered`` (a REGISTER brought it online, GB/T 28181-2016 §9.1.2),
  ``online`` (a keepalive brought it back after a platform restart, §9.6),
  ``offline`` (registration expired, keepalives missed: ``reason``),
  ``unregistered`` (REGISTER with Expires 0, §9.1.2.2). Keepalives
  themselves are not events.
- ``stream``: ``LiveStreams.observers``: ``started`` (the INVITE was
  answered, §9.2.2), ``ended`` (BYE either way, no RTP, no viewer:
  ``reason``, with its duration and traffic), ``failed`` (the play never
  started: the device refused, timed out...).
- ``record``: ``RecordingManager.observers``: ``segment_closed`` (its key,
  start, end, duration, size, frames; ``error`` when writing failed) and
  ``error`` (a write failed).
- ``channel``: ``CatalogSync.on_synced`` after a catalog sync (§9.5.2):
  ``synced`` with ``status`` and the channels ``added``/``removed``
  (at most ``MAX_IDS`` of each listed; the counts are whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gbplatform.devices.catalog import CatalogChange, CatalogSession
from gbplatform.devices.registrar import DeviceEvent
from gbplatform.events.bus import EventBus
from gbplatform.recording.writer import Event as RecorderEvent
from gbplatform.recording.writer import SegmentClosed, WriteFailed

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext
    from gbplatform.devices.registrar import DeviceManager
    from gbplatform.recording.manager import RecordingManager
    from gbplatform.sessions.live import LiveStream

__all__ = ["MAX_IDS", "connect_sources", "publish_device_event", "watch_recording"]

#: Most channel IDs listed in one catalog ``channel`` event (an NVR's first sync adds thousands).
MAX_IDS: Final = 1000


def publish_device_event(bus: EventBus, devices: DeviceManager, event: DeviceEvent) -> None:
    """A registrar lifecycle change as a ``device`` event."""
    if event.online:
        what = "registered" if event.reason == "registered" else "online"
    else:
        what = "unregistered" if event.reason == "unregistered" else "offline"
    live = devices.live_info(event.device_id) if event.online else None
    bus.publish(
        "device", device_id=event.device_id, channel_id=None, event=what, online=event.online, reason=event.reason,
        transport=live.addr[0] if live is not None else None, host=live.addr[1] if live is not None else None,
        port=live.addr[2] if live is not None else None,
    )


def publish_stream_event(bus: EventBus, stream: LiveStream, what: str, reason: str | None) -> None:
    """A live stream's start or end as a ``stream`` event."""
    data: dict[str, object] = {"event": what, "transport": stream.mode, "ssrc": stream.ssrc,
                               "rtp_port": stream.lease.rtp, "reason": reason}
    if what != "started":
        stats = stream.ingest.stats
        data.update(state=stream.state, duration=round(max(0.0, bus.clock.time() - stream.started_at), 3),
                    packets=stats.packets, bytes=stats.bytes, frames=stats.frames)
    bus.publish("stream", device_id=stream.device_id, channel_id=stream.channel_id, **data)


def publish_record_event(bus: EventBus, manager: RecordingManager, event: RecorderEvent) -> None:
    """A closed segment or a write failure as a ``record`` event (an opened segment is not one)."""
    rec = manager.channels.get(event.channel_id)
    device_id = rec.device_id if rec is not None else None
    if isinstance(event, SegmentClosed):
        bus.publish("record", device_id=device_id, channel_id=event.channel_id, event="segment_closed",
                    key=event.key, start=event.start, end=event.end,
                    duration=round(max(0.0, event.end - event.start), 3), size=event.size, frames=event.frames,
                    has_audio=event.has_audio, error=event.error)
    elif isinstance(event, WriteFailed):
        bus.publish("record", device_id=device_id, channel_id=event.channel_id, event="error", key=event.key,
                    error=event.error)


def publish_catalog_event(bus: EventBus, session: CatalogSession, change: CatalogChange | None) -> None:
    """A finished catalog sync as a ``channel`` event: what was added and removed."""
    added = change.added if change is not None else []
    removed = change.removed if change is not None else []
    bus.publish("channel", device_id=session.device_id, channel_id=None, event="synced", status=session.status,
                total=session.sum_num, received=session.received, error=session.error,
                added=added[:MAX_IDS], removed=removed[:MAX_IDS], added_count=len(added),
                removed_count=len(removed))


def connect_sources(platform: AppContext) -> None:
    """Hook the live streams and the catalog sync to the bus (the registrar's hook is ``publish_device_event``,
    called from ``build_platform``'s publish; recording's is ``watch_recording``)."""
    bus = platform.bus
    if platform.live is not None:
        platform.live.observers.append(lambda stream, what, reason: publish_stream_event(bus, stream, what, reason))
    platform.catalog.on_synced.append(lambda session, change: publish_catalog_event(bus, session, change))


def watch_recording(bus: EventBus, manager: RecordingManager) -> None:
    manager.observers.append(lambda event: publish_record_event(bus, manager, event))
