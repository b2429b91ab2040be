"""GB/T 28181 device simulator: many IPCs/NVRs in one process, on our SIP stack.

Theory of operation
-------------------
Each ``SimDevice`` is a small GB/T 28181 device (§9.1 registration, §9.6
keepalive, §9.5 queries) built on ``sip.endpoint.Endpoint`` for transactions
and ``sip.transport.SipTransport`` for sockets. A ``_Link`` is one endpoint
plus its transport; it serves one device (its own port, or its own TCP
connection) or all of them (``local_port_base == 0`` over UDP: one shared
socket, incoming requests routed by the Request-URI user, then the To user).
Client transactions carry a callback that the link calls with the final
response, or ``None`` on timeout (RFC 3261 §17.1.2.2 timer F).

Registration of one device::

    start ──► REGISTER (no auth) ──401──► REGISTER (Authorization) ──200──► registered
                  ▲        │                         │ 401 (not stale)        │
                  │        └─403/4xx/5xx/timeout─────┴──► failure ──back-off──┤
                  └──────────── keepalive 403/404, 3 keepalives lost ◄────────┤
                                refresh at 0.8 x Expires (last nonce) ◄───────┘

A refresh reuses the last challenge's nonce (incrementing ``nc`` when qop is
used); a ``stale=true`` 401 is answered again at once (RFC 2617 §3.2.1). A
non-stale 401 to an ``Authorization`` computed from a challenge of the same
attempt means the password is wrong: a failure, retried after a back-off.

Vendor behaviour is a set of named flags (``Quirks``) chosen by ``vendor``,
copied from the wire logs in ``/work/shared/vectors/sip-wire``.

Time comes from the injected reactor (``seconds()``/``callLater``) and
randomness from the injected ``random.Random``, so tests run the simulator
against ``twisted.internet.task.Clock`` without sockets.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import IO, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from gbplatform import __version__
from gbplatform.app.config import ConfigError
from gbplatform.simulator.clip import AUDIO_CHOICES, CLIP_CHOICES, PAYLOAD_CHOICES, clip_loader
from gbplatform.simulator.media import MediaSender, SimMedia
from sip import manscdp, sdp
from sip.auth import AuthError, authorization_for, parse_auth_header
from sip.dialog import Dialog
from sip.endpoint import (
    Addr,
    CancelReceived,
    Endpoint,
    EndpointEvent,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sip.errors import LocalSipError, SipParseError
from sip.headers import NameAddr, expires_value
from sip.message import Request, Response, make_response
from sip.transaction import ClientTransaction, ServerTransaction
from sip.transport import SipTransport
from sip.uri import SipUri, is_gb_id

__all__ = [
    "VENDOR_QUIRKS",
    "Quirks",
    "SimConfig",
    "SimDevice",
    "SimStats",
    "Simulator",
    "channel_id",
    "main",
    "raise_fd_limit",
    "run",
    "stun_binding_request",
]

log = Logger()

MANSCDP_TYPE = "Application/MANSCDP+xml"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, SUBSCRIBE, NOTIFY, REGISTER"
# RFC 5389 §6: Binding request, zero-length, magic cookie.
STUN_HEADER = bytes.fromhex("000100002112a442")
CHANNEL_TYPE = "131"  # GB/T 28181-2016 Annex D Table D.1: camera
MANUFACTURER = "gbplatform-sim"
MAX_STALE_RETRIES = 3
_MAX_SEQUENCE = 9_999_999
# Live streams one device serves at once (an NVR serves several); beyond: 486.
MAX_PLAY_SESSIONS = 16
# RFC 3261 §13.3.1.4: a UAS gives up on the ACK after 64*T1.
ACK_TIMEOUT = 32.0


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Quirks:
    """Vendor behaviours, each a named switch so tests can mix them."""

    # eXosip (exosip-device-udp.log): two unauthenticated REGISTERs, then the
    # answer to the FIRST challenge's nonce.
    double_unauth_register: bool = False
    # eXosip writes Content-Length as "%5d" when there is a body ("Content-Length:   390").
    padded_content_length: bool = False
    # eXosip sends a 20-byte STUN binding request to the SIP port every 17 s (NAT keepalive).
    stun_keepalive: bool = False
    # eXosip numeric Call-IDs ("Call-ID: 764726777").
    numeric_call_id: bool = False
    # exosip-device-gb2312-label-utf8-body.log: encoding="GB2312" over UTF-8 bytes.
    gb_label_utf8_body: bool = False
    # pjsua2-device.log: Contact "<sip:...;ob>" (RFC 5626 §5) and an Allow header.
    contact_ob: bool = False
    allow_header: bool = False
    # Hikvision: a bare '&' in a channel name ("A&B").
    bare_ampersand: bool = False
    user_agent: str = f"gbplatform-sim/{__version__}"


VENDOR_QUIRKS: dict[str, Quirks] = {
    "generic": Quirks(),
    "exosip": Quirks(
        double_unauth_register=True,
        padded_content_length=True,
        stun_keepalive=True,
        numeric_call_id=True,
        user_agent="eXosip/5.3.0",
    ),
    "gb2312_utf8": Quirks(gb_label_utf8_body=True, user_agent="eXosip/5.3.0"),
    "pjsua": Quirks(contact_ob=True, allow_header=True, user_agent="pjsua2-gb-sim"),
    "hikvision": Quirks(bare_ampersand=True, user_agent="IP Camera"),
}

_CHARSETS = {"GB2312": "GB2312", "GBK": "GBK", "GB18030": "GB18030", "UTF-8": "UTF-8", "UTF8": "UTF-8"}


@dataclass(frozen=True)
class SimConfig:
    """Options of ``gbplatform simulate`` plus knobs for tests and benchmarks."""

    server: str = "127.0.0.1:5060"
    transport: str = "udp"
    devices: int = 1
    channels: int = 4
    first_id: str = "34020000001320000001"
    password: str = "12345678"
    domain: str = "3402000000"
    server_id: str = "34020000002000000001"
    local_host: str = "127.0.0.1"
    local_port_base: int = 0
    keepalive_interval: float = 60.0
    expires: int = 3600
    catalog_per_message: int = 2
    vendor: str = "generic"
    charset: str = "GB2312"
    name_prefix: str = "测试通道"
    duration: float = 0.0
    # Overrides the vendor's preset when given.
    quirks: Quirks | None = None
    # Seconds before retrying a rejected REGISTER (403, wrong password, 5xx).
    register_retry: float = 30.0
    # Seconds before retrying a REGISTER that got no answer at all.
    timeout_retry: float = 5.0
    stun_interval: float = 17.0
    # Lost keepalives in a row before re-registering (BasicParam HeartBeatCount).
    keepalive_max_misses: int = 3
    # Add a 6-digit civil-code node (GB/T 28181-2016 Annex D.1) to the catalog.
    civil_code_node: bool = False
    # Query answers (catalog MESSAGEs) in flight at once per device.
    max_in_flight: int = 4
    # Device i starts at i * ramp / devices seconds (0 = all at once).
    ramp: float = 0.0
    # How long stop() waits for the Expires: 0 answers.
    stop_timeout: float = 5.0
    status_interval: float = 5.0
    # Media answered to INVITE: the ZLMediaKit capture, or a clip made with PyAV (sim_clip).
    clip: str = "capture"
    audio: str = "g711a"
    # "ps" (GB/T 28181 Annex C) or "es": raw H.264/H.265 RTP (RFC 6184/7798), video only.
    payload: str = "ps"

    def __post_init__(self) -> None:
        if self.clip not in CLIP_CHOICES or self.audio not in AUDIO_CHOICES:
            raise ConfigError(f"simulate: clip must be one of {', '.join(CLIP_CHOICES)} and "
                              f"audio one of {', '.join(AUDIO_CHOICES)}")
        if self.payload not in PAYLOAD_CHOICES:
            raise ConfigError(f"simulate: payload must be one of {', '.join(PAYLOAD_CHOICES)}")
        if self.transport not in ("udp", "tcp"):
            raise ConfigError(f"simulate: transport must be udp or tcp, not {self.transport!r}")
        if self.vendor not in VENDOR_QUIRKS:
            raise ConfigError(
                f"simulate: unknown vendor {self.vendor!r} (one of {', '.join(VENDOR_QUIRKS)})"
            )
        if self.charset.upper() not in _CHARSETS:
            raise ConfigError(f"simulate: unsupported charset {self.charset!r}")
        if self.devices < 1 or self.channels < 0 or self.catalog_per_message < 1:
            raise ConfigError("simulate: devices and catalog-per-message must be >= 1, channels >= 0")
        if self.keepalive_interval <= 0 or self.expires < 1 or self.max_in_flight < 1:
            raise ConfigError("simulate: keepalive interval, expires and max in flight must be > 0")
        if not is_gb_id(self.first_id) or not is_gb_id(self.server_id):
            raise ConfigError("simulate: first-id and server-id must be 20-digit GB/T 28181 IDs")
        host, sep, port = self.server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"simulate: server must be HOST:PORT, not {self.server!r}")
        if not 0 <= self.local_port_base <= 65535 - (self.devices - 1):
            raise ConfigError(f"simulate: local port base {self.local_port_base} leaves no room")
        last = int(self.first_id[13:]) + self.devices - 1
        if last > _MAX_SEQUENCE:
            raise ConfigError(
                f"simulate: first-id {self.first_id} leaves room for "
                f"{_MAX_SEQUENCE + 1 - int(self.first_id[13:])} devices, not {self.devices}"
            )
        if self.channels and (last + 1) * self.channels - 1 > _MAX_SEQUENCE:
            raise ConfigError(
                f"simulate: channel IDs of device sequence {last} x {self.channels} channels "
                "need more than 7 digits; use a smaller first-id sequence"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> SimConfig:
        """Build from the ``gbplatform simulate`` namespace (``gbplatform/app/cli.py``)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in known and v is not None}
        values.update(overrides)
        return cls(**values)

    @property
    def server_host(self) -> str:
        return self.server.rpartition(":")[0].strip("[]")

    @property
    def server_port(self) -> int:
        return int(self.server.rpartition(":")[2])

    @property
    def device_ids(self) -> list[str]:
        """``first_id``, then +1 in the last 7 digits (GB/T 28181-2016 Annex D)."""
        head, seq = self.first_id[:13], int(self.first_id[13:])
        return [f"{head}{seq + i:07d}" for i in range(self.devices)]

    @property
    def effective_quirks(self) -> Quirks:
        return self.quirks if self.quirks is not None else VENDOR_QUIRKS[self.vendor]

    @property
    def body_charset(self) -> str:
        return _CHARSETS[self.charset.upper()]


