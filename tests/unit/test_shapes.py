"""Shapes declared once: the catalog item field table against its derived forms
(model, records, MANSCDP item, JSON, OpenAPI), the body conversion's errors, and
the recording responses against their generated components."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import typing
from typing import Any

import msgspec
import pytest
from sqlalchemy import Double, Integer, String

from gbplatform.api import shapes
from gbplatform.api.openapi import build_openapi
from gbplatform.api.schemas import channel_json
from gbplatform.db import queries as q
from gbplatform.db.models import Channel
from gbplatform.devices import shapes as device_shapes
from gbplatform.devices.catalog import to_channel
from sip import channel_fields as cf
from sip import manscdp
from tests.unit import test_recording
from tests.unit.test_api import CAM1
from tests.unit.test_recording import DAY, Rec, record_all

rec = test_recording.rec
frames = test_recording.frames

_SQL_TYPES = {str: String, int: Integer, float: Double}
# Columns of the registry's own, not of the catalog item.
_BOOKKEEPING = {"id", "device_id", "extra", "kind", "updated_at"}


def test_the_model_matches_the_field_table() -> None:
    columns = Channel.__table__.c
    assert {c.name for c in columns} == {f.name for f in cf.STORED_FIELDS} | _BOOKKEEPING
    for row in cf.STORED_FIELDS:
        column = columns[str(row.name)]
        assert isinstance(column.type, _SQL_TYPES[row.value]), row.name
        assert column.nullable == row.nullable, row.name
        assert getattr(column.type, "length", None) == row.length, row.name


def test_the_records_match_the_field_table() -> None:
    hints = typing.get_type_hints(q.ChannelFields)
    names = [f.name for f in dataclasses.fields(q.ChannelFields)]
    assert names == [f.name for f in cf.STORED_FIELDS] + ["extra"]
    for row in cf.STORED_FIELDS:
        assert hints[str(row.name)] == (row.value | None if row.nullable else row.value), row.name


def test_the_manscdp_item_has_every_field() -> None:
    item = manscdp.CatalogItem()
    assert all(hasattr(item, row.attr) for row in cf.ITEM_FIELDS)
    assert [row.tag for row in cf.CHANNEL_FIELDS if row.in_info] == ["PTZType"]


def test_rows_are_unique_and_examples_parse() -> None:
    for key in ("tag", "attr"):
        values = [getattr(row, key) for row in cf.CHANNEL_FIELDS]
        assert len(values) == len(set(values)), key
    for row in cf.CHANNEL_FIELDS:
        assert cf.parse_value(row, row.example) is not None, row.tag
    assert cf.field_by_name("ptz_type").tag == "PTZType"


def test_to_channel_parses_numbers_and_drops_garbled_ones() -> None:
    item = manscdp.CatalogItem(device_id="34020000001320000001", name="Cam", port=" 5060 ", longitude="unknown",
                               latitude="", parental="1", info={"PTZType": "3", "Resolution": "6/4"},
                               extra={"Foo": "bar"}, password="secret", event="ADD")
    data = to_channel(item)
    assert (data.channel_id, data.name, data.port, data.longitude, data.latitude, data.parental, data.ptz_type) == (
        "34020000001320000001", "Cam", 5060, None, None, 1, 3)
    assert data.extra == {"info": {"PTZType": "3", "Resolution": "6/4"}, "Foo": "bar"}
    assert "secret" not in repr(data)  # the password row is never stored


def test_channel_json_is_the_channel_shape() -> None:
    record = q.ChannelRecord(id=1, device_id="34020000001180000001", channel_id="34020000001320000001",
                             longitude=float("nan"), latitude=31.8, port=5060, kind="channel",
                             updated_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    out = msgspec.to_builtins(channel_json(record))
    assert list(out) == list(device_shapes.Channel.__struct_fields__)
    assert out["longitude"] is None and out["latitude"] == 31.8 and out["updated_at"] == "2024-01-01T00:00:00.000Z"
    msgspec.convert(out, device_shapes.Channel)  # the values fit the declared types


def test_the_channel_schema_carries_the_table() -> None:
    schema = build_openapi("x")["components"]["schemas"]["Channel"]
    for row in cf.STORED_FIELDS:
        prop = schema["properties"][str(row.name)]
        assert prop["description"] == row.description and prop["examples"] == [cf.parse_value(row, row.example)]
    assert set(schema["required"]) == set(schema["properties"])


class _Body(shapes.Shape, forbid_unknown_fields=True):
    name: str
    window: list[device_shapes.AlarmStatus] = []


@pytest.mark.parametrize(("obj", "field", "message"), [
    ({}, "name", "is required"),
    ({"name": "a", "x": 1}, "x", "unknown field"),
    ({"name": None}, "name", "a string is required"),
    ({"name": "a", "window": None}, "window", "must not be null"),
    ({"name": 1}, "name", "a string is required"),
    ({"name": "a", "window": [{"device_id": 5, "duty_status": None}]}, "window",
     "[0].device_id: Expected `str | null`, got `int`"),
    ({"name": "a", "window": [{}]}, "window", "[0]: Object missing required field `device_id`"),
])
def test_body_errors_name_the_top_level_field(obj: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(shapes.BodyError) as caught:
        shapes.convert_body(obj, _Body)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_errors_come_in_declaration_order_whatever_the_key_order() -> None:
    class Two(shapes.Shape, forbid_unknown_fields=True):
        first: int
        second: int

    for obj, field in [({"second": "x", "first": "y"}, "first"), ({"second": "x", "z": 1}, "z"),
                       ({"second": "x"}, "first")]:
        with pytest.raises(shapes.BodyError) as caught:
            shapes.convert_body(obj, Two)
        assert caught.value.field == field


def test_a_field_message_overrides_the_wording() -> None:
    with pytest.raises(shapes.BodyError, match="^name: say a name$"):
        shapes.convert_body({"name": 1}, _Body, {"name": "say a name"})


def test_recording_responses_match_their_schemas(rec: Rec, frames: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    components = build_openapi("x")["components"]

    def check(reply: Any, name: str) -> None:
        assert reply.code < 300, reply.json
        schema = {"$ref": f"#/components/schemas/{name}", "components": components}
        jsonschema.Draft202012Validator(schema).validate(reply.json)

    c = rec.client
    window = [{"weekday": 1, "start": "22:00", "end": "23:00"}]
    plan = c("POST", "/record/plans", body={"name": "night", "schedule": window})
    check(plan, "RecordPlan")
    check(c("GET", "/record/plans"), "RecordPlanList")
    check(c("GET", f"/channels/{CAM1}/record"), "RecordPolicy")
    record_all(rec, frames)
    check(c("GET", f"/channels/{CAM1}/record"), "RecordPolicy")
    check(c("GET", f"/channels/{CAM1}/recordings?date={DAY}"), "RecordTimeline")
    check(c("GET", "/storage"), "StorageState")
    check(c("GET", "/record/downloads"), "DownloadList")


# --- responses are built as their shapes --------------------------------------------


def _documented_shapes(doc: dict[str, Any]) -> list[tuple[str, re.Pattern[str], str, str]]:
    """``(method, path pattern, status, component)`` of every JSON response the document declares."""
    out = []
    for path, item in doc["paths"].items():
        pattern = re.compile("^/api/v1" * (not path.startswith("/api/")) + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for method, op in item.items():
            for status, response in op.get("responses", {}).items():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                if ref:
                    out.append((method.upper(), pattern, status, ref.rsplit("/", 1)[1]))
    return out


def test_each_route_sends_the_shape_its_document_declares(rec: Rec, frames: Any, monkeypatch: Any) -> None:
    """Every JSON answer goes through ``Routes._json`` as an instance of the component the OpenAPI
    document names for its route and status: the component is what is sent, not a description of it."""
    pytest.importorskip("jsonschema")
    from gbplatform import __version__
    from gbplatform.api.app import Api
    from gbplatform.api.routing import Routes
    from tests.unit import test_auth_guard, test_control, test_openapi, test_snapshot_upload
    from tests.unit.platform_harness import Harness
    from tests.unit.test_api import Client

    sent: list[tuple[str, str, int, str]] = []
    original = Routes._json

    def recording(self: Routes, request: Any, obj: Any, status: int = 200) -> bytes:
        if not isinstance(obj, bytes):
            sent.append((request.method.decode(), request.path.decode(), status, type(obj).__name__))
        return original(self, request, obj, status)

    monkeypatch.setattr(Routes, "_json", recording)
    doc = build_openapi(__version__)
    test_openapi.test_responses_match_their_schemas(doc)
    test_openapi.test_live_responses_match_their_schemas(doc)
    test_auth_guard.test_bans_are_listed_and_lifted_through_the_api()
    test_recording_responses_match_their_schemas(rec, frames)
    harness = Harness()
    try:
        test_control.test_control_responses_match_their_schemas(harness, Client(Api(harness.platform)))
    finally:
        harness.close()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as snapshots_dir:  # device snapshot upload (GB/T 28181-2022)
        test_snapshot_upload.every_response(Path(snapshots_dir))
    from tests.unit import test_subscriptions

    test_subscriptions.every_response()  # GET/PUT /devices/{id}/subscriptions
    from tests.unit import test_event_stream

    test_event_stream.every_response()  # GET /api/v1/events/stats
    from tests.unit import (
        test_alarms,
        test_config2022,
        test_dialects,
        test_maintenance,
        test_ptz2022,
    )

    test_alarms.every_response()  # alarms, their settings, the Alarm Query, positions and tracks
    test_ptz2022.every_response()  # GB/T 28181-2022 PTZ commands and queries
    test_maintenance.every_response()  # SD cards, their format, firmware upgrade
    test_config2022.every_response()  # GB/T 28181-2022 configuration types
    test_dialects.every_response()  # PUT /devices/{id}/dialect and the commands it spells

    declared = _documented_shapes(doc)
    seen: set[str] = set()
    for method, path, status, shape in sent:
        names = {name for m, pattern, code, name in declared
                 if m == method and pattern.match(path) and code in (str(status), "default")}
        assert shape in names or (shape == "Error" and status >= 400), (method, path, status, shape, names)
        seen.add(shape)
    # Every response component is built somewhere in the flows above; the channel tree is
    # streamed as bytes (``schemas.tree_bytes``, each object built as its shape).
    expected = {name for *_, name in declared} - {"ChannelTree"}
    assert expected <= seen, sorted(expected - seen)


def test_a_route_answers_a_shape_or_bytes_only() -> None:
    from twisted.web.http_headers import Headers

    from gbplatform.api.app import Api
    from gbplatform.api.routing import Routes
    from tests.unit.test_api import make_platform

    class Request:
        def __init__(self) -> None:
            self.responseHeaders = Headers()  # noqa: N815 - twisted.web's name

        def setResponseCode(self, code: int) -> None:  # noqa: N802 - twisted.web's name
            self.code = code

    platform, _ = make_platform()
    api = Api(platform)
    body = api._json(Request(), shapes.Error(error=shapes.ErrorBody(code="x", message="m")))  # type: ignore[arg-type]
    assert json.loads(body) == {"error": {"code": "x", "message": "m"}}  # UNSET left out, None sent
    assert json.loads(api._json(Request(), device_shapes.DeviceCatalog(  # type: ignore[arg-type]
        status="idle", total=0, received=0, synced_at=None, error=None))) == {
        "status": "idle", "total": 0, "received": 0, "synced_at": None, "error": None}
    with pytest.raises(TypeError, match="dict"):
        Routes._json(api, Request(), {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # a NaN that reaches the wire is a bug to see, not a null
        api._json(Request(), shapes.Health(  # type: ignore[arg-type]
            status="ok", version="x", uptime=float("nan"), devices_online=0,
            sip=shapes.SipHealth(transactions=0, stats={}, registrar={}, onboarding_backlog=0), media=None))
    platform.db.engine.dispose()
