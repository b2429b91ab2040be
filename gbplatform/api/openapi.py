"""The OpenAPI 3.1 document of the HTTP API.

The components are generated from the shapes (the msgspec Structs in
``gbplatform/api/shapes.py`` and each domain's ``shapes.py``; the channel from
``sip/channel_fields.py``), so a body is declared once for validation and
documentation.  The paths are written here, next to the routes: the test
walks the Klein URL map and fails when a route and this document disagree,
so the document can say more than the code does (examples, error cases)
without drifting from it.  Schemas are JSON Schema 2020-12 as OpenAPI 3.1
uses it.
"""

from __future__ import annotations

from typing import Any

from gbplatform.alarms import openapi as alarms
from gbplatform.api import openapi_parts as parts
from gbplatform.api import shapes
from gbplatform.api.schemas import (
    DEFAULT_PAGE_LIMIT,
    DEFAULT_TRACE_LIMIT,
    MAX_PAGE_LIMIT,
    MAX_TRACE_LIMIT,
)
from gbplatform.control import openapi_2022 as ptz2022
from gbplatform.control import openapi_maintenance as maintenance
from gbplatform.control import shapes as control
from gbplatform.control.config2022 import KINDS as CONFIG_2022
from gbplatform.devices import shapes as devices
from gbplatform.events import openapi as events
from gbplatform.recording import shapes as recording
from gbplatform.sessions import shapes as sessions
from gbplatform.snapshots import openapi as snapshots
from gbplatform.subscriptions import openapi as subscriptions
from sip import manscdp

PREFIX = "/api/v1"

#: Every shape the document names (the ones they reference come along).
SHAPES: tuple[Any, ...] = (
    shapes.Error, shapes.Health, shapes.Page,
    devices.Device, devices.DeviceCreate, devices.DevicePatch, devices.DevicePage, devices.Channel,
    devices.ChannelPage, devices.ChannelTree, devices.CatalogProgress, devices.DeviceInfo, devices.DeviceStatus,
    devices.Trace, devices.BanList, devices.DialectBody, devices.DeviceDialect,
    sessions.StreamList, sessions.PlayResult,
    recording.RecordPlan, recording.RecordPlanBody, recording.RecordPlanList, recording.RecordPolicyBody,
    recording.RecordPolicy, recording.RecordTimeline, recording.StorageState, recording.DownloadList,
    control.PtzBody, control.LensBody, control.PresetBody, control.CruiseBody, control.ScanBody, control.AuxBody,
    control.ControlResult, control.PresetList,
    control.DeviceRecordBody, control.GuardBody, control.AlarmResetBody, control.DragZoomBody,
    control.HomePositionBody, control.CommandResult, control.DeviceConfigResult, control.BasicConfigBody,
    control.VideoConfigBody, *(kind.body for kind in CONFIG_2022.values()),
    *ptz2022.SHAPES,
    *maintenance.SHAPES,
    *events.SHAPES,
    *alarms.SHAPES,
    *snapshots.SHAPES,
    *subscriptions.SHAPES,
)


_ref = parts.schema_ref


def _schemas() -> dict[str, Any]:
    schemas = shapes.components(SHAPES)
    schemas["BanList"]["examples"] = [devices.BAN_LIST_EXAMPLE]
    return schemas


_error = parts.error


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_RESPONSES = {
    "BadRequest": _error("Invalid JSON body or parameter (`bad_json`, `invalid` with `field`)."),
    "Unauthorized": _error("Missing or wrong bearer token."),
    "NotFound": _error("No such device (`not_found`)."),
    "DeviceOffline": _error("The device is not registered (`device_offline`)."),
    "DeviceRejected": _error("The device answered with a SIP error (`device_rejected`)."),
    "PlayConflict": _error("The device is not registered (`device_offline`), or the stream was stopped "
                           "while its INVITE was in flight (`stream_stopped`)."),
    "PlayRejected": _error("The device answered the INVITE with a SIP error (`device_rejected`), or refused "
                           "the TCP-active media connection (`media_connect_failed`); `message` says why."),
    "DeviceTimeout": _error("The device did not answer in time (`device_timeout`)."),
    "ChannelNotFound": _error("No such channel (`not_found`)."),
    "MediaUnavailable": _error("No media receiver on this platform (`media_unavailable`), or no free RTP "
                               "port (`no_media_ports`)."),
}


_r = parts.response_ref


_query = parts.query


_PAGING = [
    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Items to skip."),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT, "default": DEFAULT_PAGE_LIMIT},
           "Page size."),
]
_DEVICE_ID = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "The device's GB/T 28181 ID."}
_CHANNEL_ID = {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "The channel's GB/T 28181 ID (from the device's catalog)."}
_PLAY_ERRORS = {"404": _r("ChannelNotFound"), "409": _r("PlayConflict"), "502": _r("PlayRejected"),
                "503": _r("MediaUnavailable"), "504": _r("DeviceTimeout")}


