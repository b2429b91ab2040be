"""Build configuration beside pyproject.toml/setup.cfg: the optional compiled RTP hot path.

``media._fastpath`` (media/_fastpath.c, CPython C API) is ``optional``: an
install without a C compiler still works, with the pure-Python receive path
(media/accel.py says which one runs; GBP_PUREPYTHON=1 forces Python).
recvmmsg(2) is Linux-only, so the extension is built on Linux only.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "media._fastpath",
            sources=["media/_fastpath.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
