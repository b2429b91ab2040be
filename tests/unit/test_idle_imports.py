"""What a built platform has imported before its first device, stream or API call (issue 12).

The idle process's RSS is mostly the code it imported (docs/performance.md
"Memory"): each module listed here was moved to first use because it cost
measurable memory, and this test keeps it there. A child interpreter builds
the platform as ``gbplatform run`` does (pyOpenSSL kept out, epoll reactor,
``make_service``, the API's routes) without starting it, and reports which of
them it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Loaded on first use, with what it costs when loaded at start (measured, docs/performance.md "Memory").
FIRST_USE = {
    "alembic": "the migration runs in a child interpreter; Alembic, Mako, Pygments about 9.5 MiB",
    "mako": "with Alembic",
    "pygments": "with Alembic",
    "OpenSSL": "TLS is not served; pyOpenSSL and cryptography 13 MiB",
    "cryptography": "with pyOpenSSL",
    "av": "PyAV/FFmpeg at the first HLS segment, snapshot, recording or transcode; 17 MiB",
    "lxml": "at the first MANSCDP body parsed; 4 MiB",
    "boto3": "at the first S3 upload",
    "botocore": "with boto3",
    "gbplatform.api.openapi": "at the first GET /api/v1/openapi.json; about 2 MiB with its builders",
    "sqlalchemy.dialects.postgresql": "only with PostgreSQL",
    "psycopg": "only with PostgreSQL",
    "twisted.web.client": "at the first webhook POST; 0.5 MiB",
    "sqlalchemy.orm": "never: the registry is Core tables (gbplatform.db.models); 6.1 MiB, 0.9 more to map them",
}

CHILD = """
import json, os, sys
from gbplatform.app import cli
cli.keep_pyopenssl_out(os.environ)
from gbplatform.app.reactor import install_reactor
install_reactor()
from twisted.internet import reactor
from gbplatform.app.config import load_config
config = load_config(None, {"GBP_STORAGE_DATA_DIR": sys.argv[1]})
from gbplatform.app.service import make_service
from gbplatform.api.app import Api
top = make_service(config, reactor)
Api(top.platform)
print(json.dumps(sorted(m for m in sys.modules if sys.modules[m] is not None)))
"""


def test_a_built_platform_has_not_imported_what_it_needs_only_on_first_use(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data")], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parents[2],
        # Defaults only: a GBP_DATABASE_URL of the test run would bring PostgreSQL's driver in.
        env={k: v for k, v in os.environ.items() if not k.startswith("GBP_")},
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "gbplatform.app.service" in loaded and "gbplatform.api.app" in loaded  # the child did build it
    early = {name: why for name, why in FIRST_USE.items()
             if name in loaded or any(m.startswith(name + ".") for m in loaded)}
    assert not early, f"imported at start, meant for first use: {early}"
