"""Device lifecycle: registration, keepalive, expiry (GB/T 28181-2016 §9.1, §9.6).

Theory of operation
-------------------
Live state (who is registered, from which address, when it was last heard)
is kept in memory in ``DeviceLive`` objects, as WVP keeps it in Redis; the
database holds the durable record and is written in batches off the reactor
thread by ``StateWriter``: a registration storm of 10,000 devices becomes a
few dozen transactions, not 10,000.

A device is online from a successful REGISTER (or, after a platform restart,
from its next keepalive if its registration has not expired) until it
unregisters, its registration expires, or it misses ``keepalive_count``
keepalives of ``keepalive_interval`` seconds (defaults 60 s x 3; a device's
own BasicParam overrides them, §A.2.6.7). Deadlines live in a heap checked
by one timer, so 10,000 devices cost nothing between keepalives.

Address: a device is reached at the source of its last authenticated
REGISTER, and only such a REGISTER moves it (``may_speak_for``): keepalives
and MESSAGEs carry no credentials, so one from another address is refused
(404 to a keepalive, which asks the device to register again, as one behind
a rebinding NAT then does) and changes nothing. docs/devices.md says why.

Authentication (§9.1.2.1, RFC 3261 §22.4): digest against the device's own
HA1 if it has one, else the global password; policy "pre_added" admits only
devices created through the API, "open" admits anyone (lab use). Stateless
nonces stay valid across several challenges, as eXosip-based devices send
two unauthenticated REGISTERs before answering the first challenge.

Dialect (GB/T 28181-2022 §9.1): an authenticated REGISTER's ``X-GB-Ver``
(3.0 = 2022; none = an earlier edition) is kept in ``DeviceLive`` and stored
with the registration; ``gb_version()`` is the operator's setting unless
"auto", else that, read from memory (the settings are loaded with the
admission data), so ``ControlService.require_2022`` costs no database read.
A device spoken to in 2022 gets ``X-GB-Ver: 3.0`` back in its 200 OK.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from gbplatform.app.config import SipConfig
from gbplatform.core.clock import Clock, utc_datetime
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.devices.auth_guard import AuthGuard, address_key, device_key
from media.logthrottle import LogThrottle
from sip import manscdp
from sip.auth import DigestServer, ha1
from sip.endpoint import Addr
from sip.errors import SipParseError
from sip.fastpath import KeepaliveRequest
from sip.headers import NameAddr, contacts, expires_value, from_header
from sip.manscdp import dialects
from sip.manscdp.keepalive import fast_keepalive as manscdp_fast_keepalive
from sip.message import Request, make_response
from sip.transaction import ServerTransaction

if TYPE_CHECKING:  # the router imports this module (NOT_FROM_HERE, DeviceLive)
    from gbplatform.signalling.router import SipRouter

log = Logger()

# Refusals come in floods (20,000 forged REGISTERs a second): one line per
# kind of refusal per interval, with the count, keeps the log off the disk.
REFUSAL_LOG_INTERVAL = 10.0
# Seconds between two sweeps of the expiry heap while deadlines keep coming (``DeviceManager._expire``).
EXPIRY_SWEEP = 1.0


RELIABLE = frozenset({"TCP", "TLS"})
NOT_FROM_HERE = ("Warning", '399 gbplatform "not registered from this address"')


def may_speak_for(registered: Addr, source: Addr) -> bool:
    """Whether a request from ``source`` may act for a device registered from ``registered``.

    Only the source of the device's last authenticated REGISTER (GB/T
    28181-2016 §9.1.2.1) is the device: a keepalive or MESSAGE carries no
    credentials (§9.6.1, §9.3), so one from elsewhere is anyone who knows the
    device ID. Over TCP a new connection from the same host is accepted too: a
    TCP source cannot be forged (the handshake answers it), and devices
    reconnect after a dropped connection without registering again.
    """
    if registered == source:
        return True
    return source[0] in RELIABLE and registered[0] == source[0] and registered[1] == source[1]


@dataclass
class DeviceLive:
    """What the platform knows about a registered device right now."""

    device_id: str
    addr: Addr
    contact: str | None
    user_agent: str | None
    expires_at: float  # clock.seconds() when the registration lapses
    last_seen: float
    interval: int
    count: int
    charset: str = "GB2312"
    online: bool = True
    registered_wall: float = 0.0
    last_keepalive_wall: float | None = None
    # The edition its last authenticated REGISTER announced (GB/T 28181-2022 §9.1 X-GB-Ver; none: 2016).
    gb_version: str = "2016"

    @property
    def deadline(self) -> float:
        return min(self.expires_at, self.last_seen + self.interval * self.count)


@dataclass
class AuthInfo:
    exists: bool
    enabled: bool = True
    pre_added: bool = False
    ha1_md5: str | None = None
    ha1_sha256: str | None = None
    realm: str | None = None
    charset: str = "GB2312"
    interval: int | None = None
    count: int | None = None


@dataclass(frozen=True)
class DeviceEvent:
    """Published on the event bus when a device goes online or offline."""

    device_id: str
    online: bool
    reason: str
    at: float


@dataclass
class StateWriter:
    """Batches registry writes of the device lifecycle into few transactions.

    One batch runs at a time. A PostgreSQL pool has several threads (and
    ``Database.run`` retries once), so two batches handed to it together may
    commit in either order, and a device's "registered" could land after its
    later "offline". Changes added while a batch runs, and every flush asked
    for meanwhile, go into the next batch, started when the running one ends
    (group commit): per device, writes commit in the order they happened.
    """

    db: Database
    clock: Clock
    flush_interval: float = 0.5
    max_batch: int = 2000
    _ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    _timer: Any = None
    _running: bool = False
    # Flushes asked for while a batch runs: they fire after the next batch.
    _next_waiters: list[Deferred[None]] = field(default_factory=list)
    # Changes per device added and not yet committed (queued or in the running batch): ``written``
    # waits for a batch only when the device has some (issue 12, below).
    _unwritten: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, *args: Any) -> None:
        self._ops.append((op, args))
        device_id = _device_of(op, args)
        self._unwritten[device_id] = self._unwritten.get(device_id, 0) + 1
        if len(self._ops) >= self.max_batch:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.call_later(self.flush_interval, self.flush)

    def flush(self) -> Deferred[None]:
        """Write the pending changes; fires once they (and all before them) are committed.

        It also fires when the write failed (the failure is logged): callers
        wait for their turn, not for success.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d: Deferred[None] = Deferred()
        if self._running:
            self._next_waiters.append(d)
        elif self._ops:
            self._start([d])
        else:
            d.callback(None)
        return d

    def written(self, device_id: str) -> Deferred[None]:
        """Fires once every change of ``device_id`` added so far has been committed (or failed, logged).

        At once when none is pending: onboarding and catalog stores wait for
        the device's row before writing to it, and each used to ``flush()``,
        which with 50,000 devices onboarding turned the batches into one
        transaction per device (issue 12).
        """
        if device_id not in self._unwritten:
            return succeed(None)
        return self.flush()

    def _start(self, waiters: list[Deferred[None]]) -> None:
        ops, self._ops = self._ops, []
        self._running = True
        d = self.db.run("device_state_batch", apply_state_batch_txn, ops)

        def ended(result: Any) -> Any:
            for op, args in ops:
                device_id = _device_of(op, args)
                left = self._unwritten.get(device_id, 0) - 1
                if left > 0:
                    self._unwritten[device_id] = left
                else:
                    self._unwritten.pop(device_id, None)
            return result

        def written(gone: list[str]) -> None:
            for device_id in sorted(set(gone)):
                log.info("device {id} deleted: its DeviceInfo/BasicParam not stored", id=device_id)

        def failed(f: Any) -> None:
            log.failure("writing {n} device state changes failed", f, n=len(ops))

        d.addBoth(ended)
        d.addCallbacks(written, failed)
        d.addCallback(lambda _: self._finished(waiters))

    def _finished(self, waiters: list[Deferred[None]]) -> None:
        self._running = False
        for waiter in waiters:
            waiter.callback(None)
        if self._running:  # a waiter's callback flushed again and started a batch
            return
        waiters, self._next_waiters = self._next_waiters, []
        if self._ops and (waiters or len(self._ops) >= self.max_batch):
            self._start(waiters)
        else:
            for waiter in waiters:
                waiter.callback(None)


