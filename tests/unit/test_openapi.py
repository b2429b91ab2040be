"""The OpenAPI document against the real Klein routes and the real responses."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, cast

import pytest
from twisted.internet.defer import succeed

from gbplatform import __version__
from gbplatform.api.app import Api
from gbplatform.api.openapi import build_openapi
from gbplatform.db import queries as q
from gbplatform.sessions.live import LiveStream
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.ports import PortLease
from sip import manscdp
from tests.unit.test_api import CAM1, CAM2, DEV, Client, FakeDevice, FakeLive, call, make_platform

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
REQUIRED_SCHEMAS = {"Device", "Channel", "TreeNode", "Page", "CatalogProgress", "DeviceInfo", "DeviceStatus",
                    "TraceEntry", "Error", "Health", "Stream", "StreamList", "PlayResult"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi(__version__)


def real_routes() -> set[tuple[str, str]]:
    platform, _ = make_platform()
    routes: set[tuple[str, str]] = set()
    for rule in Api(platform).app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes.update((m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
    return routes


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item if method in METHODS}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def test_document_covers_exactly_the_routes(doc: dict[str, Any]) -> None:
    # All routes, /live/{channel_id}.flv (outside /api/v1) included.
    real = real_routes()
    assert len(real) == 90 and ("get", "/live/{channel_id}.flv") in real
    assert documented_routes(doc) == real


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        target: Any = doc
        assert ref.startswith("#/")
        for part in ref[2:].split("/"):
            assert part in target, ref
            target = target[part]


def test_structure(doc: dict[str, Any]) -> None:
    assert REQUIRED_SCHEMAS <= set(doc["components"]["schemas"])
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}]
    op_ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(op_ids) == len(set(op_ids))
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert op["responses"], where
        assert op.get("summary"), where
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), where
        if path.endswith("/health") or path.startswith("/api/v1/snapshot-uploads/"):
            # A device's upload carries its session's token in the URL, never the API token.
            assert op["security"] == [], where
        else:
            assert "security" not in op and "401" in op["responses"], where
    assert "requestBody" in doc["paths"]["/api/v1/devices"]["post"]
    assert "requestBody" in doc["paths"]["/api/v1/devices/{device_id}"]["patch"]
    assert set(doc["paths"]["/api/v1/devices/{device_id}"]["delete"]["responses"]) >= {"204", "404"}
    assert set(doc["paths"]["/api/v1/devices/{device_id}/info"]["get"]["responses"]) >= {"200", "409", "504"}


def test_served_document_needs_the_token_and_matches(doc: dict[str, Any]) -> None:
    platform, _ = make_platform()
    client = Client(Api(platform))
    assert client("GET", "/openapi.json", token=None).code == 401
    reply = client("GET", "/openapi.json")
    assert reply.code == 200
    assert reply.json == doc


# --- the document describes what the routes really send -----------------------------


def test_responses_match_their_schemas(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    platform, clock = make_platform()
    client = Client(Api(platform))

    def check(reply: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(reply.json)

    check(client("GET", "/health", token=None), "Health")
    check(client("GET", f"/devices/{DEV}"), "Error")
    created = client("POST", "/devices", body={"device_id": DEV, "password": "x"})
    check(created, "Device")
    check(client("POST", "/devices", body={"device_id": "1"}), "Error")
    call(platform, q.replace_channels_txn, DEV, [
        q.ChannelData(channel_id="34020000002150000001", name="G"),
        q.ChannelData(channel_id=CAM1, name="C", parent_id="34020000002150000001", longitude=120.1),
    ], complete=True)
    check(client("GET", "/devices"), "DevicePage")
    check(client("GET", f"/devices/{DEV}/channels"), "ChannelPage")
    check(client("GET", f"/devices/{DEV}/channels/tree"), "ChannelTree")
    check(client("GET", f"/devices/{DEV}/catalog"), "CatalogProgress")
    check(client("GET", f"/devices/{DEV}/trace"), "Trace")

    device = FakeDevice(platform, clock)
    device.register()
    check(client("GET", f"/devices/{DEV}"), "Device")
    check(client("POST", f"/devices/{DEV}/catalog/sync"), "CatalogProgress")
    sent = device.take_request()
    platform.trace.record("send", sent.serialize(), ("UDP", "192.0.2.10", 5062), clock.time())
    trace = client("GET", f"/devices/{DEV}/trace")
    assert len(trace.json["items"]) == 1
    check(trace, "Trace")

    platform.catalog.sessions.clear()
    pending = client.start("GET", f"/devices/{DEV}/info")
    query = device.answer()
    device.send(manscdp.encode_device_info_response(query.sn, DEV, manufacturer="M", channel=2))
    check(client.finish(pending), "DeviceInfo")
    pending = client.start("GET", f"/devices/{DEV}/status")
    query = device.answer()
    device.send(manscdp.encode_device_status_response(query.sn, DEV, device_time="2024-01-01T00:00:00"))
    check(client.finish(pending), "DeviceStatus")


def test_live_responses_match_their_schemas(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    platform, _ = make_platform()
    dispatcher = FrameDispatcher()
    stream = LiveStream(
        device_id=DEV, channel_id=CAM1, ssrc="0100000001", lease=PortLease(30000, CAM1), mode="udp",
        dispatcher=dispatcher, ingest=RtpIngest(dispatcher, ssrc=100000001), receiver=None, started_at=1.7e9,
        state="playing",
    )
    live = FakeLive()
    live.pending = succeed(stream)  # type: ignore[arg-type]
    platform.live = cast(Any, live)
    call(platform, q.create_device_txn, DEV, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    call(platform, q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CAM1, name="C")], complete=True)
    client = Client(Api(platform))

    def check(reply: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(reply.json)

    check(client("POST", f"/channels/{CAM1}/play"), "PlayResult")
    live.streams[CAM1] = cast(Any, stream)
    check(client("GET", "/streams"), "StreamList")
    check(client("POST", f"/channels/{CAM2}/play"), "Error")
