"""Hostile input to the subscription, alarm, event and snapshot code (GB/T 28181-2016 §9.4, §9.11; RFC 6665):
each case is what a broken or malicious device or HTTP client could send; the answer is a clear error or a
logged drop, never a crash, a stuck subscription, unbounded memory or a lost report.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest
from twisted.web.server import Site
from zope.interface import implementer

from gbplatform.alarms import service as alarm_service
from gbplatform.alarms import store as alarm_store
from gbplatform.api import schemas
from gbplatform.api.app import Api
from gbplatform.api.bodylimit import MULTIPART_SLACK, BoundedRequest, body_limit, bounded_request
from gbplatform.api.schemas import ValidationError
from gbplatform.app.config import Config
from gbplatform.app.service import HttpService
from gbplatform.core.clock import FakeClock
from gbplatform.events.bus import EventBus
from gbplatform.events.sse import EventFilter, EventStreams, parse_filter, parse_last_event_id
from gbplatform.events.webhooks import AgentPoster
from gbplatform.snapshots import store as snapshot_store
from gbplatform.subscriptions import service as subscription_service
from sip import manscdp
from sip.endpoint import Endpoint
from sip.errors import SipParseError
from sip.headers import contacts, expires_value, validate_request
from sip.manscdp import dialects
from sip.message import Request as SipRequest
from sip.numbers import ascii_uint
from sip.parser import parse_datagram
from sip.subscription import parse_subscription_state
from sip.uri import SipUri
from tests.unit import (
    test_alarms,
    test_devices,
    test_snapshot_upload,
    test_subscriptions,
    test_webhooks,
)
from tests.unit.platform_harness import DEV, DEV2, Harness, result_of
from tests.unit.test_api import Client
from tests.unit.test_subscription import started
from tests.unit.test_subscriptions import notify, service

build = test_subscriptions.build  # the fixtures, reused under their names
alarm_build = test_alarms.build

HUGE = "9" * 5000  # past int()'s 4,300-digit limit


def short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} chars)"


# --- Subscription-State and Expires values (RFC 6665 §4.1.3, RFC 3261 §20.19) ------------------------------


@pytest.mark.parametrize("value", ["²", "٣", "１２", HUGE + "x", "-1", "1e3", "0x10", ""], ids=short)
def test_odd_expires_values_are_parse_errors(value: str) -> None:
    with pytest.raises(SipParseError):
        expires_value(value)


def test_a_huge_expires_is_capped_not_a_value_error() -> None:
    assert expires_value(HUGE) == 2**32 - 1
    assert expires_value("0" * 30 + "7") == 7


@pytest.mark.parametrize("header", [
    "active;expires=²", f"active;expires={HUGE}", "terminated;reason=probation;retry-after=²",
    "active;expires=-1", "active;expires=abc", "bogus", "active;;", "active;expires=", "\x00",
])
def test_a_malformed_subscription_state_is_a_parse_error_or_parsed(header: str) -> None:
    try:
        parse_subscription_state(header)
    except SipParseError:
        pass


@pytest.mark.parametrize("header", [
    "active;expires=²", "active;expires=-1", "active;expires=abc", "bogus", "active;;", "",
    "terminated;reason=giveup;retry-after=²",
])
def test_a_notify_with_a_bad_subscription_state_is_answered_400(header: str) -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    assert peer.notify(send.request, header, 1.0) == 400
    assert sub.state == "active" and sub.expires_at == 100.0  # the subscription is unchanged


def test_a_notify_with_5000_digits_of_expires_is_capped_to_what_was_asked() -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 0.0, expires=100)
    assert peer.notify(send.request, f"active;expires={HUGE}", 1.0) is None
    # RFC 6665 §4.2.1.1: a notifier may shorten, never lengthen; the refresh stays due.
    assert sub.expires_at == 101.0 and sub.next_timer() == pytest.approx(81.0)


def test_a_2xx_granting_more_than_asked_is_read_as_what_was_asked() -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 0.0, expires=4_000_000_000)
    assert sub.state == "active" and sub.expires_at == 100.0 and sub.next_timer() == pytest.approx(80.0)


@pytest.mark.parametrize("retry_after", ["4294967295", HUGE], ids=short)
def test_a_huge_retry_after_in_terminated_is_bounded_by_the_backoff(retry_after: str) -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 0.0, expires=100)
    assert peer.notify(send.request, f"terminated;reason=probation;retry-after={retry_after}", 1.0) is None
    assert sub.state == "failed"
    assert sub.next_timer() == pytest.approx(1.0 + sub.backoff_max)
    sub.on_timer(1.0 + sub.backoff_max)
    assert peer.sent(), "a new SUBSCRIBE once the bounded wait is over"


@pytest.mark.parametrize("retry_after", ["4294967295", "²", HUGE], ids=short)
def test_a_failure_with_a_huge_or_odd_retry_after_is_retried_within_the_backoff(retry_after: str) -> None:
    sub, peer, send = started(100)
    peer.answer(send, 503, 0.0, headers=[("Retry-After", retry_after)])
    assert sub.state == "failed"
    at = sub.next_timer()
    assert at is not None and at <= sub.backoff_max


# --- NOTIFYs and REGISTERs through the platform -------------------------------------------------------------


@pytest.fixture
def h(build: Callable[..., Harness]) -> Harness:
    return build()


@pytest.mark.parametrize("state", ["active;expires=²", "terminated;reason=probation;retry-after=²", "",
                                   f"active;expires={HUGE}"], ids=short)
def test_a_notify_with_odd_numbers_is_answered_not_a_crash(h: Harness, state: str) -> None:
    """Before the fix a "²" escaped as a ValueError: no answer, the device retransmitted, a logged failure."""
    dev = test_subscriptions.nvr(h)
    resp = notify(dev, h, "catalog", state)
    assert resp.status in (200, 400)
    sub = service(h)._subs[DEV]["catalog"]
    assert sub.state == "active" and sub.next_timer() is not None  # still refreshed on time


def test_a_register_with_a_superscript_expires_is_400(h: Harness) -> None:
    dev = h.device()
    assert dev.exchange(dev.register_request(expires=None, contact_params=";expires=²")).status == 400


def test_a_notify_of_another_devices_dialog_is_refused(h: Harness) -> None:
    """Dialog IDs are random, but a device (or anyone at its address) must not drive another's subscription."""
    dev = test_subscriptions.nvr(h)
    other = h.registered_device(DEV2, ("UDP", "127.0.0.1", 5071))
    sub = service(h)._subs[DEV]["catalog"]
    before = (sub.state, sub.expires_at)
    other.cseq = dev.cseq
    resp = notify(other, h, "catalog", "terminated;reason=rejected")
    assert resp.status >= 400
    assert (sub.state, sub.expires_at) == before


