"""Platform settings: a TOML file, then ``GBP_<SECTION>_<KEY>`` environment overrides.

Theory of operation
-------------------
Each ``[section]`` of the file is a frozen dataclass; ``Config`` holds one of
each.  Every field carries a ``_Spec`` in its metadata (kind, what a valid value
looks like, a normaliser/validator and a one-line description), so loading,
error messages, ``Config.to_toml()`` and ``config_reference()`` are all driven
by the same table and cannot drift apart.

Loading is strict on purpose: an unknown section or key, a value of the wrong
type or out of range raises ``ConfigError`` with one line that names the key and
where the value came from, e.g.::

    sip.port: expected an integer 1-65535, got 'abc' (from GBP_SIP_PORT)

Environment variables always arrive as strings and are parsed per kind
(booleans accept true/false/1/0/yes/no, lists are comma-separated).  Variables
whose section part is not a known section (``GBP_CONFIG``, test settings…) are
left alone; a known section with an unknown key is a typo and is rejected.
"""

import dataclasses
import difflib
import ipaddress
import math
import os.path
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gbplatform import __version__
from gbplatform.core.ids import is_gb_id

__all__ = [
    "AlarmsConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DatabaseConfig",
    "HttpConfig",
    "LogConfig",
    "MediaConfig",
    "PositionsConfig",
    "RecordConfig",
    "SipConfig",
    "SnapshotConfig",
    "StorageConfig",
    "SubscriptionsConfig",
    "WebhooksConfig",
    "bool_word",
    "config_reference",
    "env_var_name",
    "load_config",
]

_T = TypeVar("_T")

ENV_PREFIX = "GBP_"


class ConfigError(ValueError):
    """An invalid configuration; ``str(error)`` is one line naming the key."""


# --------------------------------------------------------------------------
# Field specifications
# --------------------------------------------------------------------------

_STRING = "string"
_INTEGER = "integer"
_FLOAT = "float"
_BOOLEAN = "boolean"
_STRING_LIST = "list of strings"
_INTEGER_OR_AUTO = 'integer or "auto"'

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})
_ENV_INTEGER = re.compile(r"[+-]?[0-9]+")