def _op(op_id: str, tag: str, summary: str, responses: dict[str, Any], *,
        params: list[dict[str, Any]] | None = None, body: str | None = None, device: bool = True,
        public: bool = False, description: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    parameters = ([_DEVICE_ID] if device else []) + (params or [])
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if public:
        op["security"] = []
    else:
        responses = {**responses, "401": _r("Unauthorized")}
    if body or params:
        responses = {"400": _r("BadRequest"), **responses}
    op["responses"] = dict(sorted(responses.items()))
    return op


def _dialect_op() -> dict[str, Any]:
    """``PUT /devices/{id}/dialect``: the GB/T 28181 edition spoken to the device, its I-frame spelling."""
    op = _op("setDeviceDialect", "devices", "Set the GB/T 28181 dialect (2016/2022) spoken to the device",
             {"200": {"description": "The device's dialect state", "content": {"application/json": {
                 "schema": _ref("DeviceDialect"),
                 "examples": {"forced2016": {"value": {
                     "device_id": "34020000001320000001", "gb_version": "2016", "gb_version_detected": "2022",
                     "gb_version_setting": "2016", "iframe_element": "IFameCmd"}}}}}},
              "404": _r("NotFound")},
             body="DialectBody",
             description="`auto` (the default) speaks what the device's REGISTER announces (GB/T 28181-2022 "
                         "§9.1 `X-GB-Ver`; no header: 2016). A 2022 command to a device spoken to in 2016 is "
                         "refused with 422 (`unsupported_by_device_dialect`) before anything is sent. "
                         "`iframe_element` chooses the spelling of the I-frame request (§A.2.3.1.7). Applies at "
                         "once, also to a device that is online; no SIP is sent.")
    op["requestBody"]["content"]["application/json"]["examples"] = {
        "force2016": {"value": {"version": "2016"}},
        "auto": {"value": {"version": "auto"}},
        "iframeSpelling": {"value": {"iframe_element": "IFrameCmd"}},
    }
    return op


def _paths() -> dict[str, Any]:
    d = "devices"
    live = "Live query to the device (MANSCDP over SIP MESSAGE); fails fast if it is not registered."
    return {
        f"{PREFIX}/health": {
            "get": _op("health", "platform", "Liveness and counters (no database access)",
                       {"200": _ok("Health")}, device=False, public=True),
        },
        f"{PREFIX}/openapi.json": {
            "get": {**_op("openapi", "platform", "This document", {}, device=False),
                    "responses": {"200": {"description": "The OpenAPI 3.1 document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                  "401": _r("Unauthorized")}},
        },
        f"{PREFIX}/devices": {
            "get": _op("listDevices", d, "List devices", {"200": _ok("DevicePage")}, device=False, params=[
                _query("online", {"type": "boolean"}, "Only online (true) or offline (false) devices."),
                _query("q", {"type": "string", "maxLength": 64}, "Substring of the ID, name or host."),
                *_PAGING,
            ]),
            "post": _op("createDevice", d, "Add a device before it registers",
                        {"201": _ok("Device", "Created"), "409": _error("The device exists (`device_exists`).")},
                        device=False, body="DeviceCreate"),
        },
        f"{PREFIX}/devices/{{device_id}}": {
            "get": _op("getDevice", d, "One device", {"200": _ok("Device"), "404": _r("NotFound")}),
            "patch": _op("updateDevice", d, "Change a device", {"200": _ok("Device"), "404": _r("NotFound")},
                         body="DevicePatch"),
            "delete": _op("deleteDevice", d, "Delete a device and its channels",
                          {"204": {"description": "Deleted"}, "404": _r("NotFound")}),
        },
        f"{PREFIX}/devices/{{device_id}}/dialect": {
            "put": _dialect_op(),
        },
        f"{PREFIX}/devices/{{device_id}}/channels": {
            "get": _op("listChannels", "channels", "A device's channels, by ID",
                       {"200": _ok("ChannelPage"), "404": _r("NotFound")}, params=[
                           _query("parent_id", {"type": "string", "maxLength": 32},
                                  "Only the children of this node (also matches the last element of a "
                                  "'/'-separated ParentID path)."),
                           *_PAGING,
                       ]),
        },
        f"{PREFIX}/devices/{{device_id}}/channels/tree": {
            "get": _op("channelTree", "channels", "A device's catalog as a tree",
                       {"200": _ok("ChannelTree"), "404": _r("NotFound")}),
        },
        f"{PREFIX}/devices/{{device_id}}/catalog": {
            "get": _op("catalogProgress", "catalog", "Progress of the running or last catalog sync",
                       {"200": _ok("CatalogProgress"), "404": _r("NotFound")}),
        },
        f"{PREFIX}/devices/{{device_id}}/catalog/sync": {
            "post": _op("syncCatalog", "catalog", "Start a catalog sync (GB/T 28181-2016 §9.5.2)",
                        {"202": _ok("CatalogProgress", "Started, or already running"), "404": _r("NotFound"),
                         "409": _r("DeviceOffline")}),
        },
        f"{PREFIX}/devices/{{device_id}}/info": {
            "get": _op("deviceInfo", "queries", "Ask the device its DeviceInfo (GB/T 28181-2016 §A.2.4.4)",
                       {"200": _ok("DeviceInfo"), "404": _r("NotFound"), "409": _r("DeviceOffline"),
                        "502": _r("DeviceRejected"), "504": _r("DeviceTimeout")}, description=live),
        },
        f"{PREFIX}/devices/{{device_id}}/status": {
            "get": _op("deviceStatus", "queries", "Ask the device its DeviceStatus (GB/T 28181-2016 §A.2.4.3)",
                       {"200": _ok("DeviceStatus"), "404": _r("NotFound"), "409": _r("DeviceOffline"),
                        "502": _r("DeviceRejected"), "504": _r("DeviceTimeout")}, description=live),
        },
        f"{PREFIX}/devices/{{device_id}}/trace": {
            "get": _op("deviceTrace", "devices", "The last SIP messages exchanged with a device",
                       {"200": _ok("Trace")}, params=[
                           _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TRACE_LIMIT,
                                            "default": DEFAULT_TRACE_LIMIT}, "At most this many, newest last."),
                       ], description="Also for IDs with no registry entry: a device that fails to "
                                      "register still leaves a trace. Includes the INVITE/ACK/BYE of its "
                                      "channels; messages with its ID from other addresses are kept apart "
                                      "(their own bound) and merged in by time."),
        },
        f"{PREFIX}/channels/{{channel_id}}/play": {
            "post": _op("playChannel", "live", "Start the channel's live stream (GB/T 28181-2016 §9.2)",
                        {"200": _ok("PlayResult", "Playing (shared with any other viewer)"), **_PLAY_ERRORS},
                        device=False, params=[_CHANNEL_ID],
                        description="INVITEs the device unless the channel is already playing. A stream "
                                    "nobody watches is stopped (BYE) after media.idle_timeout (default 30 s) without a viewer."),
        },
        f"{PREFIX}/channels/{{channel_id}}/stop": {
            "post": _op("stopChannel", "live", "Stop the channel's live stream (BYE)",
                        {"204": {"description": "Stopped; HTTP-FLV viewers see their response end"},
                         "404": _error("The channel is not streaming (`not_found`)."),
                         "503": _r("MediaUnavailable")}, device=False, params=[_CHANNEL_ID]),
        },
        f"{PREFIX}/channels/{{channel_id}}/snapshot": {
            "get": _op("channelSnapshot", "live", "One JPEG picture of the channel (starts the stream on demand)", {
                "200": {"description": "The JPEG (ITU-T T.81) of the stream's latest keyframe, full size.",
                        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                **_PLAY_ERRORS,
                "502": _error("The device answered with a SIP error (`device_rejected`), refused the "
                              "media connection (`media_connect_failed`), or its keyframe does not decode "
                              "(`bad_picture`)."),
                "503": _error("No media receiver (`media_unavailable`), no free RTP port (`no_media_ports`), "
                              "or no keyframe within 5 s (`no_keyframe`)."),
            }, device=False, params=[_CHANNEL_ID, _query(
                "token", {"type": "string"},
                "The playback token of the play response's snapshot URL, or the API token: for clients "
                "that cannot send `Authorization` (RFC 6750 §2.3).",
            )], description="Waits up to 5 s for the stream's first keyframe. A stream started for the "
                            "snapshot alone is stopped after media.idle_timeout without a viewer."),
        },
        f"{PREFIX}/streams": {
            "get": _op("listStreams", "live", "Live streams and their viewers",
                       {"200": _ok("StreamList"), "503": _r("MediaUnavailable")}, device=False),
        },
        "/live/{channel_id}.flv": {
            "get": _op("liveFlv", "live", "Watch the channel as HTTP-FLV (starts the stream on demand)", {
                "200": {"description": "FLV (Adobe FLV v10.1 Annex E; H.265 as Enhanced RTMP), chunked "
                                       "until the stream ends. The first tags are the sequence header and "
                                       "a keyframe.",
                        "content": {"video/x-flv": {"schema": {"type": "string", "format": "binary"}}}},
                **_PLAY_ERRORS,
            }, device=False, params=[_CHANNEL_ID, _query(
                "token", {"type": "string"},
                "The playback token of a URL the platform handed out (play, recording timeline), or the API token: for players that cannot send `Authorization` (RFC 6750 §2.3).",
            )], description="Outside `/api/v1`: give this URL to a player (ffplay, flv.js, VLC)."),
        },
        "/live/{channel_id}/index.m3u8": {
            "get": _op("liveHls", "live", "Watch the channel as HLS (starts the stream on demand)", {
                "200": {"description": "A live media playlist (RFC 8216 §4.3, no EXT-X-ENDLIST) of the last "
                                       "6 MPEG-TS segments, each cut on a keyframe after at least 2 s of video. "
                                       "Segment URIs carry the request's `?token=`.",
                        "content": {"application/vnd.apple.mpegurl": {"schema": {"type": "string"}}}},
                **_PLAY_ERRORS,
                "503": _error("No media receiver (`media_unavailable`), no free RTP port (`no_media_ports`), "
                              "or no segment within 8 s (`no_segment`)."),
            }, device=False, params=[_CHANNEL_ID, _query(
                "token", {"type": "string"},
                "The playback token of a URL the platform handed out (play, recording timeline), or the API token: for players that cannot send `Authorization` (RFC 6750 §2.3).",
            )], description="Outside `/api/v1`: give this URL to an HLS player (Safari, hls.js, ffplay, VLC). "
                            "Waits up to 8 s for the first segment. The HLS output counts as one viewer "
                            "until no playlist or segment request came for 20 s."),
        },
        "/live/{channel_id}/seg{n}.ts": {
            "get": _op("liveHlsSegment", "live", "One HLS media segment (MPEG-TS)", {
                "200": {"description": "An MPEG-TS segment (ISO/IEC 13818-1) of H.264/H.265 video.",
                        "content": {"video/mp2t": {"schema": {"type": "string", "format": "binary"}}}},
                "404": _error("The channel has no HLS output, or segment `n` has left the window (`not_found`)."),
            }, device=False, params=[_CHANNEL_ID, {
                "name": "n", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0},
                "description": "The media sequence number (RFC 8216 §4.3.3.2) from the playlist.",
            }, _query(
                "token", {"type": "string"},
                "The playback token of a URL the platform handed out (play, recording timeline), or the API token: for players that cannot send `Authorization` (RFC 6750 §2.3).",
            )], description="Outside `/api/v1`: the playlist names these URLs."),
        },
    }


def build_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for gbplatform ``version``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gbplatform API",
            "version": version,
            "description": "Admin API of a GB/T 28181 video surveillance platform. Every route but "
                           "`/api/v1/health` needs `Authorization: Bearer <token>`. Errors are "
                           '`{"error": {"code", "message"}}`.',
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": n} for n in ("platform", "devices", "channels", "catalog", "queries", "live", "recording",
                                                  "control", "events", "snapshots", "alarms")],
        "paths": {**_paths(), **_record_paths(), **_security_paths(), **_control_paths(),
                  **_command_paths(), **ptz2022.paths(PREFIX), **maintenance.paths(PREFIX),
                  **events.paths(PREFIX), **snapshots.snapshot_paths(),
                  **subscriptions.paths(PREFIX), **alarms.paths(PREFIX)},
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "The token from `api.token` or <data_dir>/api_token."}},
            "schemas": _schemas(),
            "responses": _RESPONSES,
        },
    }