def test_a_notify_flood_is_bounded_by_the_rate_limit(h: Harness) -> None:
    dev = test_subscriptions.nvr(h)
    body = test_subscriptions.catalog_notify(manscdp.CatalogItem(device_id=test_subscriptions.CH, event="ON"))
    statuses = [notify(dev, h, "catalog", "active;expires=90", body).status for _ in range(200)]
    assert 503 in statuses and set(statuses) <= {200, 503}
    assert service(h)._subs[DEV]["catalog"].state == "active"


# --- alarms and positions ------------------------------------------------------------------------------------


@pytest.fixture
def ah(alarm_build: Callable[..., Harness]) -> Harness:
    return alarm_build()


def _alarm_body(device_id: str, inner: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Notify><CmdType>Alarm</CmdType><SN>1</SN>'
            f"<DeviceID>{device_id}</DeviceID>{inner}</Notify>").encode()


@pytest.mark.parametrize("source", ["A" * 3000, "../../etc/passwd", "34020000001340000001<x>", "ch 1"], ids=short)
def test_an_alarm_whose_source_is_no_id_is_kept_under_its_sender(ah: Harness, source: str) -> None:
    """A DeviceID the registry's columns cannot hold would fail the whole write batch (PostgreSQL: value too
    long), losing the other devices' alarms with it: the alarm is stored under the SIP sender instead."""
    dev = _nvr(ah)
    body = _alarm_body(source.replace("<", "&lt;").replace(">", "&gt;"),
                       "<AlarmPriority>1</AlarmPriority><AlarmMethod>2</AlarmMethod>")
    assert dev.message(body).status == 200
    ah.advance(1)
    items, total = ah.call(alarm_store.list_alarms_txn, alarm_store.AlarmFilter(), limit=10)
    assert total == 1 and items[0].channel_id == DEV and items[0].device_id == DEV


