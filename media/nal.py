"""H.264 / H.265 NAL unit helpers: Annex B splitting, keyframes, SPS dimensions.

Only what the platform needs to label frames and describe a stream: start-code
splitting (ITU-T H.264 Annex B, H.265 Annex B), NAL unit types (H.264 §7.4.1
Table 7-1, H.265 §7.4.2.2 Table 7-1), keyframe detection and the handful of
SPS fields that give the picture size (H.264 §7.3.2.1.1, H.265 §7.3.2.2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from media.frame import Codec

log = logging.getLogger(__name__)

# H.264 Table 7-1.
H264_NAL_SLICE = 1
H264_NAL_IDR = 5
H264_NAL_SEI = 6
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9

# H.265 Table 7-1.
H265_NAL_IRAP_FIRST = 16  # BLA_W_LP
H265_NAL_IRAP_LAST = 23  # RSV_IRAP_VCL23
H265_NAL_VPS = 32
H265_NAL_SPS = 33
H265_NAL_PPS = 34
H265_NAL_AUD = 35

# H.264 SPS/PPS/IDR header bytes (nal_ref_idc 1-3): proof of H.264 when sniffing.
_H264_PROOF = frozenset({0x67, 0x27, 0x47, 0x68, 0x28, 0x48, 0x65, 0x25, 0x45})
# H.264 §7.3.2.1.1: profiles whose SPS carries chroma_format_idc and scaling lists.
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class SpsError(ValueError):
    """A sequence parameter set that is truncated or out of range."""


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """Display size after cropping, with the profile_idc and level_idc as coded."""

    width: int
    height: int
    profile: int
    level: int


def split_nals(au: bytes | memoryview) -> list[memoryview]:
    """Split an Annex B byte stream into NAL units (H.264 Annex B.2).

    Start codes (00 00 01, optionally preceded by more zero bytes) are removed,
    and so are trailing_zero_8bits; the views share ``au``'s memory. Bytes
    before the first start code are returned as a NAL too, since some encoders
    omit the leading start code.
    """
    data = bytes(au) if isinstance(au, memoryview) else au
    view = memoryview(data)
    nals: list[memoryview] = []
    start = 0
    while True:
        sc = data.find(b"\x00\x00\x01", start)
        end = len(data) if sc < 0 else sc
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            nals.append(view[start:end])
        if sc < 0:
            return nals
        start = sc + 3


def nal_type(codec: Codec, nal: bytes | memoryview) -> int:
    """nal_unit_type of one NAL (H.264 §7.3.1, H.265 §7.3.1.2); -1 when empty."""
    if len(nal) == 0:
        return -1
    if codec is Codec.H265:
        return (nal[0] >> 1) & 0x3F
    return nal[0] & 0x1F


def is_keyframe(codec: Codec, au: bytes | memoryview) -> bool:
    """True when the access unit holds an IDR slice (H.264) or an IRAP picture (H.265).

    H.264 §7.4.1.2.4 (nal_unit_type 5), H.265 §3.73 (IRAP: types 16-23).
    """
    for nal in split_nals(au):
        t = nal_type(codec, nal)
        if codec is Codec.H264 and t == H264_NAL_IDR:
            return True
        if codec is Codec.H265 and H265_NAL_IRAP_FIRST <= t <= H265_NAL_IRAP_LAST:
            return True
    return False


def parameter_sets(codec: Codec, au: bytes | memoryview) -> dict[str, list[bytes]]:
    """The VPS/SPS/PPS NAL units of an access unit, header byte(s) included.

    Keys are ``"vps"`` (H.265 only), ``"sps"`` and ``"pps"``; each maps to the
    NALs in stream order, so an RTSP/RTMP sink can build its sprop / AVC config.
    """
    wanted: dict[int, str]
    if codec is Codec.H265:
        wanted = {H265_NAL_VPS: "vps", H265_NAL_SPS: "sps", H265_NAL_PPS: "pps"}
        out: dict[str, list[bytes]] = {"vps": [], "sps": [], "pps": []}
    elif codec is Codec.H264:
        wanted = {H264_NAL_SPS: "sps", H264_NAL_PPS: "pps"}
        out = {"sps": [], "pps": []}
    else:
        raise ValueError(f"{codec} has no parameter sets")
    for nal in split_nals(au):
        key = wanted.get(nal_type(codec, nal))
        if key is not None:
            out[key].append(bytes(nal))
    return out


def sniff_video_codec(au: bytes | memoryview) -> Codec:
    """Guess H.264 vs H.265 from NAL headers when no PSM named the stream type.

    H.265 parameter sets have a two-byte header whose second byte is 01
    (nuh_layer_id 0, nuh_temporal_id_plus1 1; H.265 §7.3.1.2) and whose first
    byte (40/42/44) would be an H.264 NAL type 0/2/4 that real encoders do not
    emit; H.264 parameter sets and IDR slices are taken as proof the other way.
    """
    nals = split_nals(au)
    for nal in nals:
        if len(nal) >= 2 and nal[1] == 0x01 and nal[0] in (0x40, 0x42, 0x44):
            return Codec.H265
        if nal[0] in _H264_PROOF:
            return Codec.H264
    # An H.265 AUD (type 35) is 46 01; H.264 would need a ref_idc-2 SEI there.
    if nals and len(nals[0]) >= 2 and nals[0][0] == 0x46 and nals[0][1] == 0x01:
        return Codec.H265
    return Codec.H264


def unescape_rbsp(nal: bytes | memoryview) -> bytes:
    """Drop emulation_prevention_three_byte (H.264 §7.4.1, H.265 §7.4.2).

    After an 00 00 03 the zero count restarts, which is exactly the left-to-right
    non-overlapping match ``bytes.replace`` performs.
    """
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1)."""

    __slots__ = ("_data", "_pos", "_limit")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._limit = len(data) * 8

    def u(self, n: int) -> int:
        if self._pos + n > self._limit:
            raise SpsError("SPS truncated")
        value = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def skip(self, n: int) -> None:
        if self._pos + n > self._limit:
            raise SpsError("SPS truncated")
        self._pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise SpsError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    """H.264 §7.3.2.1.1.1 scaling_list(): only delta_scale values, read and dropped."""
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + r.se() + 256) % 256
        last = next_scale if next_scale != 0 else last


