"""GB/T 28181 dialects per device: X-GB-Ver detection (GB/T 28181-2022 §9.1), the operator's setting,
the I-frame element's spelling (§A.2.3.1.7), the channel guard (§A.2.3.1.4) and the simulator's 2016 dialect.

The platform (``platform_harness``) and fake devices talk SIP in memory with a
stepped clock; the API is called over StubTreq (``test_api.Client``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from gbplatform.api.app import Api
from gbplatform.core.errors import UnsupportedByDialect
from gbplatform.simulator.device import SimConfig, Simulator
from gbplatform.simulator.dialect import DialectAnswers, registration_headers
from sip import manscdp
from sip.manscdp import dialects
from sip.manscdp.registry import Command, Leaf, Nested, Registry, Struct
from sip.message import Request
from sip.parser import parse_datagram
from sip.useragent import PtzFrontEnd
from tests.unit.platform_harness import DEV, DEV2, FakeDevice, Harness, result_of
from tests.unit.test_api import Client
from tests.unit.test_control import CH, answer_control, nvr

# --- detection: X-GB-Ver (GB/T 28181-2022 §9.1) ---------------------------------------------


@pytest.mark.parametrize(("value", "version"), [
    (None, "2016"),  # no header: a device from before 2022
    ("3.0", "2022"), ("3", "2022"), (" 3.0 ", "2022"), ("V3.0", "2022"), ("v3.0", "2022"), ("3.1", "2022"),
    ("2.0", "2016"), ("2", "2016"), ("1.0", "2011"),
    ("2022", "2022"), ("2016", "2016"), ("2011", "2011"),  # the edition's year, as some vendors send
    ("4.0", "2022"),  # a later edition is spoken to in the newest the platform knows
    ("", None), ("abc", None), ("0", None), ("-1", None), ("3.x", None), ("3..0", None), ("99999", None),
])
def test_x_gb_ver_values(value: str | None, version: str | None) -> None:
    assert dialects.version_from_header(value) == version


@pytest.mark.parametrize(("detected", "setting", "spoken"), [
    ("2022", "auto", "2022"), ("2016", "auto", "2016"), ("2011", "auto", "2016"), (None, "auto", "2016"),
    ("2022", "2016", "2016"), ("2016", "2022", "2022"), (None, "2022", "2022"),
])
def test_the_setting_overrides_the_detection(detected: str | None, setting: str, spoken: str) -> None:
    assert dialects.dialect_of(detected, setting) == spoken


def test_the_header_name_is_case_insensitive_and_written_as_the_standard_spells_it() -> None:
    raw = (b"REGISTER sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:" + DEV.encode() + b"@127.0.0.1>;tag=1\r\n"
           b"To: <sip:" + DEV.encode() + b"@127.0.0.1>\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\n"
           b"x-gb-VER:  3.0 \r\nContent-Length: 0\r\n\r\n")
    req = parse_datagram(raw)
    assert isinstance(req, Request)
    assert dialects.version_from_header(req.headers.get(dialects.X_GB_VER)) == "2022"
    out = Request(method="REGISTER", uri="sip:x@y")
    out.headers.add("x-gb-ver", "3.0")
    assert b"\r\nX-GB-Ver: 3.0\r\n" in out.serialize()


def test_commands_2022_is_one_list_without_duplicates() -> None:
    keys = [(c.root, c.cmd_type, c.element) for c in dialects.COMMANDS_2022]
    assert len(keys) == len(set(keys))
    assert {c.cmd_type for c in dialects.COMMANDS_2022 if c.element is None} == {
        "PTZPosition", "HomePositionQuery", "CruiseTrackListQuery", "CruiseTrackQuery", "SDCardStatus"}
    assert dialects.is_2022_query("sdcardstatus") and not dialects.is_2022_query("DeviceInfo")
    assert dialects.config_types_2022("BasicParam/OSDConfig") == (["BasicParam"], ["OSDConfig"])


# --- the registrar: detection, the 200 OK, persistence ------------------------------------------


def register(h: Harness, x_gb_ver: str | None, device_id: str = DEV, **kw: Any) -> tuple[FakeDevice, Any]:
    dev = h.device(device_id, x_gb_ver=x_gb_ver, **kw)
    resp = dev.register_auth()
    assert resp.status == 200, resp
    return dev, resp


def test_a_2022_device_is_detected_and_named_back_in_the_200(h: Harness) -> None:
    _, resp = register(h, "3.0")
    assert resp.headers.get("X-GB-Ver") == "3.0"
    assert h.devices.gb_version(DEV) == "2022"
    assert h.devices.gb_version_detected(DEV) == "2022"
    h.platform.control.require_2022(DEV, "PTZPosition")  # no error
    assert h.record().gb_version == "2022"


@pytest.mark.parametrize(("x_gb_ver", "detected"), [(None, "2016"), ("2.0", "2016"), ("1.0", "2011")])
def test_an_older_device_is_spoken_to_in_2016_and_2022_commands_are_422(
        h: Harness, x_gb_ver: str | None, detected: str) -> None:
    _, resp = register(h, x_gb_ver)
    assert "X-GB-Ver" not in resp.headers
    assert (h.devices.gb_version(DEV), h.devices.gb_version_detected(DEV)) == ("2016", detected)
    with pytest.raises(UnsupportedByDialect) as raised:
        h.platform.control.require_2022(DEV, "PTZPosition")
    assert (raised.value.status, raised.value.code) == (422, "unsupported_by_device_dialect")
    assert "PTZPosition" in raised.value.message and f"/api/v1/devices/{DEV}/dialect" in raised.value.message
    assert h.record().gb_version == detected


def test_an_unreadable_x_gb_ver_is_taken_as_2016(h: Harness) -> None:
    register(h, "GB28181")
    assert (h.devices.gb_version(DEV), h.devices.gb_version_detected(DEV)) == ("2016", "2016")


def test_a_device_that_now_announces_2022_is_spoken_to_in_2022(h: Harness) -> None:
    dev, _ = register(h, None)
    dev.x_gb_ver = "3.0"  # firmware upgraded; its next REGISTER says so
    assert dev.register_auth().status == 200
    assert h.devices.gb_version(DEV) == "2022"
    assert h.record().gb_version == "2022"


def test_the_detected_version_and_the_setting_survive_a_restart(h: Harness) -> None:
    register(h, "3.0")
    register(h, "3.0", DEV2, addr=("UDP", "127.0.0.1", 5071), seed=9)
    client = Client(Api(h.platform))
    assert client("PUT", f"/devices/{DEV2}/dialect", body={"version": "2016"}).code == 200
    h.advance(100)
    h2 = h.restart()
    # Relearnt from a keepalive: the stored detection.
    assert h2.device().keepalive().status == 200
    assert (h2.devices.gb_version(DEV), h2.devices.gb_version_detected(DEV)) == ("2022", "2022")
    # The setting, from the preload at start, before the device speaks.
    result_of(ensureDeferred(h2.devices.preload()))
    assert h2.devices.dialect_setting(DEV2) == ("2016", "IFameCmd")
    dev2 = h2.device(DEV2, ("UDP", "127.0.0.1", 5071), seed=9)
    resp = dev2.register_auth()
    assert resp.status == 200 and "X-GB-Ver" not in resp.headers  # spoken to in 2016, as set
    assert (h2.devices.gb_version(DEV2), h2.devices.gb_version_detected(DEV2)) == ("2016", "2022")


def test_the_setting_is_read_with_the_record_without_a_preload(h: Harness) -> None:
    client = Client(Api(h.platform))
    assert client("POST", "/devices", body={"device_id": DEV}).code == 201
    assert client("PUT", f"/devices/{DEV}/dialect", body={"version": "2022"}).code == 200
    h2 = h.restart()
    _, resp = register(h2, None)
    assert resp.headers.get("X-GB-Ver") == "3.0"  # set to 2022: named back although it announced nothing
    assert h2.devices.gb_version(DEV) == "2022"


# --- the API ----------------------------------------------------------------------------------


def test_put_dialect_overrides_and_returns_the_state(h: Harness) -> None:
    register(h, "3.0")
    client = Client(Api(h.platform))
    reply = client("PUT", f"/devices/{DEV}/dialect", body={"version": "2016"})
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "gb_version": "2016", "gb_version_detected": "2022",
                          "gb_version_setting": "2016", "iframe_element": "IFameCmd"}
    with pytest.raises(UnsupportedByDialect):
        h.platform.control.require_2022(DEV, "SDCardStatus")
    device = client("GET", f"/devices/{DEV}").json
    assert {k: device[k] for k in reply.json} == reply.json
    listed = client("GET", "/devices").json["items"][0]
    assert listed["gb_version"] == "2016" and listed["gb_version_setting"] == "2016"
    # Case and a number are accepted; "auto" goes back to the detection.
    reply = client("PUT", f"/devices/{DEV}/dialect", body={"version": "AUTO", "iframe_element": "iframecmd"})
    assert reply.json["gb_version"] == "2022" and reply.json["iframe_element"] == "IFrameCmd"
    assert client("PUT", f"/devices/{DEV}/dialect", body={"version": 2016}).json["gb_version"] == "2016"
    events = [e for e in h.platform.bus.kept() if e.kind == "device"]
    assert events[-1].data["event"] == "dialect" and events[-1].data["gb_version"] == "2016"


def test_a_patch_keeps_the_dialect_setting(h: Harness) -> None:
    register(h, "3.0")
    client = Client(Api(h.platform))
    client("PUT", f"/devices/{DEV}/dialect", body={"version": "2016", "iframe_element": "IFrameCmd"})
    assert client("PATCH", f"/devices/{DEV}", body={"name": "Gate"}).code == 200
    assert h.devices.gb_version(DEV) == "2016" and h.devices.iframe_element(DEV) == "IFrameCmd"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "version"), ({"version": "2019"}, "version"), ({"version": True}, "version"),
    ({"iframe_element": "IFrame"}, "iframe_element"), ({"version": "auto", "other": 1}, "other"),
])
def test_put_dialect_refuses_bad_bodies_naming_the_field(h: Harness, body: dict[str, Any], field: str) -> None:
    register(h, "3.0")
    reply = Client(Api(h.platform))("PUT", f"/devices/{DEV}/dialect", body=body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["field"] == field


def test_put_dialect_of_an_unknown_device_is_404(h: Harness) -> None:
    reply = Client(Api(h.platform))("PUT", f"/devices/{DEV}/dialect", body={"version": "2016"})
    assert (reply.code, reply.json["error"]["code"]) == (404, "not_found")


def test_a_device_never_registered_shows_no_detection(h: Harness) -> None:
    client = Client(Api(h.platform))
    created = client("POST", "/devices", body={"device_id": DEV}).json
    assert {k: created[k] for k in ("gb_version", "gb_version_detected", "gb_version_setting", "iframe_element")} \
        == {"gb_version": "2016", "gb_version_detected": None, "gb_version_setting": "auto",
            "iframe_element": "IFameCmd"}


# --- I-frame spelling and the channel guard ------------------------------------------------------


def test_the_iframe_request_uses_the_devices_spelling(h: Harness) -> None:
    dev = nvr(h)
    client = Client(Api(h.platform))

    def iframe() -> tuple[Any, bytes]:
        d = client.start("POST", f"/channels/{CH}/iframe")
        h.pump()
        body = dev.inbound[-1].request.body
        answer_control(dev)
        return client.finish(d).json, body

    answer, body = iframe()
    assert answer["command"] == "IFameCmd" and b"<IFameCmd>Send</IFameCmd>" in body
    client("PUT", f"/devices/{DEV}/dialect", body={"iframe_element": "IFrameCmd"})
    answer, body = iframe()
    assert answer == {"device_id": DEV, "target_id": CH, "command": "IFrameCmd", "result": "OK"}
    assert b"<IFrameCmd>Send</IFrameCmd>" in body and b"IFameCmd" not in body


@pytest.mark.parametrize(("armed", "cmd"), [(True, "SetGuard"), (False, "ResetGuard")])
def test_channel_guard_goes_to_the_owner_with_the_channel_id(h: Harness, armed: bool, cmd: str) -> None:
    dev = nvr(h)
    client = Client(Api(h.platform))
    d = client.start("POST", f"/channels/{CH}/guard", body={"armed": armed})
    h.pump()
    msg = answer_control(dev)
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "target_id": CH, "command": cmd, "result": "OK"}
    assert msg.device_id == CH and msg.guard_cmd == cmd


def test_channel_guard_errors(h: Harness) -> None:
    dev = nvr(h)
    client = Client(Api(h.platform))
    assert client("POST", "/channels/34020000001340000099/guard", body={"armed": True}).code == 404
    reply = client("POST", f"/channels/{CH}/guard", body={"armed": "yes"})
    assert (reply.code, reply.json["error"]["field"]) == (400, "armed")
    assert dev.register_auth(expires=0).status == 200
    assert client("POST", f"/channels/{CH}/guard", body={"armed": True}).code == 409


def every_response() -> None:
    """Every JSON answer of the dialect routes (success paths) once, validated against its OpenAPI component
    (``test_shapes`` records which shapes were sent): the setting, and the commands it changes."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Any, name: str) -> None:
        assert reply.code == 200, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    h = Harness()
    try:
        client = Client(Api(h.platform))
        dev = nvr(h)
        check(client("PUT", f"/devices/{DEV}/dialect", body={"version": "2016", "iframe_element": "IFrameCmd"}),
              "DeviceDialect")
        for method, path, body in (("POST", f"/channels/{CH}/iframe", None),
                                   ("POST", f"/channels/{CH}/guard", {"armed": True})):
            d = client.start(method, path, body=body)
            h.pump()
            answer_control(dev)
            check(client.finish(d), "CommandResult")
        assert not h.failures(), h.failures()
    finally:
        h.close()


