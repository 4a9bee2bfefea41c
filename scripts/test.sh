#!/usr/bin/env bash
# The project's one test command: set up .venv if needed, then run the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export RAY_AUTH_MODE=disabled
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
