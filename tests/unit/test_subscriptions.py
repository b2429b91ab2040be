"""Subscriptions through the platform (GB/T 28181-2016 §9.11, RFC 6665) against in-memory devices:
SUBSCRIBE on registration, NOTIFYs routed to the MANSCDP listeners, catalog events applied to the
registry and visible in the API at once, settings through the API applied at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gbplatform.api.app import Api
from gbplatform.app.config import Config, SubscriptionsConfig
from gbplatform.events.bus import Event
from gbplatform.subscriptions import store
from gbplatform.subscriptions.service import SubscriptionService
from sip import manscdp
from sip.message import Headers, Request
from tests.unit.platform_harness import (
    DEV,
    PLATFORM_HOST,
    PLATFORM_PORT,
    FakeDevice,
    Harness,
    has_fired,
    sip_config,
)
from tests.unit.test_api import Client

CH = "34020000001310000001"
CH2 = "34020000001310000002"


@pytest.fixture
def build(harnesses: Callable[[Config], Harness]) -> Callable[..., Harness]:
    def factory(**subscriptions: Any) -> Harness:
        base = sip_config()
        settings = {"catalog": True, "expires": 100, **subscriptions}
        return harnesses(Config(**{**{f: getattr(base, f) for f in ("sip", "http", "api", "database", "storage",
                                                                       "log", "media", "record")},
                                   "subscriptions": SubscriptionsConfig(**settings)}))

    return factory


@pytest.fixture
def h(build: Callable[..., Harness]) -> Harness:
    return build()


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def service(h: Harness) -> SubscriptionService:
    assert h.platform.subscriptions is not None
    return h.platform.subscriptions


def events(h: Harness, kind: str) -> list[Event]:
    found = [e for e in h.platform.bus.kept() if e.kind == kind]
    if kind == "channel":  # the catalog sync's "synced" is not a catalog NOTIFY event
        return [e for e in found if e.data.get("event") != "synced"]
    return found


def subscribes(dev: FakeDevice) -> list[Request]:
    return [i.request for i in dev.inbound if i.request.method == "SUBSCRIBE"]


def nvr(h: Harness, **kw: Any) -> FakeDevice:
    """A registered device whose catalog (CH) is stored."""
    dev = h.registered_device(**kw)
    sync = next(i.msg for i in dev.inbound if i.request.method == "MESSAGE" and i.msg is not None
                and i.msg.cmd_type == "Catalog")
    items = [manscdp.CatalogItem(device_id=CH, name="Gate", status="ON", parent_id=DEV)]
    dev.message(manscdp.encode_catalog_response(sync.sn, DEV, len(items), items))
    h.advance(1)
    assert [c.channel_id for c in h.channels()] == [CH]
    return dev


def notify(dev: FakeDevice, h: Harness, kind: str, state: str, body: bytes = b"") -> Any:
    """A NOTIFY from the device in the dialog of its ``kind`` subscription."""
    sub = service(h)._subs[DEV][kind]
    assert sub.dialog is not None and sub._initial is not None
    dev.cseq += 1
    req = Request(method="NOTIFY", uri=f"sip:34020000002000000001@{PLATFORM_HOST}:{PLATFORM_PORT}", headers=Headers())
    hd = req.headers
    hd.add("From", f"<sip:{DEV}@3402000000>;tag={sub.dialog.id.remote_tag}")
    hd.add("To", sub._initial.headers.get("From") or "")
    hd.add("Call-ID", sub.dialog.id.call_id)
    hd.add("CSeq", f"{dev.cseq + 100} NOTIFY")
    hd.add("Contact", f"<sip:{DEV}@{dev.addr[1]}:{dev.addr[2]}>")
    hd.add("Event", sub.target.event if sub.target else "Catalog")
    hd.add("Subscription-State", state)
    hd.add("Max-Forwards", "70")
    if body:
        hd.add("Content-Type", "Application/MANSCDP+xml")
    req.body = body
    return dev.exchange(req)


def catalog_notify(*items: manscdp.CatalogItem) -> bytes:
    return manscdp.encode_catalog_response(1, DEV, len(items), items, kind="Notify")


def test_the_catalog_is_subscribed_on_registration_and_active_in_the_api(h: Harness, client: Client) -> None:
    dev = nvr(h)
    [sub] = subscribes(dev)
    assert sub.headers.get("Event") == "Catalog" and sub.headers.get("Expires") == "100"
    assert sub.headers.get("Accept") == "Application/MANSCDP+xml"
    msg = manscdp.decode(sub.body)
    assert (msg.kind, msg.cmd_type, msg.device_id) == ("Query", "Catalog", DEV)
    reply = client("GET", f"/devices/{DEV}/subscriptions")
    assert reply.code == 200, reply.json
    assert reply.json["catalog"]["state"] == "active" and reply.json["catalog"]["status"] == 200
    assert reply.json["catalog"]["expires_at"] is not None and reply.json["catalog"]["event"] == "Catalog"
    assert reply.json["alarm"] == {"wanted": False, "setting": None, "state": "off", "event": "presence",
                                   "status": None, "reason": None, "expires_at": None, "last_notify_at": None}
    assert [e.data["state"] for e in events(h, "subscription")][-1] == "active"


def test_catalog_off_in_a_notify_shows_offline_in_the_api_at_once(h: Harness, client: Client) -> None:
    dev = nvr(h)
    resp = notify(dev, h, "catalog", "active;expires=90",
                  catalog_notify(manscdp.CatalogItem(device_id=CH, event="OFF")))
    assert resp.status == 200
    channels = client("GET", f"/devices/{DEV}/channels").json["items"]
    assert [(c["channel_id"], c["status"]) for c in channels] == [(CH, "OFF")]
    [event] = events(h, "channel")
    assert (event.device_id, event.channel_id, event.data["event"], event.data["status"]) == (DEV, CH, "OFF", "OFF")
    notify(dev, h, "catalog", "active;expires=90", catalog_notify(manscdp.CatalogItem(device_id=CH, event="ON")))
    assert client("GET", f"/devices/{DEV}/channels").json["items"][0]["status"] == "ON"
    state = client("GET", f"/devices/{DEV}/subscriptions").json["catalog"]
    assert state["last_notify_at"] is not None


def test_vlost_and_defect_set_off(h: Harness) -> None:
    dev = nvr(h)
    notify(dev, h, "catalog", "active", catalog_notify(manscdp.CatalogItem(device_id=CH, event="vlost")))
    assert h.channels()[0].status == "OFF"
    assert events(h, "channel")[-1].data["event"] == "VLOST"


def test_add_update_and_del_by_message_notify(h: Harness) -> None:
    dev = nvr(h)
    add = manscdp.CatalogItem(device_id=CH2, event="ADD", name="Yard", status="ON", parent_id=DEV)
    assert dev.message(catalog_notify(add)).status == 200
    assert sorted((c.channel_id, c.name) for c in h.channels()) == [(CH, "Gate"), (CH2, "Yard")]
    assert h.record().channel_count == 2
    upd = manscdp.CatalogItem(device_id=CH2, event="UPDATE", name="Back yard", status="ON", parent_id=DEV)
    dev.message(catalog_notify(upd))
    assert {c.channel_id: c.name for c in h.channels()}[CH2] == "Back yard"
    dev.message(catalog_notify(manscdp.CatalogItem(device_id=CH2, event="DEL")))
    assert [c.channel_id for c in h.channels()] == [CH]
    assert h.record().channel_count == 1
    assert [e.data["event"] for e in events(h, "channel")] == ["ADD", "UPDATE", "DEL"]


def test_notify_before_the_2xx_establishes_the_subscription(build: Callable[..., Harness]) -> None:
    h = build()
    dev = h.registered_device()
    dev.answer_status = None  # the 2xx is lost: only the NOTIFY tells
    service(h).device_registered(DEV, True)
    h.pump()
    sub = service(h)._subs[DEV]["catalog"]
    initial = sub._initial
    assert initial is not None and sub.state == "subscribing"
    req = Request(method="NOTIFY", uri=f"sip:34020000002000000001@{PLATFORM_HOST}:{PLATFORM_PORT}",
                  headers=Headers())
    hd = req.headers
    hd.add("From", f"<sip:{DEV}@3402000000>;tag=first")
    hd.add("To", initial.headers.get("From") or "")
    hd.add("Call-ID", initial.call_id)
    hd.add("CSeq", "1 NOTIFY")
    hd.add("Event", "Catalog")
    hd.add("Subscription-State", "active;expires=100")
    hd.add("Max-Forwards", "70")
    dev.answer_status = 200
    assert dev.exchange(req).status == 200
    assert sub.state == "active" and sub.dialog is not None
    h.advance(40)  # the SUBSCRIBE's own transaction times out: the NOTIFY's word stands
    assert sub.state == "active"


def test_an_unknown_notify_is_481(h: Harness) -> None:
    dev = h.registered_device()
    req = dev.request("NOTIFY", headers=[("Event", "Catalog"), ("Subscription-State", "active")])
    assert dev.exchange(req).status == 481


def test_alarm_notify_bodies_reach_the_manscdp_listeners(build: Callable[..., Harness]) -> None:
    h = build(catalog=False, alarm=True)
    got: list[tuple[str, str]] = []
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: got.append((device_id, msg.cmd_type)))
    dev = h.registered_device()
    [sub] = subscribes(dev)
    assert sub.headers.get("Event") == "presence"
    query = manscdp.decode(sub.body)
    assert query.cmd_type == "Alarm" and query.fields["StartAlarmPriority"] == "1"
    assert "StartAlarmTime" in query.fields and query.fields["AlarmMethod"] == "0"
    body = manscdp.encode_notify("Alarm", 7, DEV, extra={"AlarmPriority": "1", "AlarmMethod": "2"})
    assert notify(dev, h, "alarm", "active", body).status == 200
    assert got == [(DEV, "Alarm")]


def test_mobile_position_carries_the_interval(build: Callable[..., Harness], client: Client) -> None:
    h = build(catalog=False, mobile_position=True, position_interval=7)
    dev = h.registered_device()
    [sub] = subscribes(dev)
    assert manscdp.decode(sub.body).fields["Interval"] == "7"


def test_refresh_at_80_percent_and_expiry_notify(h: Harness) -> None:
    dev = nvr(h)
    assert len(subscribes(dev)) == 1
    h.advance(78)  # subscribed at 0 (nvr() took 1 s) for 100 s: refreshed at 80
    assert len(subscribes(dev)) == 1
    h.advance(2)
    refreshes = subscribes(dev)
    assert len(refreshes) == 2 and refreshes[1].call_id == refreshes[0].call_id
    assert "tag=" in (refreshes[1].headers.get("To") or "")


def test_terminated_resubscribes(h: Harness) -> None:
    dev = nvr(h)
    notify(dev, h, "catalog", "terminated;reason=timeout")
    assert len(subscribes(dev)) == 2 and subscribes(dev)[1].call_id != subscribes(dev)[0].call_id
    assert service(h)._subs[DEV]["catalog"].state == "active"


def test_put_turns_off_with_expires_0_and_on_again(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = client("PUT", f"/devices/{DEV}/subscriptions", body={"catalog": False})
    assert reply.code == 200, reply.json
    h.pump()
    assert reply.json["catalog"]["setting"] is False and reply.json["catalog"]["state"] == "off"
    last = subscribes(dev)[-1]
    assert last.headers.get("Expires") == "0" and "tag=" in (last.headers.get("To") or "")
    assert client("GET", f"/devices/{DEV}/subscriptions").json["catalog"]["wanted"] is False
    d = client.start("PUT", f"/devices/{DEV}/subscriptions",
                     body={"catalog": None, "mobile_position": True, "position_interval": 9})
    h.pump()
    assert client.finish(d).code == 200
    reply = client("GET", f"/devices/{DEV}/subscriptions")
    assert reply.json["catalog"]["state"] == "active" and reply.json["mobile_position"]["state"] == "active"
    assert reply.json["position_interval"] == 9 and reply.json["position_interval_setting"] == 9
    assert manscdp.decode(subscribes(dev)[-1].body).fields.get("Interval") == "9"


def test_put_errors(build: Callable[..., Harness]) -> None:
    h = build()
    client = Client(Api(h.platform))
    assert client("PUT", "/devices/34020000001320000099/subscriptions", body={"catalog": True}).code == 404
    assert client("GET", "/devices/34020000001320000099/subscriptions").code == 404
    h.registered_device(x_gb_ver=None)  # a GB/T 28181-2016 device
    reply = client("PUT", f"/devices/{DEV}/subscriptions", body={"ptz_position": True})
    assert reply.code == 422 and reply.json["error"]["code"] == "unsupported_by_device_dialect"
    bad = client("PUT", f"/devices/{DEV}/subscriptions", body={"position_interval": 0})
    assert bad.code == 400 and bad.json["error"]["field"] == "position_interval"
    assert client("PUT", f"/devices/{DEV}/subscriptions", body={"bogus": 1}).code == 400


def test_ptz_position_on_a_2022_device_publishes_ptz_events(build: Callable[..., Harness]) -> None:
    h = build(catalog=False, ptz_position=True)
    dev = h.registered_device()
    [sub] = subscribes(dev)
    assert manscdp.decode(sub.body).cmd_type == "PTZPosition"
    body = manscdp.encode_notify("PTZPosition", 3, CH, extra={"Pan": "10.5", "Tilt": "3", "Zoom": "1"})
    notify(dev, h, "ptz_position", "active", body)
    [event] = events(h, "ptz")
    assert event.channel_id == CH and event.data["position"] == {"Pan": "10.5", "Tilt": "3", "Zoom": "1"}
    assert event.data["source"] == "notify"


def test_unregister_unsubscribes_and_register_subscribes_again(h: Harness) -> None:
    dev = nvr(h)
    assert dev.register_auth(expires=0).status == 200
    last = subscribes(dev)[-1]
    assert last.headers.get("Expires") == "0"
    assert service(h)._subs[DEV]["catalog"].api_state == "off"
    assert dev.register_auth().status == 200
    again = subscribes(dev)[-1]
    assert again.headers.get("Expires") == "100" and "tag=" not in (again.headers.get("To") or "")
    assert service(h)._subs[DEV]["catalog"].state == "active"


def test_a_2016_device_gets_no_ptz_position(build: Callable[..., Harness]) -> None:
    h = build(catalog=False, ptz_position=True)
    dev = h.registered_device(x_gb_ver=None)
    assert subscribes(dev) == []


def every_response() -> None:
    """Builds the subscriptions' response shape once, validated against its component (``test_shapes``
    records it)."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]
    base = sip_config()
    harness = Harness(Config(**{**{f: getattr(base, f) for f in ("sip", "http", "api", "database", "storage", "log",
                                                                "media", "record")},
                                "subscriptions": SubscriptionsConfig(catalog=True, expires=100)}))
    try:
        client = Client(Api(harness.platform))
        nvr(harness)
        for method, body in (("GET", None), ("PUT", {"alarm": True, "position_interval": 10})):
            d = client.start(method, f"/devices/{DEV}/subscriptions", body=body)
            harness.pump()
            reply = client.finish(d)
            assert reply.code == 200, reply.json
            jsonschema.Draft202012Validator(
                {"$ref": "#/components/schemas/DeviceSubscriptions", "components": components}).validate(reply.json)
    finally:
        harness.close()