def channel_id(device_id: str, index: int, channels: int) -> str:
    """ID of channel ``index`` (1-based) of ``device_id``: type 131 and a unique sequence.

    Digits 11-13 become 131 (camera, GB/T 28181-2016 Annex D Table D.1); the
    sequence packs the device's own 7-digit sequence with the channel index so
    channel IDs never collide across simulated devices.
    """
    seq = int(device_id[13:]) * channels + index - 1
    return f"{device_id[:10]}{CHANNEL_TYPE}{seq:07d}"


def stun_binding_request(rng: random.Random) -> bytes:
    """A 20-byte STUN Binding request with a random transaction ID (RFC 5389 §6)."""
    return STUN_HEADER + rng.getrandbits(96).to_bytes(12, "big")


@dataclass
class SimStats:
    """Counters for the status line and benchmarks; times are reactor seconds."""

    devices: int = 0
    registered: int = 0  # devices holding a registration now
    registrations: int = 0  # 2xx answers to REGISTER (first ones and refreshes)
    register_failures: int = 0
    keepalives_sent: int = 0
    keepalive_failures: int = 0
    queries_answered: int = 0
    messages_sent: int = 0
    first_register_at: float | None = None
    last_register_at: float | None = None
    all_registered_at: float | None = None


# --------------------------------------------------------------------------
# Links: one endpoint and its sockets
# --------------------------------------------------------------------------

FinalCallback = Callable[[Response | None], None]


class _PaddedRequest(Request):
    """A request serialised with eXosip's ``Content-Length: %5d`` (exosip-device-udp.log)."""

    def serialize(self) -> bytes:
        data = super().serialize()
        if not self.body:
            return data
        n = len(self.body)
        head, sep, body = data.partition(b"\r\n\r\n")
        head = head.replace(
            f"\r\nContent-Length: {n}".encode(), f"\r\nContent-Length: {n:>5}".encode()
        )
        return head + sep + body


