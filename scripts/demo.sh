#!/usr/bin/env bash
# The project's main job on its embedded default: set up .venv if needed, then
# label sample videos with the bundled model on local Ray, score them and
# render previews. Extra arguments go to `python -m jobs demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
exec .venv/bin/python -m jobs demo "$@"