def test_a_position_whose_source_is_no_id_is_kept_under_its_sender(ah: Harness) -> None:
    dev = _nvr(ah)
    body = manscdp.encode_mobile_position(dev.next_sn(), "B" * 100, time=dt.datetime(2026, 12, 5, 8, 30),
                                          longitude=116.4, latitude=39.9)
    assert dev.message(body).status == 200
    ah.advance(1)
    [event] = test_alarms.events(ah, "position")
    assert event.channel_id == DEV


@pytest.mark.parametrize("inner", [
    "<AlarmPriority>-5</AlarmPriority><AlarmMethod>99999999999999999999999</AlarmMethod>",
    f"<AlarmPriority>{HUGE}</AlarmPriority>",
    "<AlarmPriority>1</AlarmPriority><Latitude>1e308</Latitude><Longitude>1e309</Longitude>",
    "<AlarmPriority>1</AlarmPriority><Latitude>NaN</Latitude><Longitude>-inf</Longitude>",
    "<AlarmTime>9999-12-31T23:59:59</AlarmTime>", "<AlarmTime>0000-00-00T99:99:99</AlarmTime>",
    "<AlarmTime>garbage</AlarmTime>", "<AlarmDescription>" + "x" * 30_000 + "</AlarmDescription>",  # UDP: no more fits
    "<Info>" * 300 + "</Info>" * 300,
], ids=short)
def test_absurd_alarm_values_are_stored_as_unknown(ah: Harness, inner: str) -> None:
    dev = _nvr(ah)
    assert dev.message(_alarm_body(test_alarms.ALARM_IN, inner)).status in (200, 400)
    ah.advance(1)
    items, _ = ah.call(alarm_store.list_alarms_txn, alarm_store.AlarmFilter(), limit=10)
    for alarm in items:
        assert alarm.priority in (None, 1) and alarm.method is None
        assert alarm.latitude is None and alarm.longitude is None
        assert alarm.device_time is None
        assert alarm.description is None or len(alarm.description) <= 1024


def _nvr(h: Harness) -> Any:
    from tests.unit.test_control import nvr as control_nvr
    return control_nvr(h)


# --- HTTP request bodies (gbplatform.api.bodylimit) -------------------------------------------------------------


class _Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request: WebRequest) -> bytes:  # noqa: N802 - Twisted's name
        assert request.content is not None
        self.bodies.append(request.content.read())
        return b"ok"


def _channel(limit: int, made: list[WebRequest] | None = None) -> tuple[HTTPChannel, StringTransport, _Recorder]:
    resource = _Recorder()
    # No idle timeout: the channel is never closed, and its timer would sit in the global reactor
    # for a later real-reactor (trial) test to find.
    site = Site(resource, timeout=None)  # type: ignore[no-untyped-call]
    factory = bounded_request(limit)

    def request(*args: Any, **kwargs: Any) -> WebRequest:
        made_one = factory(*args, **kwargs)
        if made is not None:
            made.append(made_one)
        return made_one

    site.requestFactory = request
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, resource


def test_a_2gb_content_length_is_413_before_any_byte_is_stored() -> None:
    made: list[WebRequest] = []
    channel, transport, resource = _channel(1000, made)
    channel.dataReceived(b"POST /api/v1/snapshot-uploads/x?token=t HTTP/1.1\r\nHost: h\r\n"
                         b"Content-Length: 2000000000\r\n\r\n" + b"\xff" * 4096)
    head = transport.value().split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in head
    assert b'"payload_too_large"' in transport.value()
    assert transport.disconnecting and resource.bodies == []
    [request] = made
    assert isinstance(request.content, io.BytesIO) and request.content.getvalue() == b""  # no temporary file