def bool_word(text: str) -> bool | None:
    """How every boolean setting is read: true/1/yes, false/0/no (any case,
    spaces ignored); None for anything else."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


@dataclass(frozen=True)
class _Spec:
    kind: str
    expected: str
    check: Callable[[Any], Any]
    doc: str
    secret: bool = False


def _opt(
    default: _T,
    kind: str,
    expected: str,
    doc: str,
    check: Callable[[Any], Any] | None = None,
    secret: bool = False,
) -> _T:
    spec = _Spec(kind, expected, check or (lambda v: v), doc, secret)
    return field(default=default, metadata={"spec": spec})


def _int_range(lo: int, hi: int | None = None) -> Callable[[int], int]:
    def check(v: int) -> int:
        if v < lo or (hi is not None and v > hi):
            raise ValueError(v)
        return v

    return check


def _positive_float(v: float) -> float:
    if not v > 0:
        raise ValueError(v)
    return v


def _non_negative_float(v: float) -> float:
    if v < 0:
        raise ValueError(v)
    return v


def _one_of(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    def check(v: str) -> str:
        v = v.strip().lower()
        v = (aliases or {}).get(v, v)
        if v not in choices:
            raise ValueError(v)
        return v

    return check


def _subset_of(*choices: str) -> Callable[[list[str]], tuple[str, ...]]:
    canonical = {c.lower(): c for c in choices}

    def check(v: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for item in v:
            name = canonical.get(item.strip().lower())
            if name is None:
                raise ValueError(item)
            if name not in out:
                out.append(name)
        if not out:
            raise ValueError(v)
        return tuple(out)

    return check


def _digits(n: int) -> Callable[[str], str]:
    pattern = re.compile(rf"[0-9]{{{n}}}")

    def check(v: str) -> str:
        if pattern.fullmatch(v) is None:
            raise ValueError(v)
        return v

    return check


def _gb_id(v: str) -> str:
    if not is_gb_id(v):
        raise ValueError(v)
    return v


def _ip(v: str) -> str:
    return str(ipaddress.ip_address(v.strip()))


def _ip_or_empty(v: str) -> str:
    return _ip(v) if v.strip() else ""


def _header_text(v: str) -> str:
    # A CR/LF here would inject SIP header lines (RFC 3261 §25.1 TEXT-UTF8).
    if not v or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise ValueError(v)
    return v


_DB_URL = re.compile(r"(?:sqlite|postgresql)(?:\+[A-Za-z0-9_]+)?://.*", re.DOTALL)


def _database_url(v: str) -> str:
    v = v.strip()
    if v and _DB_URL.fullmatch(v) is None:
        raise ValueError(v)
    return v


_BASE_URL = re.compile(r"https?://[^\s/?#@]+", re.IGNORECASE)


def _base_url(v: str) -> str:
    # Scheme and authority only: the API's paths are appended to it (RFC 3986 §3).
    v = v.strip().rstrip("/")
    if v and _BASE_URL.fullmatch(v) is None:
        raise ValueError(v)
    return v


def _path(v: str) -> str:
    if not v.strip():
        raise ValueError(v)
    return os.path.expanduser(v)


_PORT = "an integer 1-65535"
_POSITIVE = "an integer >= 1"
_BOOL = "a boolean (true/false/1/0/yes/no)"


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _at_least_zero(v: float) -> float:
    if not v >= 0:  # NaN too
        raise ValueError(v)
    return v


@dataclass(frozen=True)
class SipConfig:
    """``[sip]``: the SIP server (GB/T 28181-2016 §9)."""

    id: str = _opt(
        "34020000002000000001", _STRING, "a 20-digit GB/T 28181 ID",
        "Platform SIP ID, 20 digits (GB/T 28181-2016 Annex D; type 200).", _gb_id,
    )
    domain: str = _opt(
        "3402000000", _STRING, "a 10-digit SIP domain",
        "SIP domain and digest realm: usually the first 10 digits of sip.id.", _digits(10),
    )
    password: str = _opt(
        "12345678", _STRING, "a string",
        "Global device password; empty: only pre-added devices with their own password.",
        secret=True,
    )
    host: str = _opt("0.0.0.0", _STRING, "an IP address", "Address the SIP server listens on.", _ip)
    port: int = _opt(5060, _INTEGER, _PORT, "SIP port (UDP and TCP).", _int_range(1, 65535))
    external_ip: str = _opt(
        "", _STRING, "an IP address or empty",
        "Address put in SDP and Contact; empty: sip.host, or 127.0.0.1 if that is 0.0.0.0.",
        _ip_or_empty,
    )
    transports: tuple[str, ...] = _opt(
        ("udp", "tcp"), _STRING_LIST, 'a non-empty list of "udp", "tcp"',
        "SIP transports to listen on.", _subset_of("udp", "tcp"),
    )
    register_policy: str = _opt(
        "password", _STRING, 'one of "password", "pre_added", "open"',
        "password: global or per-device password; pre_added: only devices created "
        "in the API; open: no authentication (lab use).",
        _one_of("password", "pre_added", "open"),
    )
    strict_id: bool = _opt(True, _BOOLEAN, _BOOL, "Accept only 20-digit device IDs.")
    register_expires_max: int = _opt(
        3600, _INTEGER, _POSITIVE, "Longest REGISTER Expires granted, seconds.", _int_range(1)
    )
    register_expires_min: int = _opt(
        60, _INTEGER, _POSITIVE,
        "Shortest REGISTER Expires accepted (423 below it, RFC 3261 §10.3), seconds.",
        _int_range(1),
    )
    keepalive_interval: int = _opt(
        60, _INTEGER, _POSITIVE, "Expected keepalive interval, seconds.", _int_range(1)
    )
    keepalive_count: int = _opt(
        3, _INTEGER, _POSITIVE,
        "Missed keepalives before a device is offline (a device's BasicParam overrides).",
        _int_range(1),
    )
    nonce_ttl: int = _opt(
        300, _INTEGER, _POSITIVE, "Lifetime of a digest nonce, seconds.", _int_range(1)
    )
    digest_algorithms: tuple[str, ...] = _opt(
        ("MD5",), _STRING_LIST, 'a non-empty list of "MD5", "SHA-256"',
        "Digest algorithms offered, in order (RFC 8760).", _subset_of("MD5", "SHA-256"),
    )
    date_header: bool = _opt(
        True, _BOOLEAN, _BOOL,
        "Send a Date header in REGISTER 200 OK for device time sync (GB/T 28181-2016 §9.10).",
    )
    trace_size: int = _opt(
        200, _INTEGER, "an integer >= 0", "SIP messages kept per device in the trace.",
        _int_range(0),
    )
    query_timeout: float = _opt(
        10.0, _FLOAT, "a number > 0", "Timeout for DeviceInfo/DeviceStatus queries, seconds.",
        _positive_float,
    )
    catalog_timeout: float = _opt(
        30.0, _FLOAT, "a number > 0", "Timeout for a whole Catalog query, seconds.",
        _positive_float,
    )
    onboarding_queries: int = _opt(
        1500, _INTEGER, "an integer >= 3",
        "Onboarding queries (DeviceInfo, BasicParam, Catalog: 3 per newly registered device) "
        "in flight at once, all devices together: the ceiling of the adaptive limit "
        "(sip.onboarding_max_lag).",
        _int_range(3),
    )
    onboarding_max_lag: float = _opt(
        0.25, _FLOAT, "a number >= 0",
        "Reactor lateness, seconds, past which onboarding is held back: the limit on onboarding queries "
        "in flight shrinks (AIMD) while the reactor runs later than this, and grows back when it keeps "
        "up, so REGISTER and keepalives keep their answers in time during a storm. 0: no adaptation.",
        _non_negative_float,
    )
    user_agent: str = _opt(
        f"gbplatform/{__version__}", _STRING, "a non-empty single-line string",
        "User-Agent header value.", _header_text,
    )
    auth_max_failures: int = _opt(
        10, _INTEGER, "an integer >= 0",
        "Failed REGISTER digests from one source address or for one device ID before a ban "
        "(after 2, fast retries are backed off); 0: no limit.",
        _int_range(0),
    )
    auth_ban_seconds: int = _opt(
        600, _INTEGER, _POSITIVE,
        "How long a ban lasts (REGISTERs answered 403 unverified), seconds; failures are "
        "forgotten after as long without one.",
        _int_range(1),
    )
    max_transactions: int = _opt(
        100_000, _INTEGER, "an integer >= 100",
        "SIP transactions held at once (each lives 32 s after its answer, RFC 3261 §17.2.2, "
        "about 4.5 KB); past it new requests get 503. Bounds a flood's memory (docs/performance.md).",
        _int_range(100),
    )
    notify_rate: float = _opt(
        20.0, _FLOAT, "a number >= 0",
        "Notify bodies other than Keepalive (alarms, positions, catalog changes) a device may send per second, "
        "by MESSAGE or NOTIFY, on average; past it they are answered 503 with Retry-After. 0: no limit.",
        _at_least_zero,
    )
    notify_burst: int = _opt(
        100, _INTEGER, _POSITIVE, "Notify bodies a device may send at once above sip.notify_rate.", _int_range(1),
    )

    @property
    def advertised_ip(self) -> str:
        """The address other parties should reach us at (SDP ``c=``, Contact)."""
        if self.external_ip:
            return self.external_ip
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        if addr.is_unspecified:
            return "::1" if addr.version == 6 else "127.0.0.1"
        return self.host


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the API and web console listener."""

    host: str = _opt("0.0.0.0", _STRING, "an IP address", "Address the HTTP API listens on.", _ip)
    port: int = _opt(8080, _INTEGER, _PORT, "HTTP API port.", _int_range(1, 65535))
    advertised_url: str = _opt(
        "", _STRING, 'empty or an "http(s)://host[:port]" URL',
        "Base URL devices reach the API at (snapshot UploadURL); empty: http://<media.ip or sip's "
        "advertised address>:<http.port>.", _base_url,
    )


