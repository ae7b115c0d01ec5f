"""Offline checks of the edge fleet stack with the tools that know each format, and of what runs on
the instance: cfn-lint and checkov on infra/edge-fleet.yaml, `cloud-init schema` on its user data,
`systemd-analyze verify` on the unit, shellcheck on the boot scripts, and the node's settings file
against shared/settings.py.

The user data is an Fn::Sub string: the tests give every ${...} a sample value (an unknown one
fails), turn ${!x} into ${x} as CloudFormation does, and parse the result as cloud-init would. Its
files are copies of infra/edge/*: the copies must equal the repository files (rendered the same
way), so what is reviewed and linted is what boots.

Tools: cfn-lint is in .venv; checkov lives in .venv-checkov (infra/setup/checkov-venv.sh: it pins
an older boto3 than the project); cloud-init, systemd-analyze and shellcheck are Debian packages
(infra/setup/system-deps.sh). A missing tool fails its test with the command that installs it.
Each check is paired with a broken copy it must reject, so a check that silently passes nothing
is caught.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from shared.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "infra" / "edge-fleet.yaml"
EDGE = REPO / "infra" / "edge"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
TIMEOUT = 180
# EC2 takes at most 16 KB of user data before base64.
MAX_USER_DATA_BYTES = 16 * 1024
# checkov findings this template accepts, each justified in the resource's Metadata.
JUSTIFIED_SKIPS = {"CKV_AWS_88", "CKV_AWS_91", "CKV_AWS_158"}
# Where the user data writes each repository file.
COPIES = {
    "/etc/systemd/system/agera-edge.service": EDGE / "agera-edge.service",
    "/opt/aws/amazon-cloudwatch-agent/etc/agera-edge.json": EDGE / "cloudwatch-agent.json",
    "/usr/local/libexec/agera/claim-eip": EDGE / "claim-eip.sh",
    "/usr/local/libexec/agera/install-node": EDGE / "install-node.sh",
}
UNIT = "/etc/systemd/system/agera-edge.service"
DRAIN_DROP_IN = "/etc/systemd/system/agera-edge.service.d/10-drain.conf"
ENV_FILE = "/etc/agera/edge.env"
EXEC = "/opt/agera/venv/bin/agera"
# Sample values for the user data's placeholders; parameters without one use their Default.
SAMPLE_DRAIN = "600"  # not the default, so a value copied from the default would show
SAMPLES = {
    "AWS::Region": "eu-west-1",
    "AWS::StackName": "edge-test",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "ArtifactBucket": "agera-artifacts",
    "ArtifactKey": "releases/agera_voice_gateway-0.1.0-py3-none-any.whl",
    "StreamPublicUrl": "wss://streams.example.com",
    "DrainSeconds": SAMPLE_DRAIN,
    "EdgeLogGroup": "/agera/edge-test/edge",
    "TableName": "agera-AgeraTable-1ABC",
    "OriginateQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/agera-OriginateQueue-1",
    "EventsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/agera-EventsQueue-1",
    "NodeQueuePrefix": "agera-node-",
    "ElasticIpPool": "edge-test",
}
_PLACEHOLDER = re.compile(r"\$\{([^!}][^}]*)\}")


def _tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run {install}")
    return path


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    template: dict[str, Any] = cfn_yaml.loads(FLEET.read_text(), str(FLEET))
    return template


@pytest.fixture(scope="module")
def values(cfn: dict[str, Any]) -> dict[str, str]:
    """A value for every name the user data may substitute, as CloudFormation would."""
    found = {name: str(p["Default"]) for name, p in cfn["Parameters"].items() if "Default" in p}
    found.update(SAMPLES)
    times = cfn["Mappings"]["DrainTimes"][SAMPLE_DRAIN]
    found.update({name: str(times[name]) for name in ("StopTimeout", "ClaimWait")})
    return found


def _render(text: str, values: dict[str, str], *, keep: str | None = None) -> str:
    """Fn::Sub with sample values; ``keep``: a prefix of names left as they are (a repository
    file writes the CloudWatch agent's own ${aws:...} plainly, the template as ${!aws:...})."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if keep is not None and name.startswith(keep):
            return match.group(0)
        assert name in values, f"no sample value for ${{{name}}}"
        return values[name]

    return _PLACEHOLDER.sub(value, text).replace("${!", "${")


@pytest.fixture(scope="module")
def user_data(cfn: dict[str, Any], values: dict[str, str]) -> str:
    data = cfn["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    text, variables = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert set(variables) <= set(values)  # every Fn::Sub variable has a sample
    return _render(str(text), values)


@pytest.fixture(scope="module")
def cloud_config(user_data: str) -> dict[str, Any]:
    assert user_data.startswith("#cloud-config\n")
    config: dict[str, Any] = yaml.safe_load(user_data)
    return config


@pytest.fixture(scope="module")
def files(cloud_config: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in cloud_config["write_files"]}


# --- cfn-lint ------------------------------------------------------------------------------------


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(Path(sys.executable).parent / "cfn-lint"), str(path)])


