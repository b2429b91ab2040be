"""ConfigDownload answer and DeviceConfig, with their BasicParam and VideoParamOpt
(GB/T 28181-2016 §A.2.3.2, §A.2.6.8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sip.manscdp.config2022 import CONFIG_2022_FIELDS, Config2022
from sip.manscdp.messages import Control, Response
from sip.manscdp.registry import Command, Leaf, LeafMap, Nested, Struct, declare, encode
from sip.manscdp.snapshot import SNAP_SHOT_CONFIG, SnapShotConfig
from sip.manscdp.xmltext import XmlValue

CONFIG_TYPES: Final = ("BasicParam", "VideoParamOpt", "SVACEncodeConfig", "SVACDecodeConfig")
"""The ``ConfigType`` values a ConfigDownload answer carries decoded (GB/T 28181-2016 §A.2.4.7, §A.2.6.8)."""


@dataclass(frozen=True, kw_only=True)
class BasicParam:
    """``BasicParam`` of ConfigDownload/DeviceConfig (GB/T 28181-2016 §A.2.6.8, §A.2.3.2).

    Numeric values that do not parse are logged and become None.
    """

    name: str | None = None
    device_id: str | None = None
    sip_server_id: str | None = None
    sip_server_ip: str | None = None
    sip_server_port: int | None = None
    domain_name: str | None = None
    expiration: int | None = None
    password: str | None = None
    heart_beat_interval: int | None = None
    heart_beat_count: int | None = None
    position_capability: int | None = None
    longitude: str | None = None
    latitude: str | None = None


# In the element order of GB/T 28181-2016 §A.2.6.8.
BASIC_PARAM: Final = Struct(BasicParam, (
    Leaf("Name", "name"),
    Leaf("DeviceID", "device_id"),
    Leaf("SIPServerID", "sip_server_id"),
    Leaf("SIPServerIP", "sip_server_ip"),
    Leaf("SIPServerPort", "sip_server_port", int),
    Leaf("DomainName", "domain_name"),
    Leaf("Expiration", "expiration", int),
    Leaf("Password", "password"),
    Leaf("HeartBeatInterval", "heart_beat_interval", int),
    Leaf("HeartBeatCount", "heart_beat_count", int),
    Leaf("PositionCapability", "position_capability", int),
    Leaf("Longitude", "longitude"),
    Leaf("Latitude", "latitude"),
))


@dataclass(frozen=True, kw_only=True)
class VideoParamOpt:
    """``VideoParamOpt`` of ConfigDownload/DeviceConfig (GB/T 28181-2016 §A.2.6.8): the download speeds
    the device offers (``1/2/4``) and its resolutions (``5/6``, Annex F codes)."""

    download_speed: str | None = None
    resolution: str | None = None


VIDEO_PARAM_OPT: Final = Struct(VideoParamOpt, (
    Leaf("DownloadSpeed", "download_speed"),
    Leaf("Resolution", "resolution"),
))


@dataclass(frozen=True, kw_only=True)
class ConfigDownloadResponse(Response, Config2022):
    """ConfigDownload answer (GB/T 28181-2016 §A.2.6.8); BasicParam and VideoParamOpt are typed, the
    SVAC ones (§A.2.6.8 SVACEncodeConfig, SVACDecodeConfig) kept as their leaves by path, the
    GB/T 28181-2022 types typed too (``Config2022``, ``sip.manscdp.config2022``)."""

    basic_param: BasicParam | None = None
    video_param_opt: VideoParamOpt | None = None
    svac_encode_config: dict[str, str] = field(default_factory=dict)
    svac_decode_config: dict[str, str] = field(default_factory=dict)
    snap_shot_config: SnapShotConfig | None = None  # GB/T 28181-2022 §A.2.6.8


CONFIG_DOWNLOAD_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="ConfigDownload", cls=ConfigDownloadResponse,
    fields=(Leaf("Result", "result"), Nested("BasicParam", "basic_param", BASIC_PARAM),
            Nested("VideoParamOpt", "video_param_opt", VIDEO_PARAM_OPT),
            LeafMap("SVACEncodeConfig", "svac_encode_config", deep=True),
            LeafMap("SVACDecodeConfig", "svac_decode_config", deep=True),
            Nested("SnapShotConfig", "snap_shot_config", SNAP_SHOT_CONFIG), *CONFIG_2022_FIELDS),
))


@dataclass(frozen=True, kw_only=True)
class DeviceConfig(Control, Config2022):
    """DeviceConfig (GB/T 28181-2016 §A.2.3.2): the parameters to set, with the GB/T 28181-2022 types
    (``Config2022``); a device answers ``Result`` (§A.2.6.3, ``ControlResponse``)."""

    basic_param: BasicParam | None = None
    video_param_opt: VideoParamOpt | None = None
    snap_shot_config: SnapShotConfig | None = None  # GB/T 28181-2022: pictures uploaded over HTTP


DEVICE_CONFIG: Final = declare(Command(
    kind="Control", cmd_type="DeviceConfig", cls=DeviceConfig,
    fields=(Nested("BasicParam", "basic_param", BASIC_PARAM),
            Nested("VideoParamOpt", "video_param_opt", VIDEO_PARAM_OPT),
            Nested("SnapShotConfig", "snap_shot_config", SNAP_SHOT_CONFIG), *CONFIG_2022_FIELDS),
))


def encode_device_config(sn: int, device_id: str, *, charset: str = "GB2312", **values: object) -> bytes:
    """A DeviceConfig of the declared ``values`` (``basic_param=BasicParam(...)``,
    ``video_param_opt=VideoParamOpt(...)``) to ``device_id`` (§A.2.3.2); unset leaves are left out."""
    return encode(DEVICE_CONFIG.build(sn, device_id, charset=charset, **values))


def encode_config_download_response(
    sn: int, device_id: str, basic_param: BasicParam | None, *,
    video_param_opt: VideoParamOpt | None = None, result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None, **values: object,
) -> bytes:
    """Build a ConfigDownload answer (GB/T 28181-2016 §A.2.6.8) with its BasicParam and VideoParamOpt, and
    any other declared part in ``values`` (the 2022 types: ``osd_config=OsdConfig(...)``, ...)."""
    msg = CONFIG_DOWNLOAD_RESPONSE.build(
        sn, device_id, charset=charset, result=result, basic_param=basic_param, video_param_opt=video_param_opt,
        **values,
    )
    return encode(msg, extra=extra)
