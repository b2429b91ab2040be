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

The device side of the protocol is ``sip.useragent``, shared with the
upward cascade: ``RegistrationSession`` (REGISTER with digest, refresh,
back-off, keepalive schedule, re-register when keepalives fail; its module
docstring draws the state diagram), ``QueryAnswers`` (one answer builder per
query CmdType) and ``invite_refusal``/``answer_invite`` (a Play INVITE around
our SDP answer hook). A ``SimDevice`` is the Twisted adapter: it feeds the
session the reactor's time and the final answers, sends the REGISTERs it
asks for, turns ``KeepaliveDue`` into a keepalive MESSAGE, counts events in
``SimStats`` and keeps one reactor timer at the session's ``next_timer()``.
Retries wait a fixed ``register_retry``/``timeout_retry`` (a ``RetryPolicy``
with factor 1), as the CLI options promise.

Vendor behaviour is a set of named flags (``Quirks``) chosen by ``vendor``,
copied from the wire logs in ``/work/shared/vectors/sip-wire``.

Time comes from the injected reactor (``seconds()``/``callLater``) and
randomness from the injected ``random.Random``, so tests run the simulator
against ``twisted.internet.task.Clock`` without sockets.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from functools import partial
from typing import IO, Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from gbplatform import __version__
from gbplatform.app.config import ConfigError
from gbplatform.app.reactor import install_reactor
from gbplatform.simulator.clip import AUDIO_CHOICES, CLIP_CHOICES, PAYLOAD_CHOICES, clip_loader
from gbplatform.simulator.config_state import defaults as config_2022_defaults
from gbplatform.simulator.dialect import (
    IFRAME_SPELLINGS,
    SIM_GB_VERSIONS,
    DialectAnswers,
    registration_headers,
)
from gbplatform.simulator.maintenance import SimMaintenance
from gbplatform.simulator.media import MediaSender, SimMedia
from gbplatform.simulator.notifier import SimNotifier
from gbplatform.simulator.ptz_state import PtzState
from gbplatform.simulator.reports import SimReports, alarm_on_sigusr2
from gbplatform.simulator.snapshot_upload import SimSnapshotUpload
from sip import manscdp, sdp
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
from sip.headers import NameAddr
from sip.message import Request, Response, make_response
from sip.transaction import ClientTransaction, ServerTransaction
from sip.transport import SipTransport
from sip.uri import SipUri, is_gb_id
from sip.useragent import (
    Deregistered,
    KeepaliveDue,
    KeepaliveFailed,
    MessageFactory,
    NatKeepaliveDue,
    PtzFrontEnd,
    QueryAnswers,
    Registered,
    RegistrationConfig,
    RegistrationFailed,
    RegistrationSession,
    RetryPolicy,
    UaEvent,
    Unregistered,
    answer_invite,
    control_command,
    invite_refusal,
)

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

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, SUBSCRIBE, NOTIFY, REGISTER"
# RFC 5389 §6: Binding request, zero-length, magic cookie.
STUN_HEADER = bytes.fromhex("000100002112a442")
CHANNEL_TYPE = "131"  # GB/T 28181-2016 Annex D Table D.1: camera
MANUFACTURER = "gbplatform-sim"
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
    # The GB/T 28181 edition spoken (gbplatform/simulator/dialect.py): "2022" | "2016"; and the I-frame
    # element known: "any", or only "IFameCmd" / "IFrameCmd" (the other is answered ERROR).
    gb_version: str = "2022"
    iframe_spelling: str = "any"
    # Seconds between catalog changes sent (OFF, ON, ADD, DEL of a channel, §A.2.5.4; gbplatform/simulator/
    # notifier.py); 0: only on SIGHUP.
    catalog_change_interval: float = 0.0
    # Seconds between alarms / mobile positions each device reports (gbplatform/simulator/reports.py);
    # 0: none (SIGUSR2 still sends one alarm from every device).
    alarm_interval: float = 0.0
    position_interval: float = 0.0
    # Unix SOCK_SEQPACKET socket of a process that sends the media (gbplatform/simulator/external.py,
    # benchmarks/ps_sender.c): INVITEs are answered here, the RTP is sent there. "": we send it.
    external_sender: str = ""

    def __post_init__(self) -> None:
        if self.clip not in CLIP_CHOICES or self.audio not in AUDIO_CHOICES:
            raise ConfigError(f"simulate: clip must be one of {', '.join(CLIP_CHOICES)} and "
                              f"audio one of {', '.join(AUDIO_CHOICES)}")
        if self.payload not in PAYLOAD_CHOICES:
            raise ConfigError(f"simulate: payload must be one of {', '.join(PAYLOAD_CHOICES)}")
        if self.gb_version not in SIM_GB_VERSIONS or self.iframe_spelling not in IFRAME_SPELLINGS:
            raise ConfigError(f"simulate: gb-version must be one of {', '.join(SIM_GB_VERSIONS)} and "
                              f"iframe-spelling one of {', '.join(IFRAME_SPELLINGS)}")
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


