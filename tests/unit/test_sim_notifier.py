"""The simulator's notifier (gbplatform/simulator/notifier.py): SUBSCRIBE, refresh, expiry, catalog changes
as NOTIFY in the subscription or MESSAGE without one (RFC 6665, GB/T 28181-2016 §9.11, §A.2.5.4)."""

from __future__ import annotations

from typing import Any

from sip import manscdp
from sip.dialog import Dialog
from sip.message import Request, Response
from tests.unit.test_simulator import REALM, SERVER_ID, Platform, make, port_of


class Subscriber(Platform):
    """The fake platform, answering NOTIFYs 200."""

    def request(self, req: Request, tx: Any) -> None:
        if req.method == "NOTIFY":
            self.respond(tx, req, 200)
        else:
            super().request(req, tx)


def subscribe(platform: Platform, device_id: str, port: int, cmd: str, expires: int,
              event: str = "presence", body: bytes | None = None) -> tuple[Request, Any]:
    req = Request(method="SUBSCRIBE", uri=f"sip:{device_id}@127.0.0.1:{port}")
    h = req.headers
    h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={platform.endpoint.new_tag()}")
    h.add("To", f"<sip:{device_id}@{REALM}>")
    h.add("Call-ID", f"{platform.rng.getrandbits(64):x}@127.0.0.1")
    h.add("CSeq", "1 SUBSCRIBE")
    h.add("Contact", f"<sip:{SERVER_ID}@127.0.0.1:5060>")
    h.add("Event", event)
    h.add("Expires", str(expires))
    h.add("Content-Type", "Application/MANSCDP+xml")
    req.body = manscdp.encode_query(cmd, 1, device_id) if body is None else body
    return req, platform.endpoint.send_request(req, ("UDP", "127.0.0.1", port), platform.now())


def notifies(platform: Platform) -> list[Request]:
    return platform.of("NOTIFY")


def setup(**options: Any) -> tuple[Any, Subscriber, Any, str, int]:
    sim, _, net = make(**{"channels": 2, **options})
    platform = Subscriber(sim.reactor)
    net.platform = platform
    sim.start()
    net.pump()
    device = sim.devices[0]
    assert device.registered
    return sim, platform, net, device.device_id, port_of(sim)


def test_subscribe_refresh_catalog_notify_and_expiry() -> None:
    sim, platform, net, device_id, port = setup()
    req, tx = subscribe(platform, device_id, port, "Catalog", 10, event="Catalog")
    net.pump()
    resp: Response = platform.answers[tx]
    assert resp.status == 200 and resp.headers.get("Expires") == "10"
    [first] = notifies(platform)
    assert first.headers.get("Subscription-State") == "active;expires=10"
    assert first.headers.get("Event") == "Catalog" and first.call_id == req.call_id

    assert sim.catalog_change() == 1
    net.pump()
    change = notifies(platform)[-1]
    msg = manscdp.decode(change.body)
    assert isinstance(msg, manscdp.CatalogNotify) and msg.items[0].event == "OFF"
    assert change.call_id == req.call_id

    dialog = Dialog.from_uac(req, resp)
    refresh = dialog.new_request("SUBSCRIBE", headers=[("Event", "Catalog"), ("Expires", "10")])
    tx2 = platform.endpoint.send_request(refresh, ("UDP", "127.0.0.1", port), platform.now())
    net.pump()
    assert platform.answers[tx2].status == 200
    assert notifies(platform)[-1].headers.get("Subscription-State") == "active;expires=10"

    net.run_for(11)  # no refresh: the subscription ends with a terminated NOTIFY
    assert notifies(platform)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    before = len(platform.of("MESSAGE"))
    assert sim.catalog_change() == 1  # back ON, now as a MESSAGE: no subscription
    net.pump()
    messages = platform.of("MESSAGE")[before:]
    assert any(isinstance(m, manscdp.CatalogNotify) and m.items[0].event == "ON"
               for m in (manscdp.decode(r.body) for r in messages))


def test_unsubscribe_and_unknown_package() -> None:
    _sim, platform, net, device_id, port = setup()
    req, tx = subscribe(platform, device_id, port, "Alarm", 60)
    net.pump()
    dialog = Dialog.from_uac(req, platform.answers[tx])
    end = dialog.new_request("SUBSCRIBE", headers=[("Event", "presence"), ("Expires", "0")])
    tx2 = platform.endpoint.send_request(end, ("UDP", "127.0.0.1", port), platform.now())
    net.pump()
    assert platform.answers[tx2].status == 200
    assert notifies(platform)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    _req, tx3 = subscribe(platform, device_id, port, "DeviceInfo", 60)
    net.pump()
    assert platform.answers[tx3].status == 489