def test_responses_match_their_openapi_components() -> None:
    every_response()


# --- the simulator's dialects (gbplatform/simulator/dialect.py) ----------------------------------


def sim_answers(gb_version: str, iframe_spelling: str = "any") -> tuple[DialectAnswers, PtzFrontEnd]:
    answers = DialectAnswers(DEV, gb_version, iframe_spelling, lambda: "GB2312", lambda body: body)
    front = PtzFrontEnd(lambda: "GB2312")
    front.register(answers)
    answers.register("ConfigDownload", lambda q: [manscdp.encode_response("ConfigDownload", q.sn, DEV,
                                                                          extra={"Asked": q.fields["ConfigType"]})])
    answers.register("PTZPosition", lambda q: [manscdp.encode_response("PTZPosition", q.sn, q.device_id)])
    return answers, front


def results(bodies: list[bytes]) -> list[str | None]:
    out = []
    for body in bodies:
        msg = manscdp.decode(body)
        assert isinstance(msg, manscdp.Response)
        out.append(msg.result)
    return out


def test_a_2016_simulated_device_refuses_2022_controls_with_error() -> None:
    answers, front = sim_answers("2016")
    for element in ("FormatSDCard", "TargetTrack"):
        body = manscdp.encode_control("DeviceControl", 5, DEV, extra={element: "1"})
        assert results(answers.answer(manscdp.decode(body))) == ["ERROR"]
    assert front.commands == []
    guard = manscdp.decode(manscdp.encode_device_command(6, CH, guard_cmd="SetGuard"))
    assert results(answers.answer(guard)) == ["OK"] and front.guard == {CH: True}
    assert [what for _, what in answers.refused] == ["formatsdcard", "targettrack"]