def test_a_chunked_body_past_the_limit_is_413_as_it_arrives() -> None:
    channel, transport, resource = _channel(1000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        channel.dataReceived(b"190\r\n" + b"a" * 400 + b"\r\n")  # 1,200 bytes in all
    assert transport.value().startswith(b"HTTP/1.1 413 ") and transport.disconnecting
    channel.dataReceived(b"0\r\n\r\n")  # the end of a refused body dispatches nothing
    assert resource.bodies == []


def test_a_body_within_the_limit_reaches_its_route() -> None:
    channel, transport, resource = _channel(1000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000)
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3e8\r\n" + b"c" * 1000 + b"\r\n0\r\n\r\n")
    assert resource.bodies == [b"b" * 1000, b"c" * 1000]
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2 and not transport.disconnecting


def test_the_platform_limit_is_the_largest_upload() -> None:
    config = Config()
    assert body_limit(config) == config.snapshot.max_bytes + MULTIPART_SLACK
    small = replace(config, snapshot=replace(config.snapshot, max_bytes=1024))
    assert body_limit(small) == max(schemas.MAX_BODY, 1024 + MULTIPART_SLACK)


def test_an_alarm_query_answer_claiming_a_billion_alarms_is_cut(ah: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarm_service, "MAX_QUERY_ALARMS", 5)
    client = Client(Api(ah.platform))
    dev = _nvr(ah)
    d = client.start("POST", f"/devices/{DEV}/alarms/query", body={})
    ah.pump()
    sn = dev.last_query("Alarm").sn
    items = [manscdp.alarm_item(test_alarms.ALARM_IN, priority=1, method=2, alarm_type=n,
                                time=dt.datetime(2026, 12, 1, 8, n)) for n in range(4)]
    for _ in range(3):  # 12 items sent, SumNum 10^9: the answer stops at the bound
        assert dev.message(manscdp.encode_alarm_query_response(sn, DEV, 10**9, items)).status == 200
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert (reply.json["sum_num"], reply.json["complete"], len(reply.json["items"])) == (10**9, False, 4)
    ah.advance(1)
    assert ah.call(alarm_store.list_alarms_txn, alarm_store.AlarmFilter(), limit=100)[1] == 4  # 5 kept, 4 unique


def test_an_alarm_query_answer_short_of_its_sumnum_ends_at_the_timeout(ah: Harness) -> None:
    client = Client(Api(ah.platform))
    dev = _nvr(ah)
    d = client.start("POST", f"/devices/{DEV}/alarms/query", body={})
    ah.pump()
    item = manscdp.alarm_item(test_alarms.ALARM_IN, priority=1, method=2, time=dt.datetime(2026, 12, 1, 8))
    dev.message(manscdp.encode_alarm_query_response(dev.last_query("Alarm").sn, DEV, 10**9, [item]))
    ah.advance(ah.config.sip.query_timeout + 1)
    reply = client.finish(d)
    assert (reply.code, reply.json["complete"], len(reply.json["items"])) == (200, False, 1)


# --- X-GB-Ver (GB/T 28181-2022 §9.1) --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "3.²", "٣", "\x00", HUGE, "3." + HUGE, "", "v", ".", "3..0", "-3"],
                         ids=short)
def test_garbage_x_gb_ver_is_unreadable_not_a_crash(value: str) -> None:
    assert dialects.version_from_header(value) in (None, "2022")


def test_only_ascii_digits_make_an_x_gb_ver() -> None:
    assert dialects.version_from_header("²") is None and dialects.version_from_header("٣") is None
    assert dialects.version_from_header("3.0") == "2022" and dialects.version_from_header(" V2 ") == "2016"


def test_a_register_with_a_superscript_x_gb_ver_registers_as_2016(h: Harness) -> None:
    dev = h.device(x_gb_ver="²")
    assert dev.register_auth().status == 200
    assert h.platform.devices.gb_version(DEV) == "2016"


# --- subscription state stays bounded ---------------------------------------------------------------------------