def test_responses_match_their_schema() -> None:
    every_response()


def unsubscribes(dev: FakeDevice) -> list[Request]:
    return [r for r in subscribes(dev) if r.headers.get("Expires") == "0"]


def test_stop_all_unsubscribes_every_subscription_and_ends_once_answered(build: Callable[..., Harness]) -> None:
    h = build(alarm=True)
    dev = nvr(h)
    assert {service(h)._subs[DEV][k].state for k in ("catalog", "alarm")} == {"active"}
    d = service(h).stop_all(1.0)
    h.pump()
    ended = unsubscribes(dev)
    assert sorted(r.headers.get("Event") or "" for r in ended) == ["Catalog", "presence"]
    assert all("tag=" in (r.headers.get("To") or "") for r in ended)  # in their dialogs (RFC 6665 §4.1.2.3)
    assert not has_fired(d)  # the 200s came; the final NOTIFYs are awaited
    assert notify(dev, h, "catalog", "terminated;reason=timeout").status == 200
    assert not has_fired(d)
    assert notify(dev, h, "alarm", "terminated;reason=timeout").status == 200
    assert has_fired(d)
    assert {sub.api_state for sub in service(h)._subs[DEV].values()} == {"off"}
    assert service(h)._timers == {}
    assert service(h).stop_all(1.0).called  # a second call has nothing left to do
    # Stopped: a registration now subscribes nothing.
    before = len(subscribes(dev))
    service(h).device_registered(DEV, True)
    h.pump()
    assert len(subscribes(dev)) == before


