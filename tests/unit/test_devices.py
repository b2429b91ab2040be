"""Device lifecycle through SIP: REGISTER (GB/T 28181-2016 §9.1), keepalive
(§9.6), onboarding queries (§9.5), ``DeviceQueries`` and ``SipRouter`` dispatch.

Every test drives the platform with bytes from a fake device over the
in-memory harness and checks what went back on the wire, the live state and
the registry.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from gbplatform.app.config import Config
from gbplatform.app.service import HttpService, SipService, build_platform, make_service
from gbplatform.core.clock import FakeClock
from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout
from gbplatform.db import queries as q
from gbplatform.db.database import Database, InlineRunner
from gbplatform.devices import shapes as device_shapes
from gbplatform.devices.registrar import DeviceEvent
from sip import manscdp
from sip.auth import parse_auth_header
from sip.message import Request, Response
from sip.parser import parse_datagram
from tests.unit.platform_harness import (
    DEV,
    DEV2,
    DEVICE_ADDR,
    MANSCDP,
    PLATFORM_ID,
    Harness,
    has_fired,
    new_engine,
    result_of,
)

WALL0 = 1_700_000_000.0  # FakeClock.DEFAULT_WALL_START
GB_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$")




def challenge_params(resp: Response) -> list[dict[str, str]]:
    return [parse_auth_header(v)[1] for v in resp.headers.get_all("WWW-Authenticate")]


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


# --- REGISTER ---------------------------------------------------------------


def test_register_is_challenged_then_accepted_with_contact_expires_and_date(h: Harness) -> None:
    dev = h.device()
    first = dev.register()
    assert first.status == 401
    [params] = challenge_params(first)
    assert params["realm"] == "3402000000" and params["algorithm"] == "MD5"
    assert "stale" not in params

    ok = dev.register(3600, dev.authorization(first))
    assert ok.status == 200
    assert ok.headers.get("Contact") == f"<sip:{DEV}@127.0.0.1:5070>;expires=3600"
    assert ok.headers.get("Expires") == "3600"
    date = ok.headers.get("Date")
    assert date is not None and GB_DATE.match(date), date
    assert date == dt.datetime.fromtimestamp(WALL0).strftime("%Y-%m-%dT%H:%M:%S.000")
    assert h.devices.is_known(DEV)
    assert h.devices.address_of(DEV) == DEVICE_ADDR
    assert h.events == [DeviceEvent(DEV, True, "registered", WALL0)]
    assert h.devices.stats["challenged"] == 1 and h.devices.stats["registered"] == 1


def test_no_date_header_when_disabled(make: Callable[..., Harness]) -> None:
    h = make(date_header=False)
    resp = h.device().register_auth()
    assert resp.status == 200 and resp.headers.get("Date") is None


def test_exosip_two_unauthenticated_registers_then_the_first_nonce_is_accepted(h: Harness) -> None:
    """eXosip sends REGISTER twice before answering (exosip-device-udp.log):
    the first challenge's nonce must still be good (stateless nonces)."""
    dev = h.device()
    first, second = dev.register(), dev.register()
    assert first.status == second.status == 401
    assert dev.register(3600, dev.authorization(first)).status == 200
    assert dev.cseq == 3


def test_wrong_password_is_403_with_a_warning(h: Harness) -> None:
    dev = h.device()
    resp = dev.register_auth(password="wrong")
    assert resp.status == 403
    assert resp.headers.get("Warning") == '399 gbplatform "wrong response"'
    assert not h.devices.is_known(DEV)
    assert h.events == []
    assert h.devices.stats["rejected"] == 1


def test_a_device_password_beats_the_global_one(h: Harness) -> None:
    h.create_device(DEV, password="own-secret")
    dev = h.device()
    assert dev.register_auth(password="12345678").status == 403
    assert dev.register_auth(password="own-secret").status == 200


def test_a_device_password_works_without_a_global_one(make: Callable[..., Harness]) -> None:
    h = make(password="")
    h.create_device(DEV, password="own-secret")
    assert h.device().register_auth(password="own-secret").status == 200


def test_no_global_password_refuses_an_unknown_device(make: Callable[..., Harness]) -> None:
    h = make(password="")
    resp = h.device().register()
    assert (resp.status, resp.reason) == (403, "No Password Configured")


def test_pre_added_policy_refuses_unknown_devices(make: Callable[..., Harness]) -> None:
    h = make(register_policy="pre_added")
    resp = h.device().register()
    assert (resp.status, resp.reason) == (403, "Device Not Added")
    assert h.call(q.get_device_txn, DEV) is None


def test_pre_added_policy_admits_an_added_device_with_the_global_password(make: Callable[..., Harness]) -> None:
    h = make(register_policy="pre_added")
    h.create_device(DEV)
    assert h.device().register_auth().status == 200


