"""API shapes of the event stream and webhooks: the event as sent, and the stats.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from gbplatform.api.shapes import OptStr, Shape

__all__ = ["EventMessage", "EventStats", "StreamStats", "WebhookStats", "WebhookTargetStats"]

EventKind = Literal["alarm", "device", "channel", "position", "stream", "record", "subscription", "upgrade",
                    "snapshot", "ptz"]


class EventMessage(Shape):
    """One event, as the `data:` of `GET /api/v1/events` and the body of a webhook POST.

    Beside these keys each kind carries its own (docs/events.md): `device` has `event` (registered, online,
    offline, unregistered), `online`, `reason` and the device's `transport`/`host`/`port`; `stream` has
    `event` (started, ended, failed), `transport`, `ssrc`, `reason` and, once ended, `duration`,
    `packets`, `bytes`; `record` has `event` (segment_closed, error), the segment's `key`, `start`,
    `end`, `duration`, `size`, `frames`, `error`; `channel` after a catalog sync has `event` ("synced"),
    `status`, `total`, `added`, `removed` (IDs, at most 1000 each) and their counts.
    """

    id: Annotated[int, Meta(ge=1, description="Increasing, also across platform restarts "
                                              "(each run starts at its start time in microseconds).")]
    type: EventKind
    time: Annotated[float, Meta(description="When it happened, epoch seconds (UTC).")]
    device_id: Annotated[OptStr, Meta(description="The device concerned.")]
    channel_id: Annotated[OptStr, Meta(description="The channel concerned; null for the device as a whole.")]


class StreamStats(Shape):
    clients: Annotated[int, Meta(description="Clients of /api/v1/events connected now.")]
    max_clients: Annotated[int, Meta(description="api.event_clients: more get 503.")]
    accepted: Annotated[int, Meta(description="Connections accepted since start.")]
    rejected: Annotated[int, Meta(description="Connections refused (503) for api.event_clients.")]
    overflowed: Annotated[int, Meta(description="Clients disconnected for reading too slowly "
                                                "(api.event_client_buffer).")]
    events_sent: Annotated[int, Meta(description="Events handed to clients (each client counts).")]


class WebhookTargetStats(Shape):
    url: Annotated[str, Meta(description="The URL, its user information shown as `***`.")]
    queued: Annotated[int, Meta(description="Events waiting (not counting the one being sent).")]
    delivered: Annotated[int, Meta(description="Events answered 2xx.")]
    failed: Annotated[int, Meta(description="Events given up after webhooks.max_attempts attempts.")]
    rejected: Annotated[int, Meta(description="Events answered 4xx (not retried; 408 and 429 are).")]
    dropped: Annotated[int, Meta(description="Events dropped, oldest first, past webhooks.max_queue.")]
    retries: Annotated[int, Meta(description="Attempts after a first failed one.")]
    last_status: Annotated[int | None, Meta(description="HTTP status of the last answer.")]
    last_error: Annotated[OptStr, Meta(description="Why the last failed attempt failed.")]
    last_success: Annotated[float | None, Meta(description="Epoch seconds of the last 2xx.")]


class WebhookStats(Shape):
    types: Annotated[list[str], Meta(description="Kinds sent (webhooks.types); empty: every kind.")]
    targets: list[WebhookTargetStats]


class EventStats(Shape):
    last_id: Annotated[int, Meta(description="The latest event's id (0 before the first).")]
    published: Annotated[dict[str, int], Meta(description="Events published since start, by kind.")]
    stream: StreamStats
    webhooks: WebhookStats