# --- security: digest-guessing bans (issue 8) ------------------------------------------

_BAN_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
            "examples": {"address": {"value": "address:192.0.2.66"},
                         "device": {"value": "device:34020000001320000001"}},
            "description": "The banned key, as listed: `address:<host>` or `device:<device ID>`."}


def _security_paths() -> dict[str, Any]:
    return {
        f"{PREFIX}/security/bans": {
            "get": _op("listBans", "platform", "Source addresses and device IDs banned for failed digests",
                       {"200": _ok("BanList")}, device=False,
                       description="After `sip.auth_max_failures` failed REGISTER digests a source address or "
                                   "device ID is banned for `sip.auth_ban_seconds`: its REGISTERs are answered "
                                   "403 without digest verification."),
        },
        f"{PREFIX}/security/bans/{{key}}": {
            "delete": _op("clearBan", "platform", "Lift a ban (and forget its failures)",
                          {"204": {"description": "Lifted"}, "404": _error("No such ban (`not_found`).")},
                          device=False, params=[_BAN_KEY]),
        },
    }


# --- recording (issue 4) -------------------------------------------------------------

_TOKEN_QUERY = _query("token", {"type": "string"},
                      "The playback token of a URL the platform handed out (play, recording timeline), or the API token: for players that cannot send `Authorization` (RFC 6750 §2.3).")
