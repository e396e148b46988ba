#!/usr/bin/env bash
# Set up if needed, then run the whole test suite (GUI tests under a virtual display), one
# pytest-xdist worker per core (at most 4), each test file on one worker (its module fixtures made once).
# TEST_WORKERS=0 runs everything in this process (e.g. to debug with -x --pdb).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cores=$(nproc 2>/dev/null || echo 2)
workers=${TEST_WORKERS:-$((cores < 4 ? cores : 4))}  # each worker holds torch and napari
parallel=()
[ "$workers" = 0 ] || parallel=(-n "$workers" --dist loadfile)
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "${parallel[@]}" "$@"
fi
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
