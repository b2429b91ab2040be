"""Write the seed corpora in fuzz/corpus/<target>/ from the project's test vectors.

    python3 fuzz/make_corpus.py            # needs the shared/ folder beside the repository

Seeds are small, valid (or typical device-broken) inputs: the fuzzer mutates
them, so they put it past the first bytes of each format at once. SIP comes
from the RFC 4475 torture messages and GB/T 28181 device traffic, MANSCDP from
tests/unit/data/manscdp, PS from the start of the real ZLMediaKit captures
(RTP headers stripped), the others are written here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import locate_shared_dir  # noqa: E402 - after the path fix
from tests.media_captures import udp_payloads  # noqa: E402

CORPUS = REPO / "fuzz" / "corpus"

RFC4475 = ["TC_WSINV.dat", "TC_INTMETH.dat", "TC_ESC01_V.dat", "TC_LWSDISP_V.dat", "TC_DBLREQ.dat",
           "TC_MPART01.dat", "TC_UNREASON_V.dat", "TC_BADVERS_V.dat", "TC_INSUF_I.dat", "TC_SDP01_V.dat"]


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


GB_REGISTER = crlf(
    "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\n"
    "From: <sip:34020000001320000001@3402000000>;tag=2043466181\n"
    "To: <sip:34020000001320000001@3402000000>\n"
    "Call-ID: 1011047669\nCSeq: 2 REGISTER\n"
    "Contact: <sip:34020000001320000001@192.168.1.64:5060>\n"
    'Authorization: Digest username="34020000001320000001", realm="3402000000", '
    'nonce="9bd055", uri="sip:34020000002000000001@3402000000", '
    'response="fa6f1b8b2bb54e8c2c1dcbc2a4e4b9b4", algorithm=MD5\n'
    "Max-Forwards: 70\nUser-Agent: IP Camera\nExpires: 3600\nContent-Length: 0\n\n"
)
KEEPALIVE = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
             b"<SN>43</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n")
GB_MESSAGE = crlf(
    "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK5\n"
    "From: <sip:34020000001320000001@3402000000>;tag=7\nTo: <sip:34020000002000000001@3402000000>\n"
    "Call-ID: 88@192.168.1.64\nCSeq: 20 MESSAGE\nContent-Type: Application/MANSCDP+xml\n"
    f"Max-Forwards: 70\nContent-Length: {len(KEEPALIVE)}\n\n"
) + KEEPALIVE

SDP_OFFER = crlf(
    "v=0\no=34020000002000000001 0 0 IN IP4 127.0.0.1\ns=Play\nu=34020000001320000001:0\n"
    "c=IN IP4 127.0.0.1\nt=0 0\nm=video 30000 RTP/AVP 96 97 98\na=recvonly\n"
    "a=rtpmap:96 PS/90000\na=rtpmap:97 MPEG4/90000\na=rtpmap:98 H264/90000\na=stream:0\ny=0200000329\n"
)
SDP_ANSWER = crlf(
    "v=0\no=34020000001320000001 0 0 IN IP4 192.168.1.64\ns=Play\nc=IN IP4 192.168.1.64\nt=0 0\n"
    "m=video 15060 TCP/RTP/AVP 96\na=setup:active\na=connection:new\na=sendonly\n"
    "a=rtpmap:96 PS/90000\ny=0200000329\nf=v/2/5/25/1/4096a/1/8/1\n"
)
SDP_PLAYBACK = crlf(
    "v=0\no=34020000002000000001 0 0 IN IP4 10.0.0.1\ns=Playback\nu=34020000001310000001:0\n"
    "c=IN IP4 10.0.0.1\nt=1714550400 1714554000\nm=video 30002 RTP/AVP 96\na=recvonly\n"
    "a=rtpmap:96 PS/90000\na=downloadspeed:4\ny=1200000001\n"
)
# Found by the fuzzer (tests/unit/test_sdp.py::test_session_and_media_y_lines_survive_a_round_trip).
SDP_SESSION_AND_MEDIA_Y = crlf(
    "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 1.2.3.4\nt=0 0\ny=0200000329\n"
    "m=video 30000 RTP/AVP 96\na=rtpmap:96 PS/90000\ny=0200000330\n"
)

RTSP = {
    "options": b"OPTIONS rtsp://127.0.0.1:8554/live/34020000001310000001 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    "describe": (b"DESCRIBE rtsp://127.0.0.1:8554/live/34020000001310000001?token=abc RTSP/1.0\r\nCSeq: 2\r\n"
                 b"Accept: application/sdp\r\n\r\n"),
    "setup_tcp": (b"SETUP rtsp://127.0.0.1:8554/live/34020000001310000001/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
                  b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
    "setup_udp": (b"SETUP rtsp://127.0.0.1:8554/live/34020000001310000001/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
                  b"Transport: RTP/AVP;unicast;client_port=50000-50001\r\nSession: 12345678\r\n\r\n"),
    "play_vod": (b"PLAY rtsp://127.0.0.1:8554/vod/34020000001310000001?start=1714550400&end=1714554000 RTSP/1.0\r\n"
                 b"CSeq: 4\r\nSession: 12345678\r\nRange: npt=10.5-\r\nScale: 2.0\r\n\r\n"),
    "interleaved_teardown": (b"$\x01\x00\x08\x81\xc9\x00\x01\x00\x00\x00\x01"
                             b"TEARDOWN rtsp://127.0.0.1:8554/live/34020000001310000001 RTSP/1.0\r\nCSeq: 5\r\n"
                             b"Session: 12345678\r\nContent-Length: 4\r\n\r\nbody"),
}

QUERIES = {
    "paging": b"offset=0&limit=50",
    "devices": b"online=true&q=%E9%97%A8&limit=20",
    "channels": b"parent_id=34020000002160000001&limit=100",
    "range_iso": b"start=2024-05-01T08:00:00Z&end=2024-05-01T09:00:00.000%2B08:00&token=abc",
    "range_epoch": b"start=1714550400&end=1714554000.5",
    "day": b"date=2024-05-01&limit=20",
}


def write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def rtp_seeds(shared: Path) -> None:
    """``rtp``: RTP packets of the captures framed as over TCP (RFC 4571 §2, RFC 2326 §10.12)."""
    for capture, name in (("zlm_ps_rtp_udp_1080p.pcap", "h264"), ("zlm_ps_rtp_udp_h265_g711a_720p.pcap", "h265")):
        packets = [p for _, p in udp_payloads(shared / "captures" / capture)[:5]]
        framed = [len(p).to_bytes(2, "big") + p for p in packets]
        write("rtp", f"{name}_rfc4571", b"".join(framed)[:8192])
        write("rtp", f"{name}_reordered", b"".join([framed[1], framed[0], framed[2]]))
        write("rtp", f"{name}_interleaved",
              b"".join(b"$\x00" + len(p).to_bytes(2, "big") + p for p in packets[:3]))


GB_NOTIFY = crlf(
    "NOTIFY sip:34020000002000000001@192.168.1.10:5060 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK2071463273\n"
    "From: <sip:34020000001320000001@3402000000>;tag=81434523\n"
    "To: <sip:34020000002000000001@3402000000>;tag=5a1f03c2\n"
    "Call-ID: 6b8b4567327b23c6@192.168.1.10\nCSeq: 3 NOTIFY\n"
    "Contact: <sip:34020000001320000001@192.168.1.64:5060>\n"
    "Event: presence\nSubscription-State: active;expires=3600;retry-after=30\nX-GB-Ver: 3.0\n"
    "Max-Forwards: 70\nContent-Type: Application/MANSCDP+xml\nContent-Length: 0\n\n"
)


def manscdp_2022_seeds() -> dict[str, bytes]:
    """The alarm, position, subscription and GB/T 28181-2022 bodies (issues 10 and 11), from the encoders, and
    two as vendors break them (lower-case tags, a bare AlarmType, a time with Z, a Num that lies)."""
    import datetime as dt

    from sip import manscdp

    dev, ch, t = "34020000001320000001", "34020000001310000001", dt.datetime(2026, 12, 5, 8, 30)
    point = manscdp.CruisePoint(preset_index=1, stay_time=10, speed=5)
    return {
        "alarm_notify": manscdp.encode_alarm_notify(11, ch, priority=1, method=5, time=t, description="motion",
                                                    longitude=116.397, latitude=39.909, alarm_type=2, event_type=1),
        "alarm_notify_vendor": (b'<?xml version="1.0" encoding="GB2312"?>\r\n<notify><cmdtype>alarm</cmdtype>'
                                b"<SN>7</SN><DeviceID>" + ch.encode() + b"</DeviceID><AlarmPriority> 2 </AlarmPriority>"
                                b"<AlarmMethod>2</AlarmMethod><AlarmTime>2026-12-05T08:30Z</AlarmTime>"
                                b"<AlarmType>1</AlarmType></notify>"),
        "alarm_query_response": manscdp.encode_alarm_query_response(
            12, dev, 3, [manscdp.alarm_item(ch, priority=2, method=2, time=t, alarm_type=1)] * 2),
        "mobile_position_notify": manscdp.encode_mobile_position(13, dev, time=t, longitude=116.4, latitude=39.9,
                                                                 speed=30.0, direction=90.0, altitude=50.0),
        "ptz_position_response": manscdp.encode_ptz_position_response(
            14, ch, manscdp.PtzPosition(pan=90.5, tilt=-10.0, zoom=2.0)),
        "cruise_track_response": manscdp.encode_cruise_track_response(15, ch, 1, "gate", (point, point)),
        "sd_card_status_response": manscdp.encode_sd_card_status_response(
            16, dev, [manscdp.SdCard(id="1", hdd_name="sd0", status="normal", capacity=64.0, free_space=12.5)]),
        "snapshot_finished": manscdp.encode_snapshot_finished(17, ch, "s1", ["f1", "f2"]).replace(
            b'Num="2"', b'Num="9"'),
        "upgrade_result": manscdp.encode_upgrade_result(18, dev, session_id="u1", ok=False, firmware="V5.7",
                                                        reason="checksum"),
    }


def main() -> int:
    shared = locate_shared_dir()
    if shared is None:
        print("shared/ folder not found: set GBP_SHARED_DIR", file=sys.stderr)
        return 1
    for target in ("sip", "sdp", "manscdp", "ps", "rtp", "rtsp", "http_query"):
        shutil.rmtree(CORPUS / target, ignore_errors=True)
    for name in RFC4475:
        write("sip", name.removesuffix(".dat"), (shared / "vectors" / "rfc4475" / name).read_bytes())
    write("sip", "gb_register", GB_REGISTER)
    write("sip", "gb_message_keepalive", GB_MESSAGE)
    write("sip", "gb_notify_subscription", GB_NOTIFY)
    write("sdp", "gb_offer", SDP_OFFER)
    write("sdp", "gb_answer_tcp", SDP_ANSWER)
    write("sdp", "gb_playback", SDP_PLAYBACK)
    write("sdp", "session_and_media_y", SDP_SESSION_AND_MEDIA_Y)
    for xml in ("exosip_catalog_response.xml", "exosip_catalog_response_gb2312_label_utf8_body.xml",
                "exosip_deviceinfo_response.xml", "exosip_devicestatus_response.xml", "pjsua2_catalog_query.xml"):
        write("manscdp", xml.removesuffix(".xml"), (REPO / "tests" / "unit" / "data" / "manscdp" / xml).read_bytes())
    write("manscdp", "keepalive", KEEPALIVE)
    for name, data in manscdp_2022_seeds().items():
        write("manscdp", name, data)
    for capture, name in (("zlm_ps_rtp_udp_1080p.pcap", "h264"), ("zlm_ps_rtp_udp_h265_g711a_720p.pcap", "h265")):
        payloads = [p[12:] for _, p in udp_payloads(shared / "captures" / capture)[:6]]
        write("ps", f"{name}_first_packet", payloads[0])
        write("ps", f"{name}_first_packets", b"".join(payloads)[:6000])
    rtp_seeds(shared)
    for name, data in RTSP.items():
        write("rtsp", name, data)
    for name, data in QUERIES.items():
        write("http_query", name, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
