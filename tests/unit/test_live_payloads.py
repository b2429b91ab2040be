"""The device's SDP answer picks PS or raw H.264/H.265 per payload type (RFC 4566 §6 rtpmap)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sip import sdp
from tests.unit import test_live
from tests.unit.platform_harness import result_of
from tests.unit.test_live import env, play  # noqa: F401 - the fixture

ORIGINAL_ANSWER = sdp.build_gb_answer


def answering(rtpmaps: list[str]) -> Any:
    """``build_gb_answer`` whose media section names ``rtpmaps`` instead of PS."""

    def build(offer: sdp.SessionDescription, **kw: Any) -> sdp.SessionDescription:
        answer = ORIGINAL_ANSWER(offer, **kw)
        media = answer.media[0]
        attributes = [a for a in media.attributes if a[0] != "rtpmap"] + [("rtpmap", r) for r in rtpmaps]
        formats = [r.split()[0] for r in rtpmaps]
        media = dataclasses.replace(media, attributes=attributes, formats=formats)
        return dataclasses.replace(answer, media=[media])

    return build


@pytest.mark.parametrize(
    ("rtpmaps", "formats"),
    [
        (["98 H264/90000"], {98: "H264"}),
        (["99 H265/90000"], {99: "H265"}),
        (["96 H264/90000"], {96: "H264"}),  # a dynamic type means what the answer says
        (["96 PS/90000"], {96: "PS"}),
        (["97 MPEG4/90000"], {96: "PS", 98: "H264", 99: "H265"}),  # nothing usable: the offer's map
    ],
)
def test_the_answer_sets_the_payload_formats(
    env: Any, monkeypatch: pytest.MonkeyPatch, rtpmaps: list[str], formats: dict[int, str]  # noqa: F811
) -> None:
    h, _, streams, _ = env
    monkeypatch.setattr(test_live.sdp, "build_gb_answer", answering(rtpmaps))
    stream = result_of(play(h, streams))
    assert stream.state == "playing"
    assert stream.ingest.payload_formats == formats
