"""The OpenAPI paths of the event stream (``GET /api/v1/events``) and its stats, for ``gbplatform.api.openapi``."""

from __future__ import annotations

from typing import Any

from gbplatform.events import shapes
from gbplatform.events.bus import EVENT_KINDS

__all__ = ["SHAPES", "paths"]

SHAPES: tuple[Any, ...] = (shapes.EventMessage, shapes.EventStats)

_STREAM_EXAMPLE = (
    "retry: 3000\nid: 41\n\n"
    'id: 42\nevent: device\ndata: {"id":42,"type":"device","time":1700000000.5,"device_id":"34020000001320000001",'
    '"channel_id":null,"event":"registered","online":true,"reason":"registered","transport":"UDP",'
    '"host":"192.0.2.10","port":5060}\n\n'
    'id: 43\nevent: stream\ndata: {"id":43,"type":"stream","time":1700000003.1,"device_id":"34020000001320000001",'
    '"channel_id":"34020000001310000001","event":"started","transport":"udp","ssrc":"0340200001",'
    '"rtp_port":30000,"reason":null}\n\n'
    ": keepalive\n\n"
)

_RESET_EXAMPLE = (
    "retry: 3000\n\n"
    'id: 1500\nevent: reset\ndata: {"type":"reset","last_event_id":12,"id":1500,'
    '"reason":"events after it are no longer kept"}\n\n'
)


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _e(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def paths(prefix: str) -> dict[str, Any]:
    ids = {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 1000}
    return {
        f"{prefix}/events": {
            "get": {
                "operationId": "eventStream", "tags": ["events"],
                "summary": "Live events as Server-Sent Events (alarms, devices, channels, streams, recordings...)",
                "description": (
                    "A `text/event-stream` (HTML Standard §9.2) that stays open: each event is `id: <n>`, "
                    "`event: <type>`, `data: <the event's JSON>` (schema `EventMessage`) and a blank line. The "
                    "stream starts with `retry: 3000` and `id: <latest id>`; a `: keepalive` comment comes every "
                    "`api.event_keepalive` seconds. Reconnect with `Last-Event-ID` (an EventSource does it "
                    "itself) to get the events missed since, from the last `api.event_backlog` events; if they "
                    "are no longer kept, or the platform restarted, an `event: reset` comes instead (resync from "
                    "the API). A client that reads too slowly (more than `api.event_client_buffer` bytes behind) "
                    "gets `event: overflow` and is disconnected. Types: " + ", ".join(EVENT_KINDS) + "."),
                "parameters": [
                    {**_q("types", {"type": "array", "items": {"type": "string", "enum": list(EVENT_KINDS)}},
                          "Only these event types (comma-separated or repeated)."), "style": "form",
                     "explode": False},
                    {**_q("device_id", ids, "Only events of these devices (comma-separated or repeated)."),
                     "style": "form", "explode": False},
                    {**_q("channel_id", ids, "Only events of these channels (comma-separated or repeated)."),
                     "style": "form", "explode": False},
                    _q("last_event_id", {"type": "integer", "minimum": 0},
                       "Where to resume, for clients that cannot send the `Last-Event-ID` header."),
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": {"type": "integer", "minimum": 0},
                     "description": "The id of the last event received (sent by EventSource on reconnect)."},
                    _q("token", {"type": "string"},
                       "The API token, for clients that cannot send `Authorization` (a browser's EventSource; "
                       "RFC 6750 §2.3). Logged as `token=***`."),
                ],
                "responses": {
                    "200": {"description": "The event stream, until the client leaves.", "content": {
                        "text/event-stream": {"schema": {"type": "string"}, "examples": {
                            "events": {"summary": "A new connection", "value": _STREAM_EXAMPLE},
                            "reset": {"summary": "Resuming from an event no longer kept", "value": _RESET_EXAMPLE},
                        }}}},
                    "400": _e("An unknown type (`invalid`, `field` types), a bad ID list or Last-Event-ID."),
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "503": _e("`api.event_clients` streams are open already (`too_many_event_clients`)."),
                },
            },
        },
        f"{prefix}/events/stats": {
            "get": {
                "operationId": "eventStats", "tags": ["events"],
                "summary": "Event counters: published by type, stream clients, webhook deliveries",
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/EventStats"},
                        "examples": {"running": {"value": {
                            "last_id": 43, "published": {"device": 2, "stream": 1, "channel": 40},
                            "stream": {"clients": 1, "max_clients": 100, "accepted": 3, "rejected": 0,
                                       "overflowed": 0, "events_sent": 120},
                            "webhooks": {"types": [], "targets": [{
                                "url": "https://***@hooks.example/gb", "queued": 0, "delivered": 43, "failed": 0,
                                "rejected": 0, "dropped": 0, "retries": 1, "last_status": 200,
                                "last_error": "HTTP 503", "last_success": 1700000003.2}]},
                        }}}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                },
            },
        },
    }
