"""Run one fuzz target under atheris (libFuzzer), coverage-guided, for a bounded number of inputs.

    python3 -m pip install -e '.[fuzz]'
    python3 fuzz/run.py sip -runs=100000
    python3 fuzz/run.py all -runs=50000        # each target in turn

    python3 fuzz/run.py sdp fuzz/artifacts/sdp-crash-<sha1>   # replay one input

Targets: sip, sdp, manscdp, ps, rtsp, http_query (see fuzz/targets.py). Any
other option is passed to libFuzzer (-runs=, -max_len=, -seed=, -jobs=...).
The seed corpus fuzz/corpus/<target>/ is read, never written: new inputs go
to fuzz/artifacts/<target>-corpus/, emptied first (or to -corpus_out=DIR). A crash is
written to fuzz/artifacts/<target>-crash-<sha1> and the run stops: add that
input as a unit test of the parser, and the input to the seed corpus.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

with atheris.instrument_imports(include=["sip", "media", "gbplatform"]):
    from fuzz.targets import TARGETS, quiet_logs

quiet_logs()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in (*TARGETS, "all"):
        print(__doc__, file=sys.stderr)
        return 2
    name, options = argv[1], argv[2:]
    inputs = [Path(o) for o in options if not o.startswith("-")]
    if inputs:
        # Replay: run the target on each file, plainly, so the traceback is Python's own.
        for path in inputs:
            print(f"{name}: {path}", file=sys.stderr)
            TARGETS[name](path.read_bytes())
        return 0
    if name == "all":
        # One process per target: libFuzzer runs a single target per process and exits at its end.
        codes = [subprocess.call([sys.executable, __file__, target, *options]) for target in TARGETS]
        return max(codes)
    out = next((o.split("=", 1)[1] for o in options if o.startswith("-corpus_out=")), None)
    options = [o for o in options if not o.startswith("-corpus_out=")]
    artifacts = HERE / "artifacts"
    artifacts.mkdir(exist_ok=True)
    if not any(o.startswith("-artifact_prefix=") for o in options):
        options.append(f"-artifact_prefix={artifacts}/{name}-")
    if out is None:
        # libFuzzer writes new inputs to the first corpus folder: a fresh scratch one, so the
        # seeds stay as committed and every run starts from them alone.
        scratch = artifacts / f"{name}-corpus"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        out = str(scratch)
    atheris.Setup([argv[0], *options, out, str(HERE / "corpus" / name)], TARGETS[name])
    atheris.Fuzz()  # exits the process when the runs are done or on a crash
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