_RANGE_QUERY = [
    {"name": "start", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "Range start: ISO 8601 (`2024-05-01T08:00:00Z`) or epoch seconds, from "
                    "1970-01-01T00:00:00Z to 2100-01-01T00:00:00Z (epoch 0-4102444800); NaN and infinities "
                    "are refused (`invalid`, `field` start)."},
    {"name": "end", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "Range end (after start, at most 7 days later; same bounds as start)."},
]
_PLAN_ID = {"name": "plan_id", "in": "path", "required": True,
            "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1},
            "description": "The recording plan's id."}
def _record_paths() -> dict[str, Any]:
    t = "recording"
    off = {"503": _error("The platform does not record (`recording_unavailable`).")}
    missing = {"404": _error("No recording of the channel in the range (`not_found`).")}
    return {
        f"{PREFIX}/record/plans": {
            "get": _op("listRecordPlans", t, "Recording plans (weekly schedules)", {"200": _ok("RecordPlanList")},
                       device=False),
            "post": _op("createRecordPlan", t, "Add a recording plan",
                        {"201": _ok("RecordPlan", "Created"), "409": _error("The name is taken (`plan_exists`).")},
                        device=False, body="RecordPlanBody"),
        },
        f"{PREFIX}/record/plans/{{plan_id}}": {
            "get": _op("getRecordPlan", t, "One recording plan", {"200": _ok("RecordPlan"),
                                                                   "404": _error("No such plan.")},
                       device=False, params=[_PLAN_ID]),
            "put": _op("updateRecordPlan", t, "Change a recording plan", {"200": _ok("RecordPlan"),
                                                                           "404": _error("No such plan.")},
                       device=False, params=[_PLAN_ID], body="RecordPlanBody"),
            "delete": _op("deleteRecordPlan", t, "Delete a recording plan no channel uses",
                          {"204": {"description": "Deleted"}, "404": _error("No such plan."),
                           "409": _error("Channels use it (`plan_in_use`).")}, device=False, params=[_PLAN_ID]),
        },
        f"{PREFIX}/channels/{{channel_id}}/record": {
            "get": _op("getRecordPolicy", t, "The channel's recording policy", {"200": _ok("RecordPolicy")},
                       device=False, params=[_CHANNEL_ID]),
            "put": _op("putRecordPolicy", t, "Set the channel's recording policy (off, continuous, plan)",
                       {"200": _ok("RecordPolicy"), "404": _error("No such channel or plan (`not_found`).")},
                       device=False, params=[_CHANNEL_ID], body="RecordPolicyBody",
                       description="A recorded channel keeps its stream pulled with or without viewers and is "
                                   "re-INVITEd after device loss when the device registers again."),
        },
        f"{PREFIX}/channels/{{channel_id}}/recordings": {
            "get": _op("channelRecordings", t, "Timeline of a day: intervals with footage, gaps, segments",
                       {"200": _ok("RecordTimeline"), **off}, device=False, params=[_CHANNEL_ID, {
                           "name": "date", "in": "query", "required": True,
                           "schema": {"type": "string", "format": "date"},
                           "description": "The day, YYYY-MM-DD, in record.timezone; 1970-01-01 to "
                                          "2099-12-31."}]),
        },
        f"{PREFIX}/storage": {
            "get": _op("storageState", t, "Storage backends: used, free, write queue, dropped frames, uploads",
                       {"200": _ok("StorageState"), **off}, device=False),
        },
        f"{PREFIX}/record/downloads": {
            "get": _op("listDownloads", t, "MP4 downloads running and recently finished, with progress",
                       {"200": _ok("DownloadList"), **off}, device=False),
        },
        "/vod/{channel_id}/index.m3u8": {
            "get": _op("vodHls", t, "HLS VOD playlist of a time range of recordings", {
                "200": {"description": "RFC 8216 VOD playlist (EXT-X-PLAYLIST-TYPE:VOD, EXT-X-ENDLIST): byte "
                                       "ranges of the recorded MPEG-TS files, one per GOP group; gaps are "
                                       "EXT-X-DISCONTINUITY.",
                        "content": {"application/vnd.apple.mpegurl": {"schema": {"type": "string"}}}},
                **missing, **off,
            }, device=False, params=[_CHANNEL_ID, *_RANGE_QUERY, _TOKEN_QUERY],
                description="Outside `/api/v1`: give this URL to an HLS player."),
        },
        "/vod/{channel_id}/seg/{segment_id}.ts": {
            "get": _op("vodSegment", t, "Bytes of a recorded segment (HTTP Range supported)", {
                "200": {"description": "The whole MPEG-TS file.",
                        "content": {"video/mp2t": {"schema": {"type": "string", "format": "binary"}}}},
                "206": {"description": "The requested byte range (RFC 9110 §14).",
                        "content": {"video/mp2t": {"schema": {"type": "string", "format": "binary"}}}},
                "404": _error("No such segment of this channel."),
                "416": _error("The range lies outside the segment (`range_not_satisfiable`)."), **off,
            }, device=False, params=[_CHANNEL_ID, {
                "name": "segment_id", "in": "path", "required": True,
                "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1},
                "description": "The segment id from the playlist."}, _TOKEN_QUERY]),
        },
        "/vod/{channel_id}.mp4": {
            "get": _op("vodMp4", t, "Download a time range as MP4 (stream copy, streamed while built)", {
                "200": {"description": "Fragmented MP4 (ISO/IEC 14496-12), chunked. `X-Download-Id` names the "
                                       "job in /api/v1/record/downloads (progress); `X-Content-Duration` is the "
                                       "length in seconds. The MP4 is built into a temporary file ahead of "
                                       "a slow client (up to 1 GiB): the job's `percent` can reach 100 "
                                       "before the last byte is sent; it is `done` once it is.",
                        "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                **missing, **off,
            }, device=False, params=[_CHANNEL_ID, *_RANGE_QUERY, _TOKEN_QUERY],
                description="Whole GOPs: the file starts at the keyframe at or before `start`."),
        },
    }


# --- device control (issue 10: GB/T 28181-2016 A.3) ------------------------------------

_PRESET_INDEX = {"name": "index", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 255},
                 "description": "The preset number (A.3.4 byte 6)."}
