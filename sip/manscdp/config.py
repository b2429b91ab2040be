"""ConfigDownload answer and its BasicParam (GB/T 28181-2016 §A.2.6.8, §A.2.3.2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sip.manscdp.messages import Response
from sip.manscdp.registry import Command, Leaf, Nested, Struct, declare, encode
from sip.manscdp.xmltext import XmlValue


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
class ConfigDownloadResponse(Response):
    """ConfigDownload answer (GB/T 28181-2016 §A.2.6.8); only BasicParam is typed."""

    basic_param: BasicParam | None = None


CONFIG_DOWNLOAD_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="ConfigDownload", cls=ConfigDownloadResponse,
    fields=(Leaf("Result", "result"), Nested("BasicParam", "basic_param", BASIC_PARAM)),
))


def encode_config_download_response(
    sn: int, device_id: str, basic_param: BasicParam | None, *,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ConfigDownload answer (GB/T 28181-2016 §A.2.6.8) with its BasicParam."""
    msg = CONFIG_DOWNLOAD_RESPONSE.build(
        sn, device_id, charset=charset, result=result, basic_param=basic_param,
    )
    return encode(msg, extra=extra)
