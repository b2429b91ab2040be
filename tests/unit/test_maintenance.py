"""SD card status and format, firmware upgrade and DeviceUpgradeResult (GB/T 28181-2022).

The declarations round-trip (and read vendor variants); the service is driven
through the API against a fake 2022 device (``platform_harness``) with the
stepped clock; the simulator's side (``gbplatform.simulator.maintenance``)
runs on ``twisted.internet.task.Clock`` with an injected fetch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gbplatform.api.app import Api
from gbplatform.app.config import Config, ControlConfig
from gbplatform.control.maintenance import MaintenanceService
from gbplatform.simulator.maintenance import FORMAT_SECONDS, FetchError, SimMaintenance
from sip import manscdp
from sip.useragent import PtzFrontEnd, QueryAnswers
from tests.unit.platform_harness import DEV, DEV2, FakeDevice, Harness, has_fired
from tests.unit.test_api import Client, Reply

URL = "http://192.0.2.10/fw/ipc-v2.bin"
XML = '<?xml version="1.0" encoding="GB2312"?>\n'


# --------------------------------------------------------------------------- declarations


def test_sd_card_status_round_trips() -> None:
    cards = [manscdp.SdCard(id="1", hdd_name="SD1", status="formatting", format_progress=40, capacity=30436.5,
                            free_space=0.0), manscdp.SdCard(id="2", status="unformatted")]
    body = manscdp.encode_sd_card_status_response(9, DEV, cards)
    assert b"<SumNum>2</SumNum>\n<SDCardList Num=\"2\">\n<Item>\n<ID>1</ID>\n<HddName>SD1</HddName>" in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.SdCardStatusResponse)
    assert (msg.result, msg.sum_num, msg.cards[0].capacity, msg.cards[1].status) == ("OK", 2, 30436.5, "unformatted")
    assert manscdp.encode(msg) == body
    query = manscdp.decode(manscdp.encode_query("SDCardStatus", 3, DEV))
    assert isinstance(query, manscdp.SdCardStatusQuery)


def test_sd_card_status_vendor_variants_are_read() -> None:
    """Lower-case tags, a CmdType variant, no SumNum, decimals and a garbled progress."""
    body = (XML + "<response><cmdtype>sdcardstatusquery</cmdtype><sn>4</sn><deviceid>" + DEV + "</deviceid>"
            "<result>OK</result><sdcardlist num='1'><item><id>1</id><hddname>卡1</hddname><status>Formatted"
            "</status><formatprogress>n/a</formatprogress><capacity>29.5</capacity><freespace>1.25</freespace>"
            "</item></sdcardlist></response>").encode("gb2312")
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.SdCardStatusResponse)
    assert msg.sum_num == 1  # from Num
    assert msg.cards == (manscdp.SdCard(id="1", hdd_name="卡1", status="Formatted", format_progress=None,
                                        capacity=29.5, free_space=1.25),)


def test_format_and_upgrade_controls_round_trip() -> None:
    body = manscdp.encode_device_command(5, DEV, format_sd_card=2)
    assert b"<FormatSDCard>2</FormatSDCard>" in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceControl) and msg.format_sd_card == 2
    upgrade = manscdp.DeviceUpgrade(firmware="V2", file_url=URL + "?a=1&b=2", manufacturer="Hik", session_id="s1")
    body = manscdp.encode_device_command(6, DEV, device_upgrade=upgrade)
    assert b"<FileURL>http://192.0.2.10/fw/ipc-v2.bin?a=1&amp;b=2</FileURL>" in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceControl) and msg.device_upgrade == upgrade
    assert manscdp.encode(msg) == body
    variant = (XML + "<Control><CmdType>DeviceControl</CmdType><SN>7</SN><DeviceID>" + DEV + "</DeviceID>"
               "<DeviceUpgrade><firmware>V3</firmware><FileUrl>ftp://h/f.bin</FileUrl><SessionId>x</SessionId>"
               "</DeviceUpgrade></Control>").encode()
    msg = manscdp.decode(variant)
    assert isinstance(msg, manscdp.DeviceControl)
    assert msg.device_upgrade == manscdp.DeviceUpgrade(firmware="V3", file_url="ftp://h/f.bin", session_id="x")


def test_upgrade_result_round_trips_and_reads_variants() -> None:
    body = manscdp.encode_upgrade_result(8, DEV, session_id="s1", ok=False, firmware="V1", reason="HTTP 404")
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceUpgradeResult)
    assert (msg.ok, msg.reason, msg.firmware, msg.session_id) == (False, "HTTP 404", "V1", "s1")
    assert manscdp.encode(msg) == body
    variant = (XML + "<Notify><CmdType>UpgradeResult</CmdType><SN>9</SN><DeviceID>" + DEV + "</DeviceID>"
               "<SessionID>s2</SessionID><Result> ok </Result><Firmware>V2</Firmware></Notify>").encode()
    msg = manscdp.decode(variant)
    assert isinstance(msg, manscdp.DeviceUpgradeResult) and msg.ok and msg.reason is None
    failed = (XML + "<Notify><CmdType>DeviceUpgradeResult</CmdType><SN>9</SN><DeviceID>" + DEV + "</DeviceID>"
              "<SessionID>s3</SessionID><UpgradeResult>ERROR</UpgradeResult><FailedReason>disk</FailedReason>"
              "</Notify>").encode()
    msg = manscdp.decode(failed)
    assert isinstance(msg, manscdp.DeviceUpgradeResult) and not msg.ok and msg.reason == "disk"


# --------------------------------------------------------------------------- the service through the API


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def service(h: Harness) -> MaintenanceService:
    assert h.platform.maintenance is not None
    return h.platform.maintenance


def device(h: Harness, device_id: str = DEV, **kw: Any) -> FakeDevice:
    """A registered device whose DeviceInfo is answered (firmware V1)."""
    addr = ("UDP", "127.0.0.1", 5070 if device_id == DEV else 5071)
    dev = h.registered_device(device_id, addr, **kw)
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, device_id, manufacturer="Hik", firmware="V1"))
    h.advance(1)
    return dev


def call(h: Harness, client: Client, method: str, path: str, body: Any = None) -> Deferred[Any]:
    """Start an API call that waits for the device; ``client.finish`` it once the device answered."""
    d = client.start(method, path, body=body)
    h.pump()
    return d


def answer_control(dev: FakeDevice, result: str = "OK") -> manscdp.DeviceControl:
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl)
    dev.message(manscdp.encode_control_response(msg.sn, msg.device_id, result=result))
    return msg


def start_upgrade(h: Harness, client: Client, dev: FakeDevice, result: str = "OK",
                  body: dict[str, Any] | None = None) -> tuple[Reply, manscdp.DeviceControl]:
    d = call(h, client, "POST", f"/devices/{dev.device_id}/upgrade",
                body or {"firmware": "V2", "file_url": URL, "manufacturer": "Hik"})
    msg = answer_control(dev, result)
    return client.finish(d), msg


def upgrade_events(h: Harness) -> list[tuple[str, Any]]:
    return [(e.data["session_id"], e.data["state"]) for e in h.platform.bus.kept() if e.kind == "upgrade"]


def test_sd_cards_are_listed_as_the_device_answers(h: Harness, client: Client) -> None:
    dev = device(h)
    d = call(h, client, "GET", f"/devices/{DEV}/sdcards")
    query = dev.last_query("SDCardStatus")
    assert query.kind == "Query" and query.device_id == DEV
    dev.message(manscdp.encode_sd_card_status_response(query.sn, DEV, [
        manscdp.SdCard(id="1", hdd_name="SD1", status="Formatting", format_progress=30, capacity=30436,
                       free_space=0)]))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "result": "OK", "sum_num": 1, "items": [
        {"id": "1", "hdd_name": "SD1", "status": "formatting", "format_progress": 30, "capacity": 30436.0,
         "free_space": 0.0}]}


def test_format_sends_format_sd_card_and_answers_the_result(h: Harness, client: Client) -> None:
    dev = device(h)
    d = call(h, client, "POST", f"/devices/{DEV}/sdcards/1/format")
    msg = answer_control(dev)
    assert msg.format_sd_card == 1 and msg.device_id == DEV
    reply = client.finish(d)
    assert (reply.code, reply.json) == (200, {"device_id": DEV, "target_id": DEV, "command": "FormatSDCard",
                                               "result": "OK"})
    assert client("POST", f"/devices/{DEV}/sdcards/256/format").json["error"]["field"] == "index"


def test_upgrade_done_refreshes_the_firmware_and_answers_the_notify(h: Harness, client: Client) -> None:
    dev = device(h)
    reply, msg = start_upgrade(h, client, dev)
    assert reply.code == 202, reply.json
    upgrade = msg.device_upgrade
    assert upgrade is not None and upgrade.session_id
    assert (upgrade.firmware, upgrade.file_url, upgrade.manufacturer) == ("V2", URL, "Hik")
    assert reply.json["state"] == "upgrading" and reply.json["session_id"] == upgrade.session_id
    assert reply.json["finished_at"] is None and reply.json["started_at"].endswith("Z")

    infos = len(dev.queries("DeviceInfo"))
    notify = manscdp.encode_upgrade_result(dev.next_sn(), DEV, session_id=upgrade.session_id, ok=True,
                                           firmware="V2")
    assert dev.message(notify).status == 200
    h.pump()
    answer = dev.last_query("DeviceUpgradeResult")
    assert (answer.kind, answer.sn, answer.fields.get("Result")) == ("Response", manscdp.decode(notify).sn, "OK")
    # DeviceInfo is asked again; its answer is what the registry keeps.
    assert len(dev.queries("DeviceInfo")) == infos + 1
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, DEV, manufacturer="Hik", firmware="V2"))
    h.advance(1)
    assert h.record(DEV).firmware == "V2"

    state = client("GET", f"/devices/{DEV}/upgrade")
    assert state.code == 200
    assert (state.json["state"], state.json["device_firmware"], state.json["reason"]) == ("done", "V2", None)
    assert state.json["finished_at"] is not None
    sid = upgrade.session_id
    assert upgrade_events(h) == [(sid, "pending"), (sid, "upgrading"), (sid, "done")]
    # Finished: a new upgrade may start.
    reply, msg = start_upgrade(h, client, dev, body={"firmware": "V3", "file_url": "ftp://fw:s3cret@192.0.2.10/f.bin"})
    assert reply.code == 202 and reply.json["session_id"] != sid and reply.json["manufacturer"] is None
    # The device gets the password; the API does not show it back.
    assert msg.device_upgrade is not None and msg.device_upgrade.file_url == "ftp://fw:s3cret@192.0.2.10/f.bin"
    assert reply.json["file_url"] == "ftp://fw:***@192.0.2.10/f.bin"


def test_upgrade_error_result_fails_with_the_device_reason(h: Harness, client: Client) -> None:
    dev = device(h)
    _, msg = start_upgrade(h, client, dev)
    assert msg.device_upgrade is not None and msg.device_upgrade.session_id is not None
    dev.message(manscdp.encode_upgrade_result(dev.next_sn(), DEV, session_id=msg.device_upgrade.session_id,
                                              ok=False, firmware="V1", reason="download failed: HTTP 404"))
    h.pump()
    state = client("GET", f"/devices/{DEV}/upgrade").json
    assert (state["state"], state["reason"], state["device_firmware"]) == ("failed", "download failed: HTTP 404",
                                                                          "V1")


def test_a_result_for_an_unknown_session_is_answered_and_ignored(h: Harness, client: Client) -> None:
    dev = device(h)
    start_upgrade(h, client, dev)
    other = device(h, DEV2)
    running = service(h).latest(DEV)
    assert running is not None
    for sender, session in ((dev, "nope"), (other, running.session_id)):
        notify = manscdp.encode_upgrade_result(sender.next_sn(), sender.device_id, session_id=session, ok=True,
                                               firmware="V9")
        assert sender.message(notify).status == 200
        h.pump()
        assert sender.last_query("DeviceUpgradeResult").fields.get("Result") == "OK"
    assert service(h).unknown_results == 2
    assert client("GET", f"/devices/{DEV}/upgrade").json["state"] == "upgrading"
    assert client("GET", f"/devices/{DEV2}/upgrade").code == 404


def test_no_result_within_the_timeout_fails_the_upgrade() -> None:
    h = Harness(replace(Config(), control=ControlConfig(upgrade_timeout=120.0)))
    try:
        client = Client(Api(h.platform))
        dev = device(h)
        reply, msg = start_upgrade(h, client, dev)
        assert reply.code == 202
        h.advance(119)
        assert client("GET", f"/devices/{DEV}/upgrade").json["state"] == "upgrading"
        h.advance(2)
        state = client("GET", f"/devices/{DEV}/upgrade").json
        assert state["state"] == "failed" and "120 s" in state["reason"]
        # A result arriving after all is still the device's word.
        assert msg.device_upgrade is not None and msg.device_upgrade.session_id is not None
        dev.message(manscdp.encode_upgrade_result(dev.next_sn(), DEV, session_id=msg.device_upgrade.session_id,
                                                  ok=True, firmware="V2"))
        h.advance(1)
        assert client("GET", f"/devices/{DEV}/upgrade").json["state"] == "done"
        assert not h.failures()
    finally:
        h.close()


def test_a_second_upgrade_while_one_runs_is_409(h: Harness, client: Client) -> None:
    dev = device(h)
    start_upgrade(h, client, dev)
    reply = client("POST", f"/devices/{DEV}/upgrade", body={"firmware": "V3", "file_url": URL})
    assert (reply.code, reply.json["error"]["code"]) == (409, "conflict")
    assert len(dev.queries("DeviceControl")) == 1


def test_a_refused_or_unanswered_upgrade_fails(h: Harness, client: Client) -> None:
    dev = device(h)
    reply, _ = start_upgrade(h, client, dev, result="ERROR")
    assert (reply.code, reply.json["state"]) == (200, "failed")
    assert "ERROR" in reply.json["reason"]
    d = call(h, client, "POST", f"/devices/{DEV}/upgrade", {"firmware": "V2", "file_url": URL})
    h.advance(h.config.sip.query_timeout - 0.5)
    assert not has_fired(d)
    h.advance(1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    state = client("GET", f"/devices/{DEV}/upgrade").json
    assert state["state"] == "failed" and "did not accept" in state["reason"]


def test_sessions_are_bounded_finished_ones_dropped_first(h: Harness, client: Client) -> None:
    service(h).max_sessions = 1
    dev = device(h)
    start_upgrade(h, client, dev, result="ERROR")  # failed: finished
    other = device(h, DEV2)
    reply, _ = start_upgrade(h, client, other)
    assert reply.code == 202
    assert client("GET", f"/devices/{DEV}/upgrade").code == 404
    # A running session is never dropped, even past the bound.
    reply, _ = start_upgrade(h, client, dev)
    assert reply.code == 202
    assert client("GET", f"/devices/{DEV2}/upgrade").json["state"] == "upgrading"


def test_a_2016_device_gets_422_and_nothing_is_sent(h: Harness, client: Client) -> None:
    dev = device(h, x_gb_ver=None)
    for method, path, body in (("GET", "sdcards", None), ("POST", "sdcards/1/format", None),
                               ("POST", "upgrade", {"firmware": "V2", "file_url": URL})):
        reply = client(method, f"/devices/{DEV}/{path}", body=body)
        assert (reply.code, reply.json["error"]["code"]) == (422, "unsupported_by_device_dialect"), path
    assert dev.queries("DeviceControl") == [] and dev.queries("SDCardStatus") == []
    assert service(h).latest(DEV) is None


def test_unknown_device_404_offline_409_bad_url_400(h: Harness, client: Client) -> None:
    unknown = "34020000001320000099"
    assert client("GET", f"/devices/{unknown}/sdcards").code == 404
    assert client("GET", f"/devices/{unknown}/upgrade").code == 404
    dev = device(h)
    assert client("GET", f"/devices/{DEV}/upgrade").json["error"]["code"] == "not_found"
    for url in ("file:///etc/passwd", "http://", "http://h:99999/x", "http://a b/x", "gopher://h/x"):
        reply = client("POST", f"/devices/{DEV}/upgrade", body={"firmware": "V2", "file_url": url})
        assert (reply.code, reply.json["error"]["field"]) == (400, "file_url"), url
    reply = client("POST", f"/devices/{DEV}/upgrade", body={"firmware": "", "file_url": URL})
    assert reply.json["error"]["field"] == "firmware"
    assert dev.register_auth(expires=0).status == 200
    reply = client("POST", f"/devices/{DEV}/sdcards/1/format")
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")


def every_response() -> None:
    """Every JSON answer of the maintenance routes (success paths) once, validated against its OpenAPI
    component (``test_shapes`` records which shapes were sent)."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Reply, name: str, code: int = 200) -> None:
        assert reply.code == code, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    h = Harness()
    try:
        client = Client(Api(h.platform))
        dev = device(h)
        d = call(h, client, "GET", f"/devices/{DEV}/sdcards")
        dev.message(manscdp.encode_sd_card_status_response(dev.last_query("SDCardStatus").sn, DEV, [
            manscdp.SdCard(id="1", hdd_name="SD1", status="Formatted", format_progress=100, capacity=30436,
                           free_space=1024)]))
        check(client.finish(d), "SdCardList")
        d = call(h, client, "POST", f"/devices/{DEV}/sdcards/1/format")
        answer_control(dev)
        check(client.finish(d), "CommandResult")
        refused, _ = start_upgrade(h, client, dev, result="ERROR")  # ended already: 200
        check(refused, "UpgradeState")
        running, _ = start_upgrade(h, client, dev)  # going on on the device: 202
        check(running, "UpgradeState", 202)
        check(client("GET", f"/devices/{DEV}/upgrade"), "UpgradeState")
        assert not h.failures(), h.failures()
    finally:
        h.close()