_CONTROL_ERRORS = {"404": _r("ChannelNotFound"), "409": _r("DeviceOffline"), "502": _r("DeviceRejected"),
                   "504": _r("DeviceTimeout")}
_CONTROL_NOTE = ("Sent as a DeviceControl MESSAGE with the 8-byte A.3 PTZCmd and `Info/ControlPriority` to the "
                 "device that owns the channel (an NVR channel's command goes to the NVR, `DeviceID` the channel); "
                 "the answer is the device's `Result`. 504 when it does not answer within `sip.query_timeout`.")


def _control_op(op_id: str, summary: str, body: str, examples: dict[str, dict[str, Any]], *,
                params: list[dict[str, Any]] | None = None, description: str = "") -> dict[str, Any]:
    op = _op(op_id, "control", summary, {"200": _ok("ControlResult"), **_CONTROL_ERRORS}, device=False,
             params=[_CHANNEL_ID, *(params or [])], body=body,
             description=f"{description} {_CONTROL_NOTE}".strip())
    op["requestBody"]["content"]["application/json"]["examples"] = {
        name: {"value": value} for name, value in examples.items()}
    return op


_COMMAND_NOTE = ("Sent as a DeviceControl MESSAGE (GB/T 28181-2016 §A.2.3.1) to the device, or for a channel to "
                 "the device that owns it with the channel's ID as `DeviceID`; the answer is the device's `Result`. "
                 "504 when it does not answer within `sip.query_timeout`.")