def test_a_re_register_storm_leaves_one_subscription_one_timer_and_one_dialog(h: Harness) -> None:
    dev = test_subscriptions.nvr(h)
    subs = service(h)
    for _ in range(50):  # each a "fresh" registration (a reboot, a move): subscribe anew at once
        subs.device_registered(DEV, True)
        h.pump()
    h.advance(40)  # every superseded SUBSCRIBE's transaction is over
    assert set(subs._subs) == {DEV} and set(subs._subs[DEV]) == {"catalog"}
    sub = subs._subs[DEV]["catalog"]
    assert sub.state == "active" and not sub._sent
    assert len(subs._timers) == 1 and len(subs._dialogs) == 1 and len(h.router._dialogs) == 1
    assert len(h.clock.reactor.getDelayedCalls()) < 50
    assert len(test_subscriptions.subscribes(dev)) == 51


def test_a_device_that_accepts_and_never_notifies_is_refreshed_not_stuck(h: Harness) -> None:
    dev = test_subscriptions.nvr(h)
    sub = service(h)._subs[DEV]["catalog"]
    for _ in range(10):
        h.advance(100)  # expires 100: refreshed at 80 s each time, answered 200, never a NOTIFY
        assert dev.keepalive().status == 200  # online all along
    assert sub.state == "active" and sub.last_notify_at is None
    assert len(test_subscriptions.subscribes(dev)) == 1 + 12  # one refresh per 80 s
    assert len(service(h)._timers) == 1


def test_an_unregistered_device_leaves_nothing_behind(h: Harness) -> None:
    dev = test_subscriptions.nvr(h)
    assert dev.register_auth(expires=0).status == 200
    h.advance(40)  # the unsubscribe answered, the final NOTIFY's wait over
    subs = service(h)
    assert not subs._timers and not subs._dialogs and not h.router._dialogs


# --- snapshot uploads ---------------------------------------------------------------------------------------------


@pytest.fixture
def sh(tmp_path: Path) -> Iterator[Harness]:
    yield from test_snapshot_upload.h.__wrapped__(tmp_path)  # type: ignore[attr-defined]


def test_upload_names_and_session_ids_cannot_leave_the_snapshot_folder(sh: Harness) -> None:
    client = Client(Api(sh.platform))
    dev = test_snapshot_upload.nvr(sh)
    test_snapshot_upload.open_session(sh, client, dev, {"count": 1})
    path = test_snapshot_upload.upload_path(test_snapshot_upload.sent_config(dev))
    for bad in ("/snapshot-uploads/..%2F..%2Fetc?token=x", "/snapshot-uploads/%2e%2e?token=x"):
        assert test_snapshot_upload.upload(client, bad, test_snapshot_upload.JPEG).code in (400, 404)
    reply = test_snapshot_upload.upload(client, path + "&file_id=..%2F..%2Fescape", test_snapshot_upload.JPEG)
    assert reply.code == 201 and "/" not in reply.json["file_id"]
    root = test_snapshot_upload.service(sh).root.resolve()
    [row] = sh.call(snapshot_store.list_snapshots_txn, test_snapshot_upload.CH, offset=0, limit=10)[0]
    assert (root / row.key).resolve().is_relative_to(root) and (root / row.key).exists()


def test_concurrent_uploads_to_a_one_picture_session_store_one(sh: Harness) -> None:
    client = Client(Api(sh.platform))
    dev = test_snapshot_upload.nvr(sh)
    test_snapshot_upload.open_session(sh, client, dev, {"count": 1})
    path = test_snapshot_upload.upload_path(test_snapshot_upload.sent_config(dev))
    writes: list[Deferred[Any]] = []
    service = test_snapshot_upload.service(sh)
    inline = service.run_in_thread

    def slow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        if fn is snapshot_store.write_file:  # the disk is slow: the first upload is still being written
            d: Deferred[Any] = Deferred()
            writes.append(d)
            d.addCallback(lambda _: fn(*args, **kwargs))
            return d
        return inline(fn, *args, **kwargs)

    service.run_in_thread = slow
    first = client.start("POST", path, token=None, raw=test_snapshot_upload.JPEG,
                         headers={"Content-Type": "image/jpeg"})
    sh.pump()
    second = test_snapshot_upload.upload(client, path, test_snapshot_upload.JPEG)
    assert (second.code, second.json["error"]["code"]) == (409, "session_full")
    writes[0].callback(None)
    assert client.finish(first).code == 201
    assert sh.call(snapshot_store.list_snapshots_txn, test_snapshot_upload.CH, offset=0, limit=10)[1] == 1