def test_a_2016_simulated_device_stays_silent_on_2022_queries() -> None:
    answers, _ = sim_answers("2016")
    assert answers.answer(manscdp.decode(manscdp.encode_query("PTZPosition", 1, CH))) == []
    only_new = manscdp.encode_query("ConfigDownload", 2, DEV, extra={"ConfigType": "OSDConfig"})
    assert answers.answer(manscdp.decode(only_new)) == []
    mixed = manscdp.encode_query("ConfigDownload", 3, DEV, extra={"ConfigType": "BasicParam/OSDConfig"})
    answered = manscdp.decode(answers.answer(manscdp.decode(mixed))[0])
    assert answered.fields["Asked"] == "BasicParam"


def test_a_2022_simulated_device_passes_everything_on() -> None:
    answers, _ = sim_answers("2022")
    assert len(answers.answer(manscdp.decode(manscdp.encode_query("PTZPosition", 1, CH)))) == 1
    asked = manscdp.encode_query("ConfigDownload", 2, DEV, extra={"ConfigType": "OSDConfig"})
    assert manscdp.decode(answers.answer(manscdp.decode(asked))[0]).fields["Asked"] == "OSDConfig"


@pytest.mark.parametrize(("spelling", "standard", "variant"), [
    ("any", "OK", "OK"), ("IFrameCmd", "ERROR", "OK"), ("IFameCmd", "OK", "ERROR"),
])
def test_the_simulated_iframe_spelling(spelling: str, standard: str, variant: str) -> None:
    answers, _ = sim_answers("2022", spelling)
    sent = manscdp.decode(manscdp.encode_device_command(1, CH, iframe_cmd="Send"))
    assert results(answers.answer(sent)) == [standard]
    sent = manscdp.decode(manscdp.encode_device_command(2, CH, iframe_cmd_variant="Send"))
    assert results(answers.answer(sent)) == [variant]


