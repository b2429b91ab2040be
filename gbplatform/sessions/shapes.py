"""API shapes of live sessions: a stream's state and the play result.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import OptStr, Shape, Time

__all__ = ["PlayResult", "PlayUrls", "Stream", "StreamList", "StreamTimeline", "ViewerStart"]

_PT: Final = "l.1733400000.Jm2uQ4Vb8c1oZ0vX9kT3yA"  # a playback token, gbplatform.auth.play_tokens
_URI: Final = {"format": "uri"}


StreamState = Literal["inviting", "playing", "closed", "failed"]
StreamTransport = Literal["udp", "tcp-passive", "tcp-active"]
VideoCodec = Literal["h264", "h265"]
AudioCodec = Literal["g711a", "g711u", "aac"]


ViewerOutput = Literal["http-flv", "rtsp"]
_MS = "Unix time in milliseconds"


class ViewerStart(Shape):
    """When one viewer attached and when its first media left the platform."""

    output: ViewerOutput
    peer: Annotated[str, Meta(description="The client's address (host:port).", examples=["192.0.2.7:50412"])]
    attached_ms: Annotated[int, Meta(description=f"{_MS}: the viewer was attached to the stream.")]
    first_frame_ms: Annotated[int | None, Meta(description=(
        f"{_MS}: the first bytes of its first keyframe (with the FLV header and sequence header, or the "
        "first RTP packets) were written to its connection; null while it waits for one."))]


class StreamTimeline(Shape):
    """The start of a stream, step by step, to tell where a slow start spends its time.

    Every time is Unix time in milliseconds, null until the step has happened.
    """

    invite_sent_ms: Annotated[int, Meta(description=f"{_MS}: the INVITE was sent (GB/T 28181-2016 §9.2.2).")]
    answered_ms: Annotated[int | None, Meta(description=f"{_MS}: the device's 200 OK arrived.")]
    first_rtp_ms: Annotated[int | None, Meta(description=f"{_MS}: the first RTP packet arrived.")]
    first_keyframe_ms: Annotated[int | None, Meta(description=f"{_MS}: the first video keyframe was assembled.")]
    viewers: Annotated[list[ViewerStart], Meta(description=(
        "The latest 16 HTTP-FLV and RTSP viewers' starts, oldest first (viewers that left included)."))]


class Stream(Shape):
    """A live stream (one INVITE session) and its counters."""

    device_id: str
    channel_id: str
    state: StreamState
    error: Annotated[OptStr, Meta(description="Why a failed stream ended.")]
    ssrc: Annotated[str, Meta(description="10-digit GB SSRC offered in the INVITE (y= line).")]
    transport: StreamTransport
    rtp_port: Annotated[int, Meta(description="Platform port the device sends RTP to.")]
    started_at: Annotated[float, Meta(description="Unix time the INVITE was sent.")]
    packets: int
    bytes: int
    frames: int
    rtp_lost: int
    jitter_seconds: float
    foreign_ssrc: Annotated[int, Meta(description="Packets dropped for carrying another SSRC.")]
    gop: Annotated[int | None, Meta(description="Frames in the last complete GOP.")]
    video_codec: Annotated[VideoCodec | None, Meta(description="From the PSM/SPS.")]
    audio_codec: AudioCodec | None
    width: Annotated[int | None, Meta(description="Picture width from the SPS (after cropping).")]
    height: Annotated[int | None, Meta(description="Picture height from the SPS (after cropping).")]
    fps: Annotated[float, Meta(description="Video frames per second over the last 5 s.")]
    bitrate_bps: Annotated[int, Meta(description="Video bits per second over the last 5 s.")]
    uptime_seconds: Annotated[float, Meta(description="Seconds since the INVITE was sent.")]
    viewers: Annotated[int, Meta(description="Attached outputs (FLV/RTSP connections, HLS, recorder).")]
    timeline: Annotated[StreamTimeline, Meta(examples=[{
        "invite_sent_ms": 1733400000000, "answered_ms": 1733400000012, "first_rtp_ms": 1733400000015,
        "first_keyframe_ms": 1733400000021, "viewers": [{"output": "http-flv", "peer": "192.0.2.7:50412",
                                                         "attached_ms": 1733400000030,
                                                         "first_frame_ms": 1733400000031}]}])]


class StreamList(Shape):
    items: list[Stream]


class PlayUrls(Shape):
    """Play these as given: each carries a playback token (`?token=`) for this channel's live media only,
    never the API token."""

    http_flv: Annotated[str, Meta(extra_json_schema=_URI, examples=[
        f"http://192.0.2.1:8080/live/34020000001310000001.flv?token={_PT}"])]
    hls: Annotated[str, Meta(extra_json_schema=_URI, examples=[
        f"http://192.0.2.1:8080/live/34020000001310000001/index.m3u8?token={_PT}"])]
    snapshot: Annotated[str, Meta(extra_json_schema=_URI)]
    rtsp: Annotated[str, Meta(extra_json_schema=_URI, description="Present when media.rtsp_port is set.", examples=[
        f"rtsp://192.0.2.1:8554/live/34020000001310000001?token={_PT}"])] | UnsetType = UNSET


class PlayResult(Shape):
    stream: Stream
    urls: PlayUrls
    expires_at: Annotated[Time, Meta(description="When the URLs' playback token stops opening or controlling "
                                                 "playback (api.play_token_ttl); call play again for fresh URLs.")]