@dataclass(frozen=True)
class SnapshotConfig:
    """``[snapshot]``: pictures devices take and upload (GB/T 28181-2022 SnapShotConfig, docs/snapshots.md)."""

    max_bytes: int = _opt(
        5 * 1024 * 1024, _INTEGER, "an integer >= 1024", "Largest picture a device may upload, bytes.",
        _int_range(1024),
    )
    upload_timeout: float = _opt(
        300.0, _FLOAT, "a number > 0",
        "Seconds a snapshot session waits, after its last picture is due, for uploads and "
        "UploadSnapShotFinished before it expires.", _positive_float,
    )
    retention_days: int = _opt(
        30, _INTEGER, "an integer >= 0", "Days uploaded snapshots are kept; 0: forever.", _int_range(0),
    )
    purge_interval: float = _opt(
        3600.0, _FLOAT, "a number > 0", "Seconds between purges of snapshots past retention_days.",
        _positive_float,
    )


@dataclass(frozen=True)
class ApiConfig:
    """``[api]``: API authentication."""

    token: str = _opt(
        "", _STRING, "a string",
        "Bearer token; empty: generated at first start, stored in <data_dir>/api_token.",
        secret=True,
    )
    play_token_ttl: float = _opt(
        14400.0, _FLOAT, "a number > 0",
        "Seconds a playback URL from /play or the recording timeline can start or control playback.",
        _positive_float,
    )
    event_backlog: int = _opt(
        1000, _INTEGER, _POSITIVE,
        "Events kept for clients of /api/v1/events that reconnect with Last-Event-ID.", _int_range(1),
    )
    event_clients: int = _opt(
        100, _INTEGER, _POSITIVE,
        "Clients of /api/v1/events (Server-Sent Events) connected at once; more get 503.", _int_range(1),
    )
    event_keepalive: float = _opt(
        15.0, _FLOAT, "a number > 0",
        "Seconds between the comment lines (': keepalive') that keep an idle /api/v1/events connection "
        "open through proxies.",
        _positive_float,
    )
    event_client_buffer: int = _opt(
        1024 * 1024, _INTEGER, "an integer >= 4096",
        "Bytes of events kept for an /api/v1/events client that reads too slowly; past it the client gets "
        "'event: overflow' and is disconnected (the platform never waits for it).",
        _int_range(4096),
    )