def test_responses_match_their_openapi_components() -> None:
    every_response()


# --------------------------------------------------------------------------- the simulator's side


class _SimDevice:
    """What SimMaintenance needs of its device: the clock, an answerer table and an outbox."""

    def __init__(self, fetch: Any, cards: int = 2) -> None:
        self.clock = Clock()
        self.sent: list[bytes] = []
        self.sn = 0
        self.maintenance = SimMaintenance(
            device_id=DEV, reactor=self.clock, firmware="V1", charset=lambda: "GB2312", label=lambda b: b,
            send=self.sent.append, next_sn=self._next_sn, cards=cards, fetch=fetch)
        self.answers = QueryAnswers()
        PtzFrontEnd(lambda: "GB2312").register(self.answers)
        self.maintenance.register(self.answers)

    def _next_sn(self) -> int:
        self.sn += 1
        return self.sn

    def ask(self, body: bytes) -> manscdp.ManscdpMessage:
        (answer,) = self.answers.answer(manscdp.decode(body))
        return manscdp.decode(answer)

    def result(self, body: bytes) -> str | None:
        answer = self.ask(body)
        assert isinstance(answer, manscdp.Response)
        return answer.result

    def cards(self) -> tuple[manscdp.SdCard, ...]:
        msg = self.ask(manscdp.encode_query("SDCardStatus", 1, DEV))
        assert isinstance(msg, manscdp.SdCardStatusResponse)
        return msg.cards