def parse_h264_sps(nal: bytes | memoryview) -> SpsInfo:
    """seq_parameter_set_data() up to frame cropping (H.264 §7.3.2.1.1, §7.4.2.1.1)."""
    if len(nal) < 4 or nal[0] & 0x1F != H264_NAL_SPS:
        raise SpsError("not an H.264 SPS NAL")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile = r.u(8)
    r.skip(8)  # constraint_set flags, reserved_zero_2bits
    level = r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise SpsError(f"chroma_format_idc {chroma_format_idc} out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
            r.se()
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.u(1):  # frame_cropping_flag; units from §7.4.2.1.1 (7-19..7-22)
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0:
        raise SpsError(f"cropping leaves {width}x{height}")
    return SpsInfo(width=width, height=height, profile=profile, level=level)


def _skip_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int]:
    """H.265 §7.3.3 profile_tier_level(1, ...); returns (general_profile_idc, general_level_idc)."""
    r.skip(3)  # general_profile_space, general_tier_flag
    profile = r.u(5)
    r.skip(32 + 4 + 43 + 1)  # compatibility flags, source flags, constraint bits, inbld
    level = r.u(8)
    profile_present = []
    level_present = []
    for _ in range(max_sub_layers_minus1):
        profile_present.append(r.u(1))
        level_present.append(r.u(1))
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for i in range(max_sub_layers_minus1):
        if profile_present[i]:
            r.skip(88)
        if level_present[i]:
            r.skip(8)
    return profile, level


def parse_h265_sps(nal: bytes | memoryview) -> SpsInfo:
    """seq_parameter_set_rbsp() up to the conformance window (H.265 §7.3.2.2, §7.4.3.2)."""
    if len(nal) < 4 or (nal[0] >> 1) & 0x3F != H265_NAL_SPS:
        raise SpsError("not an H.265 SPS NAL")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile, level = _skip_profile_tier_level(r, max_sub_layers_minus1)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise SpsError(f"chroma_format_idc {chroma_format_idc} out of range")
    if chroma_format_idc == 3:
        r.skip(1)  # separate_colour_plane_flag
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag; Table 6-1 SubWidthC/SubHeightC
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma_format_idc in (1, 2) else 1
        sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise SpsError(f"conformance window leaves {width}x{height}")
    return SpsInfo(width=width, height=height, profile=profile, level=level)


def parse_sps(codec: Codec, nal: bytes | memoryview) -> SpsInfo:
    """Dispatch to the H.264 or H.265 SPS parser."""
    if codec is Codec.H264:
        return parse_h264_sps(nal)
    if codec is Codec.H265:
        return parse_h265_sps(nal)
    raise ValueError(f"{codec} has no SPS")


def sps_info(codec: Codec, au: bytes | memoryview) -> SpsInfo | None:
    """SpsInfo of the first SPS in an access unit; None if it has none or it is bad."""
    for sps in parameter_sets(codec, au)["sps"]:
        try:
            return parse_sps(codec, sps)
        except SpsError as exc:
            log.warning("unparseable %s SPS: %s", codec.value, exc)
    return None