@dataclass(frozen=True)
class DatabaseConfig:
    """``[database]``: the registry database."""

    url: str = _opt(
        "", _STRING, 'empty, "sqlite:///..." or "postgresql://..."',
        "Database URL; empty: sqlite:///<data_dir>/gbplatform.db.", _database_url,
    )
    pool_size: int = _opt(
        4, _INTEGER, _POSITIVE, "Database threads/connections.", _int_range(1)
    )


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: local state."""

    data_dir: str = _opt(
        "./data", _STRING, "a non-empty path",
        "Directory for the SQLite database, API token and recordings.", _path,
    )


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: logging to stdout."""

    level: str = _opt(
        "info", _STRING, 'one of "debug", "info", "warn", "error", "critical"',
        "Lowest level logged.",
        _one_of("debug", "info", "warn", "error", "critical", aliases={"warning": "warn"}),
    )
    format: str = _opt(
        "text", _STRING, 'one of "text", "json"', "text, or json (one object per line).",
        _one_of("text", "json"),
    )


def _drain_interval(v: float) -> float:
    if not 0 <= v <= 0.1:
        raise ValueError(v)
    return v


@dataclass(frozen=True)
class MediaConfig:
    """``[media]``: receiving RTP from devices (GB/T 28181-2016 §9.2)."""

    ip: str = _opt(
        "", _STRING, "an IP address or empty",
        "Address devices send RTP to (SDP c=); empty: sip.external_ip, else sip's advertised address.",
        _ip_or_empty,
    )
    rtp_port_min: int = _opt(30000, _INTEGER, _PORT, "First port of the RTP range.", _int_range(1024, 65535))
    rtp_port_max: int = _opt(30499, _INTEGER, _PORT, "Last port of the RTP range.", _int_range(1024, 65535))
    single_port: int = _opt(
        0, _INTEGER, "an integer 0-65535",
        "Single-port mode: this one UDP and TCP port receives every stream, told apart by SSRC; "
        "0: off (an RTP/RTCP port pair per stream from the range).",
        _int_range(0, 65535),
    )
    single_port_rcvbuf: int = _opt(
        64 * 1024 * 1024, _INTEGER, _POSITIVE,
        "UDP receive buffer of the single port, bytes (all streams share it; "
        "above net.core.rmem_max only with CAP_NET_ADMIN).",
        _int_range(65536),
    )
    rcvbuf: int = _opt(
        4 * 1024 * 1024, _INTEGER, _POSITIVE, "UDP receive buffer per RTP socket, bytes.", _int_range(65536)
    )
    workers: int = _opt(
        0, _INTEGER_OR_AUTO, 'an integer 0-256 or "auto"',
        "Media worker processes receiving RTP (socket reads, reorder, PS demux), one core each; frames go to "
        "the main process, which keeps every output. 0: received in the main process; auto: one per CPU. "
        "Not used in single-port mode.",
        _int_range(0, 256),
    )
    drain_interval: float = _opt(
        0.005, _FLOAT, "a number 0-0.1",
        "Seconds between reads of every stream's RTP UDP socket by one timer; 0: read at each wakeup.",
        _drain_interval,
    )
    no_rtp_timeout: float = _opt(
        10.0, _FLOAT, "a number > 0", "Seconds without RTP before a stream is ended (BYE).",
        _positive_float,
    )
    invite_timeout: float = _opt(
        10.0, _FLOAT, "a number > 0",
        "Seconds to wait for a device's final answer to an INVITE; then the play fails (504) and the INVITE "
        "is cancelled.",
        _positive_float,
    )
    idle_timeout: float = _opt(
        30.0, _FLOAT, "a number > 0", "Seconds without a viewer before a stream is ended (BYE).",
        _positive_float,
    )
    rtsp_port: int = _opt(
        8554, _INTEGER, "an integer 0-65535", "RTSP server port (rtsp://host:port/live/<channel>); 0: disabled.",
        _int_range(0, 65535),
    )
    gop_cache_bytes: int = _opt(
        16 * 1024 * 1024, _INTEGER, "an integer >= 0",
        "Most bytes of the frames since the last keyframe kept per stream, so a new viewer starts at once "
        "(about 1 MiB per 4 Mbit/s stream); 0: off, a new viewer waits for the next keyframe.",
        _int_range(0),
    )
    gop_cache_idle: float = _opt(
        10.0, _FLOAT, "a number >= 0",
        "Seconds without a viewer after which a stream's GOP cache keeps only its latest keyframe: a new "
        "viewer gets that picture at once and motion from the next keyframe; 0: never, the GOP is kept.",
        _non_negative_float,
    )


