"""The device simulator against an in-memory platform: no sockets, no sleeps.

The simulator runs on a ``MemoryReactorClock`` whose ``listenUDP`` hands out
fake ports that record datagrams; ``Platform`` is a small registrar built on
our own ``Endpoint`` and ``DigestServer``. ``Net.pump`` carries datagrams both
ways until nothing moves; time is stepped with ``Net.run_for``.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock

from gbplatform.app import cli
from gbplatform.app.config import ConfigError
from gbplatform.simulator.device import (
    STUN_HEADER,
    VENDOR_QUIRKS,
    Quirks,
    SimConfig,
    Simulator,
    channel_id,
    run,
    stun_binding_request,
)
from sip import manscdp
from sip.auth import DigestServer, ha1, parse_auth_header
from sip.endpoint import Addr, Endpoint, EndpointEvent, RequestReceived, ResponseReceived
from sip.headers import NameAddr
from sip.message import Request, Response, make_response
from sip.transaction import ClientTransaction

PLATFORM = ("127.0.0.1", 5060)
SERVER_ID = "34020000002000000001"
DEV1 = "34020000001320000001"
REALM = "3402000000"


# -- fakes ---------------------------------------------------------------------------------


class FakeSocket:
    def setsockopt(self, *args: object) -> None:
        pass

    def getsockopt(self, *args: object) -> int:
        return 1 << 30


class FakeUdpPort:
    def __init__(self, port: int, protocol: Any, interface: str) -> None:
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address:  # noqa: N802 - Twisted API
        return IPv4Address("UDP", self.interface, self.port)

    def getHandle(self) -> FakeSocket:  # noqa: N802 - Twisted API
        return FakeSocket()

    def stopListening(self) -> None:  # noqa: N802 - Twisted API
        self.closed = True


class FakeReactor(MemoryReactorClock):
    """MemoryReactorClock plus listenUDP (which it lacks), and a run() that steps time."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.udp_ports: list[FakeUdpPort] = []
        self._ephemeral = 40000
        self.net: Net | None = None
        self._stop_requested = False

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakeUdpPort:  # noqa: N802, N803
        if port == 0:
            self._ephemeral += 1
            port = self._ephemeral
        p = FakeUdpPort(port, protocol, interface)
        protocol.makeConnection(p)
        self.udp_ports.append(p)
        return p

    def run(self) -> None:
        assert self.net is not None
        self.running = self.hasRun = True
        for f, args, kwargs in self.whenRunningHooks:
            f(*args, **kwargs)
        self.net.pump()
        while not self._stop_requested:
            self.net.step()
        waits = [f(*a, **k) for f, a, k in self.triggers.get("before", {}).get("shutdown", [])]
        for d in waits:
            while isinstance(d, Deferred) and not d.called:
                self.net.step()
        self.running = False

    def stop(self) -> None:
        if self._stop_requested:
            raise ReactorNotRunning()
        self._stop_requested = True


