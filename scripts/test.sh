#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: lint, types, tests with coverage.
# PostgreSQL (127.0.0.1:5432, database "test") and Redis (127.0.0.1:6379) must be running.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's ffmpeg/ffprobe are the independent players the media tests read our streams with.
if ! command -v ffprobe >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
python3 -m ruff check .
echo "== mypy"
python3 -m mypy
echo "== pytest"
python3 -m pytest --cov --cov-report=term --cov-fail-under=85 "$@"
