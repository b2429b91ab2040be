"""``make_service(config, reactor)``: the whole platform as one ``MultiService``.

Order matters: the database runner starts first (everything else queues
work on it), then SIP signalling, then the HTTP API. On start, every device
is marked offline: who is online is re-learnt from the next REGISTER or
keepalive (ARCHITECTURE "State survives restarts").
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.server import Site

from gbplatform import __version__
from gbplatform.alarms.service import AlarmService, AlarmsService
from gbplatform.api.app import Api, access_log_line
from gbplatform.api.bodylimit import body_limit, bounded_request
from gbplatform.app.config import Config
from gbplatform.app.context import AppContext
from gbplatform.app.memory import HeapTrimmer, HeapTrimService, libc_malloc_trim
from gbplatform.auth.play_tokens import PlayTokens
from gbplatform.control.maintenance import MaintenanceService
from gbplatform.control.service import ControlService
from gbplatform.core.clock import Clock, ReactorClock, utc_datetime
from gbplatform.core.ids import SsrcAllocator
from gbplatform.db import queries as q
from gbplatform.db.database import Database, DatabaseService, ThreadPoolRunner, make_engine
from gbplatform.devices.catalog import CatalogSync
from gbplatform.devices.onboarding import DeviceQueries
from gbplatform.devices.registrar import DeviceEvent, DeviceManager
from gbplatform.events.bus import EventBus, run_first_id
from gbplatform.events.sources import connect_sources, publish_device_event, watch_recording
from gbplatform.events.webhooks import AgentPoster, Webhooks, WebhooksService
from gbplatform.outputs.rtsp import LiveSource
from gbplatform.recording.rtsp_vod import RecordingVodSource
from gbplatform.sessions.live import LiveStreams
from gbplatform.signalling.router import SipRouter
from gbplatform.signalling.trace import SipTrace
from gbplatform.snapshots.service import DeviceSnapshots, DeviceSnapshotsService
from media.ports import PortPool, SharedPortPool
from media.receiver import RtpReceiver, SharedRtpPort, UdpDrainer
from media.rtsp_server import RtspFactory
from sip.endpoint import Addr, Endpoint
from sip.transport import SipTransport

log = Logger()


def _read_or_create(path: Path, make: Callable[[], object]) -> str:
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = str(make())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def build_platform(
    config: Config,
    *,
    clock: Clock,
    db: Database,
    rng: random.Random | None = None,
    api_token: str | None = None,
    secret: bytes | None = None,
    receiver_factory: Callable[..., Any] | None = None,
    ingest_factory: Callable[..., Any] | None = None,
) -> AppContext:
    """Wire the services together without starting anything (tests use this directly)."""
    rng = rng or random.Random(secrets.randbits(64))
    data_dir = Path(config.storage.data_dir)
    if api_token is None:
        api_token = config.api.token or _read_or_create(data_dir / "api_token", lambda: secrets.token_urlsafe(24))
    if secret is None:
        secret = _read_or_create(data_dir / "nonce_secret", lambda: secrets.token_hex(32)).encode()
    endpoint = Endpoint(rng=rng, user_agent=config.sip.user_agent, max_transactions=config.sip.max_transactions)
    router = SipRouter(
        platform_id=config.sip.id, domain=config.sip.domain, endpoint=endpoint, clock=clock, rng=rng,
        query_timeout=config.sip.query_timeout,
    )
    events: list[DeviceEvent] = []

    def publish(event: DeviceEvent) -> None:
        events.append(event)
        del events[:-1000]
        publish_device_event(bus, devices, event)  # both bound below, before any device can register

    devices = DeviceManager(config.sip, router=router, db=db, clock=clock, rng=rng, secret=secret, publish=publish)
    router.devices = devices
    # Signalling routes (gbplatform.signalling.router): REGISTER and the keepalive
    # to the registrar; catalog and queries correlate their answers by SN; live
    # sessions register their dialogs as they make them.
    router.on_request("REGISTER", devices.handle_register, from_device=True)
    router.answer_manscdp("Notify", "Keepalive", devices.handle_keepalive)
    # The canonical keepalive of a device online from its source skips the parse, the transaction
    # object and the router (sip.fastpath; issue 12); anything else reaches handle_keepalive above.
    endpoint.keepalive_handler = devices.fast_keepalive
    catalog = CatalogSync(router=router, devices=devices, db=db, clock=clock, timeout=config.sip.catalog_timeout)
    queries = DeviceQueries(router=router, devices=devices, catalog=catalog, db=db, clock=clock,
                            concurrency=config.sip.onboarding_queries, max_lag=config.sip.onboarding_max_lag)
    trace = SipTrace(config.sip.id, per_device=config.sip.trace_size, address_of=devices.known_address,
                     is_known=devices.known_id)
    control = ControlService(router=router, devices=devices, db=db, clock=clock)
    bus = EventBus(clock, backlog=config.api.event_backlog, first_id=run_first_id(clock))
    platform = AppContext(
        config=config, clock=clock, db=db, endpoint=endpoint, router=router, devices=devices, catalog=catalog,
        queries=queries, control=control, trace=trace, api_token=api_token, started_at=clock.time(), events=events, bus=bus,
        play_tokens=PlayTokens.from_api_token(api_token, clock, ttl=config.api.play_token_ttl),
    )
    platform.maintenance = MaintenanceService(control=control, queries=queries, bus=bus, clock=clock,
                                              upgrade_timeout=config.control.upgrade_timeout)
    platform.alarms = AlarmService(platform)  # listens for Notify Alarm/MobilePosition on the router
    platform.snapshots = DeviceSnapshots(platform)  # listens for UploadSnapShotFinished from here on
    from gbplatform.subscriptions.service import SubscriptionService

    # RFC 6665 subscriptions to catalogs, alarms, positions; registers the NOTIFY handler and Notify/Catalog.
    platform.subscriptions = SubscriptionService(
        router=router, devices=devices, db=db, clock=clock, bus=bus, config=config.subscriptions,
        platform_id=config.sip.id, domain=config.sip.domain, require_2022=control.require_2022)
    platform.subscriptions.wire()
    if receiver_factory is not None:

        async def media_transport(device_id: str) -> tuple[str, str | None, bool]:
            record = await db.run("get_device", q.get_device_txn, device_id)
            if record is None:
                return "UDP", None, True
            return record.media_transport, record.stream_index, record.sdp_y_line

        platform.live = LiveStreams(
            router=router, clock=clock,
            ports=SharedPortPool(config.media.single_port) if config.media.single_port
            else PortPool(config.media.rtp_port_min, config.media.rtp_port_max, rng),
            ssrcs=SsrcAllocator(config.sip.domain, rng), receiver_factory=receiver_factory,
            media_ip=config.media_ip, media_mode=media_transport, invite_timeout=config.media.invite_timeout,
            idle_timeout=config.media.idle_timeout, gop_cache_bytes=config.media.gop_cache_bytes,
            gop_cache_idle=config.media.gop_cache_idle, rng=rng,
            request_keyframe=control.iframe,  # a stream that starts mid-GOP asks for a keyframe (IFameCmd)
            **({"ingest_factory": ingest_factory} if ingest_factory is not None else {}),
        )
    connect_sources(platform)  # stream and catalog events on the bus
    return platform


UNSUBSCRIBE_GRACE = 1.0
"""Seconds a stopping platform waits for the devices to answer its unsubscribes (``SipService.stopService``)."""


class SipService(Service):
    name = "sip"

    def __init__(self, platform: AppContext, reactor: Any) -> None:
        self.platform = platform
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        p = self.platform
        at = utc_datetime(p.clock.time())
        d = p.db.run("mark_all_offline", q.mark_all_offline_txn, at)
        d.addErrback(lambda f: log.failure("marking devices offline at start failed", f))
        preload = ensureDeferred(p.devices.preload())
        preload.addCallback(lambda n: log.info("{n} device records loaded", n=n))
        preload.addErrback(lambda f: log.failure("loading device records failed", f))

        def trace(direction: str, data: bytes, peer: Addr) -> None:
            p.trace.record(direction, data, peer, p.clock.time())

        transport = SipTransport(p.endpoint, self.reactor, p.router.handle_events, trace=trace)
        cfg = p.config.sip
        transport.listen(cfg.host, cfg.port, cfg.transports)
        transport.set_advertised_host(cfg.advertised_ip)
        p.router.flush = transport.flush
        p.transport = transport
        log.info("SIP listening on {host}:{port} ({transports}), ID {id}, domain {domain}",
                 host=cfg.host, port=cfg.port, transports="/".join(cfg.transports), id=cfg.id, domain=cfg.domain)

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        p = self.platform
        # RFC 6665 §4.1.2.3: end our subscriptions (Expires: 0) while the transport can still carry the
        # requests and their answers; at most UNSUBSCRIBE_GRACE seconds, then stop whatever came back.
        ending = p.subscriptions.stop_all(UNSUBSCRIBE_GRACE) if p.subscriptions is not None else succeed(None)
        ending.addErrback(lambda f: log.failure("ending the subscriptions failed", f))

        def close(_: object) -> Any:
            if p.transport is not None:
                p.transport.stop()
            return p.devices.writer.flush()

        return ending.addCallback(close)


class HttpService(Service):
    name = "http"

    def __init__(self, platform: AppContext, reactor: Any) -> None:
        self.platform = platform
        self.reactor = reactor
        self.port: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        api = Api(self.platform)
        site = Site(api.app.resource(), logFormatter=access_log_line, reactor=self.reactor)  # type: ignore[no-untyped-call]
        site.displayTracebacks = False
        # Bodies past what any route takes are refused as they arrive, not stored first (gbplatform.api.bodylimit).
        site.requestFactory = bounded_request(body_limit(self.platform.config))
        cfg = self.platform.config.http
        self.port = self.reactor.listenTCP(cfg.port, site, interface=cfg.host)
        log.info("HTTP API on http://{host}:{port}/api/v1 (gbplatform {version})",
                 host=cfg.host, port=self.port.getHost().port, version=__version__)

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        if self.port is not None:
            return self.port.stopListening()
        return None


class RtspService(Service):
    """RTSP (RFC 2326) on ``media.rtsp_port``; live channels at ``/live/<channel>``, recordings at ``/vod/``."""

    name = "rtsp"

    def __init__(self, platform: AppContext, reactor: Any, rng: random.Random | None = None) -> None:
        self.platform = platform
        self.reactor = reactor
        self.rng = rng or random.Random(secrets.randbits(64))
        self.port: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        config = self.platform.config
        host = config.http.host
        factory = RtspFactory(
            LiveSource(self.platform), reactor=self.reactor, token=self.platform.api_token, rng=self.rng,
            listen_udp=lambda port, proto: self.reactor.listenUDP(port, proto, interface=host),
            vod=RecordingVodSource(self.platform, self._vod_runner()), playback=self.platform.play_tokens.verify,
        )
        self.port = self.reactor.listenTCP(config.media.rtsp_port, factory, interface=host)
        log.info("RTSP on rtsp://{host}:{port}/live/<channel> and /vod/<channel>?start=&end=", host=host,
                 port=self.port.getHost().port)

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        if self.port is not None:
            return self.port.stopListening()
        return None

    def _vod_runner(self) -> Callable[..., Any]:
        workers = self.platform.workers
        return workers.runner("vod") if workers is not None else deferToThread


class OrderedMultiService(MultiService):
    """A ``MultiService`` that stops its children one at a time, last started first.

    Twisted's ``MultiService`` stops every child at once, so the database pool
    could close while recording still indexes its last segments. Here each
    child's stop waits for the one started after it: recording, then the
    outputs and SIP, then the worker pools, then the database.
    """

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        Service.stopService(self)  # type: ignore[no-untyped-call]
        children = list(self)
        children.reverse()

        async def stop_in_order() -> None:
            for child in children:
                try:
                    await maybeDeferred(child.stopService)
                except Exception:  # noqa: BLE001 - the rest must still stop
                    log.failure("stopping {name} failed", name=getattr(child, "name", child))

        return Deferred.fromCoroutine(stop_in_order())


def make_service(config: Config, reactor: Any) -> MultiService:
    clock = ReactorClock(reactor)
    engine = make_engine(config.database_url)
    runner = ThreadPoolRunner.for_engine(reactor, engine, max=config.database.pool_size)
    # WAL readers beside the one SQLite writer: API reads do not queue behind state batches.
    db = Database(engine, pool=runner, read_pool=ThreadPoolRunner.readers_for_engine(reactor, engine))
    media = config.media

    # Single-port mode: one UDP + TCP port for every stream, routed by SSRC.
    # One timer reads every stream's UDP socket (docs/performance.md, "Live ingest").
    drainer = UdpDrainer(reactor, media.drain_interval) if media.drain_interval else None
    shared = SharedRtpPort(reactor, media.single_port, host=config.sip.host, rcvbuf=media.single_port_rcvbuf,
                           drainer=drainer)

    # media.workers: RTP received in child processes, one core each (gbplatform/sessions/media_workers.py).
    # Single-port mode stays here: its SSRC router needs every packet in one process.
    media_workers = None
    if media.workers and media.single_port:
        log.warn("media.workers = {n} is not used in single-port mode (media.single_port): the one port's SSRC "
                 "router needs every packet in one process; receiving in the main process", n=media.workers)
    elif media.workers:
        from gbplatform.sessions.media_workers import MediaWorkers

        media_workers = MediaWorkers(reactor, media.workers, host=config.sip.host, rcvbuf=media.rcvbuf,
                                     no_rtp_timeout=media.no_rtp_timeout, drain_interval=media.drain_interval,
                                     log_level=config.log.level)

    def receiver_factory(ingest: Any, lease: Any, *, mode: Any, on_timeout: Any) -> Any:
        if media.single_port:
            return shared.receiver(
                ingest, lease, mode=mode, no_rtp_timeout=media.no_rtp_timeout, on_timeout=on_timeout
            )
        if media_workers is not None:
            return media_workers.receiver(ingest, lease, mode=mode, on_timeout=on_timeout)
        return RtpReceiver(
            reactor, ingest, lease, mode=mode, host=config.sip.host, rcvbuf=media.rcvbuf,
            no_rtp_timeout=media.no_rtp_timeout, on_timeout=on_timeout, drainer=drainer,
        )

    platform = build_platform(config, clock=clock, db=db, receiver_factory=receiver_factory,
                              ingest_factory=media_workers.ingest if media_workers is not None else None)
    if not config.api.token:
        # Where it is, never what it is: logs are shipped and read by more people than the data dir.
        log.info("API token generated at first start, kept in {path}", path=config.api_token_path)
    top = OrderedMultiService()  # type: ignore[no-untyped-call]
    from gbplatform.core.workers import Workers, WorkersService

    platform.workers = Workers.threaded(reactor)  # one bounded pool per kind of blocking work
    services: list[Service] = [DatabaseService(db), WorkersService(platform.workers), SipService(platform, reactor),
                               HttpService(platform, reactor)]
    if platform.alarms is not None:
        services.append(AlarmsService(platform.alarms))  # retention timer; pending reports written on stop
    if media.single_port:
        services.insert(1, shared)  # bound before SIP can start a stream
    elif media_workers is not None:
        services.insert(1, media_workers)  # spawned before SIP can start a stream, stopped after it
        top.media_workers = media_workers  # type: ignore[attr-defined]
    if config.media.rtsp_port:
        services.append(RtspService(platform, reactor))
    from gbplatform.recording.service import RecordingService, make_recording

    platform.recording = make_recording(platform, reactor)
    watch_recording(platform.bus, platform.recording)  # record events on the bus
    poster = AgentPoster(reactor, config.webhooks.timeout)
    platform.webhooks = Webhooks(config.webhooks, clock, poster)
    services.append(WebhooksService(platform.webhooks, platform.bus, poster))
    services.append(DeviceSnapshotsService(platform.snapshots))  # retention purge on the clock
    trim = libc_malloc_trim()  # freed GOPs back to the kernel (gbplatform/app/memory.py)
    services.append(HeapTrimService(clock, HeapTrimmer(trim) if trim is not None else None))
    services.append(RecordingService(platform.recording))  # stops first: before the database
    for service in services:
        service.setServiceParent(top)  # type: ignore[no-untyped-call]
    top.platform = platform  # type: ignore[attr-defined]
    return top