def test_send_report_goes_in_the_matching_subscription() -> None:
    sim, platform, net, device_id, port = setup()
    device = sim.devices[0]
    body = manscdp.encode_notify("MobilePosition", 5, device_id, extra={"Longitude": "120.1"})
    device.send_report("MobilePosition", body)
    net.pump()
    assert platform.of("MESSAGE")[-1].body == body
    req, _tx = subscribe(platform, device_id, port, "MobilePosition", 60)
    net.pump()
    device.send_report("MobilePosition", body)
    net.pump()
    last = notifies(platform)[-1]
    assert last.body == body and last.call_id == req.call_id



def positions(platform: Platform, since: float = -1.0) -> list[tuple[float, str]]:
    """When each MobilePosition report arrived since ``since``, and how (NOTIFY or MESSAGE)."""
    return [(t, req.method) for t, req, _ in platform.requests
            if t >= since and req.method in ("NOTIFY", "MESSAGE") and b"MobilePosition" in req.body]


def refresh(platform: Platform, dialog: Dialog, port: int, body: bytes, expires: int = 60) -> Any:
    req = dialog.new_request("SUBSCRIBE", body=body, content_type="Application/MANSCDP+xml",
                             headers=[("Event", "presence"), ("Expires", str(expires))])
    return platform.endpoint.send_request(req, ("UDP", "127.0.0.1", port), platform.now())


def test_mobile_position_subscription_reports_every_interval_then_stops() -> None:
    sim, platform, net, device_id, port = setup()
    start = sim.reactor.seconds()
    req, tx = subscribe(platform, device_id, port, "MobilePosition", 60,
                        body=manscdp.encode_mobile_position_query(1, device_id, interval=2))
    net.pump()
    resp = platform.answers[tx]
    assert resp.status == 200
    # The active NOTIFY, then the position at once (§A.2.4.8), in the subscription's dialog.
    [active, first] = notifies(platform)
    assert active.headers.get("Subscription-State") == "active;expires=60" and not active.body
    msg = manscdp.decode(first.body)
    assert isinstance(msg, manscdp.MobilePositionNotify) and msg.device_id == device_id
    assert first.call_id == req.call_id and first.headers.get("Event") == "presence"

    net.run_for(10)  # every 2 s: five more
    got = positions(platform, start)
    assert [m for _, m in got] == ["NOTIFY"] * 6
    assert all(n.call_id == req.call_id for n in notifies(platform))

    # A refresh with another Interval (the platform's setting changed): every 5 s from now on.
    dialog = Dialog.from_uac(req, resp)
    tx2 = refresh(platform, dialog, port, manscdp.encode_mobile_position_query(2, device_id, interval=5))
    net.pump()
    assert platform.answers[tx2].status == 200
    changed = sim.reactor.seconds()
    net.run_for(20)
    later = [t for t, _ in positions(platform, changed + 0.01)]
    assert len(later) == 4 and all(b - a == 5 for a, b in zip(later, later[1:], strict=False))

    # A refresh without a body keeps the Interval.
    tx3 = refresh(platform, dialog, port, b"")
    net.pump()
    assert platform.answers[tx3].status == 200
    assert sim.devices[0].reports.subscribed_interval == 5

    # Unsubscribed: no more positions (the device has no schedule of its own here).
    tx4 = refresh(platform, dialog, port, b"", expires=0)
    net.pump()
    assert platform.answers[tx4].status == 200
    assert notifies(platform)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    ended = sim.reactor.seconds()
    net.run_for(20)
    assert positions(platform, ended + 0.01) == []
    assert sim.devices[0].reports.subscribed_interval is None


def test_without_interval_the_default_and_after_expiry_the_own_schedule_as_message() -> None:
    sim, platform, net, device_id, port = setup(position_interval=7)
    subscribed = sim.reactor.seconds()
    _req, tx = subscribe(platform, device_id, port, "MobilePosition", 12,
                         body=manscdp.encode_mobile_position_query(1, device_id))
    net.pump()
    assert platform.answers[tx].status == 200
    net.run_for(11)  # no Interval: every 5 s (§A.2.4.8), not the device's own 7 s
    during = positions(platform, subscribed)
    assert [m for _, m in during] == ["NOTIFY"] * 3
    assert [round(t - during[0][0]) for t, _ in during] == [0, 5, 10]
    net.run_for(2)  # the subscription expires at 12 s without a refresh
    assert notifies(platform)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"
    ended = sim.reactor.seconds()
    net.run_for(15)  # the device's own schedule again: MESSAGEs every 7 s
    after = positions(platform, ended)
    assert [m for _, m in after] == ["MESSAGE"] * 2


def test_a_device_that_unregisters_stops_the_subscribed_positions() -> None:
    sim, platform, net, device_id, port = setup()
    _req, tx = subscribe(platform, device_id, port, "MobilePosition", 60,
                         body=manscdp.encode_mobile_position_query(1, device_id, interval=1))
    net.pump()
    assert platform.answers[tx].status == 200
    reports = sim.devices[0].reports
    assert reports.subscribed_interval == 1
    sim.devices[0].notifier.close()
    assert reports.subscribed_interval is None
    gone = sim.reactor.seconds()
    net.run_for(5)
    assert positions(platform, gone + 0.01) == []
