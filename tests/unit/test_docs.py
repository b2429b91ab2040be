"""The user docs keep up with the code: every setting and every API route is documented."""

from __future__ import annotations

import re
from pathlib import Path

from gbplatform.app.config import config_reference, env_var_name

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    for key, _type, default, _description in config_reference():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} missing from docs/configuration.md"
        assert f"`{env_var_name(key)}`" in row and f"`{default}`" in row, f"{key}: stale row {row!r}"


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
API_PREFIX = "/api/v1"
# `GET /x`, `GET|PUT /x`: a route named in prose; paths without /api/v1 are relative to it.
PROSE = re.compile(r"`((?:{m})(?:\|(?:{m}))*) (/[^`\s?]*)".replace("{m}", "|".join(METHODS)))
URL = re.compile(r"(?:\$GBP|https?://[^/\s\"']+)(/[^\s\"'?]*)")


def openapi_routes() -> set[tuple[str, str]]:
    from gbplatform.api.openapi import build_openapi

    return {
        (method.upper(), path)
        for path, ops in build_openapi("test")["paths"].items()
        for method in ops
        if method.upper() in METHODS
    }


def route_pattern(template: str) -> re.Pattern[str]:
    """A whole-path match for an OpenAPI template; a parameter may be `{x}`, `<x>` or a value."""
    parts = re.split(r"(\{[^}]+\})", template)
    body = "".join(r"(?:\{[\w-]+\}|<[\w-]+>|[\w.-]+)" if p.startswith("{") else re.escape(p)
                   for p in parts)
    return re.compile(body + r"\Z")


def route_mentions(text: str) -> list[tuple[str, str]]:
    """(method, path) for every route the text names: in prose (`GET /x`) and in curl/ffplay lines.

    A prose path outside /api/v1 is tried both as written and under /api/v1; a curl
    line's method is its -X, else POST with -d, else GET. The query is dropped.
    """
    mentions: list[tuple[str, str]] = []
    for match in PROSE.finditer(text):
        for method in match.group(1).split("|"):
            path = match.group(2)
            mentions.append((method, path if path.startswith(API_PREFIX) else f"{API_PREFIX}{path}|{path}"))
    for line in text.replace("\\\n", " ").splitlines():
        if not re.search(r"\b(curl|ffplay|ffprobe)\b", line):
            continue
        explicit = re.search(r"-X\s+([A-Z]+)", line)
        method = explicit.group(1) if explicit else ("POST" if re.search(r"\s(-d|--data)\b", line) else "GET")
        for url in URL.finditer(line):
            path = url.group(1)
            mentions.append((method, f"{API_PREFIX}{path}" if "$GBP" in url.group(0) else path))
    return mentions


def matches(mention: tuple[str, str], route: tuple[str, str]) -> bool:
    method, candidates = mention
    return method == route[0] and any(route_pattern(route[1]).match(c) for c in candidates.split("|"))


def test_every_api_route_is_in_the_api_reference() -> None:
    """Each (method, path) of the OpenAPI document is named in docs/api.md with that method and its whole path."""
    mentions = route_mentions((DOCS / "api.md").read_text())
    missing = sorted(r for r in openapi_routes() if not any(matches(m, r) for m in mentions))
    assert not missing, f"routes missing from docs/api.md (method and whole path): {missing}"


def test_every_route_the_docs_name_exists() -> None:
    """No doc names a method or path the API does not have (a stale or mistyped route)."""
    routes = openapi_routes()
    stale = [
        (doc.name, mention)
        for doc in sorted([*DOCS.glob("*.md"), DOCS.parent / "README.md"])
        for mention in route_mentions(doc.read_text())
        if (mention[1].startswith(API_PREFIX) or "|" in mention[1] or mention[1].split("/")[1] in ("live", "vod"))
        and not any(matches(mention, r) for r in routes)
    ]
    assert not stale, f"docs name routes the API does not have: {stale}"


def test_route_matching_needs_the_method_and_the_whole_path() -> None:
    routes = {("GET", "/api/v1/devices/{device_id}"), ("DELETE", "/api/v1/devices/{device_id}"),
              ("GET", "/live/{channel_id}.flv")}
    # A longer path that merely contains the route, or another method, does not document it.
    text = "`GET /api/v1/devices/{device_id}/channels` and `POST /devices/{id}`"
    assert not any(matches(m, r) for m in route_mentions(text) for r in routes)
    text = "`GET|DELETE /devices/{id}`; `GET /live/{channel_id}.flv?token=`"
    assert all(any(matches(m, r) for m in route_mentions(text)) for r in routes)
    curl = 'curl -s -X DELETE \\\n  -H "Authorization: Bearer $TOKEN" $GBP/devices/34020000001320000001   # 204'
    assert route_mentions(curl) == [("DELETE", "/api/v1/devices/34020000001320000001")]
    assert any(matches(m, ("DELETE", "/api/v1/devices/{device_id}")) for m in route_mentions(curl))
    assert route_mentions('ffplay "http://127.0.0.1:8080/live/3402.flv?token=$TOKEN"') == [("GET", "/live/3402.flv")]