def test_simulated_format_progresses_on_the_clock() -> None:
    sim = _SimDevice(fetch=None)
    assert [(c.id, c.status) for c in sim.cards()] == [("1", "formatted"), ("2", "unformatted")]
    assert sim.result(manscdp.encode_device_command(2, DEV, format_sd_card=2)) == "OK"
    sim.clock.advance(FORMAT_SECONDS / 2)
    card = sim.cards()[1]
    assert (card.status, card.format_progress) == ("formatting", 50)
    assert sim.result(manscdp.encode_device_command(3, DEV, format_sd_card=2)) == "ERROR"
    assert sim.result(manscdp.encode_device_command(4, DEV, format_sd_card=7)) == "ERROR"
    sim.clock.advance(FORMAT_SECONDS / 2)
    card = sim.cards()[1]
    assert (card.status, card.format_progress, card.free_space) == ("formatted", 100, card.capacity)
    # The 2016 commands still reach the front end behind it.
    assert sim.result(manscdp.encode_device_command(5, DEV, guard_cmd="SetGuard")) == "OK"


def _upgrade(sim: _SimDevice, session_id: str, url: str = URL) -> str | None:
    body = manscdp.encode_device_command(9, DEV, device_upgrade=manscdp.DeviceUpgrade(
        firmware="V2", file_url=url, session_id=session_id))
    return sim.result(body)