@dataclass(frozen=True)
class RecordConfig:
    """``[record]``: recording channels to local disk / NAS / S3 (docs/recording.md)."""

    directory: str = _opt(
        "", _STRING, "a path or empty",
        "Recordings directory (a local disk or NAS mount); empty: <data_dir>/recordings.",
    )
    segment_seconds: float = _opt(
        60.0, _FLOAT, "a number > 0",
        "Segment length, seconds: a new file starts at the first keyframe past it.", _positive_float,
    )
    queue_bytes: int = _opt(
        64 * 1024 * 1024, _INTEGER, "an integer >= 65536",
        "Write queue per disk, bytes; when full, frames are dropped up to the next keyframe.",
        _int_range(65536),
    )
    retention_days: int = _opt(
        30, _INTEGER, "an integer >= 0", "Days recordings are kept (a channel's policy may override); 0: forever.",
        _int_range(0),
    )
    quota_bytes: int = _opt(
        0, _INTEGER, "an integer >= 0", "Most bytes of recordings kept; the oldest go first; 0: no quota.",
        _int_range(0),
    )
    min_free_bytes: int = _opt(
        1024 * 1024 * 1024, _INTEGER, "an integer >= 0",
        "Free disk space kept: below it the oldest recordings are deleted.", _int_range(0),
    )
    check_interval: float = _opt(
        5.0, _FLOAT, "a number > 0", "Seconds between evaluations of recording policies and plans.",
        _positive_float,
    )
    retention_interval: float = _opt(
        60.0, _FLOAT, "a number > 0", "Seconds between retention, quota and free-space runs.", _positive_float,
    )
    retry_max: float = _opt(
        60.0, _FLOAT, "a number > 0", "Longest wait between re-INVITEs of a recorded channel, seconds.",
        _positive_float,
    )
    nas_timeout: float = _opt(
        10.0, _FLOAT, "a number > 0",
        "Seconds a storage probe or a busy writer may hang before the storage is reported unhealthy.",
        _positive_float,
    )
    timezone: str = _opt(
        "", _STRING, "an IANA time zone or empty", "Time zone of recording plans; empty: the server's.",
    )
    backend: str = _opt(
        "local", _STRING, 'one of "local", "s3"',
        "local: keep segments in record.directory; s3: upload closed segments to the bucket.",
        _one_of("local", "s3"),
    )
    s3_endpoint: str = _opt("", _STRING, "a URL or empty", "S3 endpoint URL (MinIO, Ceph RGW); empty: AWS.")
    s3_bucket: str = _opt("gbplatform", _STRING, "a string", "S3 bucket (created if missing).")
    s3_region: str = _opt("us-east-1", _STRING, "a string", "S3 region.")
    s3_access_key: str = _opt("", _STRING, "a string", "S3 access key; empty: boto3's defaults.", secret=True)
    s3_secret_key: str = _opt("", _STRING, "a string", "S3 secret key; empty: boto3's defaults.", secret=True)
    s3_prefix: str = _opt("", _STRING, "a string", "Prefix of the object keys.")
    s3_multipart_bytes: int = _opt(
        8 * 1024 * 1024, _INTEGER, "an integer >= 5242880", "Uploads above this size are multipart, in parts this big.",
        _int_range(5 * 1024 * 1024),
    )
    keep_local_hours: float = _opt(
        0.0, _FLOAT, "a number >= 0", "Hours a local copy is kept after its upload to S3.",
        _non_negative_float,
    )