def test_stop_all_gives_up_after_the_grace(h: Harness) -> None:
    dev = nvr(h)
    dev.answer_status = None  # the device is gone: no answer to the unsubscribe
    d = service(h).stop_all(1.0)
    h.pump()
    assert len(unsubscribes(dev)) == 1 and not has_fired(d)
    h.advance(0.9)
    assert not has_fired(d)
    h.advance(0.2)
    assert has_fired(d)
    assert service(h)._timers == {}


def test_stop_all_without_subscriptions_ends_at_once(build: Callable[..., Harness]) -> None:
    h = build(catalog=False)
    h.registered_device()
    assert has_fired(service(h).stop_all(1.0))


def test_the_sip_service_unsubscribes_before_the_transport_stops(h: Harness) -> None:
    from gbplatform.app.service import UNSUBSCRIBE_GRACE, SipService

    dev = nvr(h)
    seen: list[int] = []

    class Transport:
        def stop(self) -> None:
            seen.append(len(unsubscribes(dev)))

    h.platform.transport = Transport()  # type: ignore[assignment]
    sip = SipService(h.platform, reactor=None)
    d = sip.stopService()
    h.pump()  # the device answers 200 but sends no final NOTIFY: the grace decides
    assert len(unsubscribes(dev)) == 1 and seen == [] and not has_fired(d)
    h.advance(UNSUBSCRIBE_GRACE)
    assert seen == [1] and has_fired(d)