def test_cfn_lint_is_clean() -> None:
    result = _cfn_lint(FLEET)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "edge-fleet.yaml"
    text = FLEET.read_text()
    assert "HttpTokens: required" in text
    broken.write_text(text.replace("HttpTokens: required", "HttpTokens: mandatory"))
    result = _cfn_lint(broken)
    assert result.returncode != 0
    assert "mandatory" in result.stdout


# --- checkov -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov(cfn: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over the template and a copy without its skips (checkov is slow to
    start): results by file name."""
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run bash infra/setup/checkov-venv.sh")
    bare = json.loads(json.dumps(cfn))
    for resource in bare["Resources"].values():
        resource.get("Metadata", {}).pop("checkov", None)
    copy = tmp_path_factory.mktemp("checkov") / "no-skips.json"
    copy.write_text(json.dumps(bare))
    options = ["--skip-download", "--framework", "cloudformation", "--output", "json"]
    result = _run([str(CHECKOV), *options, "--file", str(FLEET), "--file", str(copy)], cwd=REPO)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    by_file: dict[str, Any] = {}
    for report in reports if isinstance(reports, list) else [reports]:
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"][kind]:
                name = Path(check["file_path"]).name
                by_file.setdefault(name, {"passed": [], "failed": [], "skipped": []})
                by_file[name][kind.split("_")[0]].append(check)
    return by_file


def test_checkov_passes_with_only_the_justified_skips(checkov: dict[str, Any]) -> None:
    report = checkov[FLEET.name]
    assert [c["check_id"] for c in report["failed"]] == []
    assert {c["check_id"] for c in report["skipped"]} == JUSTIFIED_SKIPS
    for check in report["skipped"]:
        assert len(check["check_result"]["suppress_comment"]) > 40, check["check_id"]
    assert "CKV_AWS_79" in {c["check_id"] for c in report["passed"]}  # IMDSv2


def test_checkov_fails_the_same_template_without_its_skips(checkov: dict[str, Any]) -> None:
    """Each skip is needed (and checkov really reads the file)."""
    report = checkov["no-skips.json"]
    assert {c["check_id"] for c in report["failed"]} == JUSTIFIED_SKIPS


# --- cloud-init ----------------------------------------------------------------------------------


def _schema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("cloud-init", "bash infra/setup/system-deps.sh")
    return _run([tool, "schema", "--config-file", str(path)])


def test_user_data_passes_the_cloud_init_schema(user_data: str, tmp_path: Path) -> None:
    assert len(user_data.encode()) < MAX_USER_DATA_BYTES
    path = tmp_path / "user-data.yaml"
    path.write_text(user_data)
    result = _schema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cloud_init_schema_rejects_a_broken_copy(user_data: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data.yaml"
    assert "    permissions: " in user_data
    path.write_text(user_data.replace("    permissions: ", "    permission: ", 1))
    result = _schema(path)
    assert result.returncode != 0
    assert "permission" in result.stdout + result.stderr


def test_runcmd_tunes_the_kernel_then_claims_the_address_before_the_node_starts(
    cloud_config: dict[str, Any], values: dict[str, str]
) -> None:
    tune, (shell, flag, script) = cloud_config["runcmd"]
    assert tune == ["sysctl", "--system"]
    assert (shell, flag) == ("sh", "-c")
    claim, install = script.split(" && ")
    assert claim == f'/usr/local/libexec/agera/claim-eip "edge-test" {values["ClaimWait"]}'
    wheel = f"s3://{values['ArtifactBucket']}/{values['ArtifactKey']}"
    assert install.strip() == f'/usr/local/libexec/agera/install-node "{wheel}"'
    assert {"python3.11", "amazon-cloudwatch-agent"} <= set(cloud_config["packages"])


def test_sysctl_raises_the_udp_receive_buffers(files: dict[str, str]) -> None:
    settings = dict(
        line.split(" = ")
        for line in files["/etc/sysctl.d/90-agera-edge.conf"].splitlines()
        if line and not line.startswith("#")
    )
    from edge_media.sip.transport import DEFAULT_UDP_RECEIVE_BUFFER

    assert int(settings["net.core.rmem_max"]) >= DEFAULT_UDP_RECEIVE_BUFFER


# --- files copied from infra/edge/ ---------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(COPIES))
def test_embedded_file_equals_the_repository_file(
    files: dict[str, str], values: dict[str, str], target: str
) -> None:
    source = COPIES[target].read_text()
    assert "${!" not in source
    assert files[target] == _render(source, values, keep="aws:")


@pytest.mark.parametrize("script", ["claim-eip.sh", "install-node.sh"])
def test_scripts_pass_shellcheck_and_leave_fn_sub_alone(script: str) -> None:
    text = (EDGE / script).read_text()
    assert "${" not in text  # Fn::Sub would take it for a placeholder
    tool = _tool("shellcheck", "bash infra/setup/system-deps.sh")
    result = _run([tool, "--severity=style", str(EDGE / script)])
    assert result.returncode == 0, result.stdout


def test_shellcheck_rejects_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "claim-eip.sh"
    broken.write_text((EDGE / "claim-eip.sh").read_text().replace('"$instance"', "$instance"))
    tool = _tool("shellcheck", "bash infra/setup/system-deps.sh")
    assert _run([tool, str(broken)]).returncode != 0


# --- systemd -------------------------------------------------------------------------------------


def _verify(unit_dir: Path, unit_text: str, drop_in: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on the unit and its drop-in. ExecStart must exist here, so it is
    pointed at a stand-in script; nothing else changes."""
    tool = _tool("systemd-analyze", "apt-get install systemd")
    stand_in = unit_dir / "agera"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    assert unit_text.count(f"ExecStart={EXEC} ") == 1
    unit = unit_dir / "agera-edge.service"
    unit.write_text(unit_text.replace(f"ExecStart={EXEC} ", f"ExecStart={stand_in} "))
    (unit_dir / "agera-edge.service.d").mkdir()
    (unit_dir / "agera-edge.service.d" / "10-drain.conf").write_text(drop_in)
    return _run([tool, "verify", str(unit)])