class Platform:
    """A registrar and query sender on our Endpoint, with a real DigestServer."""

    def __init__(self, reactor: FakeReactor, *, password: str = "12345678", nonce_ttl: float = 300.0) -> None:
        self.reactor = reactor
        self.rng = random.Random(99)
        self.endpoint = Endpoint(rng=self.rng, user_agent="fake-platform")
        self.endpoint.local["UDP"] = PLATFORM
        self.digest = DigestServer(REALM, b"platform-secret", nonce_ttl=nonce_ttl)
        self.password = password
        self.requests: list[tuple[float, Request, bytes]] = []
        self.stun: list[tuple[float, bytes, int]] = []
        self.register_status: int | None = None
        self.keepalive_status: int | None = 200
        self.drop_register = False
        self.answers: dict[ClientTransaction, Response] = {}
        self.responses: list[Response] = []
        self.sn = 100
        self.cseq = 0

    def now(self) -> float:
        return float(self.reactor.seconds())

    def receive(self, data: bytes, source: Addr) -> None:
        if data[:8] == STUN_HEADER:
            self.stun.append((self.now(), data, source[2]))
            return
        self.handle(self.endpoint.receive_datagram(data, source, self.now()), data)

    def handle(self, events: list[EndpointEvent], raw: bytes = b"") -> None:
        for event in events:
            if isinstance(event, ResponseReceived) and event.response.status >= 200:
                self.answers[event.transaction] = event.response
            elif isinstance(event, RequestReceived) and event.transaction is not None:
                self.requests.append((self.now(), event.request, raw))
                self.request(event.request, event.transaction)

    def request(self, req: Request, tx: Any) -> None:
        if req.method == "REGISTER":
            self.register(req, tx)
        elif req.method == "MESSAGE":
            msg = manscdp.decode(req.body)
            if isinstance(msg, manscdp.Keepalive):
                if self.keepalive_status is not None:
                    self.respond(tx, req, self.keepalive_status)
            else:
                self.respond(tx, req, 200)

    def register(self, req: Request, tx: Any) -> None:
        if self.drop_register:
            return
        if self.register_status is not None:
            self.respond(tx, req, self.register_status)
            return
        auth = req.headers.get("Authorization")
        if auth is None:
            self.respond(tx, req, 401, [("WWW-Authenticate", self.digest.challenge(self.now(), self.rng))])
            return
        result = self.digest.verify(auth, "REGISTER", self.now(), self.lookup)
        if result.ok:
            self.respond(tx, req, 200, [("Expires", req.headers.get("Expires") or "3600")])
        elif result.stale:
            self.respond(tx, req, 401, [("WWW-Authenticate", self.digest.challenge(self.now(), self.rng, stale=True))])
        else:
            self.respond(tx, req, 403)

    def lookup(self, username: str, algorithm: str) -> str:
        return ha1(username, REALM, self.password, algorithm)

    def respond(self, tx: Any, req: Request, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        resp = make_response(req, status, to_tag=self.endpoint.new_tag(), headers=headers or [])
        self.responses.append(resp)
        self.endpoint.respond(tx, resp, self.now())

    def send(self, device_id: str, port: int, method: str = "MESSAGE", body: bytes = b"") -> ClientTransaction:
        req = Request(method=method, uri=f"sip:{device_id}@127.0.0.1:{port}")
        h = req.headers
        h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={self.endpoint.new_tag()}")
        h.add("To", f"<sip:{device_id}@{REALM}>")
        h.add("Call-ID", f"{self.rng.getrandbits(64):x}@127.0.0.1")
        self.cseq += 1
        h.add("CSeq", f"{self.cseq} {method}")
        if body:
            h.add("Content-Type", "Application/MANSCDP+xml")
            req.body = body
        return self.endpoint.send_request(req, ("UDP", "127.0.0.1", port), self.now())

    def query(self, device_id: str, port: int, cmd: str, **extra: str) -> ClientTransaction:
        self.sn += 1
        return self.send(device_id, port, body=manscdp.encode_query(cmd, self.sn, device_id, extra=extra or None))

    # -- views ---------------------------------------------------------------------------
    def of(self, method: str, since: float = -1.0) -> list[Request]:
        return [r for t, r, _ in self.requests if r.method == method and t >= since]

    def bodies(self, cmd: str) -> list[manscdp.ManscdpMessage]:
        out = []
        for req in self.of("MESSAGE"):
            msg = manscdp.decode(req.body)
            if msg.kind == "Response" and msg.cmd_type == cmd:
                out.append(msg)
        return out

    def keepalive_times(self) -> list[float]:
        return [t for t, r, _ in self.requests if r.method == "MESSAGE" and b"Keepalive" in r.body]


class Net:
    """Carries datagrams between the simulator's fake ports and the platform."""

    def __init__(self, reactor: FakeReactor, platform: Platform) -> None:
        self.reactor = reactor
        self.platform = platform
        reactor.net = self

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for port in self.reactor.udp_ports:
                sent, port.sent = port.sent, []
                for data, addr in sent:
                    moved = True
                    assert addr == PLATFORM
                    self.platform.receive(data, ("UDP", port.interface, port.port))
            self.platform.handle(self.platform.endpoint.handle_timers(self.platform.now()))
            for data, dest in self.platform.endpoint.take_output():
                moved = True
                for port in self.reactor.udp_ports:
                    if port.port == dest[2] and not port.closed:  # closed ports drop it
                        port.protocol.datagramReceived(data, PLATFORM)
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def step(self, tick: float = 0.5) -> None:
        self.reactor.advance(tick)
        self.pump()

    def run_for(self, seconds: float, tick: float = 0.5) -> None:
        end = self.reactor.seconds() + seconds
        while self.reactor.seconds() + tick <= end + 1e-9:
            self.step(tick)


def make(
    *, devices: int = 1, vendor: str = "generic", password: str = "12345678",
    nonce_ttl: float = 300.0, **options: Any,
) -> tuple[Simulator, Platform, Net]:
    reactor = FakeReactor()
    platform = Platform(reactor, password=password, nonce_ttl=nonce_ttl)
    net = Net(reactor, platform)
    config = SimConfig(server="127.0.0.1:5060", devices=devices, vendor=vendor, **options)
    return Simulator(config, reactor, random.Random(1)), platform, net


@pytest.fixture
def registered() -> Iterator[tuple[Simulator, Platform, Net]]:
    sim, platform, net = make(channels=5, catalog_per_message=2)
    sim.start()
    net.pump()
    assert sim.devices[0].registered
    yield sim, platform, net


def port_of(sim: Simulator) -> int:
    return sim.devices[0].link.local[1]  # type: ignore[union-attr]


def authorization(req: Request) -> dict[str, str] | None:
    value = req.headers.get("Authorization")
    return None if value is None else parse_auth_header(value)[1]


# -- registration --------------------------------------------------------------------------


def test_register_answers_the_digest_challenge() -> None:
    sim, platform, net = make()
    sim.start()
    net.pump()
    first, second = platform.of("REGISTER")
    port = port_of(sim)
    assert first.uri == f"sip:{SERVER_ID}@127.0.0.1:5060"
    assert (first.headers.get("From") or "").startswith(f"<sip:{DEV1}@{REALM}>;tag=")
    assert first.headers.get("To") == f"<sip:{DEV1}@{REALM}>"
    assert first.headers.get("Contact") == f"<sip:{DEV1}@127.0.0.1:{port}>"
    assert first.headers.get("Expires") == "3600"
    assert authorization(first) is None
    assert second.call_id == first.call_id
    assert (first.cseq, second.cseq) == ((1, "REGISTER"), (2, "REGISTER"))
    auth = authorization(second)
    assert auth is not None
    assert auth["username"] == DEV1 and auth["uri"] == first.uri and auth["realm"] == REALM
    # The platform's own DigestServer accepted it.
    result = platform.digest.verify(second.headers.get("Authorization") or "", "REGISTER",
                                    platform.now(), platform.lookup)
    assert result.ok
    assert sim.devices[0].registered
    assert (sim.stats.registered, sim.stats.registrations, sim.stats.register_failures) == (1, 1, 0)
    assert sim.stats.first_register_at == sim.stats.all_registered_at == 0.0


def test_exosip_sends_two_unauthenticated_registers_then_answers_the_first_nonce() -> None:
    sim, platform, net = make(vendor="exosip")
    sim.start()
    net.pump()
    regs = platform.of("REGISTER")
    assert [r.cseq[0] for r in regs] == [1, 2, 3]
    assert [authorization(r) is None for r in regs] == [True, True, False]
    assert len({r.call_id for r in regs}) == 1 and regs[0].call_id.isdigit()
    nonces = [parse_auth_header(r.headers.get("WWW-Authenticate") or "")[1]["nonce"]
              for r in platform.responses if r.status == 401]
    assert len(nonces) == 2 and nonces[0] != nonces[1]
    assert authorization(regs[2])["nonce"] == nonces[0]  # type: ignore[index]
    assert sim.devices[0].registered
    assert regs[0].headers.get("User-Agent") == "eXosip/5.3.0"


@pytest.mark.parametrize("reject", ["wrong-password", "403"])
def test_rejected_register_is_retried_after_the_back_off(reject: str) -> None:
    if reject == "wrong-password":
        sim, platform, net = make(password="other")
    else:
        sim, platform, net = make()
        platform.register_status = 403
    sim.start()
    net.pump()
    device = sim.devices[0]
    assert not device.registered
    assert sim.stats.register_failures == 1
    count = len(platform.of("REGISTER"))
    net.run_for(29.5)
    assert len(platform.of("REGISTER")) == count
    platform.password, platform.register_status = "12345678", None
    net.run_for(0.5)
    assert device.registered
    assert authorization(platform.of("REGISTER", since=30.0)[0]) is None  # starts afresh


def test_a_second_challenge_to_fresh_credentials_is_a_failure() -> None:
    sim, platform, net = make()
    original = platform.register

    def always_challenge(req: Request, tx: Any) -> None:
        platform.respond(tx, req, 401, [("WWW-Authenticate", platform.digest.challenge(platform.now(), platform.rng))])

    platform.register = always_challenge  # type: ignore[method-assign]
    sim.start()
    net.pump()
    assert len(platform.of("REGISTER")) == 2  # no endless loop
    assert sim.stats.register_failures == 1
    platform.register = original  # type: ignore[method-assign]
    net.run_for(30)
    assert sim.devices[0].registered


def test_register_timeout_is_retried() -> None:
    sim, platform, net = make()
    platform.drop_register = True
    sim.start()
    net.pump()
    net.run_for(32.0)  # RFC 3261 timer F = 64 * T1
    assert sim.stats.register_failures == 1
    retransmitted = len(platform.requests)
    assert retransmitted == 1  # the platform endpoint absorbed the retransmissions
    platform.drop_register = False
    net.run_for(5.0)
    assert sim.devices[0].registered


def test_refresh_before_expiry_reuses_the_nonce() -> None:
    sim, platform, net = make(expires=100)
    sim.start()
    net.pump()
    first_auth = authorization(platform.of("REGISTER")[-1])
    net.run_for(79.5)
    assert len(platform.of("REGISTER")) == 2
    net.run_for(0.5)
    refresh = platform.of("REGISTER")[2:]
    assert len(refresh) == 1  # straight to 200 with the old nonce
    auth = authorization(refresh[0])
    assert auth is not None and first_auth is not None
    assert auth["nonce"] == first_auth["nonce"]
    assert refresh[0].call_id == platform.of("REGISTER")[0].call_id
    assert refresh[0].cseq == (3, "REGISTER")
    assert sim.stats.registrations == 2 and sim.devices[0].registered
    net.run_for(80)
    assert len(platform.of("REGISTER")) == 4


def test_refresh_with_a_stale_nonce_reauthenticates() -> None:
    sim, platform, net = make(expires=100, nonce_ttl=50)
    sim.start()
    net.pump()
    net.run_for(80)
    refresh = platform.of("REGISTER")[2:]
    assert len(refresh) == 2  # old nonce -> 401 stale -> new nonce -> 200
    nonces = [authorization(r)["nonce"] for r in refresh]  # type: ignore[index]
    assert nonces[0] != nonces[1]
    assert sim.devices[0].registered
    assert sim.stats.register_failures == 0


# -- keepalive -----------------------------------------------------------------------------


def test_keepalive_every_interval_once_registered(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    net.run_for(185)
    assert platform.keepalive_times() == [60.0, 120.0, 180.0]
    msg = manscdp.decode(platform.of("MESSAGE")[0].body)
    assert isinstance(msg, manscdp.Keepalive)
    assert (msg.device_id, msg.status, msg.sn) == (DEV1, "OK", 1)
    req = platform.of("MESSAGE")[0]
    assert req.uri == f"sip:{SERVER_ID}@127.0.0.1:5060"
    assert NameAddr.parse(req.headers.get("From") or "").user == DEV1
    assert req.headers.get("Content-Type") == "Application/MANSCDP+xml"
    assert sim.stats.keepalives_sent == 3


@pytest.mark.parametrize("status", [404, 403])
def test_keepalive_refused_registers_again_at_once(
    registered: tuple[Simulator, Platform, Net], status: int,
) -> None:
    sim, platform, net = registered
    old_call_id = platform.of("REGISTER")[0].call_id
    platform.keepalive_status = status
    net.run_for(60)
    again = platform.of("REGISTER", since=60.0)
    assert [authorization(r) is None for r in again] == [True, False]
    assert again[0].call_id != old_call_id
    assert sim.devices[0].registered
    assert sim.stats.keepalive_failures == 1


def test_lost_keepalives_register_again(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    platform.keepalive_status = None  # unanswered: each one times out after 32 s
    net.run_for(211)
    assert platform.of("REGISTER", since=1.0) == []
    net.run_for(2)
    assert len(platform.of("REGISTER", since=1.0)) == 2
    assert sim.stats.keepalive_failures == 3


# -- vendor quirks -------------------------------------------------------------------------


def test_exosip_pads_content_length() -> None:
    sim, platform, net = make(vendor="exosip", keepalive_interval=10)
    sim.start()
    net.pump()
    net.run_for(10)
    raws = {r.method: raw for _, r, raw in platform.requests}
    keepalive = raws["MESSAGE"]
    body = keepalive.split(b"\r\n\r\n", 1)[1]
    assert f"\r\nContent-Length: {len(body):>5}\r\n".encode() in keepalive
    assert re.search(rb"\r\nContent-Length:   \d{3}\r\n", keepalive)
    assert b"\r\nContent-Length: 0\r\n" in raws["REGISTER"]
    assert platform.keepalive_times() == [10.0]  # still parsed by our platform


def test_exosip_stun_binding_requests_every_17_seconds() -> None:
    sim, platform, net = make(vendor="exosip")
    sim.start()
    net.pump()
    net.run_for(52)
    times = [t for t, _, _ in platform.stun]
    assert times == [17.0, 34.0, 51.0]
    datagrams = [d for _, d, _ in platform.stun]
    assert all(len(d) == 20 and d[:8] == bytes.fromhex("000100002112a442") for d in datagrams)
    assert len({d[8:] for d in datagrams}) == 3
    assert {port for _, _, port in platform.stun} == {port_of(sim)}


def test_stun_binding_request_format() -> None:
    data = stun_binding_request(random.Random(5))
    assert len(data) == 20
    assert data[:8] == b"\x00\x01\x00\x00\x21\x12\xa4\x42"


def test_generic_device_sends_no_stun(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    net.run_for(40)
    assert platform.stun == []


def test_pjsua_contact_has_ob_and_allow() -> None:
    sim, platform, net = make(vendor="pjsua")
    sim.start()
    net.pump()
    reg = platform.of("REGISTER")[0]
    assert reg.headers.get("Contact") == f"<sip:{DEV1}@127.0.0.1:{port_of(sim)};ob>"
    assert "MESSAGE" in (reg.headers.get("Allow") or "")
    assert sim.devices[0].registered


# -- queries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "label", "decoded_charset", "quirk"),
    [
        ({}, b'encoding="GB2312"', "GB2312", None),
        ({"vendor": "gb2312_utf8"}, b'encoding="GB2312"', "UTF-8", manscdp.QUIRK_UTF8_BODY_GB_LABEL),
        ({"charset": "UTF-8"}, b'encoding="UTF-8"', "UTF-8", None),
    ],
)
def test_catalog_split_over_messages(
    options: dict[str, Any], label: bytes, decoded_charset: str, quirk: str | None,
) -> None:
    sim, platform, net = make(channels=5, catalog_per_message=2, **options)
    sim.start()
    net.pump()
    tx = platform.query(DEV1, port_of(sim), "Catalog")
    net.pump()
    assert platform.answers[tx].status == 200
    raws = [raw for _, r, raw in platform.requests if r.method == "MESSAGE"]
    assert len(raws) == 3
    assert all(label in raw for raw in raws)
    expected_bytes = "测试通道1".encode("utf-8" if decoded_charset == "UTF-8" else "gb2312")
    assert expected_bytes in raws[0]
    messages = platform.bodies("Catalog")
    assert all(isinstance(m, manscdp.CatalogResponse) for m in messages)
    assert [m.sum_num for m in messages] == [5, 5, 5]  # type: ignore[attr-defined]
    assert [m.num for m in messages] == [2, 2, 1]  # type: ignore[attr-defined]
    assert all(m.charset == decoded_charset for m in messages)
    assert all((quirk in m.quirks) if quirk else not m.quirks for m in messages)
    items = [i for m in messages for i in m.items]  # type: ignore[attr-defined]
    assert [i.name for i in items] == [f"测试通道{n}" for n in range(1, 6)]
    ids = [i.device_id for i in items]
    assert len(set(ids)) == 5
    assert all(len(i) == 20 and i.isdigit() and i[10:13] == "131" for i in ids)
    assert {i.parent_id for i in items} == {DEV1}
    assert {i.status for i in items} == {"ON"}
    assert messages[0].sn == platform.sn
    assert sim.stats.queries_answered == 1


def test_catalog_waits_for_the_window() -> None:
    sim, platform, net = make(channels=10, catalog_per_message=1, max_in_flight=2)
    sim.start()
    net.pump()
    platform.keepalive_status = 200
    # Hold the platform's answers: only two catalog MESSAGEs may be in flight.
    held: list[tuple[Any, Request]] = []
    original = platform.request

    def hold(req: Request, tx: Any) -> None:
        if req.method == "MESSAGE":
            held.append((tx, req))
        else:
            original(req, tx)

    platform.request = hold  # type: ignore[method-assign]
    platform.query(DEV1, port_of(sim), "Catalog")
    net.pump()
    assert len(held) == 2
    platform.request = original  # type: ignore[method-assign]
    for tx, req in held:
        platform.respond(tx, req, 200)
    net.pump()
    assert len(platform.bodies("Catalog")) == 10


def test_civil_code_node_counts_in_sum_num() -> None:
    sim, platform, net = make(channels=2, catalog_per_message=5, civil_code_node=True)
    sim.start()
    net.pump()
    platform.query(DEV1, port_of(sim), "Catalog")
    net.pump()
    (msg,) = platform.bodies("Catalog")
    assert msg.sum_num == 3  # type: ignore[attr-defined]
    assert msg.items[0].device_id == DEV1[:6]  # type: ignore[attr-defined]


def test_hikvision_bare_ampersand_in_a_channel_name() -> None:
    sim, platform, net = make(vendor="hikvision", channels=3, catalog_per_message=3)
    sim.start()
    net.pump()
    platform.query(DEV1, port_of(sim), "Catalog")
    net.pump()
    (raw,) = [raw for _, r, raw in platform.requests if r.method == "MESSAGE"]
    assert b"<Name>A&B</Name>" in raw
    (msg,) = platform.bodies("Catalog")
    assert [i.name for i in msg.items] == ["A&B", "测试通道2", "测试通道3"]  # type: ignore[attr-defined]
    assert manscdp.QUIRK_BARE_AMPERSAND in msg.quirks


def test_channel_ids_are_unique_across_devices() -> None:
    sim, _, _ = make(devices=3, channels=4)
    ids = [cid for d in sim.devices for cid in d.channel_ids]
    assert len(ids) == len(set(ids)) == 12
    assert not set(ids) & {d.device_id for d in sim.devices}
    assert channel_id(DEV1, 1, 4) == "34020000001310000004"


def test_device_info_status_and_basic_param(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    port = port_of(sim)
    platform.query(DEV1, port, "DeviceInfo")
    platform.query(DEV1, port, "DeviceStatus")
    platform.query(DEV1, port, "ConfigDownload", ConfigType="BasicParam")
    net.pump()
    (info,) = platform.bodies("DeviceInfo")
    assert isinstance(info, manscdp.DeviceInfoResponse)
    assert (info.manufacturer, info.channel, info.result) == ("gbplatform-sim", 5, "OK")
    assert info.device_name == "模拟设备1" and info.model and info.firmware
    (status,) = platform.bodies("DeviceStatus")
    assert isinstance(status, manscdp.DeviceStatusResponse)
    assert (status.online, status.status, status.encode, status.record) == ("ONLINE", "OK", "ON", "OFF")
    assert status.device_time is not None
    (config,) = platform.bodies("ConfigDownload")
    assert isinstance(config, manscdp.ConfigDownloadResponse)
    param = config.basic_param
    assert param is not None
    assert (param.heart_beat_interval, param.heart_beat_count, param.expiration) == (60, 3, 3600)
    assert param.name == "模拟设备1"
    assert sim.stats.queries_answered == 3


def test_unknown_query_gets_200_and_nothing_else(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    tx = platform.query(DEV1, port_of(sim), "RecordInfo")
    net.pump()
    assert platform.answers[tx].status == 200
    assert platform.of("MESSAGE") == []
    assert sim.stats.queries_answered == 0


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("INVITE", 488), ("BYE", 481)])
def test_other_requests(registered: tuple[Simulator, Platform, Net], method: str, status: int) -> None:
    sim, platform, net = registered
    tx = platform.send(DEV1, port_of(sim), method)
    net.pump()
    assert platform.answers[tx].status == status


def test_request_for_an_unknown_user_on_the_shared_socket_is_404() -> None:
    sim, platform, net = make(devices=2)
    sim.start()
    net.pump()
    tx = platform.query("34020000001329999999", port_of(sim), "Catalog")
    net.pump()
    assert platform.answers[tx].status == 404


# -- pause / resume ------------------------------------------------------------------------


def test_pause_goes_silent_and_resume_comes_back(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    device = sim.devices[0]
    device.pause()
    assert not device.online and sim.online == 0
    tx = platform.query(DEV1, port_of(sim), "DeviceInfo")
    net.run_for(200)
    assert platform.keepalive_times() == []
    assert tx not in platform.answers  # no answer at all: the platform timed out
    assert device.registered  # the registration itself still runs until expiry
    device.resume()
    net.pump()
    assert platform.keepalive_times() == [200.0]
    assert device.online
    net.run_for(60)
    assert platform.keepalive_times() == [200.0, 260.0]


def test_paused_past_expiry_registers_again_on_resume() -> None:
    sim, platform, net = make(expires=100)
    sim.start()
    net.pump()
    device = sim.devices[0]
    device.pause()
    net.run_for(150)
    assert not device.registered and sim.stats.registered == 0
    assert len(platform.of("REGISTER")) == 2
    device.resume()
    net.pump()
    assert device.registered and len(platform.of("REGISTER")) == 3


# -- addressing ----------------------------------------------------------------------------


def test_shared_socket_routes_by_request_uri() -> None:
    sim, platform, net = make(devices=3, channels=1)
    sim.start()
    net.pump()
    assert len(net.reactor.udp_ports) == 1
    assert sim.stats.registered == 3
    second = sim.devices[1].device_id
    assert second == "34020000001320000002"
    platform.query(second, port_of(sim), "DeviceInfo")
    net.pump()
    (info,) = platform.bodies("DeviceInfo")
    assert info.device_id == second
    froms = {NameAddr.parse(r.headers.get("From") or "").user for r in platform.of("MESSAGE")}
    assert froms == {second}


def test_port_base_gives_each_device_its_own_port() -> None:
    sim, platform, net = make(devices=3, local_port_base=20000)
    sim.start()
    net.pump()
    assert [p.port for p in net.reactor.udp_ports] == [20000, 20001, 20002]
    contacts = {r.headers.get("Contact") for r in platform.of("REGISTER")}
    assert contacts == {f"<sip:{d.device_id}@127.0.0.1:{20000 + i}>" for i, d in enumerate(sim.devices)}
    assert sim.stats.registered == 3


def test_tcp_devices_each_open_their_own_connection() -> None:
    reactor = FakeReactor()
    sim = Simulator(SimConfig(transport="tcp", devices=3, local_port_base=21000), reactor, random.Random(1))
    sim.start()
    assert [s[0] for s in reactor.tcpServers] == [21000, 21001, 21002]
    assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("127.0.0.1", 5060)] * 3
    assert reactor.udp_ports == []


# -- simulator API -------------------------------------------------------------------------


def test_wait_all_registered() -> None:
    sim, platform, net = make(devices=4, ramp=2.0)
    sim.start()
    d = sim.wait_all_registered(10)
    fired: list[float] = []
    d.addCallback(fired.append)
    net.pump()
    assert fired == []
    net.run_for(2)
    assert fired == [1.5]
    assert sim.stats.first_register_at == 0.0 and sim.stats.last_register_at == 1.5


def test_wait_all_registered_times_out() -> None:
    sim, platform, net = make(devices=2)
    platform.drop_register = True
    sim.start()
    failures: list[Any] = []
    sim.wait_all_registered(3).addErrback(failures.append)
    net.run_for(3)
    (failure,) = failures
    assert failure.check(TimeoutError)
    assert "0/2 devices registered" in str(failure.value)


def test_stop_unregisters_everyone() -> None:
    sim, platform, net = make(devices=2)
    sim.start()
    net.pump()
    done: list[object] = []
    sim.stop().addCallback(done.append)
    net.pump()
    assert done == [None]
    last = platform.of("REGISTER")[-2:]
    assert [r.headers.get("Expires") for r in last] == ["0", "0"]
    assert all(authorization(r) is not None for r in last)
    assert sim.stats.registered == 0
    assert all(p.closed for p in net.reactor.udp_ports)


def test_stop_gives_up_after_the_timeout() -> None:
    sim, platform, net = make(stop_timeout=5.0)
    sim.start()
    net.pump()
    platform.drop_register = True
    done: list[object] = []
    sim.stop().addCallback(done.append)
    net.run_for(4.5)
    assert done == []
    net.run_for(0.5)
    assert done == [None]


def test_unregister_one_device(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    results: list[bool] = []
    sim.devices[0].unregister().addCallback(results.append)
    net.pump()
    assert results == [True]
    net.run_for(120)
    assert platform.keepalive_times() == []  # stopped for good


def test_status_line(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, _, net = registered
    net.run_for(60)
    assert sim.status_line() == (
        "sim t=60.0s registered=1/1 online=1 failures=0 keepalives=1 "
        "keepalive_failures=0 queries=0 messages=1"
    )


# -- configuration and the command line ----------------------------------------------------


def test_config_from_cli_arguments() -> None:
    args = cli.build_parser().parse_args([
        "simulate", "--server", "10.0.0.5:15060", "--devices", "3", "--vendor", "exosip",
        "--first-id", "34020000001320000009", "--keepalive-interval", "20",
    ])
    config = SimConfig.from_args(args)
    assert (config.server_host, config.server_port) == ("10.0.0.5", 15060)
    assert config.device_ids == ["34020000001320000009", "34020000001320000010", "34020000001320000011"]
    assert config.effective_quirks == VENDOR_QUIRKS["exosip"]
    assert config.keepalive_interval == 20
    assert config.name_prefix == "测试通道"  # the CLI default exercises the charsets


def test_quirks_can_be_mixed() -> None:
    mixed = Quirks(double_unauth_register=True, bare_ampersand=True)
    sim, platform, net = make(quirks=mixed, channels=1)
    sim.start()
    net.pump()
    assert len(platform.of("REGISTER")) == 3
    platform.query(DEV1, port_of(sim), "Catalog")
    net.pump()
    assert [i.name for i in platform.bodies("Catalog")[0].items] == ["A&B"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"vendor": "acme"}, "unknown vendor"),
        ({"transport": "tls"}, "udp or tcp"),
        ({"first_id": "34020000001329999999", "devices": 2}, "leaves room for 1 devices"),
        ({"first_id": "34020000001325000000", "channels": 4}, "need more than 7 digits"),
        ({"server": "nohost"}, "HOST:PORT"),
        ({"charset": "latin-1"}, "unsupported charset"),
    ],
)
def test_config_errors(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        SimConfig(**options)


def test_run_until_duration_then_unregister() -> None:
    reactor = FakeReactor()
    platform = Platform(reactor)
    Net(reactor, platform)
    out = io.StringIO()
    config = SimConfig(devices=3, channels=2, duration=12, status_interval=5, keepalive_interval=10)
    assert run(config, reactor, random.Random(3), out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "sim all 3 devices registered in 0.00 s"
    assert lines[1].startswith("sim t=5.0s registered=3/3 online=3 failures=0")
    assert re.match(r"sim t=12\.\ds registered=0/3 online=0 ", lines[-1])
    assert [r.headers.get("Expires") for r in platform.of("REGISTER")[-3:]] == ["0"] * 3
    assert len(platform.keepalive_times()) == 3


def test_run_reports_a_socket_error() -> None:
    class Broken(FakeReactor):
        def listenUDP(self, *args: Any, **kwargs: Any) -> FakeUdpPort:  # noqa: N802
            raise OSError("address in use")

    reactor = Broken()
    Net(reactor, Platform(reactor))
    out = io.StringIO()
    assert run(SimConfig(), reactor, random.Random(3), out) == 1
    assert "cannot start: address in use" in out.getvalue()


def test_stop_skips_devices_that_failed_to_register() -> None:
    sim, platform, net = make(password="other")
    sim.start()
    net.pump()
    count = len(platform.of("REGISTER"))
    done: list[object] = []
    sim.stop().addCallback(done.append)
    net.pump()
    assert done == [None]
    assert len(platform.of("REGISTER")) == count
    assert sim.stats.register_failures == 1


def test_failed_unregister_is_not_a_register_failure(registered: tuple[Simulator, Platform, Net]) -> None:
    sim, platform, net = registered
    platform.register_status = 403
    results: list[bool] = []
    sim.devices[0].unregister().addCallback(results.append)
    net.pump()
    assert results == [False]
    assert sim.stats.register_failures == 0 and not sim.devices[0].registered


def test_interval_too_brief_asks_again_with_min_expires() -> None:
    sim, platform, net = make(expires=30)
    original = platform.register

    def min_expires(req: Request, tx: Any) -> None:
        if int(req.headers.get("Expires") or 0) < 60:
            platform.respond(tx, req, 423, [("Min-Expires", "60")])
        else:
            original(req, tx)

    platform.register = min_expires  # type: ignore[method-assign]
    sim.start()
    net.pump()
    assert [r.headers.get("Expires") for r in platform.of("REGISTER")] == ["30", "60", "60"]
    assert sim.devices[0].registered
    net.run_for(48)
    assert len(platform.of("REGISTER")) == 4  # refreshed at 0.8 x 60 s


def test_device_config_is_kept_and_downloaded_back() -> None:
    """DeviceConfig (GB/T 28181-2016 §A.2.3.2) changes only the values it names; ConfigDownload
    (§A.2.4.7) answers them; a new heartbeat interval paces the simulator's keepalives."""
    sim, _, _ = make()
    dev = sim.devices[0]
    basic = manscdp.BasicParam(name="Gate", heart_beat_interval=20)
    [ok] = dev.queries.answer(manscdp.decode(manscdp.encode_device_config(5, DEV1, basic_param=basic)))
    answer = manscdp.decode(ok)
    assert isinstance(answer, manscdp.Response) and (answer.cmd_type, answer.sn, answer.result) == (
        "DeviceConfig", 5, "OK")
    dev.queries.answer(manscdp.decode(manscdp.encode_device_config(
        6, DEV1, video_param_opt=manscdp.VideoParamOpt(resolution="6"))))
    assert dev.ua.config.keepalive_interval == 20
    query = manscdp.decode(manscdp.encode_query("ConfigDownload", 7, DEV1,
                                                extra={"ConfigType": "BasicParam/VideoParamOpt"}))
    [raw] = dev.queries.answer(query)
    config = manscdp.decode(raw)
    assert isinstance(config, manscdp.ConfigDownloadResponse) and config.basic_param is not None
    assert (config.basic_param.name, config.basic_param.heart_beat_interval) == ("Gate", 20)
    assert config.basic_param.expiration == sim.config.expires
    assert config.video_param_opt == manscdp.VideoParamOpt(download_speed="1/2/4", resolution="6")
    [refused] = dev.queries.answer(manscdp.decode(manscdp.encode_device_config(8, DEV1)))
    assert isinstance(decoded := manscdp.decode(refused), manscdp.Response) and decoded.result == "ERROR"