def test_disabled_device_is_refused(h: Harness) -> None:
    h.create_device(DEV, enabled=False)
    resp = h.device().register()
    assert (resp.status, resp.reason) == (403, "Device Disabled")


def test_open_policy_needs_no_authentication(make: Callable[..., Harness]) -> None:
    h = make(register_policy="open")
    resp = h.device().register()
    assert resp.status == 200
    assert h.devices.stats["challenged"] == 0


@pytest.mark.parametrize("device_id", ["1234", "3402000000132000000X", "340200000013200000011"])
def test_strict_id_refuses_what_is_not_20_digits(h: Harness, device_id: str) -> None:
    resp = h.device(device_id).register()
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")


def test_non_strict_ids_are_accepted_when_configured(make: Callable[..., Harness]) -> None:
    h = make(strict_id=False, register_policy="open")
    assert h.device("cam-lab-1").register().status == 200
    assert h.record("cam-lab-1").online


def test_non_strict_ids_longer_than_the_registry_holds_are_refused(make: Callable[..., Harness]) -> None:
    """Such an ID once reached the StateWriter and failed the whole batch,
    losing the registration of every other device written with it."""
    h = make(strict_id=False, register_policy="open")
    h.platform.queries.concurrency = 0  # no onboarding, which would flush each registration alone
    assert h.device(DEV).register().status == 200
    resp = h.device("x" * 40, ("UDP", "127.0.0.1", 5080)).register()
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")
    h.advance(1)
    assert h.record(DEV).online


def test_expires_below_the_minimum_is_423_with_min_expires(h: Harness) -> None:
    resp = h.device().register_auth(30)
    assert resp.status == 423
    assert resp.headers.get("Min-Expires") == "60"
    assert not h.devices.is_known(DEV)


def test_expires_above_the_maximum_is_capped(h: Harness) -> None:
    resp = h.device().register_auth(86400)
    assert resp.status == 200
    assert resp.headers.get("Expires") == "3600"
    assert (resp.headers.get("Contact") or "").endswith(";expires=3600")
    live = h.devices.live_info(DEV)
    assert live is not None and live.expires_at == pytest.approx(3600)


def test_missing_expires_means_3600_and_contact_expires_wins(h: Harness) -> None:
    dev = h.device()
    assert dev.register_auth(None).headers.get("Expires") == "3600"
    req = dev.register_request(3600, contact_params=";expires=120")
    first = dev.exchange(req)
    assert first.status == 401
    auth = dev.authorization(first)
    resp = dev.exchange(dev.register_request(3600, auth, contact_params=";expires=120"))
    assert resp.headers.get("Expires") == "120"


