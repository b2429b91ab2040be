"""Shapes declared once: the catalog item field table against its derived forms
(model, records, MANSCDP item, JSON, OpenAPI), the body conversion's errors, and
the recording responses against their generated components."""

from __future__ import annotations

import dataclasses
import datetime as dt
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
    out = channel_json(record)
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
