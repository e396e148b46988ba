#!/usr/bin/env bash
# Set up (once) everything the project needs in ./.venv; safe to run again.
# Sourced by scripts/run.sh and scripts/test.sh. Override the torch build with TORCH_SPEC,
# e.g. TORCH_SPEC="torch" for the newest release (a CUDA build on Linux).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: a bare "torch" requirement can pull a multi-GB CUDA build.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "$TORCH_SPEC"
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

# napari needs an OpenGL display; on a headless Debian/Ubuntu machine get Xvfb and Mesa.
if [ -z "${DISPLAY:-}" ] && ! command -v xvfb-run >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
      libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
      libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 \
      fonts-noto-color-emoji >/dev/null
  else
    echo "note: no display and no xvfb-run; install Xvfb to run the napari tests" >&2
  fi
fi