def test_unit_verifies_without_a_word(files: dict[str, str], tmp_path: Path) -> None:
    """systemd-analyze only warns (rc 0) about misspelled keys: any output is a failure."""
    result = _verify(tmp_path, files[UNIT], files[DRAIN_DROP_IN])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_speaks_up_for_a_misspelled_key(files: dict[str, str], tmp_path: Path) -> None:
    broken = files[UNIT].replace("NoNewPrivileges=", "NoNewPrivilege=")
    result = _verify(tmp_path, broken, files[DRAIN_DROP_IN])
    assert "NoNewPrivilege" in result.stdout + result.stderr


def _unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_runs_agera_edge_as_notify_with_watchdog_and_hardening(files: dict[str, str]) -> None:
    unit = _unit_settings(files[UNIT])
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": [f"{EXEC} edge"],
        "Restart": ["on-failure"],
        "User": ["agera"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "KillMode": ["mixed"],
        "EnvironmentFile": [ENV_FILE, "/etc/agera/host.env"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert int(unit["WatchdogSec"][0]) > 0
    assert int(unit["LimitNOFILE"][0]) >= 65536


def test_stop_timeout_is_the_drain_plus_30(files: dict[str, str]) -> None:
    drop_in = _unit_settings(files[DRAIN_DROP_IN])
    assert drop_in["TimeoutStopSec"] == [str(int(SAMPLE_DRAIN) + 30)]
    # The unit's own value is for the default drain (shared/settings.py).
    default_drain = Settings.model_fields["drain_seconds"].default
    assert _unit_settings(files[UNIT])["TimeoutStopSec"] == [str(int(default_drain) + 30)]


# --- the node's settings and the CloudWatch agent ------------------------------------------------


def _env(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_env_file_holds_only_real_settings_that_load(
    files: dict[str, str], values: dict[str, str]
) -> None:
    env = _env(files[ENV_FILE])
    for key in env:
        if key.startswith(ENV_PREFIX):
            assert key.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, key
    settings = Settings.load({**env, "AGERA_MEDIA_WORKERS": "4"})
    assert settings.node_id_from_imds and settings.public_address_from_imds
    assert settings.public_address == ""  # read from IMDS after the Elastic IP claim
    assert settings.drain_seconds == float(SAMPLE_DRAIN)
    assert settings.table_name == values["TableName"]
    assert settings.node_queue_prefix == values["NodeQueuePrefix"]
    assert (settings.sip_port, settings.ws_port) == (5060, 8080)
    assert settings.stream_public_url == values["StreamPublicUrl"]
    assert env["AWS_DEFAULT_REGION"] == values["AWS::Region"]


def test_env_names_the_group_and_hook_the_template_creates(
    cfn: dict[str, Any], files: dict[str, str], values: dict[str, str]
) -> None:
    env = _env(files[ENV_FILE])
    group = cfn["Resources"]["NodeGroup"]["Properties"]
    assert env["AGERA_AUTOSCALING_GROUP_NAME"] == _render(
        group["AutoScalingGroupName"]["Fn::Sub"], values
    )
    (hook,) = group["LifecycleHookSpecificationList"]
    assert env["AGERA_LIFECYCLE_HOOK_NAME"] == hook["LifecycleHookName"]


def test_agent_ships_the_units_log_file_and_listens_for_emf(
    cfn: dict[str, Any], files: dict[str, str], values: dict[str, str]
) -> None:
    agent = json.loads(files["/opt/aws/amazon-cloudwatch-agent/etc/agera-edge.json"])
    (collected,) = agent["logs"]["logs_collected"]["files"]["collect_list"]
    output = _unit_settings(files[UNIT])["StandardOutput"]
    assert output == [f"append:{collected['file_path']}"]
    assert collected["log_group_name"] == values["EdgeLogGroup"]
    assert agent["logs"]["metrics_collected"] == {"emf": {}}
    statements = cfn["Resources"]["NodeRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (metrics,) = [s for s in statements["Statement"] if s.get("Sid") == "HostMetrics"]
    condition = metrics["Condition"]["StringEquals"]["cloudwatch:namespace"]
    assert agent["metrics"]["namespace"] == condition