def test_the_simulator_announces_its_edition_in_register() -> None:
    assert registration_headers("2022") == (("X-GB-Ver", "3.0"),)
    assert registration_headers("2016") == (("X-GB-Ver", "2.0"),)
    assert SimConfig().gb_version == "2022"
    with pytest.raises(Exception, match="gb-version"):
        SimConfig(gb_version="2011")


@pytest.mark.parametrize(("gb_version", "header"), [("2022", "3.0"), ("2016", "2.0")])
def test_a_simulated_device_register_carries_x_gb_ver(gb_version: str, header: str) -> None:
    sim = Simulator(SimConfig(gb_version=gb_version, vendor="pjsua"), reactor=Clock(), rng=random.Random(1))
    ua = sim.devices[0].ua
    ua.start(0.0)
    request = ua.take_requests()[0].request
    assert request.headers.get("X-GB-Ver") == header
    assert request.headers.get("Allow")  # the vendor's own extra header stays


def test_devices_md_lists_every_2022_command() -> None:
    text = (Path(__file__).parents[2] / "docs" / "devices.md").read_text()
    section = text.split("## Which GB/T 28181 version a device speaks", 1)[1].split("\n## ", 1)[0]
    missing = [c.name for c in dialects.COMMANDS_2022 if f"`{c.name}`" not in section]
    assert not missing, f"docs/devices.md does not list {missing}"


@dataclass(frozen=True)
class _Osd:
    length: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Config(manscdp.Control):
    osd: _Osd | None = None
    mirror: int | None = None


def test_declared_nested_and_zero_valued_2022_elements_are_seen() -> None:
    """A nested element is seen through its declaration, a leaf whatever its value (FrameMirror 0)."""
    registry = Registry()
    registry.declare(Command(kind="Control", cmd_type="DeviceConfig", cls=_Config, fields=(
        Nested("OSDConfig", "osd", Struct(_Osd, (Leaf("Length", "length"),))),
        Leaf("FrameMirror", "mirror", int))))
    body = manscdp.encode_control("DeviceConfig", 1, DEV, extra={"OSDConfig": {"Length": "1920"}, "FrameMirror": "0"})
    msg = manscdp.decode(body, registry=registry)
    assert dialects.refused_elements(msg, registry) == ["framemirror", "osdconfig"]
    basic = manscdp.encode_control("DeviceConfig", 2, DEV, extra={"BasicParam": {"Name": "x"}})
    assert dialects.refused_elements(manscdp.decode(basic, registry=registry), registry) == []
