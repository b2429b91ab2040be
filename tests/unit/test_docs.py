"""The user docs keep up with the code: every setting and every API route is documented."""

from __future__ import annotations

import re
from pathlib import Path

from gbplatform.config import config_reference, env_var_name

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    for key, _type, default, _description in config_reference():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} missing from docs/configuration.md"
        assert f"`{env_var_name(key)}`" in row and f"`{default}`" in row, f"{key}: stale row {row!r}"


def test_every_api_route_is_in_the_api_reference() -> None:
    from gbplatform.api.openapi import build_openapi

    text = (DOCS / "api.md").read_text()
    for path in build_openapi("test")["paths"]:
        short = path.removeprefix("/api/v1")
        pattern = re.escape(short).replace(r"\{device_id\}", r"[{<]?[\w-]+[}>]?")
        assert re.search(pattern, text), f"{path} missing from docs/api.md"
