"""infra/edge/claim-eip.sh against stand-ins for `aws`, `curl` and `sleep`.

The script decides whether a node may start at all (no pool address, no node), so its logic is run
here, offline: the stand-ins answer as EC2 and instance metadata would (free addresses, an
address another instance took first, one this instance already holds) and record the calls.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "edge" / "claim-eip.sh"
INSTANCE = "i-0123456789abcdef0"

# Instance metadata: the IMDSv2 token, then the path asked for; public-ipv4 from the state file.
FAKE_CURL = """#!/bin/bash
for arg; do last=$arg; done
case "$last" in
  */api/token) echo token ;;
  */instance-id) echo i-0123456789abcdef0 ;;
  */placement/region) echo eu-west-1 ;;
  */public-ipv4) cat "$STATE/public-ip" ;;
  *) exit 22 ;;
esac
"""
# EC2: describe-addresses lists $STATE/free (or what this instance holds); associate-address
# fails for an allocation in $STATE/taken, else makes its address this instance's public IP.
FAKE_AWS = """#!/bin/bash
echo "$*" >>"$STATE/aws.log"
case "$2" in
  describe-addresses)
    if [[ "$*" == *instance-id,Values=* ]]; then cat "$STATE/held"; else cat "$STATE/free"; fi ;;
  associate-address)
    while [ $# -gt 0 ]; do [ "$1" = --allocation-id ] && allocation=$2; shift; done
    if grep -qx "$allocation" "$STATE/taken"; then
      echo "Resource.AlreadyAssociated" >&2; exit 254
    fi
    awk -v a="$allocation" '$1 == a {print $2}' "$STATE/free" >"$STATE/public-ip" ;;
esac
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"curl": FAKE_CURL, "aws": FAKE_AWS, "sleep": "#!/bin/sh\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    (state / "public-ip").write_text("198.51.100.99\n")  # the address it launched with
    (state / "held").write_text("None\n")
    (state / "free").write_text("")
    (state / "taken").write_text("")
    (state / "aws.log").write_text("")
    return state


def _claim(state: Path, pool: str, wait: int = 0) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{state.parent / 'bin'}:{os.environ['PATH']}",
        "STATE": str(state),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), pool, str(wait)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _calls(state: Path) -> list[str]:
    return (state / "aws.log").read_text().splitlines()


def test_no_pool_claims_nothing(state: Path) -> None:
    result = _claim(state, "")
    assert result.returncode == 0, result.stderr
    assert _calls(state) == []


def test_claims_a_free_address_of_the_pool_past_one_taken_meanwhile(state: Path) -> None:
    (state / "free").write_text("eipalloc-1\t203.0.113.1\neipalloc-2\t203.0.113.2\n")
    (state / "taken").write_text("eipalloc-1\n")
    result = _claim(state, "edge-test")
    assert result.returncode == 0, result.stderr
    assert "this instance is 203.0.113.2" in result.stdout
    associations = [call for call in _calls(state) if call.startswith("ec2 associate-address")]
    assert associations[-1] == (
        f"ec2 associate-address --instance-id {INSTANCE} --allocation-id eipalloc-2 "
        "--no-allow-reassociation"
    )
    listing = _calls(state)[1]
    assert "Name=tag:agera:pool,Values=edge-test" in listing


def test_keeps_the_address_it_already_holds(state: Path) -> None:
    (state / "held").write_text("203.0.113.7\n")
    (state / "public-ip").write_text("203.0.113.7\n")
    result = _claim(state, "edge-test")
    assert result.returncode == 0, result.stderr
    assert not any(call.startswith("ec2 associate-address") for call in _calls(state))


def test_gives_up_when_the_pool_stays_full(state: Path) -> None:
    (state / "free").write_text("eipalloc-1\t203.0.113.1\n")
    (state / "taken").write_text("eipalloc-1\n")
    result = _claim(state, "edge-test", wait=0)
    assert result.returncode == 1
    assert "no free address in pool edge-test" in result.stderr