def _command_op(op_id: str, summary: str, *, device: bool, body: str | None = None,
                examples: dict[str, dict[str, Any]] | None = None, description: str = "") -> dict[str, Any]:
    """A DeviceControl other than PTZCmd on a device (``device``) or a channel, answered by ``CommandResult``."""
    missing = _r("NotFound") if device else _r("ChannelNotFound")
    op = _op(op_id, "control", summary, {"200": _ok("CommandResult"), "404": missing, "409": _r("DeviceOffline"),
                                         "502": _r("DeviceRejected"), "504": _r("DeviceTimeout")},
             device=device, params=None if device else [_CHANNEL_ID], body=body,
             description=f"{description} {_COMMAND_NOTE}".strip())
    if body and examples:
        op["requestBody"]["content"]["application/json"]["examples"] = {
            name: {"value": value} for name, value in examples.items()}
    return op


def _config_op(op_id: str, summary: str, body: str, examples: dict[str, dict[str, Any]],
               description: str) -> dict[str, Any]:
    """A DeviceConfig (§A.2.3.2) of a device, answered by ``CommandResult`` (``command`` the part set)."""
    op = _op(op_id, "control", summary, {"200": _ok("CommandResult"), "404": _r("NotFound"),
                                         "409": _r("DeviceOffline"), "502": _r("DeviceRejected"),
                                         "504": _r("DeviceTimeout")},
             body=body, description=f"{description} The answer is the device's `Result` (§A.2.6.3); 504 when it "
                                    "does not answer within `sip.query_timeout`.")
    op["requestBody"]["content"]["application/json"]["examples"] = {
        name: {"value": value} for name, value in examples.items()}
    return op