_P = TypeVar("_P", manscdp.BasicParam, manscdp.VideoParamOpt)


def channel_id(device_id: str, index: int, channels: int) -> str:
    """ID of channel ``index`` (1-based) of ``device_id``: type 131 and a unique sequence.

    Digits 11-13 become 131 (camera, GB/T 28181-2016 Annex D Table D.1); the
    sequence packs the device's own 7-digit sequence with the channel index so
    channel IDs never collide across simulated devices.
    """
    seq = int(device_id[13:]) * channels + index - 1
    return f"{device_id[:10]}{CHANNEL_TYPE}{seq:07d}"


def _registration_config(sim: Simulator, device_id: str) -> RegistrationConfig:
    """What ``sip.useragent`` needs of the options: retries at a fixed wait, as the CLI says."""
    cfg, quirks = sim.config, sim.quirks
    stun = quirks.stun_keepalive and cfg.transport == "udp"
    return RegistrationConfig(
        user=device_id,
        domain=cfg.domain,
        registrar_uri=sim.registrar_uri,
        password=cfg.password,
        expires=cfg.expires,
        user_agent=quirks.user_agent,
        keepalive_interval=cfg.keepalive_interval,
        keepalive_max_misses=cfg.keepalive_max_misses,
        nat_keepalive_interval=cfg.stun_interval if stun else None,
        retry=RetryPolicy(rejected=cfg.register_retry, no_answer=cfg.timeout_retry,
                          factor=1.0, cap=math.inf),
        numeric_ids=quirks.numeric_call_id,
        double_unauth_register=quirks.double_unauth_register,
        extra_headers=((("Allow", ALLOW),) if quirks.allow_header else ()) + registration_headers(cfg.gb_version),
    )


