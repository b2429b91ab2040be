"""A GB/T 28181 device played by pjsua2, an independent SIP stack (run as a script).

pjsua2 registers with digest, sends Notify/Keepalive MESSAGEs, and answers
the platform's DeviceInfo and Catalog queries. Its Python binding can only
send UTF-8 bodies, so the Catalog declares GB2312 and carries UTF-8 bytes:
the most common real-world charset quirk (see the eXosip capture
``exosip-device-gb2312-label-utf8-body.log``).

Usage: pjsua2_device.py SERVER_PORT LOCAL_PORT DEVICE_ID PASSWORD SECONDS
Prints "REGISTERED <code>" when the registration completes, and for each
control element of a DeviceControl (§A.2.3.1) one line
"DEVICECONTROL <SN> <target DeviceID> <element> <value>" (the PTZCmd element
carries its 16 hex digits as received), before answering it with a Response
of Result OK (§A.2.6.2).
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET

import pjsua2 as pj

# The children of a DeviceControl that address it rather than carry a command (§A.2.3.1).
CONTROL_HEADER = {"CmdType", "SN", "DeviceID", "Info"}

CHANNELS = [("34020000001310000101", "前门摄像机"), ("34020000001310000102", "后门摄像机&车库")]


def xml(root: str, cmd: str, sn: str, device_id: str, inner: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n{inner}</{root}>\r\n"
    )


class Device(pj.Account):
    def __init__(self, server: str, device_id: str) -> None:
        super().__init__()
        self.server = server
        self.device_id = device_id
        self.buddy: pj.Buddy | None = None
        self.sn = 0

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802 - pjsua2 API
        print(f"REGISTERED {prm.code}", flush=True)

    def send(self, body: str) -> None:
        if self.buddy is None:
            self.buddy = pj.Buddy()
            cfg = pj.BuddyConfig()
            cfg.uri = self.server
            self.buddy.create(self, cfg)
        prm = pj.SendInstantMessageParam()
        prm.content = body
        prm.contentType = "Application/MANSCDP+xml"
        self.buddy.sendInstantMessage(prm)

    def keepalive(self) -> None:
        self.sn += 1
        self.send(xml("Notify", "Keepalive", str(self.sn), self.device_id, "<Status>OK</Status>\r\n"))

    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:  # noqa: N802 - pjsua2 API
        body = prm.msgBody
        if "<SN>" not in body:
            return
        sn = body.split("<SN>", 1)[1].split("</SN>", 1)[0].strip()
        if "<CmdType>Catalog</CmdType>" in body:
            items = "".join(
                f"<Item>\r\n<DeviceID>{cid}</DeviceID>\r\n<Name>{name.replace('&', '&amp;')}</Name>\r\n"
                f"<Manufacturer>pjsua2</Manufacturer>\r\n<ParentID>{self.device_id}</ParentID>\r\n"
                f"<Status>ON</Status>\r\n</Item>\r\n"
                for cid, name in CHANNELS
            )
            inner = f"<SumNum>{len(CHANNELS)}</SumNum>\r\n<DeviceList Num=\"{len(CHANNELS)}\">\r\n{items}</DeviceList>\r\n"
            self.send(xml("Response", "Catalog", sn, self.device_id, inner))
        elif "<CmdType>DeviceInfo</CmdType>" in body:
            inner = (
                "<DeviceName>pjsua2 摄像机</DeviceName>\r\n<Result>OK</Result>\r\n<Manufacturer>Teluu</Manufacturer>\r\n"
                "<Model>pjsua2-python</Model>\r\n<Firmware>2.15</Firmware>\r\n<Channel>2</Channel>\r\n"
            )
            self.send(xml("Response", "DeviceInfo", sn, self.device_id, inner))
        elif "<CmdType>DeviceControl</CmdType>" in body:
            self.device_control(body, sn)

    def device_control(self, body: str, sn: str) -> None:
        """Log each control element, then answer Result OK for the target (§A.2.6.2)."""
        try:
            root = ET.fromstring(body)  # text: the declared encoding is moot, pjsua2 decoded the bytes
        except ET.ParseError as e:
            print(f"DEVICECONTROL {sn} unparseable, not answered: {e}", flush=True)
            return
        target = (root.findtext("DeviceID") or "").strip()
        for child in root:
            if child.tag not in CONTROL_HEADER:
                print(f"DEVICECONTROL {sn} {target} {child.tag} {(child.text or '').strip() or '-'}", flush=True)
        self.send(xml("Response", "DeviceControl", sn, target, "<Result>OK</Result>\r\n"))


def main() -> int:
    server_port, local_port, device_id, password, seconds = sys.argv[1:6]
    server = f"sip:34020000002000000001@127.0.0.1:{server_port}"
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.uaConfig.userAgent = "pjsua2-gb-test"
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = int(local_port)
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{device_id}@3402000000"
    acfg.regConfig.registrarUri = server
    acfg.regConfig.timeoutSec = 3600
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", device_id, 0, password))
    dev = Device(server, device_id)
    dev.create(acfg)
    deadline = time.monotonic() + float(seconds)
    next_keepalive = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        ep.libHandleEvents(50)
        if time.monotonic() >= next_keepalive and dev.getInfo().regIsActive:
            dev.keepalive()
            next_keepalive = time.monotonic() + 1.0
    dev.shutdown()
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