@dataclass(frozen=True)
class SubscriptionsConfig:
    """``[subscriptions]``: what the platform subscribes to on every device (GB/T 28181-2016 §9.11, RFC 6665).

    A device's own setting (``PUT /api/v1/devices/{id}/subscriptions``) overrides each default.
    """

    catalog: bool = _opt(False, _BOOLEAN, _BOOL, "Subscribe to every device's catalog changes (§9.11.1, §A.2.5.4).")
    alarm: bool = _opt(False, _BOOLEAN, _BOOL, "Subscribe to every device's alarms (§9.11, §A.2.4.10).")
    mobile_position: bool = _opt(
        False, _BOOLEAN, _BOOL, "Subscribe to every device's mobile position (§9.11, §A.2.4.11).",
    )
    ptz_position: bool = _opt(
        False, _BOOLEAN, _BOOL, "Subscribe to the PTZ position of every GB/T 28181-2022 device (2016 devices lack it).",
    )
    expires: int = _opt(
        3600, _INTEGER, "an integer >= 10", "Subscription duration asked for, seconds; refreshed at 80 % of what "
        "the device grants.", _int_range(10),
    )
    position_interval: int = _opt(
        5, _INTEGER, _POSITIVE, "Mobile position reporting interval asked for (Interval), seconds.",
        _int_range(1, 3600),
    )


_WEBHOOK_URL = re.compile(r"https?://[^/?#\s]+(?:[/?#]\S*)?", re.IGNORECASE)


