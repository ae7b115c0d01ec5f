#!/usr/bin/env bash
# Creates .venv-pipecat, the virtualenv of the pipecat echo bot that the interop tests call.
# pipecat-ai with its runner extras is about 600 MB (numpy, onnxruntime, numba); kept apart so the
# project's own .venv, which the Lambda functions and the edge node are built from, stays lean.
# Usage: pipecat-venv.sh [VENV_DIR]  (default: .venv-pipecat in the repository root).
# Idempotent: a stamp file holding the pinned spec makes a second run return at once; changing
# the pin below (or PIPECAT_SPEC) reinstalls.
set -euo pipefail

SPEC=${PIPECAT_SPEC:-"pipecat-ai[websocket,runner]==1.14.0"}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${1:-"$REPO_ROOT/.venv-pipecat"}
STAMP="$VENV/.installed"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SPEC" ]; then
  exit 0
fi

# The interpreter: $PYTHON if given, else the one that made the project's .venv, else python3.11.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(sed -n 's/^executable = //p' "$REPO_ROOT/.venv/pyvenv.cfg" 2>/dev/null || true)
  [ -n "$PYTHON" ] && [ -x "$PYTHON" ] ||
    PYTHON=$(command -v python3.11 || command -v python3 || echo python3)
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "pipecat-venv: Python 3.11+ is required ($PYTHON)" >&2; exit 1; }

echo "pipecat-venv: installing $SPEC into ${VENV#"$REPO_ROOT"/} (about 600 MB, first time only)"
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC"
# The imports the echo bot needs; pipecat prints a banner on import, shown only on failure.
if ! out=$("$VENV/bin/python" -c 'import pipecat.runner.utils, pipecat.serializers.twilio' 2>&1)
then
  echo "$out" >&2; echo "pipecat-venv: $SPEC installed but does not import" >&2; exit 1
fi
printf '%s' "$SPEC" >"$STAMP"
