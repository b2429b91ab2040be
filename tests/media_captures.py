"""A tiny classic-pcap reader for the media captures (test helper, not product code).

Reads classic pcap (both byte orders, microsecond and nanosecond magic),
link types null/loopback (0), Ethernet (1, with 802.1Q tags), raw IP
(101, 228), Linux cooked SLL (113) and SLL2 (276); IPv4 only, unfragmented.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PcapError", "ip_packets", "tcp_segments", "tcp_stream", "udp_payloads"]

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_ETH_IPV4 = 0x0800
_ETH_VLAN = {0x8100, 0x88A8}

FlowKey = tuple[bytes, int, bytes, int]


class PcapError(ValueError):
    """The file is not a pcap this reader understands."""


def _records(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    """Yield (link type, timestamp, frame bytes) per record."""
    if len(data) < 24 or data[:4] not in _MAGICS:
        raise PcapError("not a classic pcap file (bad magic)")
    endian, unit = _MAGICS[data[:4]]
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    linktype &= 0x0FFFFFFF  # the high bits hold FCS flags
    record = struct.Struct(endian + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        pos += 16
        if pos + incl > len(data):
            raise PcapError(f"record at {pos - 16} truncated")
        yield linktype, sec + frac * unit, data[pos : pos + incl]
        pos += incl


def _ipv4_of(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4 packet inside one link-layer frame, or None for anything else."""
    if linktype == 0:
        if len(frame) < 4:
            return None
        # The family is in the capturing host's byte order: accept either.
        family_le = struct.unpack_from("<I", frame)[0]
        family_be = struct.unpack_from(">I", frame)[0]
        return frame[4:] if 2 in (family_le, family_be) else None
    if linktype == 1:
        if len(frame) < 14:
            return None
        pos, (ethertype,) = 14, struct.unpack_from("!H", frame, 12)
        while ethertype in _ETH_VLAN and len(frame) >= pos + 4:
            (ethertype,) = struct.unpack_from("!H", frame, pos + 2)
            pos += 4
        return frame[pos:] if ethertype == _ETH_IPV4 else None
    if linktype == 113:
        ok = len(frame) >= 16 and struct.unpack_from("!H", frame, 14)[0] == _ETH_IPV4
        return frame[16:] if ok else None
    if linktype == 276:
        ok = len(frame) >= 20 and struct.unpack_from("!H", frame, 0)[0] == _ETH_IPV4
        return frame[20:] if ok else None
    if linktype in (101, 228):
        return frame if frame and frame[0] >> 4 == 4 else None
    raise PcapError(f"unsupported link type {linktype}")


def ip_packets(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """Yield (timestamp, IPv4 packet trimmed to its total length)."""
    for linktype, ts, frame in _records(Path(path).read_bytes()):
        ip = _ipv4_of(linktype, frame)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        (total,) = struct.unpack_from("!H", ip, 2)
        # total == 0 is how TSO'd captures mark "length unknown": keep all.
        yield ts, ip[:total] if total else ip


def udp_payloads(path: str | Path) -> list[tuple[float, bytes]]:
    """Every UDP payload in capture order, with its capture timestamp."""
    out = []
    for ts, ip in ip_packets(path):
        if ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        out.append((ts, ip[ihl + 8 :]))
    return out


def tcp_segments(path: str | Path) -> dict[FlowKey, list[tuple[int, bool, bytes]]]:
    """Per one-way flow (src, sport, dst, dport): (seq, SYN flag, payload) in capture order."""
    flows: dict[FlowKey, list[tuple[int, bool, bytes]]] = defaultdict(list)
    for _ts, ip in ip_packets(path):
        if ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, seq = struct.unpack_from("!HHI", ip, ihl)
        offset = (ip[ihl + 12] >> 4) * 4
        syn = bool(ip[ihl + 13] & 0x02)
        flows[(ip[12:16], sport, ip[16:20], dport)].append((seq, syn, ip[ihl + offset :]))
    return flows


def _reassemble(segments: list[tuple[int, bool, bytes]]) -> bytes:
    """Sequence-ordered bytes of one flow; retransmitted/overlapping bytes kept once."""
    syns = [seq for seq, syn, _ in segments if syn]
    base = (syns[0] + 1) & 0xFFFFFFFF if syns else segments[0][0]
    ordered = sorted(((seq - base) & 0xFFFFFFFF, data) for seq, _, data in segments if data)
    out = bytearray()
    for rel, data in ordered:
        if rel > len(out):
            raise PcapError(f"TCP gap: {rel - len(out)} bytes missing at offset {len(out)}")
        out += data[len(out) - rel :]
    return bytes(out)


def tcp_stream(path: str | Path) -> bytes:
    """The reassembled bytes of the largest one-way TCP flow in the capture."""
    flows = tcp_segments(path)
    if not flows:
        raise PcapError("no TCP in capture")
    biggest = max(flows.values(), key=lambda segs: sum(len(d) for _, _, d in segs))
    return _reassemble(biggest)