_NOT_2022 = _error("The device speaks GB/T 28181-2016, which lacks this configuration type "
                   "(`unsupported_by_device_dialect`).")


def _config_2022_paths(device: str) -> dict[str, Any]:
    """``PUT .../config/<kind>`` of each GB/T 28181-2022 type (``gbplatform.control.config2022.KINDS``)."""
    paths: dict[str, Any] = {}
    for kind in CONFIG_2022.values():
        op = _config_op(f"configure{kind.config_type}", kind.summary, kind.body.__name__, kind.examples,
                        f"DeviceConfig {kind.config_type} (GB/T 28181-2022 §A.2.3.2); read it back with "
                        f"`GET .../config?type={kind.config_type}`. 422 for a device that speaks 2016, before "
                        "anything is sent.")
        op["responses"] = dict(sorted({**op["responses"], "422": _NOT_2022}.items()))
        paths[f"{device}/config/{kind.kind}"] = {"put": op}
    return paths


def _command_paths() -> dict[str, Any]:
    device, channel = f"{PREFIX}/devices/{{device_id}}", f"{PREFIX}/channels/{{channel_id}}"
    return {
        f"{device}/reboot": {
            "post": _command_op("rebootDevice", "Reboot the device (TeleBoot)", device=True,
                                description="`<TeleBoot>Boot</TeleBoot>` (§A.2.3.1.2); the device re-registers."),
        },
        f"{channel}/device-record": {
            "post": _command_op("deviceRecord", "Start or stop the device's own recording (RecordCmd)", device=False,
                                body="DeviceRecordBody", examples={"start": {"record": True}, "stop": {"record": False}},
                                description="Record/StopRecord (§A.2.3.1.3) on the device's storage; the platform's "
                                            "own recording is `/channels/{channel_id}/record`."),
        },
        f"{device}/guard": {
            "post": _command_op("guard", "Arm or disarm the device (GuardCmd)", device=True, body="GuardBody",
                                examples={"arm": {"armed": True}, "disarm": {"armed": False}},
                                description="SetGuard/ResetGuard (§A.2.3.1.4)."),
        },
        f"{channel}/guard": {
            "post": _command_op("channelGuard", "Arm or disarm one alarm input of a device (GuardCmd)",
                                device=False, body="GuardBody",
                                examples={"arm": {"armed": True}, "disarm": {"armed": False}},
                                description="SetGuard/ResetGuard (§A.2.3.1.4) addressed to the channel: an alarm "
                                            "input (type 134) of an NVR or alarm host, or a camera channel whose "
                                            "firmware arms its own detection."),
        },
        f"{device}/alarm/reset": {
            "post": _command_op("resetAlarm", "Reset the device's alarms (AlarmCmd ResetAlarm)", device=True,
                                body="AlarmResetBody", examples={"all": {}, "videoLoss": {"method": 5, "type": 1}},
                                description="ResetAlarm (§A.2.3.1.5), with `Info/AlarmMethod` and `Info/AlarmType` "
                                            "when given."),
        },
        f"{channel}/iframe": {
            "post": _command_op("iframe", "Ask for an I-frame now (IFameCmd)", device=False,
                                description="`<IFameCmd>Send</IFameCmd>` (§A.2.3.1.7), or `<IFrameCmd>Send"
                                            "</IFrameCmd>` to a device whose `iframe_element` is set so "
                                            "(PUT /devices/{device_id}/dialect); `command` names the one sent."),
        },
        f"{channel}/dragzoom": {
            "post": _command_op("dragZoom", "Zoom into or out of a box of the picture (DragZoomIn/Out)", device=False,
                                body="DragZoomBody", examples={"in": {
                                    "direction": "in", "length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540,
                                    "length_x": 480, "length_y": 270}},
                                description="DragZoomIn/DragZoomOut (§A.2.3.1.8-9); the box must lie in the picture."),
        },
        f"{device}/config": {
            "get": _op("deviceConfig", "control", "One ConfigType of the device's configuration (ConfigDownload)",
                       {"200": _ok("DeviceConfigResult"), "404": _r("NotFound"), "409": _r("DeviceOffline"),
                        "422": _NOT_2022, "502": _r("DeviceRejected"), "504": _r("DeviceTimeout")},
                       params=[_query("type", {"type": "string", "enum": [*manscdp.CONFIG_TYPES,
                                                                          *manscdp.CONFIG_TYPES_2022],
                                               "default": "BasicParam"},
                                      "The ConfigType asked for (any case).")],
                       description="A ConfigDownload (GB/T 28181-2016 §A.2.4.7) to the device; its answer's "
                                   "BasicParam or VideoParamOpt, or an SVAC config as its leaves by path (§A.2.6.8); "
                                   "a GB/T 28181-2022 type (VideoParamAttribute, VideoRecordPlan, VideoAlarmRecord, "
                                   "PictureMask, FrameMirror, AlarmReport, OSDConfig) typed in its member, only of "
                                   "a device that speaks 2022 (422 otherwise). 504 when it does not answer within "
                                   "`sip.query_timeout`."),
        },
        **_config_2022_paths(device),
        f"{device}/config/basic": {
            "put": _config_op("configureBasic", "Set the device's name, registration expiry or heartbeat",
                              "BasicConfigBody", {"name": {"name": "Gate NVR"},
                                                  "heartbeat": {"heartbeat_interval": 30, "heartbeat_count": 3}},
                              "DeviceConfig BasicParam (§A.2.3.2). Once the device answers OK, a new "
                              "heartbeat interval or count applies to its presence at once."),
        },
        f"{device}/config/video": {
            "put": _config_op("configureVideo", "Set the device's video parameter options", "VideoConfigBody",
                              {"both": {"download_speed": "1/2/4", "resolution": "5/6"}},
                              "DeviceConfig VideoParamOpt (§A.2.3.2)."),
        },
        f"{channel}/home-position": {
            "post": _command_op("homePosition", "Set the home (watch) position (HomePosition)", device=False,
                                body="HomePositionBody", examples={
                                    "on": {"enabled": True, "reset_time": 60, "preset_index": 1},
                                    "off": {"enabled": False}},
                                description="HomePosition (§A.2.3.1.10)."),
            "get": ptz2022.home_position_get(),  # HomePositionQuery, GB/T 28181-2022
        },
    }


