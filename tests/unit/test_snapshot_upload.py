"""Device snapshot upload (GB/T 28181-2022 §9.14 SnapShotConfig / UploadSnapShotFinished).

Declarations round-trip; the service and routes run against the in-memory
platform (``platform_harness``) with a stepped clock, the API over StubTreq.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred

from gbplatform.api.app import Api
from gbplatform.app.config import Config, ConfigError, load_config
from gbplatform.snapshots import store
from gbplatform.snapshots.http import multipart_file
from gbplatform.snapshots.service import BadUpload, DeviceSnapshots, NotJpeg, check_jpeg
from sip import manscdp
from tests.unit.platform_harness import DEV, FakeDevice, Harness, result_of
from tests.unit.test_api import Client, Reply

CH = "34020000001310000001"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return maybeDeferred(fn, *args, **kwargs)


def snap_config(tmp_path: Path, **snapshot: Any) -> Config:
    config = Config()
    return replace(config, storage=replace(config.storage, data_dir=str(tmp_path)),
                   snapshot=replace(config.snapshot, **{"max_bytes": 4096, "upload_timeout": 30.0, **snapshot}))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(snap_config(tmp_path))
    service(harness).run_in_thread = inline
    yield harness
    failures = harness.failures()
    harness.close()
    assert not failures, "\n".join(failures)


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def service(h: Harness) -> DeviceSnapshots:
    snapshots = h.platform.snapshots
    assert snapshots is not None
    return snapshots


def nvr(h: Harness, **kw: Any) -> FakeDevice:
    """A registered NVR (2022 unless ``x_gb_ver=None``) with one channel, CH."""
    dev = h.registered_device(**kw)
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, DEV, manufacturer="Hikvision"))
    cat = dev.last_query("Catalog")
    items = [manscdp.CatalogItem(device_id=CH, name="Gate", status="ON", parent_id=DEV)]
    dev.message(manscdp.encode_catalog_response(cat.sn, DEV, len(items), items))
    h.advance(1)
    return dev


def open_session(h: Harness, client: Client, dev: FakeDevice, body: Any = None, result: str = "OK") -> Reply:
    d = client.start("POST", f"/channels/{CH}/device-snapshots", body=body or {"count": 2, "interval": 1})
    h.pump()
    msg = dev.last_query("DeviceConfig")
    assert isinstance(msg, manscdp.DeviceConfig)
    dev.message(manscdp.encode_config_response(msg.sn, msg.device_id, result=result))
    return client.finish(d)


def sent_config(dev: FakeDevice) -> manscdp.SnapShotConfig:
    msg = dev.last_query("DeviceConfig")
    assert isinstance(msg, manscdp.DeviceConfig) and msg.snap_shot_config is not None
    return msg.snap_shot_config


def upload_path(config: manscdp.SnapShotConfig) -> str:
    assert config.upload_url is not None
    return config.upload_url.removeprefix("http://127.0.0.1:8080/api/v1")


def upload(client: Client, path: str, data: bytes, *, method: str = "POST",
           content_type: str = "image/jpeg") -> Reply:
    return client(method, path, token=None, raw=data, headers={"Content-Type": content_type})


def snapshot_events(h: Harness) -> list[dict[str, Any]]:
    return [e.data for e in h.platform.bus.kept() if e.kind == "snapshot"]


# --- declarations -------------------------------------------------------------------------


def test_snapshot_config_round_trips_in_device_config() -> None:
    config = manscdp.SnapShotConfig(snap_num=3, interval=2, upload_url="http://10.0.0.1:8080/u/s?token=a&b=c",
                                    session_id="s1")
    body = manscdp.encode_device_config(7, CH, snap_shot_config=config)
    assert b"<SnapNum>3</SnapNum>" in body and b"token=a&amp;b=c" in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceConfig) and msg.snap_shot_config == config


def test_upload_finished_round_trips_and_reads_vendor_variants() -> None:
    body = manscdp.encode_snapshot_finished(9, CH, "s1", ["f1", "f2"])
    assert b'<SnapShotList Num="2">' in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.UploadSnapShotFinished)
    assert (msg.session_id, msg.file_ids, msg.sn) == ("s1", ("f1", "f2"), 9)
    vendor = (b'<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>UploadSnapshotFinished</CmdType>'
              b"<SN>1</SN><DeviceID>" + CH.encode() + b"</DeviceID><SessionID>s2</SessionID><SnapShotList>"
              b"<Item><SnapshotFileId>a</SnapshotFileId></Item><Item><SNAPSHOTFILEID>b</SNAPSHOTFILEID></Item>"
              b"</SnapShotList></Notify>")
    msg = manscdp.decode(vendor)
    assert isinstance(msg, manscdp.UploadSnapShotFinished) and msg.file_ids == ("a", "b")
    empty = manscdp.decode(manscdp.encode_snapshot_finished(2, CH, "s3", []))
    assert isinstance(empty, manscdp.UploadSnapShotFinished) and empty.file_ids == ()
    answer = manscdp.decode(manscdp.encode_snapshot_finished_response(9, CH))
    assert isinstance(answer, manscdp.Response) and answer.result == "OK"


def test_jpeg_check_and_multipart_parsing() -> None:
    check_jpeg(JPEG)
    check_jpeg(JPEG + b"\r\n")
    with pytest.raises(NotJpeg):
        check_jpeg(b"GIF89a....")
    with pytest.raises(NotJpeg):
        check_jpeg(JPEG[:-2])
    form = (b"--XyZ\r\nContent-Disposition: form-data; name=\"sessionid\"\r\n\r\ns1\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pic-1.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + JPEG + b"\r\n--XyZ--\r\n")
    assert multipart_file(form, 'multipart/form-data; boundary="XyZ"') == (JPEG, "pic-1.jpg")
    with pytest.raises(BadUpload):
        multipart_file(form, "multipart/form-data")
    with pytest.raises(BadUpload):
        multipart_file(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--XyZ--", "multipart/form-data; "
                       "boundary=XyZ")


def test_config_options(tmp_path: Path) -> None:
    config = load_config(None, {"GBP_HTTP_ADVERTISED_URL": "https://gb.example:8443/",
                                "GBP_SNAPSHOT_RETENTION_DAYS": "7"})
    assert config.api_base_url == "https://gb.example:8443" and config.snapshot.retention_days == 7
    assert Config().api_base_url == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError, match="http.advertised_url"):
        load_config(None, {"GBP_HTTP_ADVERTISED_URL": "gb.example/path"})


# --- the flow through the API --------------------------------------------------------------


def test_request_upload_finish_list_and_fetch(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = open_session(h, client, dev)
    assert reply.code == 202, reply.json
    session = reply.json
    assert session["state"] == "waiting" and session["count"] == 2 and session["channel_id"] == CH
    assert reply.header("Location") == f"/api/v1/snapshot-sessions/{session['session_id']}"
    config = sent_config(dev)
    assert dev.last_query("DeviceConfig").device_id == CH
    assert (config.snap_num, config.interval, config.session_id) == (2, 1, session["session_id"])
    assert config.upload_url is not None and config.upload_url.startswith(
        f"http://127.0.0.1:8080/api/v1/snapshot-uploads/{session['session_id']}?token=")
    path = upload_path(config)

    first = upload(client, path + "&file_id=3402000000131000000120261205100000", JPEG)
    assert first.code == 201, first.json
    assert first.json["seq"] == 1 and first.json["file_id"] == "3402000000131000000120261205100000"
    assert client("GET", f"/snapshot-sessions/{session['session_id']}").json["state"] == "uploading"
    form = (b"--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"two.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + JPEG + b"\r\n--b1--\r\n")
    second = upload(client, path, form, method="PUT", content_type="multipart/form-data; boundary=b1")
    assert second.code == 201 and second.json["file_id"] == "two"

    notify = manscdp.encode_snapshot_finished(dev.next_sn(), CH, session["session_id"], ["f1", "f2"])
    assert dev.message(notify).status == 200
    h.pump()
    answer = dev.last_query("UploadSnapShotFinished")
    assert isinstance(answer, manscdp.Response) and answer.result == "OK" and answer.device_id == CH
    state = client("GET", f"/snapshot-sessions/{session['session_id']}").json
    assert state["state"] == "finished" and state["received"] == 2 and state["file_ids"] == ["f1", "f2"]
    states = [e["state"] for e in snapshot_events(h)]
    assert states == ["waiting", "uploaded", "uploaded", "finished"]
    assert snapshot_events(h)[-1]["file_ids"] == ["f1", "f2"]

    page = client("GET", f"/channels/{CH}/device-snapshots").json
    assert page["total"] == 2 and [i["seq"] for i in page["items"]] == [2, 1]
    assert all(i["finished"] for i in page["items"])
    stored = h.config.storage.data_dir + f"/device-snapshots/{DEV}/{CH}/{session['session_id']}-01.jpg"
    assert Path(stored).read_bytes() == JPEG

    d = client.stub.request("GET", "http://gbp.test" + page["items"][0]["url"],
                            headers={"Authorization": "Bearer t"})
    client.stub.flush()
    response = result_of(d)
    assert response.code == 200 and response.headers.getRawHeaders(b"content-type") == [b"image/jpeg"]
    body = client.stub.content(response)
    client.stub.flush()
    assert result_of(body) == JPEG


def test_unnamed_pictures_take_the_devices_file_ids(h: Harness, client: Client) -> None:
    dev = nvr(h)
    session = open_session(h, client, dev, {"count": 1}).json
    assert upload(client, upload_path(sent_config(dev)), JPEG).json["file_id"] == f"{session['session_id']}-1"
    dev.message(manscdp.encode_snapshot_finished(dev.next_sn(), CH, session["session_id"], ["dev-file-1"]))
    h.pump()
    assert [i["file_id"] for i in client("GET", f"/channels/{CH}/device-snapshots").json["items"]] == ["dev-file-1"]


def test_uploads_are_refused_with_clear_errors(h: Harness, client: Client) -> None:
    dev = nvr(h)
    session = open_session(h, client, dev, {"count": 1}).json
    path = upload_path(sent_config(dev))
    base = path.split("?")[0]
    assert upload(client, base + "?token=wrong", JPEG).json["error"]["code"] == "invalid_token"
    assert upload(client, base, JPEG).code == 403
    assert upload(client, "/snapshot-uploads/nosuchsession?token=x", JPEG).code == 404
    refused = upload(client, path, b"GIF89a" + b"\x00" * 64)
    assert (refused.code, refused.json["error"]["code"]) == (415, "not_jpeg")
    big = b"\xff\xd8\xff" + b"\x00" * 5000 + b"\xff\xd9"
    assert (upload(client, path, big).code, upload(client, path, big).json["error"]["code"]) == (413, "too_large")
    assert upload(client, path, b"--q\r\n\r\n--q--", content_type="multipart/form-data; boundary=q").code == 400
    assert upload(client, path, JPEG).code == 201
    full = upload(client, path, JPEG)
    assert (full.code, full.json["error"]["code"]) == (409, "session_full")
    assert client("GET", f"/channels/{CH}/device-snapshots").json["total"] == 1
    assert session["state"] == "waiting"


def test_a_session_expires_and_says_so(h: Harness, client: Client) -> None:
    dev = nvr(h)
    session = open_session(h, client, dev, {"count": 3, "interval": 10}).json
    path = upload_path(sent_config(dev))
    assert upload(client, path, JPEG).code == 201
    h.advance(2 * 10 + 30 - 1)
    assert client("GET", f"/snapshot-sessions/{session['session_id']}").json["state"] == "uploading"
    h.advance(2)
    state = client("GET", f"/snapshot-sessions/{session['session_id']}").json
    assert (state["state"], state["received"], state["count"]) == ("expired", 1, 3)
    late = upload(client, path, JPEG)
    assert (late.code, late.json["error"]["code"]) == (410, "session_expired")
    assert snapshot_events(h)[-1]["state"] == "expired"


def test_2016_device_is_refused_before_anything_is_sent(h: Harness, client: Client) -> None:
    dev = nvr(h, x_gb_ver=None)
    reply = client("POST", f"/channels/{CH}/device-snapshots", body={"count": 1})
    assert (reply.code, reply.json["error"]["code"]) == (422, "unsupported_by_device_dialect")
    assert dev.queries("DeviceConfig") == [] and service(h).sessions == {}


def test_request_errors_unknown_offline_bad_body_rejected_and_timeout(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert client("POST", "/channels/34020000001310000099/device-snapshots", body={"count": 1}).code == 404
    bad = client("POST", f"/channels/{CH}/device-snapshots", body={"count": 11})
    assert (bad.code, bad.json["error"]["field"]) == (400, "count")
    assert open_session(h, client, dev, result="ERROR").json["error"]["code"] == "device_rejected"
    d = client.start("POST", f"/channels/{CH}/device-snapshots", body={"count": 1})
    h.pump()
    h.advance(h.config.sip.query_timeout + 1)
    assert client.finish(d).code == 504
    assert service(h).sessions == {}
    assert dev.register_auth(expires=0).status == 200
    assert client("POST", f"/channels/{CH}/device-snapshots", body={"count": 1}).code == 409


def test_finished_for_an_unknown_or_foreign_session_is_answered_error(h: Harness) -> None:
    dev = nvr(h)
    dev.message(manscdp.encode_snapshot_finished(dev.next_sn(), CH, "nosuchsession", ["x"]))
    h.pump()
    answer = dev.last_query("UploadSnapShotFinished")
    assert isinstance(answer, manscdp.Response) and answer.result == "ERROR"


def test_list_and_session_of_unknown_channel_are_404(h: Harness, client: Client) -> None:
    nvr(h)
    assert client("GET", "/channels/34020000001310000099/device-snapshots").code == 404
    assert client("GET", f"/channels/{CH}/device-snapshots").json["total"] == 0
    assert client("GET", "/snapshot-sessions/nosuch").code == 404
    assert client("GET", f"/channels/{CH}/device-snapshots", token=None).code == 401
    assert client("GET", "/device-snapshots/99.jpg").code == 404


def test_retention_purges_old_pictures_files_first(h: Harness, client: Client) -> None:
    dev = nvr(h)
    session = open_session(h, client, dev, {"count": 1}).json
    assert upload(client, upload_path(sent_config(dev)), JPEG).code == 201
    rows = h.call(store.session_rows_txn, session["session_id"])
    path = Path(h.config.storage.data_dir) / "device-snapshots" / rows[0].key
    assert path.exists()
    snapshots = service(h)
    snapshots.start()
    h.advance(h.config.snapshot.purge_interval)
    assert path.exists()  # 30 days not past
    h.clock.set_time(h.clock.time() + 31 * 86400)
    h.advance(h.config.snapshot.purge_interval)
    assert not path.exists()
    assert client("GET", f"/channels/{CH}/device-snapshots").json["total"] == 0
    snapshots.stop()


def test_a_session_after_a_restart_is_known_from_its_pictures(h: Harness, client: Client) -> None:
    dev = nvr(h)
    session = open_session(h, client, dev, {"count": 1}).json
    assert upload(client, upload_path(sent_config(dev)), JPEG).code == 201
    service(h).sessions.clear()  # what a restart forgets
    state = client("GET", f"/snapshot-sessions/{session['session_id']}").json
    assert (state["state"], state["received"], state["count"]) == ("expired", 1, None)
    dev.message(manscdp.encode_snapshot_finished(dev.next_sn(), CH, session["session_id"], ["late"]))
    h.pump()
    answer = dev.last_query("UploadSnapShotFinished")
    assert isinstance(answer, manscdp.Response) and answer.result == "OK"
    state = client("GET", f"/snapshot-sessions/{session['session_id']}").json
    assert state["state"] == "finished" and state["file_ids"] == ["late"]
    assert isinstance(h.call(store.session_rows_txn, session["session_id"])[0].received_at, dt.datetime)


# --- the simulator's side ---------------------------------------------------------------------


def test_simulator_takes_uploads_and_then_notifies() -> None:
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from gbplatform.simulator.snapshot_upload import SimSnapshotUpload

    reactor = Clock()
    uploads: list[tuple[str, bytes]] = []
    sent: list[bytes] = []

    def upload(url: str, data: bytes) -> Deferred[int]:
        uploads.append((url, data))
        return succeed(409 if len(uploads) == 2 else 201)  # the platform refuses the second

    sim = SimSnapshotUpload(device_id=DEV, reactor=reactor, charset=lambda: "GB2312", label=lambda b: b,
                            send=sent.append, next_sn=iter(range(1, 100)).__next__, upload=upload,
                            picture=lambda index: JPEG)

    def config(**values: Any) -> manscdp.ManscdpMessage:
        return manscdp.decode(manscdp.encode_device_config(5, CH, snap_shot_config=manscdp.SnapShotConfig(
            **{"snap_num": 3, "interval": 2, "upload_url": "http://h/u/s?token=t", "session_id": "s", **values})))

    answer = manscdp.decode((sim.device_config(config()) or [b""])[0])
    assert isinstance(answer, manscdp.Response) and answer.result == "OK"
    reactor.advance(0)
    assert len(uploads) == 1 and uploads[0][0].startswith(f"http://h/u/s?token=t&file_id={CH}")
    reactor.advance(2)
    assert len(uploads) == 2 and not sent
    reactor.advance(2)
    assert len(uploads) == 3 and len(sent) == 1
    notify = manscdp.decode(sent[0])
    assert isinstance(notify, manscdp.UploadSnapShotFinished) and notify.device_id == CH
    assert notify.session_id == "s" and len(notify.file_ids) == 2 and notify.file_ids[1].endswith("03")
    refused = manscdp.decode((sim.device_config(config(snap_num=11)) or [b""])[0])
    assert isinstance(refused, manscdp.Response) and refused.result == "ERROR" and len(sim.bursts) == 1
    assert sim.device_config(manscdp.decode(manscdp.encode_device_config(
        6, DEV, basic_param=manscdp.BasicParam(name="x")))) is None


def test_simulator_pictures_are_real_jpegs() -> None:
    import io

    av = pytest.importorskip("av")
    from gbplatform.simulator.snapshot_upload import test_pattern_jpeg

    one, two = test_pattern_jpeg(1), test_pattern_jpeg(2)
    assert one != two
    check_jpeg(one)
    with av.open(io.BytesIO(one)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (320, 240)


def every_response(data_dir: Path) -> None:
    """Builds each response shape of the snapshot routes once (``test_shapes`` records them)."""
    harness = Harness(snap_config(data_dir))
    try:
        service(harness).run_in_thread = inline
        client = Client(Api(harness.platform))
        dev = nvr(harness)
        session = open_session(harness, client, dev, {"count": 1})
        assert session.code == 202, session.json
        assert upload(client, upload_path(sent_config(dev)), JPEG).code == 201
        assert client("GET", f"/snapshot-sessions/{session.json['session_id']}").code == 200
        assert client("GET", f"/channels/{CH}/device-snapshots").code == 200
    finally:
        harness.close()
