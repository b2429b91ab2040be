"""RTP fixed header codec (RFC 3550 §5.1, header extension §5.3.1).

GB/T 28181-2016 §C.2 carries MPEG-PS over RTP (payload type 96 by
convention); this module only knows RTP.  ``RtpPacket.parse`` is on the hot
path (thousands of packets a second per camera), so it does one
``struct.unpack_from`` for the fixed header and hands the payload back as a
``memoryview`` slice of the input instead of copying it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "seq_delta",
    "ts_delta",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")


class RtpError(ValueError):
    """The bytes are not a valid RTP packet (RFC 3550 §5.1)."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """RFC 3550 §5.3.1 header extension: 16-bit profile field and its data.

    ``data`` length is a multiple of four: the wire length field counts
    32-bit words.
    """

    profile: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``padding_size`` is the count of padding octets (the P bit is set when it
    is non-zero); the padding octets are not kept, ``serialize`` writes zeros
    followed by the count, as RFC 3550 §5.1 describes.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes | memoryview = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding_size: int = 0

    @property
    def version(self) -> int:
        """Always 2: ``parse`` rejects anything else (RFC 3550 §5.1)."""
        return RTP_VERSION

    @property
    def padding(self) -> bool:
        """The P bit (RFC 3550 §5.1)."""
        return self.padding_size > 0

    @property
    def has_extension(self) -> bool:
        """The X bit (RFC 3550 §5.1)."""
        return self.extension is not None

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one RTP packet; raise ``RtpError`` on truncated or invalid input.

        Checks, in order: the 12-byte fixed header, version 2, room for the CC
        CSRC identifiers, room for the extension header and its data
        (RFC 3550 §5.3.1), and that the padding count in the last octet is
        non-zero and fits the bytes after the header (RFC 3550 §5.1).
        """
        view = data if isinstance(data, memoryview) else memoryview(data)
        size = len(view)
        if size < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short: {size} bytes, fixed header needs 12")
        b0, b1, sequence, timestamp, ssrc = _FIXED.unpack_from(view)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version} is not 2")
        cc = b0 & 0x0F
        offset = RTP_HEADER_SIZE + 4 * cc
        if size < offset:
            raise RtpError(f"RTP packet too short: {size} bytes, {cc} CSRCs need {offset}")
        csrcs: tuple[int, ...] = struct.unpack_from(f"!{cc}I", view, RTP_HEADER_SIZE) if cc else ()
        extension = None
        if b0 & 0x10:
            if size < offset + 4:
                raise RtpError(
                    f"RTP packet too short: {size} bytes, extension header needs {offset + 4}"
                )
            profile, words = _EXT.unpack_from(view, offset)
            end = offset + 4 + 4 * words
            if size < end:
                raise RtpError(
                    f"RTP packet too short: {size} bytes, extension of {words} words needs {end}"
                )
            extension = RtpExtension(profile, bytes(view[offset + 4 : end]))
            offset = end
        padding_size = 0
        if b0 & 0x20:
            if size == offset:
                raise RtpError("RTP padding bit set but no padding count octet")
            padding_size = view[size - 1]
            if padding_size == 0:
                raise RtpError("RTP padding count is 0")
            if padding_size > size - offset:
                raise RtpError(
                    f"RTP padding count {padding_size} exceeds the {size - offset} bytes after the header"
                )
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=view[offset : size - padding_size],
            marker=bool(b1 & 0x80),
            csrcs=csrcs,
            extension=extension,
            padding_size=padding_size,
        )

    def serialize(self) -> bytes:
        """Encode to wire format (RFC 3550 §5.1); padding is zeros then the count."""
        if len(self.csrcs) > 15:
            raise RtpError(f"RTP packet has {len(self.csrcs)} CSRCs, at most 15 fit")
        if not 0 <= self.padding_size <= 255:
            raise RtpError(f"RTP padding size {self.padding_size} is not in 0..255")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding_size:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [_FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            ext = self.extension.data
            if len(ext) % 4:
                raise RtpError(f"RTP extension data of {len(ext)} bytes is not a multiple of 4")
            parts.append(_EXT.pack(self.extension.profile, len(ext) // 4))
            parts.append(ext)
        parts.append(bytes(self.payload))
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)


def seq_delta(a: int, b: int) -> int:
    """How far sequence number ``b`` is ahead of ``a``, modulo 2**16 (RFC 3550 §A.1).

    The result is in ``-32768..32767``: ``seq_delta(65530, 5) == 11``.
    """
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


def ts_delta(a: int, b: int) -> int:
    """How far RTP timestamp ``b`` is ahead of ``a``, modulo 2**32 (RFC 3550 §5.1)."""
    return ((b - a + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