def _device_of(op: str, args: tuple[Any, ...]) -> str:
    """The device a lifecycle change is about: a ``Registration`` or the first argument."""
    return str(args[0].device_id if op == "registered" else args[0])


def apply_state_batch_txn(s: Any, ops: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Apply lifecycle writes in order, each run of one kind as one statement.

    Runs of keepalives and registrations (which may interleave: both only
    bring a device online), of "offline" and of "unregistered" changes are
    written as one executemany each (issue 12: a mass offline of 10,000
    devices, or their unregistering, was 10,000 statements and batches of
    1.4-5.8 s); a change of another kind ends the runs before it, so per
    device the writes land in the order they happened.

    Returns the devices some change was skipped for because they no longer
    exist (deleted through the API while their DeviceInfo or BasicParam answer
    was on its way): one such change must not fail the other devices' writes.
    """
    gone: list[str] = []
    keepalives: list[tuple[str, dt.datetime, str, int, str]] = []
    registrations: list[q.Registration] = []
    alive: set[str] = set()  # the devices in ``keepalives``
    offline: list[tuple[str, dt.datetime]] = []
    unregistered: list[tuple[str, dt.datetime]] = []

    def write_live() -> None:
        if registrations:
            q.registrations_txn(s, registrations)
            registrations.clear()
        if keepalives:
            q.keepalives_txn(s, keepalives, report=False)
            keepalives.clear()
            alive.clear()

    def write_gone() -> None:
        if offline:
            q.devices_offline_txn(s, offline)
            offline.clear()
        if unregistered:
            q.devices_unregistered_txn(s, unregistered)
            unregistered.clear()

    for op, args in ops:
        if op == "keepalive":
            write_gone()
            keepalives.append(args)
            alive.add(args[0])
            continue
        if op == "registered":
            write_gone()
            if args[0].device_id in alive:
                # Registrations are written before keepalives: a keepalive from the address the device
                # has just left must not land after its new registration (it would win).
                write_live()
            registrations.append(args[0])
            continue
        write_live()
        if op == "offline":
            if unregistered:
                write_gone()
            offline.append((args[0], args[1]))
            continue
        if op == "unregistered":
            if offline:
                write_gone()
            unregistered.append((args[0], args[1]))
            continue
        write_gone()
        if op == "basic_param":
            try:
                q.set_basic_param_txn(s, args[0], args[1], args[2], at=args[3])
            except q.DeviceNotFound:  # the UPDATE matched no row: nothing to roll back
                gone.append(args[0])
        elif op == "charset":
            q.upsert_device_txn(s, args[0], charset=args[1])
        elif op == "device_info":
            try:
                q.store_device_info_txn(s, args[0], **args[1])
            except q.DeviceNotFound:
                gone.append(args[0])
    write_live()
    write_gone()
    return gone


class DeviceManager:
    """REGISTER, keepalive and expiry handling; the in-memory online table."""

    def __init__(
        self,
        config: SipConfig,
        *,
        router: SipRouter,
        db: Database,
        clock: Clock,
        rng: random.Random,
        secret: bytes,
        publish: Callable[[DeviceEvent], None] = lambda e: None,
    ) -> None:
        self.config = config
        self.router = router
        self.db = db
        self.clock = clock
        self.rng = rng
        self.publish = publish
        self.digest = DigestServer(
            config.domain, secret, nonce_ttl=float(config.nonce_ttl), algorithms=config.digest_algorithms
        )
        self.live: dict[str, DeviceLive] = {}
        self.auth_cache: dict[str, AuthInfo] = {}
        self._preloaded = False
        self._online_counted: tuple[float, int] | None = None
        self._dirty: set[str] = set()  # changed through the API since the preload
        # Devices whose dialect setting or I-frame spelling is not the default: (setting, iframe_element).
        # Apart from auth_cache, which a PATCH empties: gb_version() must answer without a database read.
        self._dialect_settings: dict[str, tuple[str, str]] = {}
        self.writer = StateWriter(db, clock)
        self._deadlines: list[tuple[float, str]] = []
        self._timer: Any = None
        self._timer_at: float | None = None
        self.on_registered: list[Callable[[str, bool], None]] = []
        # Called with (device_id, reason) when an online device goes offline ("unregistered", expiry...).
        self.on_offline: list[Callable[[str, str], None]] = []
        self.stats = {"registered": 0, "rejected": 0, "challenged": 0, "keepalives": 0, "offline": 0}
        self.guard = AuthGuard(max_failures=config.auth_max_failures, ban_seconds=float(config.auth_ban_seconds))
        self.log_throttle = LogThrottle(REFUSAL_LOG_INTERVAL)

    # -- queries from other services ----------------------------------------
    def is_known(self, device_id: str) -> bool:
        live = self.live.get(device_id)
        return live is not None and live.online

    def known_id(self, device_id: str) -> bool:
        """Whether ``device_id`` has been seen live or is in the registry, as far as the cache knows.

        The SIP trace keeps a history per known ID only: a flood of forged IDs
        shares one bounded list (issue 8 item 10).
        """
        if device_id in self.live:
            return True
        info = self.auth_cache.get(device_id)
        return info is not None and info.exists

    def address_of(self, device_id: str) -> Addr | None:
        live = self.live.get(device_id)
        return live.addr if live is not None and live.online else None

    def charset_of(self, device_id: str) -> str:
        live = self.live.get(device_id)
        if live is not None:
            return live.charset
        info = self.auth_cache.get(device_id)
        return info.charset if info is not None else "GB2312"

    def live_info(self, device_id: str) -> DeviceLive | None:
        return self.live.get(device_id)

    def gb_version(self, device_id: str) -> str:
        """The GB/T 28181 dialect the platform speaks to ``device_id``: ``"2016"`` or ``"2022"``.

        The operator's setting unless "auto", else what the device's last
        REGISTER announced (GB/T 28181-2022 §9.1); from memory only.
        """
        setting, _ = self.dialect_setting(device_id)
        return dialects.dialect_of(self.gb_version_detected(device_id), setting)

    def gb_version_detected(self, device_id: str) -> str | None:
        """The edition the device's last REGISTER announced, while its registration is live."""
        live = self.live.get(device_id)
        return live.gb_version if live is not None else None

    def dialect_setting(self, device_id: str) -> tuple[str, str]:
        """``(gb_version_setting, iframe_element)`` of the device, as the registry holds them."""
        return self._dialect_settings.get(device_id, ("auto", dialects.IFRAME_ELEMENTS[0]))

    def iframe_element(self, device_id: str) -> str:
        """How the device spells the I-frame request (§A.2.3.1.7 ``IFameCmd``, or ``IFrameCmd``)."""
        return self.dialect_setting(device_id)[1]

    def set_dialect(self, device_id: str, setting: str, iframe_element: str) -> None:
        """Remember the dialect setting stored for ``device_id`` (the API wrote it to the registry)."""
        if setting == "auto" and iframe_element == dialects.IFRAME_ELEMENTS[0]:
            self._dialect_settings.pop(device_id, None)
        else:
            self._dialect_settings[device_id] = (setting, iframe_element)

    def forget(self, device_id: str) -> None:
        """Drop a deleted device's live state and cached credentials."""
        self.live.pop(device_id, None)
        self._dialect_settings.pop(device_id, None)
        self._online_counted = None
        self.invalidate(device_id)

    def invalidate(self, device_id: str) -> None:
        """A device's record changed through the API: re-read its credentials next time."""
        self.auth_cache.pop(device_id, None)
        self._dirty.add(device_id)

    # -- REGISTER -----------------------------------------------------------
    def handle_register(self, req: Request, tx: ServerTransaction, source: Addr) -> None:
        d = ensureDeferred(self._register(req, tx, source))
        d.addErrback(lambda f: self._register_failed(f, req, tx))

    def _register_failed(self, failure: Any, req: Request, tx: ServerTransaction) -> None:
        log.failure("REGISTER handling failed", failure)
        self.router.respond(tx, make_response(req, 500, to_tag=self.router.endpoint.new_tag()))

    def _reply(self, req: Request, tx: ServerTransaction, status: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        # A refusal (4xx: bad ID, ban, challenge, wrong digest, stranger) keeps no
        # transaction: a flood of forged requests must cost no memory (issue 8).
        self.router.respond(tx, make_response(req, status, reason, to_tag=self.router.endpoint.new_tag(),
                                              headers=headers or []), stateless=400 <= status < 500)

    async def _register(self, req: Request, tx: ServerTransaction, source: Addr) -> None:
        # The router checked the device ID (``on_request(..., from_device=True)``):
        # one longer than the registry holds would fail the whole write batch.
        try:
            device_id = from_header(req).user or ""
            contact_list = contacts(req)
            expires = self._requested_expires(req, contact_list)
        except SipParseError as e:
            self._reply(req, tx, 400, headers=[("Warning", f'399 gbplatform "{e.reason[:100]}"')])
            return
        if self._banned(req, tx, device_id, source):
            return
        info = await self._auth_info(device_id)
        if not info.enabled:
            self.stats["rejected"] += 1
            self._reply(req, tx, 403, "Device Disabled")
            return
        policy = self.config.register_policy
        if policy != "open":
            if policy == "pre_added" and not info.pre_added:
                self.stats["rejected"] += 1
                self.log_refusal("not_added", "REGISTER from unknown device {id} refused (pre_added policy)",
                                 id=device_id)
                self._reply(req, tx, 403, "Device Not Added")
                return
            if not info.ha1_md5 and not info.ha1_sha256 and not self.config.password:
                self.stats["rejected"] += 1
                self._reply(req, tx, 403, "No Password Configured")
                return
            if not self._authenticate(req, tx, device_id, info, source):
                return
        if expires == 0:
            self._unregister(req, tx, device_id, contact_list)
            return
        if expires < self.config.register_expires_min:
            self._reply(req, tx, 423, headers=[("Min-Expires", str(self.config.register_expires_min))])
            return
        expires = min(expires, self.config.register_expires_max)
        self._registered(req, tx, device_id, source, contact_list, expires, info)

    def _requested_expires(self, req: Request, contact_list: list[NameAddr]) -> int:
        """Expires from the Contact parameter, else the header, else 3600 (RFC 3261 §10.2.1.1)."""
        for c in contact_list:
            if c.params.get("expires") is not None:
                return expires_value(c.params["expires"]) or 0
        value = expires_value(req.headers.get("Expires"))
        if value is not None:
            return value
        return 3600

    async def preload(self) -> int:
        """Load every device's admission data at once (start-up).

        Afterwards a device missing from the cache is known not to exist, so
        a registration storm of new devices costs no database round trip each.
        """
        self._dirty.clear()  # what is loaded now is current; later changes dirty it again
        records = await self.db.run("auth_records", q.auth_records_txn)
        for record in records:
            if record.device_id not in self._dirty:
                self.auth_cache[record.device_id] = self._auth_from(record)
        self._preloaded = True
        return len(records)

    def _auth_from(self, record: q.AuthRecord) -> AuthInfo:
        self.set_dialect(record.device_id, record.gb_version_setting, record.iframe_element)
        realm_ok = record.ha1_realm in (None, self.config.domain)
        if not realm_ok and (record.ha1_md5 or record.ha1_sha256):
            log.warn(
                "device {id}: stored password was set for realm {old}, not {new}; set it again",
                id=record.device_id, old=record.ha1_realm, new=self.config.domain,
            )
        return AuthInfo(
            exists=True,
            enabled=record.enabled,
            pre_added=record.pre_added,
            ha1_md5=record.ha1_md5 if realm_ok else None,
            ha1_sha256=record.ha1_sha256 if realm_ok else None,
            realm=record.ha1_realm,
            charset=record.charset or "GB2312",
            interval=record.keepalive_interval,
            count=record.keepalive_count,
        )

    async def _auth_info(self, device_id: str) -> AuthInfo:
        info = self.auth_cache.get(device_id)
        if info is not None:
            return info
        if self._preloaded and device_id not in self._dirty:
            # Not cached: it costs nothing to know again, and a flood of forged
            # IDs would otherwise fill the cache (issue 8: memory under a flood).
            return AuthInfo(exists=False)
        records = await self.db.run("auth_record", q.auth_records_txn, device_id)
        info = self._auth_from(records[0]) if records else AuthInfo(exists=False)
        self._dirty.discard(device_id)
        if len(self.auth_cache) < 200_000:
            self.auth_cache[device_id] = info
        return info

    def log_refusal(self, kind: str, fmt: str, **fields: Any) -> None:
        """Log a refusal of ``kind`` at most once per ``REFUSAL_LOG_INTERVAL``, with a count."""
        times = self.log_throttle.hit(kind, self.clock.seconds())
        if times > 1:
            log.info(fmt + " ({times} times since the last such line)", times=times, **fields)
        elif times:
            log.info(fmt, **fields)

    def _guard_keys(self, device_id: str, source: Addr) -> list[str]:
        """The guard keys a REGISTER counts under.

        A site's cameras often share one NAT address: a device online from
        the address is not held to its address's count, only to its own, so
        one guesser (or one misconfigured camera) there cannot lock out the rest.
        """
        live = self.live.get(device_id)
        if live is not None and live.online and live.addr[1] == source[1]:
            return [device_key(device_id)]
        return [address_key(source[1]), device_key(device_id)]

    def _banned(self, req: Request, tx: ServerTransaction, device_id: str, source: Addr) -> bool:
        """Refuse a REGISTER from a banned key before any lookup or digest work."""
        block = self.guard.check(self._guard_keys(device_id, source), self.clock.seconds(),
                                 has_credentials="Authorization" in req.headers)
        if block is None:
            return False
        self.stats["rejected"] += 1
        self.log_refusal("banned" if block.banned else "backoff",
                         "REGISTER from {peer} for {id} refused unverified: {key} is "
                         + ("banned" if block.banned else "backed off after failed digests"),
                         peer=source, id=device_id, key=block.key)
        self._log_bans(block.newly_banned)
        self._reply(req, tx, 403, "Too Many Failures")
        return True

    def _log_bans(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.log_refusal("ban " + key.partition(":")[0], "{key} banned for {seconds} s after {n} failed digests",
                             key=key, seconds=self.config.auth_ban_seconds, n=self.config.auth_max_failures)

    def _authenticate(self, req: Request, tx: ServerTransaction, device_id: str, info: AuthInfo,
                      source: Addr) -> bool:
        now = self.clock.time()
        authorization = req.headers.get("Authorization")
        if authorization is None:
            self.stats["challenged"] += 1
            headers = [("WWW-Authenticate", c) for c in self.digest.challenges(now, self.rng)]
            self._reply(req, tx, 401, headers=headers)
            return False

        def lookup(username: str, algorithm: str) -> str | None:
            if username != device_id:
                return None
            own = info.ha1_sha256 if algorithm.startswith("SHA") else info.ha1_md5
            if own:
                return own
            if self.config.password and self.config.register_policy == "password" or (
                self.config.password and info.pre_added
            ):
                return ha1(device_id, self.config.domain, self.config.password, algorithm)
            return None

        result = self.digest.verify(authorization, req.method, now, lookup)
        if result.ok:
            self.guard.succeeded(device_key(device_id))
            return True
        if result.stale:
            headers = [("WWW-Authenticate", c) for c in self.digest.challenges(now, self.rng, stale=True)]
            self._reply(req, tx, 401, headers=headers)
            return False
        self.stats["rejected"] += 1
        reason = str(result.reason.value) if result.reason is not None else "bad credentials"
        self.log_refusal("digest", "REGISTER from {id} refused: {reason} {detail}", id=device_id, reason=reason,
                         detail=result.detail)
        self._log_bans(self.guard.failed(self._guard_keys(device_id, source), self.clock.seconds()))
        self._reply(req, tx, 403, "Forbidden", headers=[("Warning", f'399 gbplatform "{reason}"')])
        return False

    def _registered(self, req: Request, tx: ServerTransaction, device_id: str, source: Addr,
                    contact_list: list[NameAddr], expires: int, info: AuthInfo) -> None:
        now, wall = self.clock.seconds(), self.clock.time()
        contact = contact_list[0] if contact_list else None
        gb_version = self._announced_version(req, device_id)
        headers: list[tuple[str, str]] = []
        if contact is not None and contact.uri != "*":
            c = NameAddr(contact.uri, None, {**contact.params, "expires": str(expires)})
            headers.append(("Contact", str(c)))
        headers.append(("Expires", str(expires)))
        if self.config.date_header:
            # GB/T 28181-2016 §9.10.2: time sync through the Date header of the
            # REGISTER 200 OK, in local time with milliseconds.
            local = dt.datetime.fromtimestamp(wall)
            headers.append(("Date", local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}"))
        if dialects.dialect_of(gb_version, self.dialect_setting(device_id)[0]) == "2022":
            # GB/T 28181-2022 §9.1: the platform names its edition back to a device it speaks 2022 to.
            headers.append((dialects.X_GB_VER, dialects.header_value("2022")))
        self._reply(req, tx, 200, headers=headers)
        self.stats["registered"] += 1
        previous = self.live.get(device_id)
        was_online = previous is not None and previous.online
        moved = previous is not None and previous.addr != source
        live = DeviceLive(
            device_id=device_id,
            addr=source,
            contact=contact.uri if contact is not None else None,
            user_agent=req.headers.get("User-Agent"),
            expires_at=now + expires,
            last_seen=now,
            interval=(previous.interval if previous else info.interval) or self.config.keepalive_interval,
            count=(previous.count if previous else info.count) or self.config.keepalive_count,
            charset=previous.charset if previous else info.charset,
            registered_wall=wall,
            gb_version=gb_version,
        )
        if previous is not None and previous.gb_version != gb_version:
            log.info("device {id} now announces GB/T 28181-{version} (was {old})", id=device_id,
                     version=gb_version, old=previous.gb_version)
        self.live[device_id] = live
        if not was_online:
            self._online_counted = None
        self._schedule(live)
        self.auth_cache.setdefault(device_id, info)
        info.exists = True
        self.writer.add(
            "registered",
            q.Registration(device_id, source[1], source[2], source[0], live.contact, live.user_agent,
                           expires, utc_datetime(wall), gb_version),
        )
        if not was_online:
            log.info("device {id} online from {host}:{port}/{transport}", id=device_id, host=source[1],
                     port=source[2], transport=source[0])
            self.publish(DeviceEvent(device_id, True, "registered", wall))
        elif moved:
            log.info("device {id} moved to {host}:{port}/{transport}", id=device_id, host=source[1],
                     port=source[2], transport=source[0])
        for hook in self.on_registered:
            hook(device_id, not was_online or moved)

    def _announced_version(self, req: Request, device_id: str) -> str:
        """The edition a REGISTER announces (GB/T 28181-2022 §9.1 ``X-GB-Ver``); none: 2016.

        An unreadable value is logged (throttled) and taken as 2016: a 2022
        command then gets a clear 422 the operator can lift with the device's
        dialect setting, not a silent timeout.
        """
        value = req.headers.get(dialects.X_GB_VER)
        version = dialects.version_from_header(value)
        if version is None:
            self.log_refusal("x-gb-ver", "device {id} sent an unreadable X-GB-Ver {value!r}: taken as GB/T "
                             "28181-2016", id=device_id, value=(value or "")[:40])
            return "2016"
        return version

    def _unregister(self, req: Request, tx: ServerTransaction, device_id: str, contact_list: list[NameAddr]) -> None:
        self._reply(req, tx, 200, headers=[("Expires", "0")])
        self._go_offline(device_id, "unregistered")

    # -- keepalive -----------------------------------------------------------
    def handle_keepalive(self, req: Request, tx: ServerTransaction, source: Addr, device_id: str,
                         msg: manscdp.ManscdpMessage) -> None:
        """Notify/Keepalive (GB/T 28181-2016 §9.6.1): proof of life."""
        self.stats["keepalives"] += 1
        live = self.live.get(device_id)
        if live is not None and live.expires_at > self.clock.seconds():
            if not may_speak_for(live.addr, source):
                # 404 is what makes a device register again (below): a real
                # device whose NAT mapping changed comes back through an
                # authenticated REGISTER; a stranger gets nothing.
                self.refused_stranger("keepalive", device_id, live.addr, source)
                self._reply(req, tx, 404, "Not Registered", headers=[NOT_FROM_HERE])
                return
            self._reply(req, tx, 200)
            self._keepalive(live, source, msg.charset)
            return
        # Not in memory: a platform restart. If its registration is still valid in
        # the registry and the keepalive comes from the registered address, it
        # brings the device back online; otherwise answer 404 so that the device
        # registers again.
        d = self._relearn(device_id, source, msg.charset)

        def answer(ok: bool) -> None:
            if ok:
                self._reply(req, tx, 200)
            else:
                self._reply(req, tx, 404, "Not Registered")

        d.addCallback(answer)
        d.addErrback(lambda f: self._register_failed(f, req, tx))

    def fast_keepalive(self, ka: KeepaliveRequest, source: Addr, now: float) -> bool:
        """The endpoint's keepalive fast path (``sip.fastpath``): True when it is answered 200 there.

        Only the plain case: the device online, its registration live and the
        keepalive from its registered address (``may_speak_for``'s first rule),
        and a body the MANSCDP decoder's own first step reads (``fast_keepalive``,
        GB/T 28181-2016 §A.2.5.2) in the device's charset, as the router decodes
        it. Everything else (404 to a stranger, a device coming back online,
        a restart's relearning, a TCP reconnection) returns False and takes
        ``handle_keepalive`` through the router, unchanged. The router's device
        ID check (``_device_id_ok``) passed when the device registered: ``live``
        holds only IDs it accepted.
        """
        live = self.live.get(ka.device_id)
        if live is None or not live.online or live.addr != source or live.expires_at <= self.clock.seconds():
            return False
        if len(ka.body) > 512:
            return False  # manscdp.decode tries the fast reading only on bodies up to 512 bytes
        msg = manscdp_fast_keepalive(ka.body, live.charset)
        if msg is None or msg.device_id != ka.device_id:
            return False  # the full path decides (it goes by From, §9.6.1; here only the usual agreement)
        self.stats["keepalives"] += 1
        self._keepalive(live, source, msg.charset)
        return True

    def _keepalive(self, live: DeviceLive, source: Addr, charset: str) -> None:
        now, wall = self.clock.seconds(), self.clock.time()
        live.last_seen = now
        live.last_keepalive_wall = wall
        if charset and charset != live.charset:
            live.charset = charset
        self._follow(live, source)
        came_back = not live.online
        live.online = True
        if came_back:
            self._online_counted = None
        self._schedule(live)
        self.writer.add("keepalive", live.device_id, utc_datetime(wall), source[1], source[2], source[0])
        if came_back:
            self.publish(DeviceEvent(live.device_id, True, "keepalive", wall))

    def _relearn(self, device_id: str, source: Addr, charset: str) -> Deferred[bool]:
        async def run() -> bool:
            if self._preloaded and device_id not in self._dirty and device_id not in self.auth_cache:
                # Not in the registry: nothing to relearn. Forged keepalives come 20,000
                # a second, and each lookup held its transaction while it queued (issue 8).
                return False
            record = await self.db.run("get_device", q.get_device_txn, device_id)
            if record is None or record.register_expires_at is None:
                return False
            remaining = record.register_expires_at.timestamp() - self.clock.time()
            if remaining <= 0 or not record.enabled:
                return False
            registered: Addr = (record.transport or "", record.host or "", record.port or 0)
            if not may_speak_for(registered, source):
                self.refused_stranger("keepalive", device_id, registered, source)
                return False
            now = self.clock.seconds()
            live = self.live.get(device_id)
            if live is None:
                live = DeviceLive(
                    device_id=device_id, addr=source, contact=record.contact, user_agent=record.user_agent,
                    expires_at=now + remaining, last_seen=now, interval=record.keepalive_interval,
                    count=record.keepalive_count, charset=record.charset or "GB2312", online=False,
                    registered_wall=record.registered_at.timestamp() if record.registered_at else 0.0,
                    gb_version=record.gb_version or "2016",
                )
                self.set_dialect(device_id, record.gb_version_setting, record.iframe_element)
                self.live[device_id] = live
            self._keepalive(live, source, charset)
            log.info("device {id} back online from its keepalive", id=device_id)
            for hook in self.on_registered:
                hook(device_id, True)
            return True

        return ensureDeferred(run())

    def known_address(self, device_id: str) -> Addr | None:
        """Where the device last registered, even while it is offline (for the SIP trace)."""
        live = self.live.get(device_id)
        return live.addr if live is not None else None

    def speaks_for(self, device_id: str, source: Addr) -> bool:
        """Whether a MESSAGE from ``source`` may act for the online device ``device_id``."""
        live = self.live.get(device_id)
        return live is not None and live.online and may_speak_for(live.addr, source)

    def refused_stranger(self, what: str, device_id: str, registered: Addr, source: Addr) -> None:
        self.stats["strangers"] = self.stats.get("strangers", 0) + 1
        # Throttled per device: a forged-keepalive flood must not flood the log too.
        self.log_refusal(
            f"stranger {device_id}",
            "{what} for device {id} from {host}:{port}/{transport} refused: "
            "the device is registered at {rhost}:{rport}/{rtransport}",
            what=what, id=device_id, host=source[1], port=source[2], transport=source[0],
            rhost=registered[1], rport=registered[2], rtransport=registered[0],
        )

    def _follow(self, live: DeviceLive, source: Addr) -> None:
        """A device reconnected over TCP: its requests now go to the new connection."""
        if live.addr != source:
            log.info("device {id} reconnected from {host}:{port}/{transport}", id=live.device_id,
                     host=source[1], port=source[2], transport=source[0])
            live.addr = source

    def touch(self, device_id: str, source: Addr, charset: str) -> None:
        """A MESSAGE from a registered device (``speaks_for`` checked) refreshes its charset."""
        live = self.live.get(device_id)
        if live is None:
            return
        self._follow(live, source)
        if charset and charset != live.charset:
            live.charset = charset
            self.writer.add("charset", device_id, charset)

    def set_basic_param(self, device_id: str, interval: int | None, count: int | None) -> None:
        """Apply the device's own heartbeat settings (GB/T 28181-2016 §A.2.6.7)."""
        live = self.live.get(device_id)
        if live is None:
            return
        if interval and 1 <= interval <= 3600:
            live.interval = interval
        if count and 1 <= count <= 100:
            live.count = count
        self._schedule(live)
        self.writer.add("basic_param", device_id, live.interval, live.count, utc_datetime(self.clock.time()))

    # -- expiry ----------------------------------------------------------------
    def _schedule(self, live: DeviceLive) -> None:
        deadline = live.deadline
        heapq.heappush(self._deadlines, (deadline, live.device_id))
        if self._timer_at is None or deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.clock.call_later(max(0.0, at - self.clock.seconds()) + 0.001, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock.seconds()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, device_id = heapq.heappop(self._deadlines)
            live = self.live.get(device_id)
            if live is None or not live.online or live.deadline > now:
                continue  # stale entry: the device was heard since
            reason = "registration expired" if live.expires_at <= now else (
                f"{live.count} keepalives missed"
            )
            self._go_offline(device_id, reason)
        if self._deadlines:
            # At most one sweep a second: every keepalive leaves a stale entry a moment after the
            # previous one, and arming for each made 833 timer calls a second at 50,000 devices
            # (issue 12). An offline device is seen at most EXPIRY_SWEEP late (its deadline is minutes).
            self._arm(max(self._deadlines[0][0], now + EXPIRY_SWEEP))

    def _go_offline(self, device_id: str, reason: str) -> None:
        live = self.live.get(device_id)
        wall = self.clock.time()
        self._online_counted = None
        if live is not None:
            was_online = live.online
            live.online = False
            if reason == "unregistered" or live.expires_at <= self.clock.seconds():
                del self.live[device_id]
        else:
            was_online = False
        self.writer.add("unregistered" if reason == "unregistered" else "offline", device_id, utc_datetime(wall))
        if was_online:
            self.stats["offline"] += 1
            log.info("device {id} offline: {reason}", id=device_id, reason=reason)
            self.publish(DeviceEvent(device_id, False, reason, wall))
            for hook in self.on_offline:
                hook(device_id, reason)

    def online_count(self) -> int:
        """Devices online now; recounted at most once a second (health is polled often)."""
        now = self.clock.seconds()
        if self._online_counted is None or now - self._online_counted[0] >= 1.0 or now < self._online_counted[0]:
            self._online_counted = (now, sum(1 for live in self.live.values() if live.online))
        return self._online_counted[1]