def _overlay(base: _P, update: _P) -> _P:
    """``base`` with the fields ``update`` sets (not None): a DeviceConfig changes only what it names."""
    return replace(base, **{f.name: getattr(update, f.name) for f in fields(update)
                            if getattr(update, f.name) is not None})


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
    """One simulated device (IPC/NVR): the Twisted side of ``sip.useragent``.

    Registration and the keepalive schedule are ``sip.useragent.RegistrationSession``;
    this class feeds it the reactor's time and the answers, sends what it
    asks, turns its events into MESSAGEs, counters and log lines, and keeps
    one reactor timer at its ``next_timer()``.
    """

    def __init__(self, sim: Simulator, index: int, device_id: str) -> None:
        self.sim = sim
        self.index = index
        self.device_id = device_id
        self.config = sim.config
        self.quirks = sim.quirks
        self.link: _Link | None = None
        self.registered = False
        self.ua = RegistrationSession(
            _registration_config(sim, device_id), sim.rng, self._contact, self._call_id_host
        )
        self._timer: Any = None
        self._timer_at = 0.0
        self._unregistering: Deferred[bool] | None = None
        # Out-of-dialog MESSAGEs.
        self.messages = MessageFactory(
            self.ua.config, sim.rng, self._call_id_host,
            _PaddedRequest if self.quirks.padded_content_length else Request,
        )
        self._outbox: deque[bytes] = deque()
        self._in_flight = 0
        self._items = self._build_catalog()
        # PTZ commands received and presets kept (GB/T 28181-2016 A.3): the e2e tests read them from the log.
        self.ptz = PtzFrontEnd(lambda: self._out_charset)
        # Where each channel's head points, its cruise tracks, target tracking (GB/T 28181-2022 queries).
        self.ptz_state = PtzState(self.ptz, self._now, lambda: self._out_charset, self._label)
        # What DeviceConfig set (§A.2.3.2), answered back by ConfigDownload over the configured values.
        self.basic_set = manscdp.BasicParam()
        self.video_param_opt = manscdp.VideoParamOpt(download_speed="1/2/4", resolution="5/6")
        self.config_2022 = config_2022_defaults(self.device_name)  # the 2022 types (config_state.py)
        # SD cards and firmware (GB/T 28181-2022): an NVR has two cards; DeviceInfo reports its firmware.
        self.maintenance = SimMaintenance(
            device_id=device_id, reactor=sim.reactor, firmware=f"V{__version__}", charset=lambda: self._out_charset,
            label=self._label, send=self._notify, next_sn=self.messages.next_sn,
            cards=2 if self.config.channels > 1 else 1)
        # Pictures taken and uploaded on SnapShotConfig (GB/T 28181-2022 §9.14).
        self.snapshot_upload = SimSnapshotUpload(
            device_id=device_id, reactor=sim.reactor, charset=lambda: self._out_charset, label=self._label,
            send=self._notify, next_sn=self.messages.next_sn)
        # Alarms and positions reported on a schedule or on SIGUSR2, always through send_report.
        self.reports = SimReports(
            device_id=device_id, index=index, reactor=sim.reactor, send=self.send_report,
            next_sn=self.messages.next_sn, charset=lambda: self._out_charset, label=self._label,
            source=lambda: (self.channel_ids or [self.device_id])[0], online=lambda: self.online,
            alarm_interval=self.config.alarm_interval, position_interval=self.config.position_interval)
        self.queries = self._query_answers()
        # The platform's subscriptions to us (RFC 6665, §9.11): NOTIFYs of reports and catalog changes.
        self.notifier = SimNotifier(self)
        # Live streams by Call-ID (GB/T 28181-2016 §9.2), at most MAX_PLAY_SESSIONS.
        self.plays: dict[str, _Play] = {}

    def __repr__(self) -> str:
        return f"<SimDevice {self.device_id} registered={self.registered} paused={self.paused}>"

    # -- public control ----------------------------------------------------
    def start(self) -> None:
        """Begin a fresh registration (new Call-ID)."""
        self.ua.start(self._now())
        self._drive()
        self.reports.start()

    def pause(self) -> None:
        """Go silent: no keepalives, refreshes or answers, so the platform marks us offline."""
        if self.paused:
            return
        self.ua.pause(self._now())
        self._outbox.clear()
        self._drive()

    def resume(self) -> None:
        """Come back: keepalive at once if still registered, else register again."""
        self.ua.resume(self._now())
        self._drive()

    def unregister(self) -> Deferred[bool]:
        """REGISTER with Expires: 0 (RFC 3261 §10.2.2); fires True when the platform agreed."""
        self._outbox.clear()
        pending = self.ua.unregister(self._now())
        if not pending or self.link is None:
            # Nothing registered to remove: never sent, or the last attempt failed.
            self._drive()
            return succeed(False)
        if self._unregistering is None:
            self._unregistering = Deferred()
        d = _chain(self._unregistering)
        self._drive()
        return d

    @property
    def paused(self) -> bool:
        return self.ua.paused

    @property
    def online(self) -> bool:
        return self.registered and not self.paused

    @property
    def device_name(self) -> str:
        return f"模拟设备{self.index + 1}"

    @property
    def channel_ids(self) -> list[str]:
        return [item.device_id or "" for item in self._items if item.parent_id == self.device_id]

    # -- the adapter: feed the core, act on its output, re-arm one timer ------
    def _now(self) -> float:
        return float(self.sim.reactor.seconds())

    def _contact(self) -> str:
        """Our Contact URI as the wire logs show it (§9.1.2.1), from the bound socket."""
        if self.link is None:
            return f"sip:{self.device_id}@{self.config.local_host}"
        host, port = self.link.local
        contact = f"sip:{self.device_id}@{host}:{port}"
        if self.link.kind == "TCP":
            contact += ";transport=tcp"
        if self.quirks.contact_ob:
            contact += ";ob"
        return contact

    def _call_id_host(self) -> str:
        return self.link.local[0] if self.link is not None else self.config.local_host

    def _drive(self) -> None:
        for event in self.ua.take_events():
            self._on_event(event)
        for out in self.ua.take_requests():
            if self.link is None:
                continue
            self.link.send_request(out.request, partial(self._on_register_answer, out.token))
        self._arm()

    def _arm(self) -> None:
        deadline = self.ua.next_timer()
        if self._timer is not None and self._timer.active():
            if deadline == self._timer_at:
                return
            self._timer.cancel()
        self._timer = None
        if deadline is None:
            return
        self._timer_at = deadline
        self._timer = self.sim.reactor.callLater(max(0.0, deadline - self._now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # The reactor may round the delay a hair short of the deadline it was armed for.
        self.ua.handle_timer(max(self._now(), self._timer_at))
        self._drive()

    def _on_register_answer(self, token: int, resp: Response | None) -> None:
        self.ua.handle_answer(token, resp, self._now())
        self._drive()

    def _on_keepalive_answer(self, resp: Response | None) -> None:
        self.ua.keepalive_answered(None if resp is None else resp.status, self._now())
        self._drive()

    def _on_event(self, event: UaEvent) -> None:
        stats = self.sim.stats
        if isinstance(event, Registered):
            stats.registrations += 1
            self._set_registered(True)
        elif isinstance(event, Deregistered):
            self._set_registered(False)
            self.notifier.close()
        elif isinstance(event, RegistrationFailed):
            stats.register_failures += 1
            if event.failures_in_row == 1:
                log.warn("device {device_id}: REGISTER failed ({reason}); retrying in {delay:.0f} s",
                         device_id=self.device_id, reason=event.reason, delay=event.retry_in)
            else:
                log.debug("device {device_id}: REGISTER failed again ({reason})",
                          device_id=self.device_id, reason=event.reason)
        elif isinstance(event, Unregistered):
            if not event.ok:
                log.info("device {device_id}: unregister failed ({reason})",
                         device_id=self.device_id, reason=event.reason)
            d, self._unregistering = self._unregistering, None
            if d is not None:
                d.callback(event.ok)
        elif isinstance(event, KeepaliveDue):
            body = manscdp.encode_keepalive(self.messages.next_sn(), self.device_id,
                                            charset=self.config.body_charset)
            stats.keepalives_sent += 1
            self._send_message(self._label(body), self._on_keepalive_answer)
        elif isinstance(event, NatKeepaliveDue):
            if self.link is not None:
                self.link.send_raw(stun_binding_request(self.sim.rng))
        elif isinstance(event, KeepaliveFailed):
            stats.keepalive_failures += 1
            if event.registering_again and event.status in self.ua.config.reregister_statuses:
                # The platform restarted or forgot us.
                log.info("device {device_id}: keepalive answered {status}; registering again",
                         device_id=self.device_id, status=event.status)
            elif event.registering_again:
                log.info("device {device_id}: {n} keepalives lost; registering again",
                         device_id=self.device_id, n=event.misses)

    def _set_registered(self, value: bool) -> None:
        if value == self.registered:
            return
        self.registered = value
        self.sim._registration_changed(self, value)

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
        elif method == "SUBSCRIBE":
            self.notifier.handle_subscribe(req, tx)
        elif method in ("INFO", "NOTIFY"):
            self._reply(req, tx, 481)
        else:
            self._reply(req, tx, 405, headers=[("Allow", ALLOW)])

    # -- live view (GB/T 28181-2016 §9.2.2) ----------------------------------
    def _handle_invite(self, req: Request, tx: ServerTransaction) -> None:
        """Answer a Play offer: 100, then 200 with our SDP; media starts on the ACK."""
        assert self.link is not None
        refusal = invite_refusal(req, active_calls=self.plays, sessions=len(self.plays),
                                 max_sessions=MAX_PLAY_SESSIONS)
        if refusal is not None:
            self._reply(req, tx, refusal.status)
            return
        trying = make_response(req, 100)
        trying.headers.add("User-Agent", self.quirks.user_agent)
        self.link.respond(tx, trying)
        host = self.link.local[0] or self.config.local_host
        senders: list[MediaSender] = []

        def answer_sdp(offer: sdp.SessionDescription) -> sdp.SessionDescription:
            answer, sender = self.sim.media.answer(offer, device_id=self.device_id, local_ip=host)
            senders.append(sender)
            return answer

        contact = f"sip:{self.device_id}@{host}:{self.link.local[1]}"
        if self.link.kind == "TCP":
            contact += ";transport=tcp"
        got = answer_invite(req, answer_sdp=answer_sdp, contact=contact,
                            new_tag=self.link.endpoint.new_tag,
                            headers=[("User-Agent", self.quirks.user_agent)])
        if got.response is None or got.dialog is None:
            for sender in senders:
                sender.stop()
            if got.status == 488:
                log.info("device {device_id}: INVITE refused: {reason}",
                         device_id=self.device_id, reason=got.reason)
            elif got.status == 500:
                log.error("device {device_id}: cannot serve media: {error}",
                          device_id=self.device_id, error=got.reason)
            else:
                log.info("device {device_id}: INVITE without a usable dialog: {error}",
                         device_id=self.device_id, error=got.reason)
            self._reply(req, tx, got.status)
            return
        call_id = req.call_id
        timer = self.sim.reactor.callLater(ACK_TIMEOUT, self._ack_timed_out, call_id)
        self.plays[call_id] = _Play(got.dialog, senders[0], timer)
        self.link.respond(tx, got.response)

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
        got = self.queries.answer_message(req, self.config.body_charset)
        if got.status == 400:
            log.info("device {device_id}: bad MANSCDP body: {reason}",
                     device_id=self.device_id, reason=got.reason)
        self._reply(req, tx, got.status, headers=got.headers)
        if got.message is None or got.message.kind not in ("Query", "Control"):
            return
        if not got.bodies:
            log.debug("device {device_id}: no answer to query {cmd}",
                      device_id=self.device_id, cmd=got.message.cmd_type)
            return
        self.sim.stats.queries_answered += 1
        if isinstance(got.message, manscdp.DeviceControl) and got.message.ptz_cmd is not None:
            log.info("device {device_id}: PTZCmd {cmd} for {target}", device_id=self.device_id,
                     cmd=got.message.ptz_cmd.upper(), target=got.message.device_id)
        elif isinstance(got.message, manscdp.DeviceControl):
            log.info("device {device_id}: DeviceControl {cmd} for {target}", device_id=self.device_id,
                     cmd=control_command(got.message), target=got.message.device_id)
        self._outbox.extend(got.bodies)
        self._pump()

    def _query_answers(self) -> QueryAnswers:
        """The queries a simulated device answers (GB/T 28181-2016 §A.2.4), by CmdType."""
        answers = DialectAnswers(self.device_id, self.config.gb_version, self.config.iframe_spelling,
                                 lambda: self._out_charset, self._label)
        answers.register("Catalog", lambda query: self._catalog_bodies(query.sn))
        answers.register("DeviceInfo", self._device_info)
        answers.register("DeviceStatus", self._device_status)
        answers.register("ConfigDownload", self._config_download)
        answers.register("DeviceConfig", self._device_config)
        self.ptz.register(answers)
        self.ptz_state.register(answers)
        self.maintenance.register(answers)
        self.snapshot_upload.register(answers)
        self.reports.register(answers)
        return answers

    def _device_info(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        return [self._label(manscdp.encode_device_info_response(
            query.sn, self.device_id, device_name=self.device_name,
            manufacturer=MANUFACTURER, model="SIM-NVR" if self.config.channels > 1 else "SIM-IPC",
            firmware=self.maintenance.firmware, channel=self.config.channels, charset=self._out_charset,
        ))]

    def _device_status(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        return [self._label(manscdp.encode_device_status_response(
            query.sn, self.device_id, online="ONLINE", status="OK", encode="ON",
            # The state RecordCmd and GuardCmd set (§A.2.6.6: Record ON/OFF, DutyStatus ONDUTY when armed).
            record="ON" if any(self.ptz.recording.values()) else "OFF",
            alarm_status=[manscdp.AlarmStatus(device_id=target, duty_status="ONDUTY" if armed else "OFFDUTY")
                          for target, armed in sorted(self.ptz.guard.items())],
            device_time=datetime.fromtimestamp(self._now()), charset=self._out_charset,
        ))]

    def _config_download(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        types = [t.strip().lower() for t in query.fields.get("ConfigType", "").split("/")]
        newer = self.config_2022.download(types)
        if "basicparam" not in types and "videoparamopt" not in types and not newer:
            return []
        # One answer carries every type asked for (§A.2.4.7: ConfigType may list several with "/").
        video = self.video_param_opt if "videoparamopt" in types else None
        param = None if "basicparam" not in types else manscdp.BasicParam(
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
        if param is not None:
            param = _overlay(param, self.basic_set)
        return [self._label(manscdp.encode_config_download_response(
            query.sn, self.device_id, param, video_param_opt=video, charset=self._out_charset, **newer))]

    def _device_config(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """DeviceConfig (§A.2.3.2): keep what it sets, answer ``Result`` OK (§A.2.6.3); ERROR when it
        sets nothing the simulator knows."""
        if not isinstance(msg, manscdp.DeviceConfig):
            return []
        if msg.basic_param is not None:
            self.basic_set = _overlay(self.basic_set, msg.basic_param)
            if msg.basic_param.heart_beat_interval:
                # The platform now expects keepalives at this pace: send them so from the next one on.
                self.ua.config = replace(self.ua.config, keepalive_interval=float(msg.basic_param.heart_beat_interval))
        if msg.video_param_opt is not None:
            self.video_param_opt = _overlay(self.video_param_opt, msg.video_param_opt)
        newer = self.config_2022.apply(msg)
        result = "OK" if msg.basic_param is not None or msg.video_param_opt is not None or newer else "ERROR"
        return [self._label(manscdp.encode_config_response(msg.sn, self.device_id, result=result,
                                                           charset=self._out_charset))]

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

    # -- MESSAGEs to the platform -------------------------------------------
    def send_report(self, cmd_type: str, body: bytes) -> None:
        """A report (Alarm, MobilePosition, PTZPosition, Catalog ``Notify``) within the platform's
        subscription to ``cmd_type`` when there is one (NOTIFY, §9.11), else as a MESSAGE (§9.4)."""
        self.notifier.send(cmd_type, body)

    def _notify(self, body: bytes) -> None:
        """A notification of our own (DeviceUpgradeResult, UploadSnapShotFinished...), queued behind the
        answers in flight; none while paused (the device is gone)."""
        if self.paused:
            return
        self._outbox.append(body)
        self._pump()

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
        req = self.messages.message(body)
        self.sim.stats.messages_sent += 1
        self.link.send_request(req, on_final)


@dataclass
class _Play:
    """One live stream of a device: its dialog and sender (GB/T 28181-2016 §9.2.2)."""

    dialog: Dialog
    sender: MediaSender
    ack_timer: Any


def _ignore_answer(resp: Response | None) -> None:
    """A BYE's answer changes nothing: the dialog ended when we sent it (RFC 3261 §15.1.1)."""


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
        loader = clip_loader(config.clip, config.audio, payload=config.payload)
        if media is None and config.external_sender:
            from gbplatform.simulator.external import ExternalMedia

            try:
                media = ExternalMedia(reactor, rng, config.external_sender, clip_loader=loader)
            except OSError as e:
                raise ConfigError(f"simulate: no external sender at {config.external_sender}: {e}") from e
        self.media = media if media is not None else SimMedia(reactor, rng, clip_loader=loader)
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
        self._catalog_timer: Any = None  # the next scheduled catalog change (catalog_change_interval)

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
        if cfg.catalog_change_interval > 0:
            self._catalog_timer = self.reactor.callLater(cfg.catalog_change_interval, self._scheduled_catalog_change)

    def catalog_change(self) -> int:
        """Every online device sends its next catalog change (notifier.CATALOG_CYCLE); returns how many did."""
        sent = 0
        for device in self.devices:
            if device.online and device.notifier.catalog_change() is not None:
                sent += 1
        return sent

    def _scheduled_catalog_change(self) -> None:
        self.catalog_change()
        self._catalog_timer = self.reactor.callLater(self.config.catalog_change_interval,
                                                     self._scheduled_catalog_change)

    def stop(self) -> Deferred[None]:
        """Unregister every device (Expires: 0), then close the sockets.

        Waits at most ``stop_timeout`` for the answers.
        """
        for call in self._starts:
            if call.active():
                call.cancel()
        self._starts.clear()
        if self._catalog_timer is not None and self._catalog_timer.active():
            self._catalog_timer.cancel()
        self._catalog_timer = None
        for device in self.devices:
            device.hang_up()
            device.reports.stop()
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
    install_reactor()
    from twisted.internet import reactor

    limit = raise_fd_limit()
    log.info("open-files limit {limit}", limit=limit)
    reactor.callWhenRunning(_install_signal_handlers, reactor)
    return run(config, reactor, random.Random(), sys.stdout, on_started=lambda sim: _install_sim_signals(reactor, sim))


def _install_sim_signals(reactor: Any, sim: Simulator) -> None:
    """The simulator's own signals: SIGUSR1 hangs up, SIGHUP sends a catalog change, SIGUSR2 an alarm."""
    _hang_up_on_sigusr1(reactor, sim)
    _catalog_change_on_sighup(reactor, sim)
    alarm_on_sigusr2(reactor, sim.devices)


def _catalog_change_on_sighup(reactor: Any, sim: Simulator) -> None:
    """SIGHUP: every device sends its next catalog change (a channel OFF, ON, an ADD, a DEL; §A.2.5.4)."""
    import signal

    def change() -> None:
        n = sim.catalog_change()
        log.info("SIGHUP: {n} device(s) sent a catalog change", n=n)

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(change))


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