def test_expires_zero_unregisters_and_goes_offline(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(5)
    resp = dev.register_auth(0)
    assert resp.status == 200 and resp.headers.get("Expires") == "0"
    assert not h.devices.is_known(DEV)
    assert h.devices.live_info(DEV) is None
    assert h.events[-1] == DeviceEvent(DEV, False, "unregistered", WALL0 + 5)
    record = h.record()
    assert not record.online
    assert record.register_expires == 0
    assert record.offline_at == utc(WALL0 + 5)


def test_contact_star_with_expires_zero_unregisters(h: Harness) -> None:
    dev = h.registered_device()
    first = dev.exchange(dev.request("REGISTER", headers=[("Contact", "*"), ("Expires", "0")]))
    assert first.status == 401
    auth = dev.authorization(first)
    resp = dev.exchange(dev.request("REGISTER", headers=[("Contact", "*"), ("Authorization", auth),
                                                         ("Expires", "0")]))
    assert resp.status == 200
    assert h.events[-1].reason == "unregistered"


def test_unregister_of_an_unknown_device_publishes_nothing(h: Harness) -> None:
    assert h.device().register_auth(0).status == 200
    assert h.events == []


def test_sha256_digest_is_offered_first_and_accepted(make: Callable[..., Harness]) -> None:
    h = make(digest_algorithms=("SHA-256", "MD5"))
    dev = h.device()
    challenge = dev.register()
    assert [p["algorithm"] for p in challenge_params(challenge)] == ["SHA-256", "MD5"]
    assert dev.register(3600, dev.authorization(challenge, algorithm="SHA-256")).status == 200
    # An MD5-only device answers the second challenge.
    other = h.device(DEV2, ("UDP", "127.0.0.1", 5072))
    challenge = other.register()
    assert other.register(3600, other.authorization(challenge, algorithm="MD5")).status == 200


def test_sha256_with_a_device_password(make: Callable[..., Harness]) -> None:
    h = make(digest_algorithms=("SHA-256",))
    h.create_device(DEV, password="own-secret")
    assert h.device().register_auth(password="own-secret", algorithm="SHA-256").status == 200


def test_stale_nonce_is_rechallenged_with_stale_true(h: Harness) -> None:
    dev = h.device()
    old = dev.register()
    h.advance(h.config.sip.nonce_ttl + 1)
    resp = dev.register(3600, dev.authorization(old))
    assert resp.status == 401
    assert [p.get("stale", "").lower() for p in challenge_params(resp)] == ["true"]
    assert dev.register(3600, dev.authorization(resp)).status == 200


def test_registration_is_written_to_the_registry(h: Harness) -> None:
    h.registered_device()
    record = h.record()
    assert record.online
    assert (record.host, record.port, record.transport) == ("127.0.0.1", 5070, "UDP")
    assert record.registered_at == utc(WALL0)
    assert record.register_expires == 3600
    assert record.register_expires_at == utc(WALL0 + 3600)
    assert record.contact == f"sip:{DEV}@127.0.0.1:5070"
    assert record.user_agent == "eXosip/5.3.0"
    assert not record.pre_added


def test_registry_writes_are_batched_until_the_flush_timer(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(1)
    assert dev.keepalive().status == 200
    assert h.call(q.get_device_txn, DEV).last_keepalive_at is None
    h.advance(0.6)
    assert h.call(q.get_device_txn, DEV).last_keepalive_at == utc(WALL0 + 1)


def test_reregister_from_a_new_address_and_transport_updates_it(h: Harness) -> None:
    h.registered_device()
    h.advance(31)  # past the first catalog sync, which a move does not restart
    moved_to = ("TCP", "192.0.2.44", 5999)
    dev = h.device(DEV, moved_to, seed=11)
    assert dev.register_auth().status == 200
    live = h.devices.live_info(DEV)
    assert live is not None and live.addr == moved_to
    assert h.devices.address_of(DEV) == moved_to
    record = h.record()
    assert (record.host, record.port, record.transport) == ("192.0.2.44", 5999, "TCP")
    # Still online all along: no second "online" event.
    assert [e.online for e in h.events] == [True]
    # A move is a fresh start: the new address is queried again.
    assert {m.cmd_type for m in dev.queries()} == {"DeviceInfo", "ConfigDownload", "Catalog"}


def test_a_refresh_from_the_same_address_asks_nothing_again(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(100)  # onboarding ends (its unanswered queries asked once more)
    asked = len(dev.inbound)
    assert dev.register_auth().status == 200
    assert len(dev.inbound) == asked
    assert len(h.events) == 1


def test_stored_password_of_another_realm_is_not_used(h: Harness) -> None:
    h.call(q.create_device_txn, DEV, password="old-realm-pass", realm="4401000000")
    dev = h.device()
    assert dev.register_auth(password="old-realm-pass").status == 403
    assert dev.register_auth().status == 200  # falls back to the global password


def test_authorization_for_another_user_is_refused(h: Harness) -> None:
    dev = h.device()
    impostor = h.device(DEV2, ("UDP", "127.0.0.1", 5072), seed=9)
    auth = impostor.authorization(impostor.register())  # right password, DEV2's credentials
    resp = dev.register(3600, auth)
    assert resp.status == 403
    assert resp.headers.get("Warning") == '399 gbplatform "unknown user"'


def test_a_password_changed_through_the_api_applies_after_invalidate(h: Harness) -> None:
    dev = h.registered_device()
    h.call(q.update_device_txn, DEV, password="rotated", realm="3402000000")
    h.devices.invalidate(DEV)
    assert dev.register_auth().status == 403
    assert dev.register_auth(password="rotated").status == 200


def test_forget_drops_live_state(h: Harness) -> None:
    h.registered_device()
    assert h.devices.online_count() == 1
    h.devices.forget(DEV)
    assert h.devices.live_info(DEV) is None and h.devices.online_count() == 0
    assert h.devices.charset_of(DEV) == "GB2312"


def test_register_while_the_registry_fails_is_500(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(q, "auth_records_txn", broken)
    resp = h.device().register()
    assert resp.status == 500
    assert [f for f in h.failures() if "database is gone" in f]
    h.log_failures.clear()


def test_failed_state_writes_are_logged_not_raised(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = h.registered_device()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(q, "keepalives_txn", broken)
    assert dev.keepalive().status == 200
    h.advance(1)
    assert [f for f in h.failures() if "disk full" in f]
    h.log_failures.clear()


def test_a_batch_applies_keepalives_before_a_later_unregister(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(10)
    dev.keepalive()
    dev.register_auth(0)  # same 0.5 s batch as the keepalive
    record = h.record()
    assert record.last_keepalive_at == utc(WALL0 + 10)
    assert not record.online


def test_a_full_batch_is_written_at_once(h: Harness) -> None:
    dev = h.registered_device()
    h.devices.writer.max_batch = 2
    dev.keepalive()
    assert h.call(q.get_device_txn, DEV).last_keepalive_at is None
    dev.keepalive()
    assert h.call(q.get_device_txn, DEV).last_keepalive_at is not None


# --- keepalive --------------------------------------------------------------


def test_keepalive_is_answered_and_recorded(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(30)
    assert dev.keepalive().status == 200
    h.advance(1)
    live = h.devices.live_info(DEV)
    assert live is not None and live.last_seen == 30 and live.last_keepalive_wall == WALL0 + 30
    assert h.record().last_keepalive_at == utc(WALL0 + 30)


def test_device_goes_offline_after_interval_times_count_without_keepalives(h: Harness) -> None:
    dev = h.registered_device()
    for _ in range(3):
        h.advance(59)
        assert dev.keepalive().status == 200
    h.advance(179)
    assert h.devices.is_known(DEV)
    h.advance(2)
    assert not h.devices.is_known(DEV)
    assert h.events[-1].online is False
    assert h.events[-1].reason == "3 keepalives missed"
    assert h.events[-1].at == pytest.approx(WALL0 + 3 * 59 + 180, abs=0.01)
    assert not h.record().online
    # The registration has not expired: the next keepalive brings it back.
    assert dev.keepalive().status == 200
    assert h.devices.is_known(DEV)
    assert h.events[-1].online and h.events[-1].reason == "keepalive"
    assert h.record().online


def test_registration_expiry_takes_the_device_offline(h: Harness) -> None:
    dev = h.device()
    assert dev.register_auth(60).status == 200
    h.advance(30)
    assert dev.keepalive().status == 200
    h.advance(29)
    assert dev.keepalive().status == 200
    h.advance(2)
    assert not h.devices.is_known(DEV)
    assert h.events[-1].reason == "registration expired"
    assert h.devices.live_info(DEV) is None
    assert not h.record().online
    resp = dev.keepalive()
    assert (resp.status, resp.reason) == (404, "Not Registered")


def test_keepalive_from_an_unknown_device_is_404(h: Harness) -> None:
    resp = h.device().keepalive()
    assert (resp.status, resp.reason) == (404, "Not Registered")
    assert h.events == []


def test_keepalive_after_a_platform_restart_brings_the_device_back(h: Harness) -> None:
    h.registered_device()
    h.advance(100)
    h2 = h.restart()
    assert not h2.record().online  # mark_all_offline at start
    dev = h2.device()
    assert dev.keepalive().status == 200
    assert h2.devices.is_known(DEV)
    assert h2.events == [DeviceEvent(DEV, True, "keepalive", WALL0 + 100)]
    live = h2.devices.live_info(DEV)
    assert live is not None and live.expires_at == pytest.approx(3500)
    assert h2.record().online
    # Relearnt devices are onboarded like new ones.
    assert {m.cmd_type for m in dev.queries()} == {"DeviceInfo", "ConfigDownload", "Catalog"}
    # Nothing from the old platform's timers leaks in: it stays online 3 minutes.
    h2.advance(170)
    assert h2.devices.is_known(DEV)


def test_keepalive_after_restart_with_an_expired_registration_is_404(h: Harness) -> None:
    h.device().register_auth(60)
    h.advance(30)
    h2 = h.restart()
    h2.advance(40)
    assert h2.device().keepalive().status == 404
    assert not h2.devices.is_known(DEV)


def test_keepalive_from_a_new_address_updates_it_after_the_register(h: Harness) -> None:
    h.registered_device()
    nat_rebind = ("UDP", "192.0.2.7", 40001)
    dev = h.device(DEV, nat_rebind, seed=21)
    # Issue 8 item 1: only an authenticated REGISTER moves a device (test_device_address.py).
    assert dev.keepalive().status == 404
    assert dev.register_auth().status == 200
    assert dev.keepalive().status == 200
    assert h.devices.address_of(DEV) == nat_rebind
    record = h.record()
    assert (record.host, record.port) == ("192.0.2.7", 40001)
    # A keepalive declaring another charset switches the device's charset.
    dev.charset = "UTF-8"
    assert dev.keepalive().status == 200
    assert h.devices.charset_of(DEV) == "UTF-8"


def test_basic_param_overrides_the_keepalive_interval_and_count(h: Harness) -> None:
    dev = h.registered_device()
    query = dev.last_query("ConfigDownload")
    assert query.fields["ConfigType"] == "BasicParam"
    answer = manscdp.encode_config_download_response(
        query.sn, DEV, manscdp.BasicParam(name="cam", expiration=3600, heart_beat_interval=10,
                                          heart_beat_count=2),
    )
    assert dev.message(answer).status == 200
    live = h.devices.live_info(DEV)
    assert live is not None and (live.interval, live.count) == (10, 2)
    record = h.record()
    assert (record.keepalive_interval, record.keepalive_count) == (10, 2)
    h.advance(19)
    assert h.devices.is_known(DEV)
    h.advance(2)
    assert not h.devices.is_known(DEV)
    assert h.events[-1].reason == "2 keepalives missed"


def test_out_of_range_basic_param_is_ignored(h: Harness) -> None:
    dev = h.registered_device()
    query = dev.last_query("ConfigDownload")
    dev.message(manscdp.encode_config_download_response(
        query.sn, DEV, manscdp.BasicParam(heart_beat_interval=99999, heart_beat_count=0)))
    live = h.devices.live_info(DEV)
    assert live is not None and (live.interval, live.count) == (60, 3)


# --- onboarding -------------------------------------------------------------


def test_onboarding_queries_device_info_basic_param_and_catalog(h: Harness) -> None:
    dev = h.registered_device()
    queries = dev.queries()
    assert [m.cmd_type for m in queries] == ["DeviceInfo", "ConfigDownload", "Catalog"]
    assert all(isinstance(m, manscdp.Query) and m.device_id == DEV for m in queries)
    message = dev.inbound[0].request
    assert message.method == "MESSAGE"
    assert message.headers.get("Content-Type") == MANSCDP
    assert (message.headers.get("From") or "").startswith(f"<sip:{PLATFORM_ID}@3402000000>;tag=")
    assert message.headers.get("To") == f"<sip:{DEV}@3402000000>"
    assert message.uri == f"sip:{DEV}@127.0.0.1:5070"

    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(
        info.sn, DEV, device_name="Gate camera", manufacturer="Hikvision", model="DS-2CD2T47",
        firmware="V5.7.3", channel=1))
    cfg = dev.last_query("ConfigDownload")
    dev.message(manscdp.encode_config_download_response(
        cfg.sn, DEV, manscdp.BasicParam(heart_beat_interval=30, heart_beat_count=3)))
    cat = dev.last_query("Catalog")
    item = manscdp.CatalogItem(device_id="34020000001310000001", name="Gate", status="ON",
                               parent_id=DEV)
    dev.message(manscdp.encode_catalog_response(cat.sn, DEV, 1, [item]))
    h.advance(1)

    record = h.record()
    assert (record.name, record.manufacturer, record.model, record.firmware) == (
        "Gate camera", "Hikvision", "DS-2CD2T47", "V5.7.3")
    assert record.keepalive_interval == 30
    assert record.catalog_status == "done" and record.channel_count == 1
    assert [c.channel_id for c in h.channels()] == ["34020000001310000001"]
    assert h.platform.queries.backlog == 0


def test_onboarding_survives_a_device_that_ignores_queries(h: Harness) -> None:
    dev = h.registered_device()
    h.advance(60)
    record = h.record()
    assert record.catalog_status == "timeout"
    assert record.manufacturer is None
    assert dev.keepalive().status == 200


def test_onboarding_queue_limits(h: Harness) -> None:
    queries = h.platform.queries
    queries.max_queue = 0
    dev = h.device()
    dev.register_auth()
    assert dev.queries() == []  # queue full: not asked
    queries.max_queue = 10
    queries.concurrency = 0
    queries.device_registered(DEV, True)
    queries.device_registered(DEV, True)
    assert queries.backlog == 1  # queued once


def test_onboarding_skips_a_device_gone_before_its_turn(h: Harness) -> None:
    dev = h.registered_device()
    dev.register_auth(0)
    asked = len(dev.inbound)
    result_of(h.run(h.platform.queries.onboard(DEV)))
    assert len(dev.inbound) == asked


# --- DeviceQueries ----------------------------------------------------------


def test_device_info_and_status_queries(h: Harness) -> None:
    dev = h.registered_device()
    d = h.run(h.platform.queries.device_info(DEV))
    query = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(query.sn, DEV, manufacturer="Dahua", model="IPC",
                                                    firmware="2.8", channel=4))
    info = result_of(d)
    assert info.manufacturer == "Dahua" and info.channel == 4 and info.result == "OK"

    d = h.run(h.platform.queries.device_status(DEV))
    query = dev.last_query("DeviceStatus")
    dev.message(manscdp.encode_device_status_response(
        query.sn, DEV, encode="ON", record="OFF", device_time="2023-11-15T06:13:20",
        alarm_status=[manscdp.AlarmStatus(device_id="34020000001340000001", duty_status="OFFDUTY")]))
    status = result_of(d)
    assert status.online == "ONLINE" and status.encode == "ON"
    assert status.device_time == "2023-11-15T06:13:20"
    assert status.alarm_status == [device_shapes.AlarmStatus(device_id="34020000001340000001", duty_status="OFFDUTY")]


def test_a_query_not_answered_times_out_after_query_timeout(make: Callable[..., Harness]) -> None:
    h = make(query_timeout=4.0)
    h.registered_device()
    d = h.run(h.platform.queries.device_status(DEV))
    h.advance(3.9)
    assert not has_fired(d)
    h.advance(0.2)
    with pytest.raises(DeviceTimeout, match="did not answer DeviceStatus in 4 s"):
        result_of(d)


def test_a_device_silent_to_the_message_times_out_after_query_timeout(h: Harness) -> None:
    dev = h.registered_device()
    dev.answer_status = None
    d = h.run(h.platform.queries.device_status(DEV))
    h.advance(h.config.sip.query_timeout + 0.1)
    with pytest.raises(DeviceTimeout):
        result_of(d)
    h.advance(40)  # the MESSAGE's own timer F fires later and is only logged


def test_a_late_answer_is_ignored(make: Callable[..., Harness]) -> None:
    h = make(query_timeout=2.0)
    dev = h.registered_device()
    d = h.run(h.platform.queries.device_status(DEV))
    h.advance(3)
    with pytest.raises(DeviceTimeout):
        result_of(d)
    query = dev.last_query("DeviceStatus")
    assert dev.message(manscdp.encode_device_status_response(query.sn, DEV)).status == 200


def test_query_to_an_offline_device_is_device_offline(h: Harness) -> None:
    with pytest.raises(DeviceOffline):
        result_of(h.run(h.platform.queries.device_info(DEV)))


def test_query_answered_403_is_device_rejected(h: Harness) -> None:
    dev = h.registered_device()
    dev.answer_status = 403
    with pytest.raises(DeviceRejected, match="403"):
        result_of(h.run(h.platform.queries.device_status(DEV)))
    assert not [key for key in h.router._correlations if key[1] == "devicestatus"]


def test_basic_param_query_without_basic_param(h: Harness) -> None:
    dev = h.registered_device()
    d = h.run(h.platform.queries.basic_param(DEV))
    query = dev.last_query("ConfigDownload")
    dev.message(manscdp.encode_config_download_response(query.sn, DEV, None))
    assert result_of(d) is None


# --- SipRouter dispatch -----------------------------------------------------


def test_options_is_200_with_allow(h: Harness) -> None:
    dev = h.device()
    resp = dev.exchange(dev.request("OPTIONS"))
    assert resp.status == 200
    allow = resp.headers.get("Allow") or ""
    assert {"REGISTER", "MESSAGE", "OPTIONS"} <= {m.strip() for m in allow.split(",")}


def test_unknown_method_is_405_with_allow(h: Harness) -> None:
    dev = h.device()
    resp = dev.exchange(dev.request("PUBLISH"))
    assert resp.status == 405 and resp.headers.get("Allow")


@pytest.mark.parametrize(("method", "status"), [("INVITE", 603), ("SUBSCRIBE", 489), ("BYE", 481),
                                                ("INFO", 481), ("NOTIFY", 481)])
def test_requests_nobody_serves_are_refused(h: Harness, method: str, status: int) -> None:
    dev = h.device()
    headers = [("Contact", f"<sip:{DEV}@127.0.0.1:5070>")]
    if method in ("SUBSCRIBE", "NOTIFY"):
        headers.append(("Event", "Catalog"))
    resp = dev.exchange(dev.request(method, headers=headers))
    assert resp.status == status


def test_message_with_another_content_type_is_415(h: Harness) -> None:
    h.registered_device()
    resp = h.device().message(b"hello", content_type="text/plain")
    assert resp.status == 415
    assert resp.headers.get("Accept") == MANSCDP


def test_garbage_xml_is_400_with_a_warning(h: Harness) -> None:
    dev = h.registered_device()
    resp = dev.message(b"<Notify><CmdType>Keep")
    assert resp.status == 400
    assert (resp.headers.get("Warning") or "").startswith("399 gbplatform ")
    resp = dev.message(b"\x00\x01 not xml at all")
    assert resp.status == 400


def test_message_from_an_unregistered_device_is_403(h: Harness) -> None:
    dev = h.device()
    resp = dev.message(manscdp.encode_notify("Alarm", 1, DEV, extra={"AlarmPriority": "1"}))
    assert (resp.status, resp.reason) == (403, "Not Registered")


def test_notify_and_unsolicited_responses_from_a_device_are_acknowledged(h: Harness) -> None:
    dev = h.registered_device()
    assert dev.message(manscdp.encode_notify("Alarm", 5, DEV, extra={"AlarmPriority": "1"})).status == 200
    assert dev.message(manscdp.encode_response("DeviceControl", 77, DEV)).status == 200


def test_a_message_refreshes_the_charset(h: Harness) -> None:
    dev = h.registered_device()
    dev.charset = "UTF-8"
    body = manscdp.encode_notify("Alarm", 5, DEV, charset="UTF-8", extra={"AlarmDescription": "入侵"})
    assert dev.message(body).status == 200
    assert h.devices.address_of(DEV) == DEVICE_ADDR
    assert h.devices.charset_of(DEV) == "UTF-8"
    assert h.record().charset == "UTF-8"


def test_malformed_request_is_400_at_the_endpoint(h: Harness) -> None:
    raw = (
        b"MESSAGE sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK1\r\n"
        b"From: <sip:34020000001320000001@127.0.0.1:5070>;tag=1\r\n"
        b"To: <sip:34020000002000000001@127.0.0.1:5060>\r\n"
        b"CSeq: 1 MESSAGE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )  # no Call-ID
    h.deliver(raw, DEVICE_ADDR)
    [(data, dest)] = h.sent
    assert dest == DEVICE_ADDR
    resp = parse_datagram(data)
    assert isinstance(resp, Response) and resp.status == 400
    assert "Call-ID" in (resp.headers.get("Warning") or "")
    h.deliver(b"\x16\x03\x01 not sip", DEVICE_ADDR)
    h.deliver(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n"
              b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n", DEVICE_ADDR)
    assert len(h.sent) == 1


def test_ack_outside_a_transaction_is_ignored(h: Harness) -> None:
    dev = h.device()
    ack = dev.request("ACK")
    dev.endpoint.send_stateless(ack, dev.platform_addr)
    h.pump()
    assert h.sent == []


def test_one_failing_event_does_not_stop_the_others(h: Harness) -> None:
    dev = h.device()
    first = dev.endpoint.send_request(dev.request("OPTIONS"), dev.platform_addr, 0.0)
    second = dev.endpoint.send_request(dev.request("OPTIONS"), dev.platform_addr, 0.0)
    events = [event for data, _ in dev.endpoint.take_output()
              for event in h.platform.endpoint.receive_datagram(data, DEVICE_ADDR, 0.0)]
    assert len(events) == 2
    original = h.router.request_received
    calls: list[Any] = []

    def flaky(event: Any) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("boom")
        original(event)

    h.router.request_received = flaky
    h.router.handle_events(events)
    h.pump()
    failed = dev.finals[id(first)]  # answered 500 at once, not leaked (issue 8 item 11)
    assert failed is not None and failed.status == 500
    answer = dev.finals[id(second)]
    assert answer is not None and answer.status == 200
    assert len(h.log_failures) == 1  # logged, not raised into the reactor
    h.log_failures.clear()


def test_request_factory_shapes(h: Harness) -> None:
    req = h.router.new_request("MESSAGE", DEV, ("UDP", "192.0.2.1", 5062), body=b"x", content_type=MANSCDP)
    assert isinstance(req, Request)
    assert req.uri == f"sip:{DEV}@192.0.2.1:5062"
    assert req.headers.get("Contact") == f"<sip:{PLATFORM_ID}@127.0.0.1:5060>"
    assert req.cseq[1] == "MESSAGE"


# --- service wiring -----------------------------------------------------------


class _UdpPort:
    def __init__(self, port: int, protocol: Any, interface: str) -> None:
        self.port = port or 40000
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.listening = True

    def getHost(self) -> IPv4Address:  # noqa: N802 - Twisted API
        return IPv4Address("UDP", self.interface, self.port)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:  # noqa: N802 - Twisted API
        self.listening = False


class _Reactor(MemoryReactorClock):
    """``MemoryReactorClock`` has no ``listenUDP``; this one hands out fake ports."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.udp: list[_UdpPort] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> _UdpPort:  # noqa: N802,N803
        self.udp.append(_UdpPort(port, protocol, interface))
        return self.udp[-1]


def test_sip_service_marks_devices_offline_listens_traces_and_flushes(h: Harness) -> None:
    h.registered_device()
    h.platform.devices.writer.add("keepalive", DEV, utc(WALL0 + 1), "127.0.0.1", 5070, "UDP")
    reactor = _Reactor()
    service = SipService(h.platform, reactor)
    service.startService()
    assert not h.call(q.get_device_txn, DEV).online  # ARCHITECTURE: re-learnt from the next keepalive
    [udp] = reactor.udp
    assert (udp.interface, udp.port) == ("0.0.0.0", 5060)
    [(tcp_port, _factory, _backlog, tcp_host)] = reactor.tcpServers
    assert (tcp_port, tcp_host) == (5060, "0.0.0.0")
    assert h.platform.endpoint.local["UDP"] == ("127.0.0.1", 5060)  # advertised, not 0.0.0.0

    dev = h.device(DEV2, ("UDP", "192.0.2.30", 5090))
    dev.endpoint.send_request(dev.register_request(), dev.platform_addr, 0.0)
    [(data, _)] = dev.endpoint.take_output()
    udp.protocol.datagramReceived(data, ("192.0.2.30", 5090))
    [(answer, addr)] = udp.written
    assert addr == ("192.0.2.30", 5090)
    assert answer.startswith(b"SIP/2.0 401 ")
    assert [e.direction for e in h.platform.trace.entries(DEV2)] == ["recv", "send"]

    d = service.stopService()
    assert not udp.listening
    assert d is not None and has_fired(d)
    assert h.call(q.get_device_txn, DEV).last_keepalive_at == utc(WALL0 + 1)


def test_http_service_listens_on_the_configured_port(h: Harness) -> None:
    reactor = _Reactor()
    service = HttpService(h.platform, reactor)
    service.startService()
    [(port, _site, _backlog, host)] = reactor.tcpServers
    assert (port, host) == (8080, "0.0.0.0")
    service.stopService()


def test_build_platform_keeps_token_and_nonce_secret_in_the_data_dir(tmp_path: Path) -> None:
    config = Config()
    config = replace(config, storage=replace(config.storage, data_dir=str(tmp_path / "data")))
    db = Database(new_engine(), pool=InlineRunner())
    first = build_platform(config, clock=FakeClock(), db=db)
    token_file = tmp_path / "data" / "api_token"
    assert first.api_token == token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (tmp_path / "data" / "nonce_secret").read_text().strip()
    again = build_platform(config, clock=FakeClock(), db=db)
    assert again.api_token == first.api_token
    # The same nonce secret: a challenge from before a restart is still good.
    nonce = first.devices.digest.make_nonce(WALL0, random.Random(1))
    assert again.devices.digest.nonce_age(nonce, WALL0) == 0
    fixed = replace(config, api=replace(config.api, token="from-config"))
    assert build_platform(fixed, clock=FakeClock(), db=db).api_token == "from-config"


def test_make_service_wires_database_sip_and_http(tmp_path: Path) -> None:
    config = Config()
    config = replace(config, storage=replace(config.storage, data_dir=str(tmp_path)),
                     media=replace(config.media, gop_cache_bytes=0))
    top = make_service(config, _Reactor())
    # Started in this order, stopped in reverse (OrderedMultiService): the database last, recording first.
    assert [s.name for s in top] == ["database", "workers", "sip", "http", "alarms", "rtsp", "webhooks",
                                     "device-snapshots", "heap-trim", "recording"]
    platform = top.platform  # type: ignore[attr-defined]
    assert platform.api_token == (tmp_path / "api_token").read_text().strip()
    # Live streams get the configured RTP range (30000-30499: 250 even/odd pairs).
    assert platform.live is not None and platform.live.ports.capacity == 250
    receiver = platform.live.receiver_factory(None, platform.live.ports.lease("x"), mode="udp", on_timeout=None)
    assert receiver.no_rtp_timeout == config.media.no_rtp_timeout and receiver.rcvbuf == config.media.rcvbuf
    assert platform.live.gop_cache_bytes == 0  # media.gop_cache_bytes reaches every stream's GopCache
    assert platform.live.gop_cache_idle == config.media.gop_cache_idle == 10.0  # ... and media.gop_cache_idle
    platform.db.dispose()


def test_preloaded_registrar_needs_no_database_read_per_device(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the start-up preload, a storm of unknown devices costs no lookups."""
    h.create_device(DEV2, password="own-secret")
    assert result_of(h.run(h.platform.devices.preload())) == 1

    def no_reads(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the preloaded cache must answer")

    monkeypatch.setattr(q, "auth_records_txn", no_reads)
    assert h.device().register_auth().status == 200  # unknown: global password, no read
    dev2 = h.device(DEV2, password="own-secret")
    assert dev2.register_auth().status == 200  # preloaded record
    monkeypatch.undo()
    # A change through the API invalidates the cache: the next REGISTER reads the record.
    h.platform.devices.invalidate(DEV2)
    reads: list[str] = []
    real = q.auth_records_txn
    monkeypatch.setattr(q, "auth_records_txn", lambda s, device_id=None: reads.append(device_id) or real(s, device_id))
    assert dev2.register_auth().status == 200
    assert reads == [DEV2]


def test_the_platform_stops_its_services_one_at_a_time_last_first() -> None:
    """The database must outlive recording's last index writes (issue 8, item 23's note)."""
    from twisted.application.service import Service
    from twisted.internet.defer import Deferred

    from gbplatform.app.service import OrderedMultiService

    stopped: list[str] = []
    pending: dict[str, Deferred[None]] = {}

    class Child(Service):
        def __init__(self, name: str) -> None:
            self.name = name

        def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
            stopped.append(self.name)
            pending[self.name] = Deferred()
            return pending[self.name]

    top = OrderedMultiService()
    for name in ("database", "sip", "recording"):
        Child(name).setServiceParent(top)  # type: ignore[no-untyped-call]
    top.startService()  # type: ignore[no-untyped-call]
    done = top.stopService()
    assert stopped == ["recording"]  # the database waits for recording to finish
    pending["recording"].callback(None)
    assert stopped == ["recording", "sip"]
    pending["sip"].errback(RuntimeError("boom"))  # a failing stop does not keep the rest running
    assert stopped == ["recording", "sip", "database"]
    fired: list[object] = []
    done.addCallback(fired.append)
    assert not fired
    pending["database"].callback(None)
    assert fired == [None]