def _webhook_urls(v: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for url in v:
        url = url.strip()
        # An absolute http(s) URL (RFC 9110 §4.2) with a host; no spaces or controls (they would
        # end up in the request line).
        if _WEBHOOK_URL.fullmatch(url) is None or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise ValueError(url)
        if url not in out:
            out.append(url)
    return tuple(out)


def _event_kinds(v: list[str]) -> tuple[str, ...]:
    from gbplatform.events.bus import EVENT_KINDS  # the bus owns the list of kinds

    out: list[str] = []
    for kind in v:
        kind = kind.strip().lower()
        if kind not in EVENT_KINDS:
            raise ValueError(kind)
        if kind not in out:
            out.append(kind)
    return tuple(out)


@dataclass(frozen=True)
class WebhooksConfig:
    """``[webhooks]``: every event of the bus POSTed as JSON to these URLs (docs/events.md)."""

    urls: tuple[str, ...] = _opt(
        (), _STRING_LIST, "a list of http:// or https:// URLs",
        "URLs each event is POSTed to as JSON, in order per URL; empty: no webhooks.", _webhook_urls,
    )
    types: tuple[str, ...] = _opt(
        (), _STRING_LIST, "a list of event kinds (alarm, device, channel, position, stream, record, subscription, "
        "upgrade, snapshot, ptz)",
        "Event kinds sent; empty: every kind.", _event_kinds,
    )
    timeout: float = _opt(
        10.0, _FLOAT, "a number > 0",
        "Seconds to connect and get an answer from a webhook URL; past it the attempt failed.", _positive_float,
    )
    max_queue: int = _opt(
        1000, _INTEGER, _POSITIVE,
        "Events waiting per URL while it is slow or down; past it the oldest are dropped (counted).",
        _int_range(1),
    )
    max_attempts: int = _opt(
        5, _INTEGER, _POSITIVE,
        "Attempts per event (5xx, 408, 429, timeouts and connection errors are retried with exponential "
        "back-off from 1 s to 60 s; other 4xx are not).",
        _int_range(1),
    )
    secret: str = _opt(
        "", _STRING, "a string",
        "Key of the X-GBPlatform-Signature header (sha256=<hex HMAC-SHA256 of the body>); empty: no signature.",
        secret=True,
    )


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*(@)")


@dataclass(frozen=True)
class ControlConfig:
    """``[control]``: device control and maintenance (docs/devices.md)."""

    upgrade_timeout: float = _opt(
        1800.0, _FLOAT, "a number > 0",
        "Seconds a firmware upgrade may take before, without a DeviceUpgradeResult, it is marked failed.",
        _positive_float,
    )


@dataclass(frozen=True)
class AlarmsConfig:
    """``[alarms]``: alarms devices report (GB/T 28181-2016 §9.4; docs/alarms.md)."""

    snapshot: bool = _opt(
        False, _BOOLEAN, _BOOL,
        "Take a snapshot of the alarm's channel on every alarm; a channel's alarm-settings override it.",
    )
    retention_days: int = _opt(
        90, _INTEGER, "an integer >= 0", "Days alarms (and their snapshots) are kept; 0: forever.", _int_range(0),
    )


@dataclass(frozen=True)
class PositionsConfig:
    """``[positions]``: mobile positions devices report (GB/T 28181-2016 §9.10; docs/alarms.md)."""

    retention_days: int = _opt(
        30, _INTEGER, "an integer >= 0", "Days mobile positions are kept; 0: forever.", _int_range(0),
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration; build it with ``load_config``."""

    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log: LogConfig = field(default_factory=LogConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    subscriptions: SubscriptionsConfig = field(default_factory=SubscriptionsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    positions: PositionsConfig = field(default_factory=PositionsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL to use.

        Empty means SQLite in the data directory.  A plain ``postgresql://``
        is pinned to psycopg 3, the driver we ship (SQLAlchemy's default for
        that scheme is psycopg2).
        """
        url = self.database.url
        if not url:
            return "sqlite:///" + os.path.join(self.storage.data_dir, "gbplatform.db")
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url[len("postgresql://"):]
        return url

    @property
    def media_ip(self) -> str:
        """The address put in SDP offers as where we receive RTP."""
        return self.media.ip or self.sip.advertised_ip

    @property
    def api_base_url(self) -> str:
        """The API's base URL as devices reach it (no trailing slash): ``http.advertised_url``, else
        built from the media address and ``http.port``."""
        if self.http.advertised_url:
            return self.http.advertised_url
        host = self.media_ip
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http.port}"

    @property
    def api_token_path(self) -> str:
        """Where a generated API token is kept when ``api.token`` is empty."""
        return os.path.join(self.storage.data_dir, "api_token")

    def to_toml(self, show_secrets: bool = False) -> str:
        """The effective configuration as TOML that ``load_config`` reads back.

        Secrets (``sip.password``, ``api.token``, a password inside
        ``database.url``) are shown as ``***`` unless ``show_secrets``.
        """
        lines = [f"# Effective gbplatform {__version__} configuration."]
        for section, obj in _section_objects(self):
            lines += ["", f"[{section}]"]
            for f in dataclasses.fields(obj):
                spec: _Spec = f.metadata["spec"]
                value = getattr(obj, f.name)
                if not show_secrets:
                    if spec.secret and value:
                        value = "***"
                    elif section == "database" and f.name == "url":
                        value = _URL_PASSWORD.sub(r"\1***\2", value)
                lines.append(f"# {spec.doc}")
                lines.append(f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


_SECTIONS: dict[str, type[Any]] = {
    "sip": SipConfig,
    "http": HttpConfig,
    "api": ApiConfig,
    "database": DatabaseConfig,
    "storage": StorageConfig,
    "log": LogConfig,
    "media": MediaConfig,
    "record": RecordConfig,
    "snapshot": SnapshotConfig,
    "subscriptions": SubscriptionsConfig,
    "control": ControlConfig,
    "alarms": AlarmsConfig,
    "positions": PositionsConfig,
    "webhooks": WebhooksConfig,
}


def _section_objects(config: Config) -> list[tuple[str, Any]]:
    return [(name, getattr(config, name)) for name in _SECTIONS]


def _specs(cls: type[Any]) -> dict[str, _Spec]:
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------
# TOML output
# --------------------------------------------------------------------------

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def config_reference() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` for every setting, for the docs.

    ``key`` is ``section.name``; its environment variable is ``env_var_name(key)``.
    ``default`` is rendered as a TOML literal.
    """
    rows = []
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            spec: _Spec = f.metadata["spec"]
            rows.append((f"{section}.{f.name}", spec.kind, _toml_value(f.default), spec.doc))
    return rows


def env_var_name(key: str) -> str:
    """``"sip.port"`` -> ``"GBP_SIP_PORT"``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _convert(kind: str, raw: Any, from_env: bool) -> Any:
    """Turn a file or environment value into the field's Python type, or raise ValueError."""
    if kind == _STRING:
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    if kind == _INTEGER:
        if from_env:
            if _ENV_INTEGER.fullmatch(raw.strip()) is None:
                raise ValueError(raw)
            return int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(raw)
        return raw
    if kind == _FLOAT:
        if from_env:
            value = float(raw)
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(raw)
        else:
            value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
        return value
    if kind == _BOOLEAN:
        if isinstance(raw, bool):
            return raw
        flag = bool_word(str(raw)) if isinstance(raw, str | int) else None
        if flag is None:
            raise ValueError(raw)
        return flag
    if kind == _INTEGER_OR_AUTO:
        # "auto": one per CPU the machine has (os.cpu_count()), decided at load.
        if isinstance(raw, str) and raw.strip().lower() == "auto":
            return os.cpu_count() or 1
        return _convert(_INTEGER, raw, from_env)
    if kind == _STRING_LIST:
        if from_env:
            return [item.strip() for item in raw.split(",") if item.strip()]
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise ValueError(raw)
        return raw
    raise AssertionError(f"unknown kind {kind!r}")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {_one_line(str(e))}") from e


def load_config(path: str | None, env: Mapping[str, str]) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``GBP_*`` variables in ``env``.

    Raises ``ConfigError`` (one line, naming the key and the source) on any
    unknown section or key, wrongly typed or out-of-range value.
    """
    # section -> key -> (raw value, source, came from the environment)
    given: dict[str, dict[str, tuple[Any, str, bool]]] = {name: {} for name in _SECTIONS}

    if path is not None:
        for section, table in _read_toml(path).items():
            cls = _SECTIONS.get(section)
            if cls is None:
                hint = _did_you_mean(section, list(_SECTIONS))
                raise ConfigError(f"{section}: unknown section (from {path}){hint}")
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a table, got {table!r} (from {path})")
            specs = _specs(cls)
            for key, value in table.items():
                if key not in specs:
                    hint = _did_you_mean(key, list(specs))
                    raise ConfigError(f"{section}.{key}: unknown key (from {path}){hint}")
                given[section][key] = (value, path, False)

    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("_")
        section, key = section.lower(), key.lower()
        cls = _SECTIONS.get(section)
        if cls is None:
            continue
        specs = _specs(cls)
        if key not in specs:
            hint = _did_you_mean(key, list(specs))
            raise ConfigError(f"{section}.{key}: unknown key (from {name}){hint}")
        given[section][key] = (env[name], name, True)

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        specs = _specs(cls)
        values: dict[str, Any] = {}
        for key, (raw, source, from_env) in given[section].items():
            spec = specs[key]
            try:
                values[key] = spec.check(_convert(spec.kind, raw, from_env))
            except ValueError:
                raise ConfigError(
                    f"{section}.{key}: expected {spec.expected}, got {raw!r} (from {source})"
                ) from None
        sections[section] = cls(**values)
    config = Config(**sections)
    _check_consistency(config, given)
    return config


def _check_consistency(
    config: Config, given: dict[str, dict[str, tuple[Any, str, bool]]]
) -> None:
    """Rules that involve two keys; the error names the key set last."""

    def source(section: str, *keys: str) -> str:
        for key in keys:
            if key in given[section]:
                return given[section][key][1]
        return "default"

    sip = config.sip
    if sip.register_expires_min > sip.register_expires_max:
        src = source("sip", "register_expires_min", "register_expires_max")
        raise ConfigError(
            f"sip.register_expires_min: expected an integer <= sip.register_expires_max "
            f"({sip.register_expires_max}), got {sip.register_expires_min} (from {src})"
        )
    media = config.media
    if media.rtp_port_max - media.rtp_port_min < 3:
        src = source("media", "rtp_port_min", "rtp_port_max")
        raise ConfigError(
            f"media.rtp_port_max: expected at least rtp_port_min + 3 ({media.rtp_port_min + 3}) "
            f"for one RTP/RTCP pair, got {media.rtp_port_max} (from {src})"
        )
    http = config.http
    if "tcp" in sip.transports and http.port == sip.port and _hosts_overlap(sip.host, http.host):
        src = source("http", "port", "host") if given["http"] else source("sip", "port", "host")
        raise ConfigError(
            f"http.port: {http.port} is also the SIP TCP port (sip.port) on the same "
            f"address (from {src})"
        )


def _hosts_overlap(a: str, b: str) -> bool:
    try:
        addr_a, addr_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    return addr_a == addr_b or addr_a.is_unspecified or addr_b.is_unspecified
