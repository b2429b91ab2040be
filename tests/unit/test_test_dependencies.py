"""Every module the tests import is provided by an install step.

The README's test command runs in a fresh virtual environment where only
``pip install -e '.[test]'`` has run (issue 8, item 26: numpy was imported by
a test and provided by nothing, so two tests failed on a new machine). This
reads the imports of every file under ``tests/`` and checks each third-party
one against ``install_requires`` and the ``test`` extra of setup.cfg.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"gbplatform", "sip", "media", "migrations", "tests", "fuzz", "benchmarks"}

# Import names that differ from the requirement that provides them.
PROVIDED_BY = {
    "OpenSSL": "twisted",  # twisted[tls] pulls in pyOpenSSL
    "zope": "twisted",  # zope.interface, a dependency of Twisted
    "pjsua2": "pjsua2-python",
    "yaml": "pyyaml",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> set[str]:
    """Names in install_requires and the test extra, normalized (PEP 503)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["test"].splitlines()
    names = set()
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.add(_normalize(match.group(1)))
    return names


def imported_modules(path: Path) -> set[str]:
    """Top-level names imported by ``path``, anywhere in it, and its importorskip() targets."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value.split(".")[0])
    return names


def unprovided_imports(root: Path, declared: set[str]) -> dict[str, list[str]]:
    """Third-party imports under ``root`` that no declared requirement provides, with their files."""
    missing: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for name in imported_modules(path):
            if name in FIRST_PARTY or name in sys.stdlib_module_names or name == "__future__":
                continue
            if _normalize(PROVIDED_BY.get(name, name)) not in declared:
                missing.setdefault(name, []).append(str(path.relative_to(REPO)))
    return missing


def test_every_test_import_is_provided_by_the_test_install() -> None:
    missing = unprovided_imports(REPO / "tests", declared_requirements())
    assert not missing, (
        "tests import modules that `pip install -e '.[test]'` does not provide "
        f"(add them to setup.cfg's test extra, or do without): {missing}"
    )


def test_the_check_sees_a_nested_import_and_an_importorskip(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(
        "def f():\n    import numpy as np\n    pytest.importorskip('scipy.signal')\n"
        "import av\nfrom OpenSSL import SSL\nimport json\n",
        encoding="utf-8",
    )
    names = imported_modules(tmp_path / "t.py")
    assert names == {"numpy", "scipy", "av", "OpenSSL", "json"}
    declared = declared_requirements()
    assert {"av", "twisted", "pytest", "hypothesis", "pjsua2-python"} <= declared
    assert "numpy" not in declared and "atheris" not in declared