class _Link:
    """One ``Endpoint`` + ``SipTransport`` serving one device or all of them."""

    def __init__(self, sim: Simulator, kind: str) -> None:
        self.sim = sim
        self.kind = kind  # "UDP" | "TCP"
        self.endpoint = Endpoint(rng=sim.rng, user_agent=sim.quirks.user_agent)
        self.transport = SipTransport(self.endpoint, sim.reactor, self.handle_events)
        self.dest: Addr = (kind, sim.config.server_host, sim.config.server_port)
        self.devices: dict[str, SimDevice] = {}
        self._owners: dict[str, SimDevice] = {}
        self._waiting: dict[ClientTransaction, FinalCallback] = {}

    def listen(self, host: str, port: int) -> None:
        self.transport.listen(host, port, (self.kind.lower(),))

    @property
    def local(self) -> tuple[str, int]:
        return self.endpoint.local[self.kind]

    def now(self) -> float:
        return self.transport.now()

    def send_request(self, req: Request, on_final: FinalCallback) -> None:
        tx = self.endpoint.send_request(req, self.dest, self.now())
        self._waiting[tx] = on_final
        self.transport.flush()

    def respond(self, tx: ServerTransaction, resp: Response) -> None:
        self.endpoint.respond(tx, resp, self.now())
        self.transport.flush()

    def send_raw(self, data: bytes) -> None:
        """A non-SIP datagram to the server's SIP port (the eXosip STUN keepalive)."""
        udp = self.transport.udp
        if udp is None:
            return
        try:
            udp.write(data, (self.dest[1], self.dest[2]))
        except OSError as e:
            log.warn("datagram to {host}:{port} failed: {error}", host=self.dest[1],
                     port=self.dest[2], error=str(e))

    def close(self) -> None:
        self.transport.stop()
        self._waiting.clear()

    def handle_events(self, events: list[EndpointEvent]) -> None:
        for event in events:
            try:
                self._handle(event)
            except Exception:  # noqa: BLE001 - one bad event must not starve the rest
                log.failure("simulator: handling {event!r} failed", event=event)

    def _handle(self, event: EndpointEvent) -> None:
        if isinstance(event, ResponseReceived):
            if event.response.status >= 200:
                callback = self._waiting.pop(event.transaction, None)
                if callback is not None:
                    callback(event.response)
        elif isinstance(event, TransactionTimedOut):
            callback = self._waiting.pop(event.transaction, None)
            if callback is not None:
                callback(None)
        elif isinstance(event, RequestReceived):
            device = self.route(event.request)
            if event.transaction is None:
                # ACK of our 2xx: it belongs to the dialog (RFC 3261 §13.3.1.4).
                if device is not None and event.request.method == "ACK":
                    device.handle_ack(event.request)
                return
            if device is None:
                self.respond(event.transaction, make_response(
                    event.request, 404, to_tag=self.endpoint.new_tag()))
                return
            device.handle_request(event.request, event.transaction)
        elif isinstance(event, MessageDropped):
            log.debug("simulator: dropped message from {peer}: {reason}",
                      peer=f"{event.source[1]}:{event.source[2]}", reason=event.reason)
        elif isinstance(event, CancelReceived):
            log.debug("simulator: INVITE cancelled")

    def attach(self, device: SimDevice) -> None:
        """Serve ``device``: requests for it or one of its channels come to it."""
        self.devices[device.device_id] = device
        for cid in device.channel_ids:
            self._owners[cid] = device
        device.link = self

    def route(self, req: Request) -> SimDevice | None:
        """The device a request is for: Request-URI user, else To user (§9.1 addressing)."""
        users: list[str] = []
        try:
            users.append(SipUri.parse(req.uri).user or "")
        except SipParseError:
            pass
        try:
            users.append(NameAddr.parse(req.headers.get("To") or "").user)
        except SipParseError:
            pass
        for user in users:
            device = self.devices.get(user) or self._owners.get(user)
            if device is not None:
                return device
        if len(self.devices) == 1:
            # A link of its own: whatever reaches this port is for its device.
            return next(iter(self.devices.values()))
        return None


# --------------------------------------------------------------------------
# One device
# --------------------------------------------------------------------------


