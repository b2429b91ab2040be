"""A simulated device's snapshot upload (GB/T 28181-2022 §9.14): SnapShotConfig → JPEGs over HTTP →
UploadSnapShotFinished.

On a DeviceConfig carrying ``SnapShotConfig`` the device answers ``Result``
OK (ERROR for a SnapNum outside 1-10, an Interval below 1 or no http(s)
UploadURL), then takes ``SnapNum`` pictures ``Interval`` seconds apart on
the reactor's clock. Each picture is a real JPEG: a small test pattern
(moving bars, one shade per picture) encoded by FFmpeg's ``mjpeg`` encoder
through PyAV. Each is POSTed as ``image/jpeg`` to the UploadURL with its
``SnapShotFileID`` as ``file_id`` (``<channel><YYYYMMDDhhmmss><nn>``, the
form devices use); when every upload has ended (stored or refused) the
device sends ``UploadSnapShotFinished`` listing the IDs the platform stored.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from sip import manscdp
from sip.manscdp.snapshot import MAX_SNAP_NUM
from sip.useragent import QueryAnswers

__all__ = ["SimSnapshotUpload", "Upload", "http_upload", "test_pattern_jpeg"]

log = Logger()

UPLOAD_TIMEOUT: Final = 30.0
PICTURE_SIZE: Final = (320, 240)

Upload = Callable[[str, bytes], Deferred[int]]
"""POST a JPEG to a URL; fires with the HTTP status."""


def test_pattern_jpeg(index: int, width: int = PICTURE_SIZE[0], height: int = PICTURE_SIZE[1]) -> bytes:
    """One baseline JPEG (ITU-T T.81) of a test pattern: vertical bars shifted by ``index``, so each
    picture of a burst differs. Encoded by FFmpeg's ``mjpeg`` (full-range YUV 4:2:0)."""
    import av  # imported here: the simulator starts without PyAV unless pictures are asked for

    codec: Any = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame: Any = av.VideoFrame(width, height, "yuvj420p")
    shift = (index * 37) % 256
    for plane_index, plane in enumerate(frame.planes):
        w = width if plane_index == 0 else width // 2
        h = height if plane_index == 0 else height // 2
        if plane_index == 0:
            row = bytes((x * 256 // w + shift) % 256 for x in range(w))
        else:
            row = bytes([(96 + 40 * plane_index + shift) % 256]) * w
        padded = row + bytes(plane.line_size - w)
        plane.update(padded * h)
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)


def http_upload(reactor: Any, timeout: float = UPLOAD_TIMEOUT) -> Upload:
    """POST with ``twisted.web.client.Agent``; the status once the answer's body was read."""
    agent = Agent(reactor, connectTimeout=timeout)  # type: ignore[no-untyped-call]

    def upload(url: str, data: bytes) -> Deferred[int]:
        headers = Headers({b"Content-Type": [b"image/jpeg"], b"User-Agent": [b"gbplatform-sim"]})
        producer: Any = FileBodyProducer(BytesIO(data))  # type: ignore[no-untyped-call]
        sent: Deferred[Any] = agent.request(b"POST", url.encode("utf-8"), headers, producer)

        def got(response: Any) -> Deferred[int]:
            body: Deferred[bytes] = readBody(response)
            return body.addCallback(lambda _: int(response.code))

        status: Deferred[int] = sent.addCallback(got)
        status.addTimeout(timeout, reactor)
        return status

    return upload


@dataclass
class _Burst:
    """One SnapShotConfig being carried out."""

    channel_id: str
    session_id: str
    url: str
    count: int
    interval: int
    taken: int = 0
    ended: int = 0  # uploads answered or failed
    stored: list[str] = field(default_factory=list)  # SnapShotFileIDs the platform accepted (201)


class SimSnapshotUpload:
    """Takes and uploads pictures on SnapShotConfig; see the module docstring."""

    def __init__(self, *, device_id: str, reactor: Any, charset: Callable[[], str], label: Callable[[bytes], bytes],
                 send: Callable[[bytes], None], next_sn: Callable[[], int], upload: Upload | None = None,
                 picture: Callable[[int], bytes] = test_pattern_jpeg) -> None:
        self.device_id = device_id
        self.reactor = reactor
        self._charset = charset
        self._label = label
        self._send = send
        self._next_sn = next_sn
        self.upload = upload if upload is not None else http_upload(reactor)
        self.picture = picture
        self.bursts: list[_Burst] = []  # every SnapShotConfig carried out, for tests
        self._pictures = 0

    def register(self, answers: QueryAnswers) -> None:
        answers.intercept("DeviceConfig", self.device_config)

    def device_config(self, msg: manscdp.ManscdpMessage) -> list[bytes] | None:
        """Answer a DeviceConfig carrying SnapShotConfig; None leaves any other one to its answerer."""
        if not isinstance(msg, manscdp.DeviceConfig) or msg.snap_shot_config is None:
            return None
        config = msg.snap_shot_config
        ok = (config.snap_num is not None and 1 <= config.snap_num <= MAX_SNAP_NUM
              and config.interval is not None and config.interval >= 1 and config.session_id
              and config.upload_url is not None and config.upload_url.lower().startswith(("http://", "https://")))
        if ok:
            assert config.snap_num is not None and config.interval is not None
            assert config.upload_url is not None and config.session_id is not None
            burst = _Burst(msg.device_id, config.session_id, config.upload_url, config.snap_num, config.interval)
            self.bursts.append(burst)
            log.info("device {device_id}: SnapShotConfig for {channel}: {n} pictures {interval} s apart",
                     device_id=self.device_id, channel=msg.device_id, n=burst.count, interval=burst.interval)
            self.reactor.callLater(0, self._take, burst)
        else:
            log.info("device {device_id}: SnapShotConfig refused: {config!r}", device_id=self.device_id,
                     config=config)
        return [self._label(manscdp.encode_config_response(msg.sn, self.device_id, result="OK" if ok else "ERROR",
                                                           charset=self._charset()))]

    def _take(self, burst: _Burst) -> None:
        burst.taken += 1
        seq = burst.taken
        self._pictures += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(float(self.reactor.seconds())))
        file_id = f"{burst.channel_id}{stamp}{seq:02d}"
        try:
            data = self.picture(self._pictures)
        except Exception as e:  # noqa: BLE001 - a device whose camera fails still reports the session
            log.error("device {device_id}: picture {seq} of session {session} failed: {error}",
                      device_id=self.device_id, seq=seq, session=burst.session_id, error=e)
            self._ended(burst)
        else:
            sep = "&" if urllib.parse.urlsplit(burst.url).query else "?"
            d = self.upload(f"{burst.url}{sep}file_id={file_id}", data)
            d.addCallbacks(self._uploaded, self._upload_failed, callbackArgs=(burst, file_id, len(data)),
                           errbackArgs=(burst, file_id))
        if burst.taken < burst.count:
            self.reactor.callLater(burst.interval, self._take, burst)

    def _uploaded(self, status: int, burst: _Burst, file_id: str, size: int) -> None:
        if status in (200, 201, 204):
            burst.stored.append(file_id)
            log.info("device {device_id}: snapshot {file_id} uploaded ({size} bytes)", device_id=self.device_id,
                     file_id=file_id, size=size)
        else:
            log.warn("device {device_id}: snapshot {file_id} refused: HTTP {status}", device_id=self.device_id,
                     file_id=file_id, status=status)
        self._ended(burst)

    def _upload_failed(self, failure: Failure, burst: _Burst, file_id: str) -> None:
        log.warn("device {device_id}: uploading snapshot {file_id} failed: {error}", device_id=self.device_id,
                 file_id=file_id, error=failure.getErrorMessage())
        self._ended(burst)

    def _ended(self, burst: _Burst) -> None:
        burst.ended += 1
        if burst.ended < burst.count:
            return
        # The standard's order: the pictures first, then the notification listing them (§9.14).
        self._send(self._label(manscdp.encode_snapshot_finished(
            self._next_sn(), burst.channel_id, burst.session_id, burst.stored, charset=self._charset())))
        log.info("device {device_id}: UploadSnapShotFinished for session {session}, {n} pictures",
                 device_id=self.device_id, session=burst.session_id, n=len(burst.stored))