def test_simulated_upgrade_reports_the_download_outcome() -> None:
    outcomes: dict[str, Deferred[bytes]] = {
        URL: succeed(b"\x7fELF firmware"),
        "http://192.0.2.10/missing": fail(FetchError("download failed: HTTP 404 Not Found")),
        "http://192.0.2.99/x": fail(ConnectionRefusedError("refused")),
    }
    sim = _SimDevice(fetch=lambda url: outcomes[url])
    assert _upgrade(sim, "s1") == "OK"
    assert _upgrade(sim, "s0") == "ERROR"  # one at a time
    sim.clock.advance(1)
    assert sim.maintenance.firmware == "V2"
    result = manscdp.decode(sim.sent[-1])
    assert isinstance(result, manscdp.DeviceUpgradeResult)
    assert (result.session_id, result.ok, result.firmware) == ("s1", True, "V2")

    assert _upgrade(sim, "s2", "http://192.0.2.10/missing") == "OK"
    sim.clock.advance(1)
    result = manscdp.decode(sim.sent[-1])
    assert isinstance(result, manscdp.DeviceUpgradeResult)
    assert (result.ok, result.reason, result.firmware) == (False, "download failed: HTTP 404 Not Found", "V2")

    assert _upgrade(sim, "s3", "http://192.0.2.99/x") == "OK"
    sim.clock.advance(1)
    assert sim.maintenance.results[-1] == ("s3", False, "download failed: ConnectionRefusedError: refused")
