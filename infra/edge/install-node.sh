#!/bin/bash
# Installs and starts the edge node on a fresh instance of the edge fleet: the project's wheel
# (`make dist`) into its own venv, a system user, the per-host settings, the CloudWatch agent.
#
# Usage: install-node WHEEL_S3_URI
#   WHEEL_S3_URI  s3://bucket/.../agera_voice_gateway-<version>-py3-none-any.whl
#
# Runs once, from the user data's runcmd, after claim-eip (so the wheel's dependencies are
# fetched from the address the node will keep). Everything the stack decides is already on disk,
# written by the user data: /etc/agera/edge.env (settings), the unit and its drain drop-in, the
# CloudWatch agent configuration. Written to /usr/local/libexec/agera/install-node by
# infra/edge-fleet.yaml (a test keeps the copies equal).
set -euo pipefail

wheel_uri=$1
venv=/opt/agera/venv
agent_config=/opt/aws/amazon-cloudwatch-agent/etc/agera-edge.json

imds() {
  # IMDSv2 only (the launch template sets HttpTokens: required): a session token first.
  local token
  token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    http://169.254.169.254/latest/api/token)
  curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

AWS_DEFAULT_REGION=$(imds placement/region)
export AWS_DEFAULT_REGION

# The service's own user: no login, no home, owns only /var/lib/agera and /var/log/agera.
id agera >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /var/lib/agera --shell /sbin/nologin agera

# The wheel keeps its file name: pip reads the version and tags from it.
install -d -m 0755 /opt/agera
wheel=/opt/agera/$(basename "$wheel_uri")
aws s3 cp --only-show-errors "$wheel_uri" "$wheel"
python3.11 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
# Binary wheels only: the AMI has no compiler, and a dependency without an arm64 wheel should
# fail here, by name, rather than as a half-finished build.
"$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "$wheel"

# One media worker per core (docs/performance.md); the settings allow at most 64.
workers=$(nproc)
[ "$workers" -le 64 ] || workers=64
printf 'AGERA_MEDIA_WORKERS=%s\n' "$workers" >/etc/agera/host.env

# systemd opens the unit's log file before LogsDirectory= exists on the first start.
install -d -o agera -g agera -m 0750 /var/log/agera

/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl \
  -a fetch-config -m ec2 -s -c "file:$agent_config"

systemctl daemon-reload
systemctl enable --now agera-edge.service