class SimDevice:
    """One simulated device (IPC/NVR): registration, keepalive, query answers."""

    def __init__(self, sim: Simulator, index: int, device_id: str) -> None:
        self.sim = sim
        self.index = index
        self.device_id = device_id
        self.config = sim.config
        self.quirks = sim.quirks
        self.link: _Link | None = None
        self.registered = False
        self.paused = False
        self._stopped = True
        self._timers: dict[str, Any] = {}
        # Registration dialog-ish state (RFC 3261 §10.2: same Call-ID, rising CSeq).
        self._call_id = ""
        self._from_tag = ""
        self._cseq = 0
        self._attempt = 0
        self._attempt_expires = 0
        # What we ask for; raised by a 423 Min-Expires (RFC 3261 §10.2.8).
        self._wanted_expires = sim.config.expires
        self._unauth_sent = 0
        self._fresh_auth_sent = False
        self._stale_retries = 0
        self._first_challenge: list[str] | None = None
        self._challenges: list[str] | None = None
        self._auth_header = "Authorization"
        self._nc = 0
        self._failures_in_row = 0
        self._registered_until = 0.0
        self._refresh_at = 0.0
        self._misses = 0
        self._unregistering: Deferred[bool] | None = None
        # Out-of-dialog MESSAGEs.
        self._message_cseq = 0
        self._sn = 0
        self._outbox: deque[bytes] = deque()
        self._in_flight = 0
        self._items = self._build_catalog()
        # Live streams by Call-ID (GB/T 28181-2016 §9.2), at most MAX_PLAY_SESSIONS.
        self.plays: dict[str, _Play] = {}

    def __repr__(self) -> str:
        return f"<SimDevice {self.device_id} registered={self.registered} paused={self.paused}>"

    # -- public control ----------------------------------------------------
    def start(self) -> None:
        """Begin a fresh registration (new Call-ID)."""
        self._stopped = False
        self._new_registration()

    def pause(self) -> None:
        """Go silent: no keepalives, refreshes or answers, so the platform marks us offline."""
        if self.paused:
            return
        self.paused = True
        self._cancel_all()
        self._outbox.clear()
        if self.registered:
            self._schedule("expire", self._registered_until - self._now(), self._expired)

    def resume(self) -> None:
        """Come back: keepalive at once if still registered, else register again."""
        if not self.paused:
            return
        self.paused = False
        self._cancel("expire")
        if self._stopped:
            return
        if self.registered and self._now() < self._registered_until:
            self._send_keepalive()
            self._arm_running_timers()
        else:
            self._begin_attempt(self._wanted_expires)

    def unregister(self) -> Deferred[bool]:
        """REGISTER with Expires: 0 (RFC 3261 §10.2.2); fires True when the platform agreed."""
        self._stopped = True
        backing_off = "retry" in self._timers
        self._cancel_all()
        self._outbox.clear()
        if self._cseq == 0 or self.link is None or (backing_off and not self.registered):
            # Nothing registered to remove: never sent, or the last attempt failed.
            self._set_registered(False)
            return succeed(False)
        if self._unregistering is not None:
            return _chain(self._unregistering)
        self._unregistering = Deferred()
        d = _chain(self._unregistering)
        self._begin_attempt(0)
        return d

    @property
    def online(self) -> bool:
        return self.registered and not self.paused

    @property
    def device_name(self) -> str:
        return f"模拟设备{self.index + 1}"

    @property
    def channel_ids(self) -> list[str]:
        return [item.device_id or "" for item in self._items if item.parent_id == self.device_id]

    # -- timers ------------------------------------------------------------
    def _now(self) -> float:
        return float(self.sim.reactor.seconds())

    def _schedule(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel(name)
        self._timers[name] = self.sim.reactor.callLater(max(0.0, delay), self._fire, name, fn)

    def _fire(self, name: str, fn: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        fn()

    def _cancel(self, *names: str) -> None:
        for name in names:
            call = self._timers.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    def _cancel_all(self) -> None:
        self._cancel(*list(self._timers))

    # -- registration (GB/T 28181-2016 §9.1) -------------------------------
    def _new_registration(self) -> None:
        rng = self.sim.rng
        host = self.link.local[0] if self.link is not None else self.config.local_host
        if self.quirks.numeric_call_id:
            self._call_id = str(rng.randrange(10**8, 2**31))
            self._from_tag = str(rng.randrange(10**8, 2**31))
        else:
            self._call_id = f"{rng.getrandbits(64):016x}@{host}"
            self._from_tag = f"{rng.getrandbits(32):08x}"
        self._cseq = 0
        self._challenges = None
        self._set_registered(False)
        self._cancel("keepalive", "stun", "refresh")
        self._begin_attempt(self._wanted_expires)

    def _begin_attempt(self, expires: int) -> None:
        self._attempt += 1
        self._attempt_expires = expires
        self._unauth_sent = 0
        self._fresh_auth_sent = False
        self._stale_retries = 0
        self._first_challenge = None
        self._cancel("retry", "refresh")
        authorization: str | None = None
        if self._challenges is not None:
            # Refresh with the last nonce (RFC 2617 §3.3: a nonce may be reused).
            self._nc += 1
            try:
                authorization = self._authorize(self._challenges)
            except AuthError:
                self._challenges = None
        self._send_register(authorization)

    def _send_register(self, authorization: str | None) -> None:
        if self.link is None:
            return
        token = self._attempt
        req = self._register_request(authorization)
        if authorization is None:
            self._unauth_sent += 1
        self.link.send_request(req, lambda resp: self._on_register_answer(token, resp))

    def _register_request(self, authorization: str | None) -> Request:
        """REGISTER shaped like the eXosip/pjsua devices in the wire logs (§9.1.2.1)."""
        assert self.link is not None
        host, port = self.link.local
        contact = f"sip:{self.device_id}@{host}:{port}"
        if self.link.kind == "TCP":
            contact += ";transport=tcp"
        if self.quirks.contact_ob:
            contact += ";ob"
        self._cseq += 1
        req = self._request("REGISTER", self.sim.registrar_uri)
        h = req.headers
        h.add("From", f"<sip:{self.device_id}@{self.config.domain}>;tag={self._from_tag}")
        h.add("To", f"<sip:{self.device_id}@{self.config.domain}>")
        h.add("Call-ID", self._call_id)
        h.add("CSeq", f"{self._cseq} REGISTER")
        h.add("Contact", f"<{contact}>")
        if authorization is not None:
            h.add(self._auth_header, authorization)
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.quirks.user_agent)
        h.add("Expires", str(self._attempt_expires))
        if self.quirks.allow_header:
            h.add("Allow", ALLOW)
        return req

    def _authorize(self, challenges: Sequence[str]) -> str:
        """Answer the first challenge we can (RFC 8760 §2.4: several may be offered)."""
        error: AuthError | None = None
        for value in challenges:
            try:
                return authorization_for(
                    value, method="REGISTER", uri=self.sim.registrar_uri,
                    username=self.device_id, password=self.config.password,
                    rng=self.sim.rng, nc=max(1, self._nc),
                )
            except AuthError as e:
                error = e
        raise error or AuthError("no challenge")

    def _on_register_answer(self, token: int, resp: Response | None) -> None:
        if token != self._attempt:
            return  # a newer attempt superseded this one
        if resp is None:
            self._register_failed("no answer", self.config.timeout_retry)
        elif resp.status in (401, 407):
            self._on_challenge(resp)
        elif 200 <= resp.status < 300:
            self._on_registered(resp)
        elif resp.status == 423 and self._attempt_expires and self._retry_min_expires(resp):
            return
        else:
            if resp.status == 403:
                self._challenges = None
            self._register_failed(f"{resp.status} {resp.reason}", self.config.register_retry)

    def _retry_min_expires(self, resp: Response) -> bool:
        """RFC 3261 §10.2.8: 423 Interval Too Brief: ask again for Min-Expires."""
        try:
            minimum = expires_value(resp.headers.get("Min-Expires"))
        except SipParseError:
            return False
        if minimum is None or minimum <= self._attempt_expires:
            return False
        self._attempt_expires = self._wanted_expires = minimum
        authorization = None
        if self._challenges is not None:
            self._nc += 1
            authorization = self._authorize(self._challenges)
        self._send_register(authorization)
        return True

    def _on_challenge(self, resp: Response) -> None:
        """RFC 3261 §22.2: answer a 401/407 with credentials, once per fresh challenge."""
        name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenges = resp.headers.get_all(name)
        if not challenges:
            self._register_failed(f"{resp.status} without {name}", self.config.register_retry)
            return
        if _is_stale(challenges):
            self._stale_retries += 1
            if self._stale_retries > MAX_STALE_RETRIES:
                self._register_failed("stale nonce loop", self.config.register_retry)
                return
        elif self._fresh_auth_sent:
            self._challenges = None
            self._register_failed("credentials rejected", self.config.register_retry)
            return
        self._auth_header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        if (
            self.quirks.double_unauth_register
            and self._unauth_sent == 1
            and self._first_challenge is None
        ):
            # eXosip asks again without credentials, then answers the first nonce.
            self._first_challenge = challenges
            self._send_register(None)
            return
        chosen = self._first_challenge or challenges
        self._first_challenge = None
        self._challenges = chosen
        self._nc = 1
        try:
            authorization = self._authorize(chosen)
        except AuthError as e:
            self._register_failed(f"cannot answer the challenge: {e}", self.config.register_retry)
            return
        self._fresh_auth_sent = True
        self._send_register(authorization)

    def _on_registered(self, resp: Response) -> None:
        now = self._now()
        if self._attempt_expires == 0:
            self._set_registered(False)
            self._finish_unregister(True)
            return
        granted = self._granted_expires(resp)
        self._failures_in_row = 0
        self._registered_until = now + granted
        self._refresh_at = now + max(1.0, granted * 0.8)
        self._misses = 0
        self.sim.stats.registrations += 1
        self._set_registered(True)
        self._arm_running_timers()

    def _granted_expires(self, resp: Response) -> int:
        """Expires granted by the registrar (RFC 3261 §10.2.4), else what we asked."""
        try:
            value = expires_value(resp.headers.get("Expires"))
            if value is None:
                for contact in resp.headers.get_all("Contact"):
                    param = NameAddr.parse(contact).params.get("expires")
                    if param is not None:
                        value = expires_value(param)
                        break
        except SipParseError as e:
            log.info("device {device_id}: bad Expires in 200 ({error}); keeping {asked}",
                     device_id=self.device_id, error=e.reason, asked=self._attempt_expires)
            value = None
        return value if value else self._attempt_expires

    def _register_failed(self, reason: str, retry_in: float) -> None:
        if self._attempt_expires == 0:
            log.info("device {device_id}: unregister failed ({reason})",
                     device_id=self.device_id, reason=reason)
            self._set_registered(False)
            self._finish_unregister(False)
            return
        self.sim.stats.register_failures += 1
        self._failures_in_row += 1
        if self._failures_in_row == 1:
            log.warn("device {device_id}: REGISTER failed ({reason}); retrying in {delay:.0f} s",
                     device_id=self.device_id, reason=reason, delay=retry_in)
        else:
            log.debug("device {device_id}: REGISTER failed again ({reason})",
                      device_id=self.device_id, reason=reason)
        self._set_registered(False)
        self._cancel("keepalive", "stun", "refresh")
        if not self._stopped and not self.paused:  # resume() registers again itself
            self._schedule("retry", retry_in, lambda: self._begin_attempt(self._wanted_expires))

    def _finish_unregister(self, ok: bool) -> None:
        d, self._unregistering = self._unregistering, None
        if d is not None:
            d.callback(ok)

    def _set_registered(self, value: bool) -> None:
        if value == self.registered:
            return
        self.registered = value
        self.sim._registration_changed(self, value)

    def _expired(self) -> None:
        """The registration ran out while paused (RFC 3261 §10.2.1)."""
        self._set_registered(False)

    def _arm_running_timers(self) -> None:
        if self._stopped:
            return
        now = self._now()
        if self.paused:
            self._schedule("expire", self._registered_until - now, self._expired)
            return
        self._schedule("refresh", self._refresh_at - now,
                       lambda: self._begin_attempt(self._wanted_expires))
        if "keepalive" not in self._timers:
            self._schedule("keepalive", self.config.keepalive_interval, self._send_keepalive)
        if self.quirks.stun_keepalive and self.link is not None and self.link.kind == "UDP":
            if "stun" not in self._timers:
                self._schedule("stun", self.config.stun_interval, self._send_stun)

    # -- keepalive (GB/T 28181-2016 §9.6) ----------------------------------
    def _send_keepalive(self) -> None:
        if self._stopped or self.paused or not self.registered:
            return
        self._schedule("keepalive", self.config.keepalive_interval, self._send_keepalive)
        body = manscdp.encode_keepalive(self._next_sn(), self.device_id, charset=self.config.body_charset)
        self.sim.stats.keepalives_sent += 1
        self._send_message(self._label(body), self._on_keepalive_answer)

    def _on_keepalive_answer(self, resp: Response | None) -> None:
        if self._stopped or not self.registered:
            return
        if resp is not None and 200 <= resp.status < 300:
            self._misses = 0
            return
        self.sim.stats.keepalive_failures += 1
        if resp is not None and resp.status in (403, 404):
            # The platform restarted or forgot us: register again at once.
            log.info("device {device_id}: keepalive answered {status}; registering again",
                     device_id=self.device_id, status=resp.status)
            self._new_registration()
            return
        self._misses += 1
        if self._misses >= self.config.keepalive_max_misses:
            log.info("device {device_id}: {n} keepalives lost; registering again",
                     device_id=self.device_id, n=self._misses)
            self._new_registration()

    def _send_stun(self) -> None:
        if self._stopped or self.paused or self.link is None:
            return
        self._schedule("stun", self.config.stun_interval, self._send_stun)
        self.link.send_raw(stun_binding_request(self.sim.rng))

    # -- requests from the platform ----------------------------------------
    def handle_request(self, req: Request, tx: ServerTransaction) -> None:
        if self.paused:
            return  # silent on purpose: the platform must see us as gone
        method = req.method
        if method == "MESSAGE":
            self._handle_message(req, tx)
        elif method == "OPTIONS":
            self._reply(req, tx, 200, headers=[("Allow", ALLOW)])
        elif method == "INVITE":
            self._handle_invite(req, tx)
        elif method == "BYE":
            self._handle_bye(req, tx)
        elif method in ("INFO", "NOTIFY"):
            self._reply(req, tx, 481)
        else:
            self._reply(req, tx, 405, headers=[("Allow", ALLOW)])

    # -- live view (GB/T 28181-2016 §9.2.2) ----------------------------------
    def _handle_invite(self, req: Request, tx: ServerTransaction) -> None:
        """Answer a Play offer: 100, then 200 with our SDP; media starts on the ACK."""
        assert self.link is not None
        if ";tag=" in (req.headers.get("To") or "").replace(" ", ""):
            # A re-INVITE (RFC 3261 §14.2): we keep the session as it is.
            self._reply(req, tx, 488 if req.call_id in self.plays else 481)
            return
        if len(self.plays) >= MAX_PLAY_SESSIONS:
            self._reply(req, tx, 486)
            return
        trying = make_response(req, 100)
        trying.headers.add("User-Agent", self.quirks.user_agent)
        self.link.respond(tx, trying)
        host = self.link.local[0] or self.config.local_host
        try:
            offer = sdp.parse(req.body)
            answer, sender = self.sim.media.answer(offer, device_id=self.device_id, local_ip=host)
        except sdp.SdpError as e:
            log.info("device {device_id}: INVITE refused: {reason}",
                     device_id=self.device_id, reason=e.reason)
            self._reply(req, tx, 488)
            return
        except (OSError, ValueError) as e:
            log.error("device {device_id}: cannot serve media: {error}",
                      device_id=self.device_id, error=str(e))
            self._reply(req, tx, 500)
            return
        contact = f"sip:{self.device_id}@{host}:{self.link.local[1]}"
        if self.link.kind == "TCP":
            contact += ";transport=tcp"
        resp = make_response(req, 200, to_tag=self.link.endpoint.new_tag(), headers=[
            ("Contact", f"<{contact}>"), ("Content-Type", "application/sdp"),
            ("User-Agent", self.quirks.user_agent)], body=answer.serialize())
        try:
            dialog = Dialog.from_uas(req, resp)
        except (SipParseError, LocalSipError) as e:
            sender.stop()
            log.info("device {device_id}: INVITE without a usable dialog: {error}",
                     device_id=self.device_id, error=str(e))
            self._reply(req, tx, 400)
            return
        call_id = req.call_id
        timer = self.sim.reactor.callLater(ACK_TIMEOUT, self._ack_timed_out, call_id)
        self.plays[call_id] = _Play(dialog, sender, timer)
        self.link.respond(tx, resp)

    def handle_ack(self, req: Request) -> None:
        play = self.plays.get(req.call_id)
        if play is None or not play.dialog.matches(req):
            log.debug("device {device_id}: ACK outside any dialog", device_id=self.device_id)
            return
        if play.ack_timer is not None and play.ack_timer.active():
            play.ack_timer.cancel()
        play.ack_timer = None
        play.sender.start()

    def _handle_bye(self, req: Request, tx: ServerTransaction) -> None:
        """RFC 3261 §15.1.2: 200 the BYE of a known dialog and stop its media."""
        play = self.plays.get(req.call_id)
        status = 481 if play is None else play.dialog.receive_request(req)
        if status is not None:
            self._reply(req, tx, status)
            return
        self._end_play(req.call_id)
        self._reply(req, tx, 200)

    def _ack_timed_out(self, call_id: str) -> None:
        log.info("device {device_id}: no ACK for call {call_id}; dropping the stream",
                 device_id=self.device_id, call_id=call_id)
        play = self.plays.get(call_id)
        if play is not None:
            play.ack_timer = None
        self._end_play(call_id)

    def _end_play(self, call_id: str) -> None:
        play = self.plays.pop(call_id, None)
        if play is None:
            return
        if play.ack_timer is not None and play.ack_timer.active():
            play.ack_timer.cancel()
        play.sender.stop()

    def stop_media(self) -> None:
        for call_id in list(self.plays):
            self._end_play(call_id)

    def hang_up(self) -> int:
        """End every live stream with our own BYE (RFC 3261 §15.1.1), as a camera does when it stops.

        Returns the number of BYEs sent; streams without a confirmed dialog just stop.
        """
        sent = 0
        for call_id, play in list(self.plays.items()):
            if self.link is not None and play.ack_timer is None and not play.dialog.terminated:
                try:
                    bye = play.dialog.new_request("BYE", headers=[("User-Agent", self.quirks.user_agent)])
                except LocalSipError as e:
                    log.info("device {device_id}: cannot send BYE: {error}", device_id=self.device_id, error=str(e))
                else:
                    self.link.send_request(bye, _ignore_answer)
                    sent += 1
            self._end_play(call_id)
        return sent

    def _reply(self, req: Request, tx: ServerTransaction, status: int,
               headers: Sequence[tuple[str, str]] = ()) -> None:
        assert self.link is not None
        resp = make_response(req, status, to_tag=self.link.endpoint.new_tag(), headers=headers)
        resp.headers.add("User-Agent", self.quirks.user_agent)
        self.link.respond(tx, resp)

    def _handle_message(self, req: Request, tx: ServerTransaction) -> None:
        """GB/T 28181-2016 §9.5.1: 200 the MESSAGE, then answer in a MESSAGE of our own."""
        if "manscdp" not in req.content_type:
            self._reply(req, tx, 415, headers=[("Accept", MANSCDP_TYPE)])
            return
        try:
            msg = manscdp.decode(req.body, default_charset=self.config.body_charset)
        except manscdp.ManscdpError as e:
            log.info("device {device_id}: bad MANSCDP body: {reason}",
                     device_id=self.device_id, reason=str(e))
            self._reply(req, tx, 400)
            return
        self._reply(req, tx, 200)
        if msg.kind != "Query":
            return
        bodies = self._answer_query(msg)
        if bodies:
            self.sim.stats.queries_answered += 1
            self._outbox.extend(bodies)
            self._pump()

    def _answer_query(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        cmd = msg.cmd_type.lower()
        sn = msg.sn
        charset = self._out_charset
        if cmd == "catalog":
            return self._catalog_bodies(sn)
        if cmd == "deviceinfo":
            return [self._label(manscdp.encode_device_info_response(
                sn, self.device_id, device_name=self.device_name,
                manufacturer=MANUFACTURER, model="SIM-NVR" if self.config.channels > 1 else "SIM-IPC",
                firmware=f"V{__version__}", channel=self.config.channels, charset=charset,
            ))]
        if cmd == "devicestatus":
            return [self._label(manscdp.encode_device_status_response(
                sn, self.device_id, online="ONLINE", status="OK", encode="ON", record="OFF",
                device_time=datetime.fromtimestamp(self._now()), charset=charset,
            ))]
        if cmd == "configdownload":
            types = [t.strip().lower() for t in msg.fields.get("ConfigType", "").split("/")]
            if "basicparam" not in types:
                return []
            param = manscdp.BasicParam(
                name=self.device_name,
                device_id=self.device_id,
                sip_server_id=self.config.server_id,
                sip_server_ip=self.config.server_host,
                sip_server_port=self.config.server_port,
                domain_name=self.config.domain,
                expiration=self.config.expires,
                heart_beat_interval=int(self.config.keepalive_interval),
                heart_beat_count=self.config.keepalive_max_misses,
            )
            return [self._label(manscdp.encode_config_download_response(
                sn, self.device_id, param, charset=charset))]
        log.debug("device {device_id}: no answer to query {cmd}",
                  device_id=self.device_id, cmd=msg.cmd_type)
        return []

    def _build_catalog(self) -> list[manscdp.CatalogItem]:
        host = self.config.local_host
        items: list[manscdp.CatalogItem] = []
        civil = self.device_id[:6]
        if self.config.civil_code_node:
            items.append(manscdp.CatalogItem(device_id=civil, name=f"行政区划{civil}"))
        for n in range(1, self.config.channels + 1):
            name = f"{self.config.name_prefix}{n}"
            if self.quirks.bare_ampersand and n == 1:
                name = "A&B"
            items.append(manscdp.CatalogItem(
                device_id=channel_id(self.device_id, n, self.config.channels),
                name=name, manufacturer=MANUFACTURER, model="SIM-IPC", owner="Owner",
                civil_code=civil, address="Address", parental="0", parent_id=self.device_id,
                safety_way="0", register_way="1", secrecy="0", ip_address=host, port="0",
                status="ON",
            ))
        return items

    def _catalog_bodies(self, sn: int) -> list[bytes]:
        """GB/T 28181-2016 §A.2.6.4: ``catalog_per_message`` items per MESSAGE, SumNum = all."""
        per = self.config.catalog_per_message
        total = len(self._items)
        chunks = [self._items[i:i + per] for i in range(0, total, per)] or [[]]
        bodies = []
        for chunk in chunks:
            body = manscdp.encode_catalog_response(
                sn, self.device_id, total, chunk, charset=self._out_charset)
            if self.quirks.bare_ampersand:
                body = body.replace(b"<Name>A&amp;B</Name>", b"<Name>A&B</Name>")
            bodies.append(self._label(body))
        return bodies

    @property
    def _out_charset(self) -> str:
        return "UTF-8" if self.quirks.gb_label_utf8_body else self.config.body_charset

    def _label(self, body: bytes) -> bytes:
        """The gb2312_utf8 quirk: UTF-8 bytes under a GB2312 declaration."""
        if self.quirks.gb_label_utf8_body:
            return body.replace(b'encoding="UTF-8"', b'encoding="GB2312"', 1)
        return body

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    # -- MESSAGEs to the platform -------------------------------------------
    def _pump(self) -> None:
        while self._in_flight < self.config.max_in_flight and self._outbox:
            self._in_flight += 1
            self._send_message(self._outbox.popleft(), self._on_answer_delivered)

    def _on_answer_delivered(self, resp: Response | None) -> None:
        self._in_flight -= 1
        if resp is None or resp.status >= 300:
            log.debug("device {device_id}: query answer {outcome}", device_id=self.device_id,
                      outcome="lost" if resp is None else f"refused {resp.status}")
        if not self.paused:
            self._pump()

    def _send_message(self, body: bytes, on_final: FinalCallback) -> None:
        """An out-of-dialog MESSAGE to the platform (GB/T 28181-2016 §9.5, §9.6)."""
        if self.link is None:
            return
        rng = self.sim.rng
        self._message_cseq += 1
        req = self._request("MESSAGE", self.sim.registrar_uri)
        h = req.headers
        tag = str(rng.randrange(10**8, 2**31)) if self.quirks.numeric_call_id else f"{rng.getrandbits(32):08x}"
        h.add("From", f"<sip:{self.device_id}@{self.config.domain}>;tag={tag}")
        h.add("To", f"<{self.sim.registrar_uri}>")
        if self.quirks.numeric_call_id:
            h.add("Call-ID", str(rng.randrange(10**8, 2**31)))
        else:
            h.add("Call-ID", f"{rng.getrandbits(64):016x}@{self.link.local[0]}")
        h.add("CSeq", f"{self._message_cseq} MESSAGE")
        h.add("Content-Type", MANSCDP_TYPE)
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.quirks.user_agent)
        req.body = body
        self.sim.stats.messages_sent += 1
        self.link.send_request(req, on_final)

    def _request(self, method: str, uri: str) -> Request:
        cls = _PaddedRequest if self.quirks.padded_content_length else Request
        return cls(method=method, uri=uri)


@dataclass
class _Play:
    """One live stream of a device: its dialog and sender (GB/T 28181-2016 §9.2.2)."""

    dialog: Dialog
    sender: MediaSender
    ack_timer: Any


def _ignore_answer(resp: Response | None) -> None:
    """A BYE's answer changes nothing: the dialog ended when we sent it (RFC 3261 §15.1.1)."""


def _is_stale(challenges: Sequence[str]) -> bool:
    for value in challenges:
        try:
            _, params = parse_auth_header(value)
        except AuthError as e:
            log.info("unparsable challenge {value!r}: {error}", value=value[:80], error=str(e))
            continue
        if params.get("stale", "").lower() == "true":
            return True
    return False


def _chain(d: Deferred[bool]) -> Deferred[bool]:
    """A new Deferred firing with ``d``'s result, leaving ``d`` untouched for others."""
    out: Deferred[bool] = Deferred()

    def relay(result: bool) -> bool:
        out.callback(result)
        return result

    d.addCallback(relay)
    return out


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


class Simulator:
    """N devices sharing one reactor; see the module docstring."""

    def __init__(self, config: SimConfig, reactor: Any, rng: random.Random,
                 media: SimMedia | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.rng = rng
        self.media = media if media is not None else SimMedia(
            reactor, rng, clip_loader=clip_loader(config.clip, config.audio,
                                                  payload=config.payload))
        self.quirks = config.effective_quirks
        self.stats = SimStats(devices=config.devices)
        self.registrar_uri = f"sip:{config.server_id}@{config.server}"
        self.devices: list[SimDevice] = [
            SimDevice(self, i, did) for i, did in enumerate(config.device_ids)
        ]
        self.links: list[_Link] = []
        self.started_at: float | None = None
        self._waiters: list[tuple[Deferred[float], Any]] = []
        self._starts: list[Any] = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Open the sockets and start registering (spread over ``ramp`` seconds)."""
        cfg = self.config
        kind = cfg.transport.upper()
        self.started_at = float(self.reactor.seconds())
        if kind == "UDP" and cfg.local_port_base == 0:
            shared = _Link(self, kind)
            shared.listen(cfg.local_host, 0)
            self.links.append(shared)
            for device in self.devices:
                shared.attach(device)
        else:
            for device in self.devices:
                link = _Link(self, kind)
                port = cfg.local_port_base + device.index if cfg.local_port_base else 0
                link.listen(cfg.local_host, port)
                link.attach(device)
                self.links.append(link)
        log.info(
            "simulating {n} device(s) over {transport} to {server} as vendor {vendor}",
            n=len(self.devices), transport=kind, server=cfg.server, vendor=cfg.vendor,
        )
        for device in self.devices:
            delay = cfg.ramp * device.index / len(self.devices) if cfg.ramp else 0.0
            if delay:
                self._starts.append(self.reactor.callLater(delay, device.start))
            else:
                device.start()

    def stop(self) -> Deferred[None]:
        """Unregister every device (Expires: 0), then close the sockets.

        Waits at most ``stop_timeout`` for the answers.
        """
        for call in self._starts:
            if call.active():
                call.cancel()
        self._starts.clear()
        for device in self.devices:
            device.hang_up()
        done: Deferred[None] = Deferred()
        pending = DeferredList([d.unregister() for d in self.devices], consumeErrors=True)

        def finish(_: object = None) -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            for device in self.devices:
                device.stop_media()
            for link in self.links:
                link.close()
            self.links.clear()
            for waiter, call in self._waiters:
                if call.active():
                    call.cancel()
                if not waiter.called:
                    waiter.errback(RuntimeError("simulator stopped"))
            self._waiters.clear()
            done.callback(None)

        timer = self.reactor.callLater(self.config.stop_timeout, finish)
        pending.addBoth(finish)
        return done

    def wait_all_registered(self, timeout: float) -> Deferred[float]:
        """Fires with the reactor time at which every device was registered at once."""
        d: Deferred[float] = Deferred()
        if self.stats.registered == len(self.devices):
            d.callback(float(self.reactor.seconds()))
            return d

        def expire() -> None:
            self._waiters[:] = [(w, c) for w, c in self._waiters if w is not d]
            d.errback(TimeoutError(
                f"{self.stats.registered}/{len(self.devices)} devices registered after {timeout} s"
            ))

        self._waiters.append((d, self.reactor.callLater(timeout, expire)))
        return d

    # -- device callbacks ----------------------------------------------------
    def _registration_changed(self, device: SimDevice, registered: bool) -> None:
        now = float(self.reactor.seconds())
        stats = self.stats
        if not registered:
            stats.registered -= 1
            return
        stats.registered += 1
        if stats.first_register_at is None:
            stats.first_register_at = now
        stats.last_register_at = now
        log.debug("device {device_id} registered", device_id=device.device_id)
        if stats.registered == len(self.devices):
            if stats.all_registered_at is None:
                stats.all_registered_at = now
            waiters, self._waiters = self._waiters, []
            for waiter, call in waiters:
                if call.active():
                    call.cancel()
                waiter.callback(now)

    # -- reporting ------------------------------------------------------------
    @property
    def online(self) -> int:
        return sum(1 for d in self.devices if d.online)

    def status_line(self) -> str:
        s = self.stats
        elapsed = float(self.reactor.seconds()) - (self.started_at or 0.0)
        return (
            f"sim t={elapsed:.1f}s registered={s.registered}/{len(self.devices)} "
            f"online={self.online} failures={s.register_failures} "
            f"keepalives={s.keepalives_sent} keepalive_failures={s.keepalive_failures} "
            f"queries={s.queries_answered} messages={s.messages_sent}"
        )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def raise_fd_limit() -> int | None:
    """Raise RLIMIT_NOFILE to the hard limit (one fd per TCP device); returns the new soft limit."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warn("cannot raise the open-files limit from {soft} to {target}: {error}",
                 soft=soft, target=target, error=str(e))
        return soft
    return target


def run(
    config: SimConfig,
    reactor: Any,
    rng: random.Random,
    out: IO[str],
    on_started: Callable[[Simulator], None] | None = None,
) -> int:
    """Run the simulator on ``reactor`` until ``duration`` elapses or the reactor is stopped.

    Prints a status line every ``status_interval`` seconds and once at the end;
    devices are unregistered during shutdown (a "before shutdown" trigger, so
    SIGINT handled by the reactor also unregisters). Returns 1 if the sockets
    could not be opened, else 0.
    """
    from twisted.internet.error import ReactorNotRunning
    from twisted.internet.task import LoopingCall

    sim = Simulator(config, reactor, rng)
    exit_code = 0
    announced = False

    def status() -> None:
        nonlocal announced
        s = sim.stats
        if s.all_registered_at is not None and not announced:
            announced = True
            took = s.all_registered_at - (sim.started_at or 0.0)
            out.write(f"sim all {len(sim.devices)} devices registered in {took:.2f} s\n")
        out.write(sim.status_line() + "\n")
        out.flush()

    ticker = LoopingCall(status)
    ticker.clock = reactor

    def stop_reactor() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already shutting down (SIGINT before the duration ran out)

    def started() -> None:
        nonlocal exit_code
        try:
            if config.clip != "capture" or config.payload != "ps":
                sim.media.preload()  # encode/packetize (or read the cache) before any INVITE waits
            sim.start()
        except Exception as e:  # noqa: BLE001 - CannotListenError and friends, reported below
            log.error("simulator cannot start: {error}", error=str(e))
            out.write(f"sim: cannot start: {e}\n")
            out.flush()
            exit_code = 1
            stop_reactor()
            return
        ticker.start(config.status_interval, now=False)
        if on_started is not None:
            on_started(sim)
        if config.duration > 0:
            reactor.callLater(config.duration, stop_reactor)

    def shutting_down() -> Deferred[None] | None:
        if ticker.running:
            ticker.stop()
        if sim.started_at is None:
            return None
        return sim.stop()

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    reactor.run()
    if exit_code == 0:
        status()
    return exit_code


def _install_reactor() -> None:
    """Prefer epoll (thousands of sockets); must run before the reactor is imported."""
    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        from twisted.internet import epollreactor
    except ImportError:
        return
    install: Callable[[], None] = epollreactor.install
    install()


def _resolve(config: SimConfig) -> SimConfig:
    """Twisted's UDP write wants an IP address: resolve a server host name once."""
    import ipaddress
    import socket

    host = config.server_host
    try:
        ipaddress.ip_address(host)
        return config
    except ValueError:
        pass
    try:
        ip = socket.gethostbyname(host)
    except OSError as e:
        raise ConfigError(f"simulate: cannot resolve server {host!r}: {e}") from None
    return replace(config, server=f"{ip}:{config.server_port}")


def main(args: argparse.Namespace) -> int:
    """``gbplatform simulate``: see ``gbplatform/app/cli.py`` for the options."""
    config = _resolve(SimConfig.from_args(args))
    from twisted.logger import globalLogBeginner

    from gbplatform.app.config import LogConfig
    from gbplatform.app.logs import make_log_observer

    globalLogBeginner.beginLoggingTo(
        [make_log_observer(LogConfig(level="info", format="text"), sys.stderr)],
        redirectStandardIO=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _install_reactor()
    from twisted.internet import reactor

    limit = raise_fd_limit()
    log.info("open-files limit {limit}", limit=limit)
    reactor.callWhenRunning(_install_signal_handlers, reactor)
    return run(config, reactor, random.Random(), sys.stdout, on_started=lambda sim: _hang_up_on_sigusr1(reactor, sim))


def _hang_up_on_sigusr1(reactor: Any, sim: Simulator) -> None:
    """SIGUSR1: every device ends its live streams with a BYE (tests the platform's device-BYE path)."""
    import signal

    def hang_up() -> None:
        sent = sum(device.hang_up() for device in sim.devices)
        log.info("SIGUSR1: sent {n} BYE(s)", n=sent)

    signal.signal(signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(hang_up))


def _install_signal_handlers(reactor: Any) -> None:
    """SIGINT/SIGTERM stop the reactor, which unregisters the devices first.

    Installed explicitly, once the reactor runs: Twisted leaves SIGINT alone
    when it was ignored at start (a background job of a non-interactive
    shell), and the simulator must still stop cleanly on it.
    """
    import signal

    from twisted.internet.error import ReactorNotRunning

    def stop(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        log.info("received {signal}; unregistering and stopping", signal=name)

        def stop_reactor() -> None:
            try:
                reactor.stop()
            except ReactorNotRunning:
                log.info("already stopping")

        reactor.callFromThread(stop_reactor)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

