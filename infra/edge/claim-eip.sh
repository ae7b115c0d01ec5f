#!/bin/bash
# Claims a free Elastic IP of the stack's pool for this instance, then waits until instance
# metadata shows it as public-ipv4: the node starts after this script and reads its public address
# from there (AGERA_PUBLIC_ADDRESS_FROM_IMDS), so it advertises the address carriers allow.
#
# Usage: claim-eip POOL WAIT_SECONDS
#   POOL          the agera:pool tag of the stack's addresses; empty: no pool, nothing to do.
#   WAIT_SECONDS  how long to keep trying while every address is taken: a draining node keeps its
#                 address until it terminates, so the stack passes its lifecycle hook timeout.
# Exit status 0: claimed (or no pool); 1: nothing claimed in time. The user data then does not
# start the node, which would otherwise dial carriers from an address they do not allow.
#
# --no-allow-reassociation makes each claim atomic: two instances booting together cannot take
# the same address from each other; the loser tries the next free one. Written to
# /usr/local/libexec/agera/claim-eip by infra/edge-fleet.yaml (a test keeps the copies equal).
set -euo pipefail

pool=$1
wait_seconds=$2
[ -n "$pool" ] || exit 0

imds() {
  # IMDSv2 only (the launch template sets HttpTokens: required): a session token first.
  local token
  token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    http://169.254.169.254/latest/api/token)
  curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

wait_for_address() {
  local address=$1
  for _ in $(seq 60); do
    if [ "$(imds public-ipv4 || true)" = "$address" ]; then
      echo "claim-eip: this instance is $address"
      return 0
    fi
    sleep 2
  done
  echo "claim-eip: $address is associated but metadata still shows another address" >&2
  return 1
}

instance=$(imds instance-id)
AWS_DEFAULT_REGION=$(imds placement/region)
export AWS_DEFAULT_REGION
deadline=$(($(date +%s) + wait_seconds))

# Already holding one (cloud-init ran again on this instance): keep it.
held=$(aws ec2 describe-addresses \
  --filters "Name=tag:agera:pool,Values=$pool" "Name=instance-id,Values=$instance" \
  --query 'Addresses[0].PublicIp' --output text) || held=""
if [ -n "$held" ] && [ "$held" != "None" ]; then
  wait_for_address "$held"
  exit $?
fi

while :; do
  # Free addresses in random order, so instances booting together rarely race for one. A failed
  # listing (throttling) is one more round, not the end.
  free=$(aws ec2 describe-addresses --filters "Name=tag:agera:pool,Values=$pool" \
    --query 'Addresses[?AssociationId==null].[AllocationId,PublicIp]' --output text) || free=""
  while read -r allocation address; do
    [ -n "$allocation" ] || continue
    if aws ec2 associate-address --instance-id "$instance" --allocation-id "$allocation" \
      --no-allow-reassociation >/dev/null; then
      wait_for_address "$address"
      exit $?
    fi
    echo "claim-eip: $address was taken meanwhile; trying the next" >&2
  done <<<"$(printf '%s\n' "$free" | shuf)"
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "claim-eip: no free address in pool $pool within $wait_seconds s" >&2
    exit 1
  fi
  sleep $((5 + RANDOM % 10))
done