def test_deleting_a_device_unsubscribes_and_forgets_its_settings(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("PUT", f"/devices/{DEV}/subscriptions", body={"alarm": True})
    h.pump()
    assert client.finish(d).code == 200
    assert DEV in service(h)._settings and service(h)._subs[DEV]["alarm"].state == "active"
    assert client("DELETE", f"/devices/{DEV}").code == 204
    h.pump()
    assert sorted(r.headers.get("Event") or "" for r in unsubscribes(dev)) == ["Catalog", "presence"]
    assert DEV not in service(h)._settings
    assert h.call(store.get_settings_txn, DEV) == store.SubscriptionSettings()  # the row went with the device
    # The device's final NOTIFY is still answered 200 (RFC 6665 §4.1.2.3), then nothing is kept.
    assert notify(dev, h, "catalog", "terminated;reason=timeout").status == 200
    assert DEV in service(h)._subs  # the alarm's final NOTIFY is awaited
    h.advance(40)  # it never comes: the dialog's wait ends
    assert DEV not in service(h)._subs and DEV not in service(h)._dest and service(h)._timers == {}


def test_deleting_a_device_without_subscriptions_forgets_its_settings(build: Callable[..., Harness]) -> None:
    h = build(catalog=False)
    client = Client(Api(h.platform))
    h.create_device()
    assert client("PUT", f"/devices/{DEV}/subscriptions", body={"alarm": False}).code == 200
    assert DEV in service(h)._settings
    assert client("DELETE", f"/devices/{DEV}").code == 204
    assert DEV not in service(h)._settings and DEV not in service(h)._subs


def test_a_notify_flood_is_refused_while_another_devices_alarm_is_stored() -> None:
    """Issue 11, bounds: NOTIFYs within a subscription share the device's Notify budget
    (``sip.notify_rate``) with its MESSAGEs; past it they are answered 503, and another device's alarm
    still arrives and is stored."""
    import datetime as dt
    from dataclasses import replace

    from gbplatform.alarms import store as alarm_store

    base = sip_config(notify_rate=1.0, notify_burst=3)
    h = Harness(replace(base, subscriptions=SubscriptionsConfig(catalog=False, alarm=True, expires=100)))
    try:
        dev = h.registered_device()
        [_] = subscribes(dev)
        body = manscdp.encode_notify("Alarm", 7, DEV, extra={"AlarmPriority": "1", "AlarmMethod": "2"})
        statuses = [notify(dev, h, "alarm", "active", body).status for _ in range(8)]
        assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {503}
        other = h.registered_device("34020000001320000002", ("UDP", "127.0.0.1", 5071))
        alarm = manscdp.encode_alarm_notify(other.next_sn(), "34020000001320000002", priority=1, method=2,
                                            time=dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC), alarm_type=1)
        assert other.message(alarm).status == 200
        h.advance(1)
        stored = h.call(alarm_store.list_alarms_txn, alarm_store.AlarmFilter(), limit=20)[0]
        assert "34020000001320000002" in {a.device_id for a in stored}
        assert h.platform.devices.stats["notify_rate_limited"] == 5
        assert service(h)._subs[DEV]["alarm"].state == "active"  # refused NOTIFYs do not end the subscription
    finally:
        h.close()