def test_catalog_events_waiting_for_a_slow_database_are_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscription_service, "MAX_PENDING_CATALOG_WRITES", 5)
    dev = test_subscriptions.nvr(h)
    subs = service(h)
    held: list[Deferred[Any]] = []
    run = subs.db.run

    def slow(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        if name != "channel_status":
            return run(name, fn, *args, **kwargs)
        d: Deferred[Any] = Deferred()  # the database is behind: nothing commits until released
        held.append(d)
        d.addCallback(lambda _: run(name, fn, *args, **kwargs))
        return d

    monkeypatch.setattr(subs.db, "run", slow)
    item = manscdp.CatalogItem(device_id=test_subscriptions.CH, event="OFF")
    body = test_subscriptions.catalog_notify(*[item] * 4)
    for _ in range(3):  # 12 events, 5 may wait
        assert notify(dev, h, "catalog", "active", body).status == 200
    assert subs._pending_writes[DEV] == 5 and len(held) == 1  # one at a time, in order
    assert h.platform.devices.stats["catalog_events_dropped"] == 7
    while held:
        held.pop(0).callback(None)
        h.pump()
    assert DEV not in subs._pending_writes and DEV not in subs._writes
    assert h.channels()[0].status == "OFF"


def test_a_ptz_position_notify_full_of_junk_publishes_a_bounded_event(build: Callable[..., Harness]) -> None:
    h = build(catalog=False, ptz_position=True)
    dev = h.registered_device()
    extra = {"Pan": "10.5", "Junk": "x" * 20_000, **{f"J{n}": "v" for n in range(500)}}
    body = manscdp.encode_notify("PTZPosition", 3, "../" + "y" * 100, extra=extra)
    assert notify(dev, h, "ptz_position", "active", body).status == 200
    [event] = test_subscriptions.events(h, "ptz")
    position = event.data["position"]
    assert position["Pan"] == "10.5" and len(position) == 32 and len(position["Junk"]) == 64
    assert event.channel_id == DEV and len(event.json()) < 4096


def test_the_platforms_http_site_bounds_request_bodies(h: Harness) -> None:
    reactor = test_devices._Reactor()
    service = HttpService(h.platform, reactor)
    service.startService()
    [(_port, site, _backlog, _host)] = reactor.tcpServers
    assert issubclass(site.requestFactory, BoundedRequest)
    assert site.requestFactory.max_body == body_limit(h.platform.config)
    service.stopService()


# --- webhooks -------------------------------------------------------------------------------------------------------


def test_a_webhook_answering_redirects_forever_is_given_up_not_followed() -> None:
    bus, hooks, poster, clock = test_webhooks.setup(max_attempts=3)
    bus.publish("device", device_id=DEV)
    for n in range(3):
        assert len(poster.calls) == n + 1 and poster.calls[n].url == test_webhooks.A  # never a Location
        poster.calls[n].answer.callback(302)
        clock.advance(60)
    target = hooks.state().targets[0]
    assert (target.failed, target.delivered, target.last_error) == (1, 0, "HTTP 302")
    assert clock.pending() == 0


@implementer(IPushProducer)
class _Stream:
    """An answer's transport: stopping it is what the reader does to an answer without end."""

    def __init__(self) -> None:
        self.stopped = False

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.stopped = True


class _EndlessResponse:
    code = 200

    def __init__(self) -> None:
        self.stream = _Stream()

    def deliverBody(self, protocol: Any) -> None:  # noqa: N802 - Twisted's name
        protocol.makeConnection(self.stream)
        for _ in range(64):  # 64 MiB offered; the reader stops it after its bound
            if self.stream.stopped:
                break
            protocol.dataReceived(b"x" * (1 << 20))
        protocol.connectionLost(Failure(ResponseDone()))


def test_a_webhook_answer_without_end_is_cut_at_the_bound() -> None:
    clock = FakeClock()
    agent = test_webhooks.FakeAgent()
    poster = AgentPoster(clock.reactor, 5.0, agent=agent)
    d = poster(test_webhooks.A, b"{}", {})
    answer = _EndlessResponse()
    agent.answer.callback(answer)
    assert result_of(d) == 200 and answer.stream.stopped


# --- the event stream ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"-1", b"9" * 19, b"9" * 5000, b"abc", "²".encode(), "１２".encode(), b"\xff",
                                 b"1e3", b"0x10"], ids=short)
