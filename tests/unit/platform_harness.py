"""An in-memory GB/T 28181 platform and fake devices linked by byte pumps.

Two SIP cores talk through memory, h11 ``ConnectionPair`` style: the
platform built by ``build_platform`` (SQLite ``StaticPool`` registry on an
``InlineRunner``, ``FakeClock``) and any number of ``FakeDevice``s, each a
second ``sip.endpoint.Endpoint`` that speaks like the eXosip device in
``shared/vectors/sip-wire/exosip-device-udp.log``. ``Harness.pump()`` moves
bytes both ways until both sides are quiet; ``Harness.advance(dt)`` steps
the clock one due timer at a time, pumping in between, so that a device
answers a request before the platform's next retransmission, as on a
loopback network.

Typical use::

    h = Harness()
    dev = h.device()
    assert dev.register_auth().status == 200
    query = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(query.sn, DEV, manufacturer="Hik"))
    h.advance(1)                     # lets the StateWriter flush
    assert h.record(DEV).manufacturer == "Hik"
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from gbplatform.app.config import Config
from gbplatform.app.context import AppContext
from gbplatform.app.service import build_platform
from gbplatform.core.clock import FakeClock
from gbplatform.db import queries as q
from gbplatform.db.database import Database, InlineRunner, make_engine
from gbplatform.db.models import metadata
from gbplatform.signalling.router import SipRouter
from sip import manscdp
from sip.auth import authorization_for, parse_auth_header
from sip.endpoint import Addr, Endpoint, EndpointEvent, RequestReceived
from sip.message import Request, Response, make_response
from sip.transaction import ClientTransaction, ResponseReceived, TransactionTimedOut

PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "12345678"  # Config().sip.password
DEV = "34020000001320000001"
DEV2 = "34020000001320000002"
PLATFORM_HOST, PLATFORM_PORT = "127.0.0.1", 5060
DEVICE_ADDR: Addr = ("UDP", "127.0.0.1", 5070)
MANSCDP = "Application/MANSCDP+xml"
API_TOKEN = "t"
SECRET = b"s"


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired; raises its failure."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def has_fired(d: Deferred[Any]) -> bool:
    box: list[Any] = []

    def seen(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(seen)
    return bool(box)


def sip_config(**sip: Any) -> Config:
    """The default configuration with some ``[sip]`` settings replaced."""
    config = Config()
    return replace(config, sip=replace(config.sip, **sip))


def new_engine() -> Any:
    """An in-memory SQLite registry (``StaticPool``) with the schema created."""
    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    return engine


@dataclass
class Inbound:
    """A request the platform sent to a device, with its decoded MANSCDP body."""

    request: Request
    msg: manscdp.ManscdpMessage | None
    status: int | None  # what the device answered; None when it stayed silent


class _TimerDriver:
    """Keeps one clock timer armed at an endpoint's next deadline (like ``SipTransport``)."""

    def __init__(self, clock: FakeClock, endpoint: Endpoint, dispatch: Callable[[list[EndpointEvent]], None]):
        self.clock = clock
        self.endpoint = endpoint
        self.dispatch = dispatch
        self._timer: Any = None
        self._at: float | None = None

    def rearm(self) -> None:
        at = self.endpoint.next_timer()
        if at == self._at and self._timer is not None and self._timer.active():
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer, self._at = None, at
        if at is not None:
            self._timer = self.clock.call_later(max(0.0, at - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer, self._at = None, None
        self.dispatch(self.endpoint.handle_timers(self.clock.seconds()))

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class Harness:
    """A platform plus the devices talking to it, all in memory."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        engine: Any = None,
        clock: FakeClock | None = None,
        seed: int = 1,
    ) -> None:
        self.config = config or Config()
        self.clock = clock or FakeClock()
        self.engine = engine if engine is not None else new_engine()
        self.db = Database(self.engine, pool=InlineRunner())
        self.platform: AppContext = build_platform(
            self.config, clock=self.clock, db=self.db, rng=random.Random(seed),
            api_token=API_TOKEN, secret=SECRET,
        )
        self.platform.endpoint.local.update(
            {"UDP": (PLATFORM_HOST, PLATFORM_PORT), "TCP": (PLATFORM_HOST, PLATFORM_PORT)}
        )
        self.sent: list[tuple[bytes, Addr]] = []  # everything the platform sent, in order
        self.unrouted: list[tuple[bytes, Addr]] = []  # sent to an address no device is at
        self._outbox: list[tuple[bytes, Addr]] = []
        self._devices: dict[Addr, FakeDevice] = {}
        self.platform.router.flush = self._collect
        self._timers = _TimerDriver(self.clock, self.platform.endpoint, self._platform_events)
        self.log_failures: list[LogEvent] = []
        self.successor: Harness | None = None
        self._closed = False
        globalLogPublisher.addObserver(cast(ILogObserver, self._observe))

    # -- plumbing ------------------------------------------------------------
    @property
    def router(self) -> SipRouter:
        return self.platform.router

    @property
    def devices(self) -> Any:
        return self.platform.devices

    @property
    def events(self) -> list[Any]:
        return self.platform.events

    def _observe(self, event: LogEvent) -> None:
        if "log_failure" in event:
            self.log_failures.append(event)

    def close(self) -> None:
        """Stop observing the log and stop this platform's and its devices' timers."""
        if not self._closed:
            self._closed = True
            globalLogPublisher.removeObserver(cast(ILogObserver, self._observe))
            self._timers.stop()
            for device in self._devices.values():
                device.timers.stop()
            calls: list[Any] = list(self.clock.reactor.getDelayedCalls())
            for call in calls:
                if call.active():
                    call.cancel()
        if self.successor is not None:
            self.successor.close()

    def failures(self) -> list[str]:
        """Tracebacks logged with ``log.failure`` here and in restarted platforms."""
        found = [e["log_failure"].getTraceback() for e in self.log_failures]
        return found + (self.successor.failures() if self.successor is not None else [])

    def _collect(self) -> None:
        for data, dest in self.platform.endpoint.take_output():
            self.platform.trace.record("send", data, dest, self.clock.time())
            self.sent.append((data, dest))
            self._outbox.append((data, dest))

    def _platform_events(self, events: list[EndpointEvent]) -> None:
        self.platform.router.handle_events(events)
        self._collect()

    def deliver(self, data: bytes, source: Addr) -> None:
        """Bytes from ``source`` reach the platform's SIP port."""
        self.platform.trace.record("recv", data, source, self.clock.time())
        self._platform_events(self.platform.endpoint.receive_datagram(data, source, self.clock.seconds()))

    def attach(self, device: FakeDevice) -> None:
        self._devices[device.addr] = device

    def detach(self, device: FakeDevice) -> None:
        if self._devices.get(device.addr) is device:
            del self._devices[device.addr]
        device.timers.stop()

    def pump(self, limit: int = 10_000) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(limit):
            self._collect()
            moved = False
            out, self._outbox = self._outbox, []
            for data, dest in out:
                moved = True
                device = self._devices.get(dest)
                if device is None:
                    self.unrouted.append((data, dest))
                else:
                    device.receive(data)
            for device in list(self._devices.values()):
                for data, _dest in device.endpoint.take_output():
                    moved = True
                    self.deliver(data, device.addr)
            self._timers.rearm()
            for device in self._devices.values():
                device.timers.rearm()
            if not moved:
                return
        raise AssertionError("pump did not settle")

    def advance(self, seconds: float) -> None:
        """Step the clock by ``seconds``, firing each due timer in order with pumps between."""
        target = self.clock.seconds() + seconds
        self.pump()
        for _ in range(100_000):
            calls: list[Any] = list(self.clock.reactor.getDelayedCalls())
            due = [c.getTime() for c in calls if c.active()]
            upcoming = [t for t in due if t <= target]
            if not upcoming:
                break
            self.clock.advance(max(0.0, min(upcoming) - self.clock.seconds()))
            self.pump()
        else:
            raise AssertionError("timers keep rescheduling themselves: advance() did not settle")
        self.clock.advance(max(0.0, target - self.clock.seconds()))
        self.pump()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        """Start a coroutine (a platform call that talks to devices) and pump once."""
        d = ensureDeferred(coro)
        self.pump()
        return d

    # -- devices ---------------------------------------------------------------
    def device(self, device_id: str = DEV, addr: Addr = DEVICE_ADDR, **kw: Any) -> FakeDevice:
        return FakeDevice(self, device_id, addr, **kw)

    def registered_device(self, device_id: str = DEV, addr: Addr = DEVICE_ADDR, **kw: Any) -> FakeDevice:
        """A device that has registered (digest with the global password)."""
        dev = self.device(device_id, addr, **kw)
        resp = dev.register_auth()
        assert resp.status == 200, resp
        return dev

    # -- registry --------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a ``*_txn`` function on the registry now."""
        return result_of(self.db.run(fn.__name__, fn, *args, **kwargs))

    def record(self, device_id: str = DEV) -> q.DeviceRecord:
        """The device's row, after writing out the batched lifecycle changes."""
        self.platform.devices.writer.flush()
        record: q.DeviceRecord | None = self.call(q.get_device_txn, device_id)
        assert record is not None, f"no registry row for {device_id}"
        return record

    def channels(self, device_id: str = DEV) -> list[q.ChannelRecord]:
        page: q.Page[q.ChannelRecord] = self.call(q.list_channels_txn, device_id, limit=1000)
        return page.items

    def create_device(self, device_id: str = DEV, *, password: str | None = None, **fields: Any) -> q.DeviceRecord:
        record: q.DeviceRecord = self.call(
            q.create_device_txn, device_id, password=password,
            realm=self.config.sip.domain if password is not None else None, **fields,
        )
        return record

    def restart(self, config: Config | None = None, seed: int = 2) -> Harness:
        """A new platform process on the same registry, started as ``SipService`` does.

        The old platform writes out its batched state and its timers are
        cancelled; the new clock's wall time goes on from the old one.
        """
        self.platform.devices.writer.flush()  # SipService.stopService does this
        self.close()
        clock = FakeClock(wall_start=self.clock.time())
        new = Harness(config or self.config, engine=self.engine, clock=clock, seed=seed)
        new.call(q.mark_all_offline_txn, dt.datetime.fromtimestamp(clock.time(), dt.UTC))
        self.successor = new
        return new


class FakeDevice:
    """A GB/T 28181 device on its own ``Endpoint``, shaped like eXosip 5.3.

    Requests from the platform are answered ``answer_status`` (None: no
    answer at all) and kept in ``inbound``; the final response to each of
    our requests is returned by the send helpers (None on timeout).
    """

    def __init__(
        self,
        harness: Harness,
        device_id: str = DEV,
        addr: Addr = DEVICE_ADDR,
        *,
        password: str = PASSWORD,
        user_agent: str = "eXosip/5.3.0",
        seed: int = 7,
        charset: str = "GB2312",
        x_gb_ver: str | None = "3.0",
    ) -> None:
        self.harness = harness
        self.device_id = device_id
        self.addr = addr
        self.password = password
        self.user_agent = user_agent
        self.charset = charset
        # GB/T 28181-2022 §9.1: a 2022 device announces "X-GB-Ver: 3.0" in its REGISTER; None sends
        # no header, as a 2016 (or older) device does.
        self.x_gb_ver = x_gb_ver
        self.rng = random.Random(seed)
        self.endpoint = Endpoint(rng=random.Random(seed + 1), user_agent=user_agent)
        self.endpoint.local[addr[0]] = (addr[1], addr[2])
        self.platform_addr: Addr = (addr[0], PLATFORM_HOST, PLATFORM_PORT)
        self.answer_status: int | None = 200
        self.inbound: list[Inbound] = []
        self.responses: list[Response] = []
        self.finals: dict[int, Response | None] = {}
        self.call_id = str(self.rng.getrandbits(31))
        self.from_tag = str(self.rng.getrandbits(31))
        self.cseq = 0
        self._sn = 1000
        self.timers = _TimerDriver(harness.clock, self.endpoint, self._events)
        harness.attach(self)

    # -- incoming ----------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        now = self.harness.clock.seconds()
        self._events(self.endpoint.receive_datagram(data, self.platform_addr, now))

    def _events(self, events: list[EndpointEvent]) -> None:
        for event in events:
            if isinstance(event, RequestReceived) and event.transaction is not None:
                req = event.request
                msg = None
                if "manscdp" in req.content_type:
                    msg = manscdp.decode(req.body, default_charset=self.charset)
                self.inbound.append(Inbound(req, msg, self.answer_status))
                if self.answer_status is not None:
                    resp = make_response(req, self.answer_status, to_tag=self.endpoint.new_tag())
                    self.endpoint.respond(event.transaction, resp, self.harness.clock.seconds())
            elif isinstance(event, ResponseReceived):
                self.responses.append(event.response)
                if event.response.status >= 200:
                    self.finals[id(event.transaction)] = event.response
            elif isinstance(event, TransactionTimedOut):
                self.finals[id(event.transaction)] = None

    def queries(self, cmd_type: str | None = None) -> list[manscdp.ManscdpMessage]:
        """MANSCDP bodies received from the platform, optionally of one CmdType."""
        return [i.msg for i in self.inbound if i.msg is not None and cmd_type in (None, i.msg.cmd_type)]

    def last_query(self, cmd_type: str) -> manscdp.ManscdpMessage:
        found = self.queries(cmd_type)
        assert found, f"the platform sent no {cmd_type} to {self.device_id}"
        return found[-1]

    # -- outgoing ----------------------------------------------------------------
    def next_sn(self) -> int:
        self._sn += 1
        return self._sn

    def request(self, method: str, *, uri: str | None = None, to_user: str = PLATFORM_ID,
                body: bytes = b"", content_type: str | None = None,
                headers: Iterable[tuple[str, str]] = ()) -> Request:
        """A request with eXosip's header shapes; REGISTERs share one Call-ID."""
        self.cseq += 1
        host, port = self.addr[1], self.addr[2]
        req = Request(method=method, uri=uri or f"sip:{PLATFORM_ID}@{PLATFORM_HOST}:{PLATFORM_PORT}")
        h = req.headers
        if method == "REGISTER":
            h.add("From", f"<sip:{self.device_id}@{host}:{port}>;tag={self.from_tag}")
            h.add("To", f"<sip:{self.device_id}@{host}:{port}>")
            h.add("Call-ID", self.call_id)
        else:
            h.add("From", f"<sip:{self.device_id}@{host}:{port}>;tag={self.rng.getrandbits(31)}")
            h.add("To", f"<sip:{to_user}@{PLATFORM_HOST}:{PLATFORM_PORT}>")
            h.add("Call-ID", str(self.rng.getrandbits(31)))
        h.add("CSeq", f"{self.cseq} {method}")
        for name, value in headers:
            h.add(name, value)
        if content_type:
            h.add("Content-Type", content_type)
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.user_agent)
        req.body = body
        return req

    def send(self, req: Request) -> ClientTransaction:
        tx = self.endpoint.send_request(req, self.platform_addr, self.harness.clock.seconds())
        self.harness.pump()
        return tx

    def final(self, tx: ClientTransaction) -> Response | None:
        assert id(tx) in self.finals, f"no final response to {tx.method} yet"
        return self.finals[id(tx)]

    def exchange(self, req: Request) -> Response:
        """Send ``req`` and return its final response (which must have come)."""
        resp = self.final(self.send(req))
        assert resp is not None, f"{req.method} timed out"
        return resp

    def register_request(self, expires: int | None = 3600, authorization: str | None = None,
                         contact_params: str = "") -> Request:
        headers = [("Contact", f"<sip:{self.device_id}@{self.addr[1]}:{self.addr[2]}>{contact_params}")]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if self.x_gb_ver is not None:
            headers.append(("X-GB-Ver", self.x_gb_ver))
        return self.request("REGISTER", headers=headers)

    def register(self, expires: int | None = 3600, authorization: str | None = None) -> Response:
        return self.exchange(self.register_request(expires, authorization))

    def authorization(self, challenge: Response, *, password: str | None = None,
                      algorithm: str | None = None) -> str:
        """Answer a 401's WWW-Authenticate (the first, or the one of ``algorithm``)."""
        values = challenge.headers.get_all("WWW-Authenticate")
        assert values, "no WWW-Authenticate in the challenge"
        if algorithm is not None:
            values = [v for v in values if parse_auth_header(v)[1].get("algorithm", "MD5") == algorithm]
            assert values, f"no {algorithm} challenge offered"
        return authorization_for(
            values[0], method="REGISTER", uri=f"sip:{PLATFORM_ID}@{PLATFORM_HOST}:{PLATFORM_PORT}",
            username=self.device_id, password=self.password if password is None else password,
            rng=self.rng,
        )

    def register_auth(self, expires: int | None = 3600, *, password: str | None = None,
                      algorithm: str | None = None) -> Response:
        """REGISTER, and answer the 401 if one comes (GB/T 28181-2016 §9.1.2.1)."""
        resp = self.register(expires)
        if resp.status != 401:
            return resp
        return self.register(expires, self.authorization(resp, password=password, algorithm=algorithm))

    def message(self, body: bytes, content_type: str | None = MANSCDP) -> Response:
        return self.exchange(self.request("MESSAGE", body=body, content_type=content_type))

    def keepalive(self) -> Response:
        """Notify/Keepalive (GB/T 28181-2016 §9.6.1, §A.2.5.2)."""
        return self.message(manscdp.encode_keepalive(self.next_sn(), self.device_id, charset=self.charset))
