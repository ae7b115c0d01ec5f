#!/usr/bin/env bash
# Creates .venv-checkov, the virtualenv of checkov, the static checker run on infra/edge-fleet.yaml
# (tests/infra/test_edge_fleet_checks.py). checkov is kept out of the project's .venv because it
# cannot share it: checkov 3.3 pins boto3/botocore 1.35 while the project pins 1.40 (aioboto3), so
# `pip install --dry-run` into .venv would downgrade the SDK the gateway runs on.
# Usage: checkov-venv.sh [VENV_DIR]  (default: .venv-checkov in the repository root).
# Idempotent: a stamp file holding the pinned spec makes a second run return at once; changing
# the pin below (or CHECKOV_SPEC) reinstalls. The venv holds a `.gitignore` of its own, so it is
# never committed whatever the repository's .gitignore says.
set -euo pipefail

SPEC=${CHECKOV_SPEC:-"checkov==3.3.30"}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${1:-"$REPO_ROOT/.venv-checkov"}
STAMP="$VENV/.installed"

if [ -x "$VENV/bin/checkov" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SPEC" ]; then
  exit 0
fi

# The interpreter: $PYTHON if given, else the one that made the project's .venv, else python3.11.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(sed -n 's/^executable = //p' "$REPO_ROOT/.venv/pyvenv.cfg" 2>/dev/null || true)
  [ -n "$PYTHON" ] && [ -x "$PYTHON" ] ||
    PYTHON=$(command -v python3.11 || command -v python3 || echo python3)
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
  echo "checkov-venv: Python 3.9+ is required ($PYTHON)" >&2; exit 1; }

echo "checkov-venv: installing $SPEC into ${VENV#"$REPO_ROOT"/} (about 250 MB, first time only)"
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV"
printf '*\n' >"$VENV/.gitignore"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC"
# --skip-download: no policy download, no platform call; --version proves it starts offline.
if ! out=$("$VENV/bin/checkov" --version 2>&1); then
  echo "$out" >&2; echo "checkov-venv: $SPEC installed but does not start" >&2; exit 1
fi
printf '%s' "$SPEC" >"$STAMP"
