"""The URLs handed to players work as given, with a playback token, never the API token
(issue 8 item 4)."""

# The fixtures of test_api and test_recording are imported, then named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from twisted.internet.defer import maybeDeferred

from gbplatform.auth.play_tokens import LIVE, VOD
from tests.unit.test_api import (  # noqa: F401 - fixtures
    CAM1,
    CAM2,
    DEV,
    ROOT,
    TOKEN,
    Env,
    FakeLive,
    env,
    feed_gop,
    h264,
    live,
    result_of,
)
from tests.unit.test_recording import DAY, Rec, frames, rec, record_all  # noqa: F401 - fixtures


def get(env_or_rec: Any, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    stub = env_or_rec.client.stub
    d = stub.get(url, headers=headers or {})
    stub.flush()
    response = result_of(d)
    body: bytes = b"" if response.code == 200 and url.split("?")[0].endswith(".flv") else result_of(
        stub.content(response))
    return response.code, body


def token_of(url: str) -> str:
    [token] = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"]
    return token


def test_play_urls_carry_a_playback_token_for_the_channel_not_the_api_token(env: Env, live: FakeLive) -> None:
    reply = env.client("POST", f"/channels/{CAM1}/play")
    assert reply.code == 200
    urls = reply.json["urls"]
    assert set(urls) == {"http_flv", "hls", "snapshot", "rtsp"}
    tokens = {token_of(u) for u in urls.values()}
    assert len(tokens) == 1
    [token] = tokens
    assert token != TOKEN
    assert env.platform.play_tokens.verify(token, LIVE, CAM1)
    assert not env.platform.play_tokens.verify(token, LIVE, CAM2)
    assert reply.json["expires_at"] == "2023-11-15T02:13:20.000Z"  # + api.play_token_ttl (4 h)


def test_the_flv_url_plays_as_given_and_only_its_channel(env: Env, live: FakeLive) -> None:
    urls = env.client("POST", f"/channels/{CAM1}/play").json["urls"]
    code, _ = get(env, urls["http_flv"])  # no Authorization header: as a player opens it
    assert code == 200 and live.streams[CAM1].viewers == 1
    token = token_of(urls["http_flv"])
    assert get(env, f"{ROOT}/live/{CAM2}.flv?token={token}")[0] == 401
    assert get(env, f"{ROOT}/vod/{CAM1}.mp4?start=1&end=2&token={token}")[0] == 401  # live is not the recordings
    # Nor the admin API, in the query or as a bearer token.
    assert get(env, f"{ROOT}/api/v1/streams?token={token}")[0] == 401
    assert get(env, f"{ROOT}/api/v1/streams", {"Authorization": f"Bearer {token}"})[0] == 401
    assert get(env, f"{ROOT}/api/v1/channels/{CAM1}/snapshot", {"Authorization": "Bearer wrong"})[0] == 401


def test_a_playback_token_expires(env: Env, live: FakeLive) -> None:
    urls = env.client("POST", f"/channels/{CAM1}/play").json["urls"]
    env.clock.advance(env.platform.config.api.play_token_ttl)
    assert get(env, urls["http_flv"])[0] == 401
    assert get(env, urls["hls"])[0] == 401


def test_the_hls_url_plays_as_given_and_its_segments_carry_the_token(env: Env, live: FakeLive) -> None:
    urls = env.client("POST", f"/channels/{CAM1}/play").json["urls"]
    stub = env.client.stub
    d = stub.get(urls["hls"])
    stub.flush()
    feed_gop(live.streams[CAM1], 0)
    feed_gop(live.streams[CAM1], 50)
    env.clock.advance(0.1)
    stub.flush()
    response = result_of(d)
    assert response.code == 200
    playlist = result_of(stub.content(response)).decode()
    [segment] = [line for line in playlist.splitlines() if line.startswith("seg")]
    assert segment == f"seg0.ts?token={token_of(urls['hls'])}"
    assert get(env, urllib.parse.urljoin(urls["hls"], segment))[0] == 200


def test_the_snapshot_url_is_authorized_as_given(env: Env, live: FakeLive) -> None:
    env.api.run_in_thread = maybeDeferred  # the JPEG work inline: no threads in unit tests
    urls = env.client("POST", f"/channels/{CAM1}/play").json["urls"]
    live.streams[CAM1].dispatcher.input_frame(h264(0, key=True))  # parameter sets of no real picture
    code, body = get(env, urls["snapshot"])
    assert (code, json.loads(body)["error"]["code"]) == (502, "bad_picture")  # past the token check


def test_recording_urls_carry_a_token_for_the_channels_recordings(rec: Rec, frames: Any) -> None:
    segs = record_all(rec, frames)
    body = rec.client("GET", f"/channels/{CAM1}/recordings?date={DAY}").json
    urls = body["intervals"][0]["urls"]
    token = token_of(urls["hls"])
    assert token != TOKEN and token == token_of(urls["mp4"])
    assert rec.platform.play_tokens.verify(token, VOD, CAM1)
    assert not rec.platform.play_tokens.verify(token, LIVE, CAM1)
    code, playlist = get(rec, ROOT + urls["hls"])
    assert code == 200
    uris = [line for line in playlist.decode().splitlines() if line.startswith("seg/")]
    assert uris and all(u.endswith(f"?token={token}") for u in uris)
    assert get(rec, f"{ROOT}/vod/{CAM1}/{uris[0]}")[0] == 200
    # Not live: the recordings' token does not open the live stream.
    assert get(rec, f"{ROOT}/live/{CAM1}.flv?token={token}")[0] == 401
    assert segs
