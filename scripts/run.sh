#!/usr/bin/env bash
# Set up if needed, then launch the main job: napari with the training panel docked and the
# sample data loaded, ready to click Train. `--headless` trains on the sample data from the
# command line instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
if [ "${1:-}" = "--headless" ]; then
  shift
  [ -d runs/sample_data ] || .venv/bin/cellseg-trainer sample-data runs/sample_data
  exec .venv/bin/cellseg-trainer train --config examples/demo_cpu.yaml "$@"
fi
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "no display: napari needs one (or run: bash scripts/run.sh --headless)" >&2
  exit 2
fi
exec .venv/bin/python scripts/launch_napari.py "$@"