def test_a_bad_last_event_id_is_a_400(raw: bytes) -> None:
    with pytest.raises(ValidationError) as e:
        parse_last_event_id(raw, {})
    assert e.value.field == "last_event_id"
    with pytest.raises(ValidationError):
        parse_last_event_id(None, {b"last_event_id": [raw]})


def test_10000_device_ids_in_an_event_filter_are_a_400() -> None:
    ids = b",".join(b"3402000000132%07d" % n for n in range(10_000))
    with pytest.raises(ValidationError) as e:
        parse_filter({b"device_id": [ids]})
    assert e.value.field == "device_id"
    with pytest.raises(ValidationError):
        parse_filter({b"channel_id": [b"x" * 65]})


class _Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed: str | None = None

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def close(self, reason: str) -> None:
        self.closed = reason


def test_clients_that_connect_and_vanish_leave_nothing_behind() -> None:
    clock = FakeClock()
    bus = EventBus(clock)
    hub = EventStreams(bus, clock, max_clients=10)
    for n in range(500):  # connect, get an event or not, vanish
        client = hub.open(_Sink(), EventFilter(), peer=f"10.0.0.{n % 250}:1")
        client.start(None if n % 2 else n)
        if n % 3 == 0:
            bus.publish("device", device_id=DEV)
        client.stopProducing()
    assert hub.clients == [] and bus.listeners == 0 and clock.pending() == 0
    assert hub.stats.accepted == 500 and hub.stats.closed == 500


# --- numbers in SIP text (RFC 3261 §25.1: 1*DIGIT) ----------------------------------------------------------------

_REGISTER = ("REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 192.168.1.64:{via_port};rport;branch=z9hG4bK1371463273\r\n"
             "From: <sip:34020000001320000001@3402000000>;tag=2043466181\r\n"
             "To: <sip:34020000001320000001@3402000000>\r\n"
             "Call-ID: 1011047669\r\nCSeq: {cseq} REGISTER\r\n"
             "Contact: <sip:34020000001320000001@192.168.1.64:{contact_port}>\r\n"
             "Max-Forwards: {mf}\r\nExpires: {expires}\r\nContent-Length: {cl}\r\n\r\n")
_GOOD = {"via_port": "5060", "cseq": "1", "contact_port": "5060", "mf": "70", "expires": "3600", "cl": "0"}
_ODD_NUMBERS = [(field, value) for field in _GOOD for value in ("²", "1²", "١٢", "１２", HUGE)]


@pytest.mark.parametrize(("field", "value"), _ODD_NUMBERS, ids=[f"{f}={short(v)}" for f, v in _ODD_NUMBERS])
def test_odd_digits_in_a_sip_number_are_a_parse_error_not_a_value_error(field: str, value: str) -> None:
    """Before the fix "²" (which passes str.isdigit()) or 5,000 digits (past int()'s limit) in a CSeq,
    Max-Forwards, Content-Length or port raised ValueError out of the parser and the endpoint."""
    data = _REGISTER.format(**{**_GOOD, field: value}).encode()
    with pytest.raises(SipParseError):
        msg = parse_datagram(data)
        assert isinstance(msg, SipRequest)
        validate_request(msg)
        [SipUri.parse(c.uri) for c in contacts(msg)]
        expires_value(msg.headers.get("Expires"))
    endpoint = Endpoint(rng=random.Random(0))
    endpoint.receive_datagram(data, ("UDP", "127.0.0.1", 5999), 0.0)  # documents no exception at all
    endpoint.take_output()


def test_ascii_uint() -> None:
    assert [ascii_uint(t, 5) for t in ("5060", "000005060", "65536", "123456", "", "²", "1 2", "-1")] == [
        5060, 5060, 65536, None, None, None, None, None]
    assert ascii_uint(HUGE, 10) is None and ascii_uint("0" * 5000, 10) == 0
