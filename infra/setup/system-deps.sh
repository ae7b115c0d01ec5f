#!/usr/bin/env bash
# Installs the Debian packages the gateway's tests and local stack use, only those missing.
# Usage: system-deps.sh  (root, or a user with sudo). Safe to run again: it does nothing when all
# commands are present.
set -euo pipefail

# command-to-check:debian-package
needs=(
  "sipp:sip-tester"          # SIP load/interop peer (the Debian package is sip-tester)
  "baresip:baresip"          # a real softphone for interop tests
  "kamailio:kamailio"        # registrar/proxy in front of the gateway
  "tshark:tshark"            # RTP captures for pacing and audio checks
  "sox:sox"                  # audio fixtures
  "espeak-ng:espeak-ng"      # speech fixtures
  "cloud-init:cloud-init"    # `cloud-init schema` on the edge fleet's user data (never run here)
  "shellcheck:shellcheck"    # the edge fleet's boot scripts (infra/edge/*.sh)
  "chromium:chromium"        # the browser Playwright drives in tests/browser (AGERA_CHROMIUM)
)

missing=()
for pair in "${needs[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# A fresh Debian has python3 without venv/ensurepip.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=("python3-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
fi
echo "system-deps: installing ${missing[*]}"
# cloud-init is installed for its schema check only: it must never configure this machine. Its
# documented off switch goes in first (its systemd generator then never starts it), and the units
# Debian enables on install are disabled again.
cloud_init=false
for pkg in "${missing[@]}"; do [ "$pkg" = cloud-init ] && cloud_init=true; done
if $cloud_init; then
  $SUDO mkdir -p /etc/cloud
  $SUDO touch /etc/cloud/cloud-init.disabled
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if $cloud_init; then
  $SUDO systemctl disable --quiet cloud-init-local.service cloud-init.service cloud-config.service \
    cloud-final.service cloud-init-hotplugd.socket 2>/dev/null || true
fi
