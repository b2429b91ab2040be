"""MANSCDP XML codec: bodies of SIP MESSAGE/NOTIFY ``Application/MANSCDP+xml``.

GB/T 28181-2016 Annex A defines four root elements (``Query``, ``Control``,
``Notify``, ``Response``, §A.2.1), each starting with ``CmdType``, ``SN`` and
``DeviceID`` and followed by command-specific children.

The package
-----------
``charset``    body bytes to text: GB2312 default (§A.1) and the charset lies devices tell
``xmltext``    quirk repair, hardened lxml parsing, truncation, tree reading, writing
``quirks``     the named vendor quirks recorded in ``ManscdpMessage.quirks``
``messages``   ``ManscdpMessage`` and the generic ``Query``/``Control``/``Notify``/``Response``
``registry``   ``Command`` declarations; decode and encode derived from each shape
``codec``      ``decode()`` and the encoders of undeclared commands
``keepalive``, ``catalog``, ``device``, ``config``, ``control``
               one module per command family, each declaring its commands once

Adding a command is one ``declare(Command(...))`` in its family module (see
``registry``); nothing central changes.  This module only re-exports the
public API, so ``from sip import manscdp; manscdp.decode(...)`` is the one
import callers need.
"""

from __future__ import annotations

from sip.manscdp.catalog import (
    CatalogItem,
    CatalogNotify,
    CatalogResponse,
    encode_catalog_response,
)
from sip.manscdp.codec import decode, encode_control, encode_notify, encode_query, encode_response
from sip.manscdp.config import (
    CONFIG_TYPES,
    BasicParam,
    ConfigDownloadResponse,
    DeviceConfig,
    VideoParamOpt,
    encode_config_download_response,
    encode_device_config,
)
from sip.manscdp.control import (
    ControlInfo,
    ControlResponse,
    DeviceControl,
    DragZoom,
    HomePosition,
    Preset,
    PresetQuery,
    PresetQueryResponse,
    encode_config_response,
    encode_control_response,
    encode_device_command,
    encode_device_control,
    encode_preset_query_response,
)
from sip.manscdp.device import (
    AlarmStatus,
    DeviceInfoResponse,
    DeviceStatusResponse,
    encode_device_info_response,
    encode_device_status_response,
)
from sip.manscdp.gbtime import format_gb_time, parse_gb_time
from sip.manscdp.keepalive import Keepalive, encode_keepalive
from sip.manscdp.messages import (
    Control,
    ManscdpError,
    ManscdpMessage,
    Notify,
    Query,
    Response,
)
from sip.manscdp.quirks import (
    QUIRK_BARE_AMPERSAND,
    QUIRK_BOM,
    QUIRK_CONTROL_CHARS,
    QUIRK_GB_BODY_UTF8_LABEL,
    QUIRK_GB_SUPERSET_CHARS,
    QUIRK_ITEMS_UNDER_ROOT,
    QUIRK_RECOVERED_XML,
    QUIRK_TRAILING_GARBAGE,
    QUIRK_TRUNCATED,
    QUIRK_UNDECODABLE_BYTES,
    QUIRK_UNKNOWN_CHARSET,
    QUIRK_UTF8_BODY_GB_LABEL,
)
from sip.manscdp.registry import (
    REGISTRY,
    Command,
    Extra,
    Leaf,
    LeafMap,
    Nested,
    Registry,
    Repeated,
    Struct,
    Total,
    declare,
    encode,
)
from sip.manscdp.xmltext import XmlValue

__all__ = [
    "CONFIG_TYPES",
    "QUIRK_BARE_AMPERSAND",
    "QUIRK_BOM",
    "QUIRK_CONTROL_CHARS",
    "QUIRK_GB_BODY_UTF8_LABEL",
    "QUIRK_GB_SUPERSET_CHARS",
    "QUIRK_ITEMS_UNDER_ROOT",
    "QUIRK_RECOVERED_XML",
    "QUIRK_TRAILING_GARBAGE",
    "QUIRK_TRUNCATED",
    "QUIRK_UNDECODABLE_BYTES",
    "QUIRK_UNKNOWN_CHARSET",
    "QUIRK_UTF8_BODY_GB_LABEL",
    "REGISTRY",
    "AlarmStatus",
    "BasicParam",
    "CatalogItem",
    "CatalogNotify",
    "CatalogResponse",
    "Command",
    "ConfigDownloadResponse",
    "Control",
    "ControlInfo",
    "ControlResponse",
    "DeviceConfig",
    "DeviceControl",
    "DragZoom",
    "HomePosition",
    "DeviceInfoResponse",
    "DeviceStatusResponse",
    "Extra",
    "Keepalive",
    "Leaf",
    "LeafMap",
    "ManscdpError",
    "ManscdpMessage",
    "Nested",
    "Preset",
    "PresetQuery",
    "PresetQueryResponse",
    "Notify",
    "Query",
    "Registry",
    "Repeated",
    "Response",
    "Struct",
    "Total",
    "VideoParamOpt",
    "XmlValue",
    "declare",
    "decode",
    "encode",
    "encode_catalog_response",
    "encode_config_download_response",
    "encode_control",
    "encode_config_response",
    "encode_control_response",
    "encode_device_command",
    "encode_device_config",
    "encode_device_control",
    "encode_device_info_response",
    "encode_device_status_response",
    "encode_keepalive",
    "encode_notify",
    "encode_preset_query_response",
    "encode_query",
    "encode_response",
    "format_gb_time",
    "parse_gb_time",
]