def _control_paths() -> dict[str, Any]:
    channel = f"{PREFIX}/channels/{{channel_id}}"
    return {
        f"{channel}/ptz": {
            "post": _control_op("ptz", "Pan, tilt, zoom or stop the channel's camera (A.3.2)", "PtzBody", {
                "left": {"action": "left", "speed": 128},
                "timedZoom": {"action": "zoomin", "speed": 200, "duration_ms": 1500},
                "stop": {"action": "stop"},
            }, description="With `duration_ms` the platform sends stop itself after it."),
        },
        f"{channel}/lens": {
            "post": _control_op("lens", "Iris and focus of the channel's camera (A.3.3)", "LensBody", {
                "irisOpen": {"action": "iris_open", "speed": 64},
                "focusNear": {"action": "focus_near", "speed": 64},
                "stop": {"action": "stop"},
            }),
        },
        f"{channel}/presets": {
            "get": _op("listPresets", "control", "The device's presets of the channel (PresetQuery)",
                       {"200": _ok("PresetList"), **_CONTROL_ERRORS}, device=False, params=[_CHANNEL_ID],
                       description="A PresetQuery (GB/T 28181-2016 §A.2.4.9) to the device that owns the channel; "
                                   "504 when it does not answer within `sip.query_timeout`."),
        },
        f"{channel}/presets/{{index}}": {
            "post": _control_op("preset", "Set, call or delete a preset (A.3.4)", "PresetBody", {
                "set": {"action": "set"}, "call": {"action": "call"}, "delete": {"action": "delete"},
            }, params=[_PRESET_INDEX]),
        },
        f"{channel}/cruise": {
            "post": _control_op("cruise", "Cruise: points, speed, dwell time, start, stop (A.3.5)", "CruiseBody", {
                "addPoint": {"action": "add_point", "group": 1, "point": 3},
                "dwell": {"action": "set_dwell", "group": 1, "value": 10},
                "start": {"action": "start", "group": 1},
            }, description="`stop` sends PTZ stop, which ends a cruise."),
        },
        f"{channel}/scan": {
            "post": _control_op("scan", "Auto-scan: limits, speed, start, stop (A.3.6)", "ScanBody", {
                "setLeft": {"action": "set_left", "group": 0},
                "speed": {"action": "set_speed", "group": 0, "value": 32},
                "start": {"action": "start", "group": 0},
            }, description="`stop` sends PTZ stop, which ends a scan."),
        },
        f"{channel}/aux": {
            "post": _control_op("aux", "Auxiliary switch on or off; switch 1 is the wiper (A.3.7)", "AuxBody", {
                "wiperOn": {"switch": 1, "on": True},
            }),
        },
    }
