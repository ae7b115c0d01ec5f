"""The edge fleet template's security and wiring properties, read from infra/edge-fleet.yaml.

cfn-lint and checkov (test_edge_fleet_checks.py) check the template against AWS's schemas and
generic rules; these tests pin what only this project knows: SIP only from the carrier ranges, no
SSH, IMDSv2, the node's IAM grants exactly the calls edge_media/ makes (and '*' only where IAM has
no ARN to name), a lifecycle hook that outlasts the drain, and imports that the control-plane stack
(template.yaml) really exports. A careless edit fails here, not in a deploy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "infra" / "edge-fleet.yaml"
CONTROL_PLANE = REPO / "template.yaml"

SIP_PORT = 5060
STREAM_PORT = 8080
GROUP_NAME = {"Fn::Sub": "${AWS::StackName}-edge"}
HOOK_NAME = "drain"
# AWS limits: a hook waits at most 7200 s, a target group's deregistration delay at most 3600 s.
MAX_HOOK_TIMEOUT = 7200
MAX_DEREGISTRATION_DELAY = 3600
HOST_METRICS_NAMESPACE = "AgeraVoiceGateway/EdgeHost"
# Actions IAM cannot scope to a resource ARN: the only ones that may have Resource "*".
UNSCOPABLE_ACTIONS = {"cloudwatch:PutMetricData", "ec2:DescribeTags", "ec2:DescribeAddresses"}


def _import(name: str) -> dict[str, Any]:
    return {"Fn::ImportValue": {"Fn::Sub": f"${{ControlPlaneStackName}}-{name}"}}


ARN = "arn:${AWS::Partition}"
# Sid -> (actions, resource): every grant of the node's own policy. Reasons live in the template.
NODE_GRANTS: dict[str, tuple[set[str], Any]] = {
    "OwnCommandQueues": (
        {
            "sqs:CreateQueue",
            "sqs:TagQueue",
            "sqs:GetQueueUrl",
            "sqs:GetQueueAttributes",
            "sqs:SetQueueAttributes",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteQueue",
        },
        {
            "Fn::Sub": [
                f"{ARN}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:${{Prefix}}*",
                {"Prefix": _import("NodeQueuePrefix")},
            ]
        },
    ),
    "TakeOriginates": (
        {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"},
        _import("OriginateQueueArn"),
    ),
    "SendCallEvents": ({"sqs:SendMessage"}, _import("EventsQueueArn")),
    "TableItems": (
        {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
        _import("TableArn"),
    ),
    "ListAccountResources": (
        {"dynamodb:Query"},
        {"Fn::Sub": ["${TableArn}/index/gsi1", {"TableArn": _import("TableArn")}]},
    ),
    "OpenStoredSecrets": ({"kms:Decrypt"}, _import("SecretsKeyArn")),
    "DrainOnScaleIn": (
        {"autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"},
        {
            "Fn::Sub": f"{ARN}:autoscaling:${{AWS::Region}}:${{AWS::AccountId}}:autoScalingGroup:*:"
            "autoScalingGroupName/${AWS::StackName}-edge"
        },
    ),
    "FetchTheWheel": (
        {"s3:GetObject"},
        {"Fn::Sub": f"{ARN}:s3:::${{ArtifactBucket}}/${{ArtifactKey}}"},
    ),
    "ShipLogs": (
        {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"},
        {"Fn::GetAtt": ["EdgeLogGroup", "Arn"]},
    ),
    "HostMetrics": ({"cloudwatch:PutMetricData"}, "*"),
    "MetricDimensionFromTags": ({"ec2:DescribeTags"}, "*"),
    # Only with an Elastic IP pool (Fn::If HasElasticIp1):
    "FindPoolAddresses": ({"ec2:DescribeAddresses"}, "*"),
    "ClaimPoolAddress": (
        {"ec2:AssociateAddress"},
        {"Fn::Sub": f"{ARN}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:elastic-ip/*"},
    ),
    "ClaimForThisFleetOnly": (
        {"ec2:AssociateAddress"},
        {"Fn::Sub": f"{ARN}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:instance/*"},
    ),
}
POOL_ONLY = {"FindPoolAddresses", "ClaimPoolAddress", "ClaimForThisFleetOnly"}


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    template: dict[str, Any] = cfn_yaml.loads(FLEET.read_text(), str(FLEET))
    return template


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _of_type(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == type_}


def _props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = cfn["Resources"][logical_id]["Properties"]
    return props


def _ingress_rules(cfn: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every ingress rule: inline in a security group or a standalone SecurityGroupIngress."""
    for group in _of_type(cfn, "AWS::EC2::SecurityGroup").values():
        yield from group["Properties"].get("SecurityGroupIngress", [])
    for rule in _of_type(cfn, "AWS::EC2::SecurityGroupIngress").values():
        yield rule["Properties"]


def _egress_rules(cfn: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in _of_type(cfn, "AWS::EC2::SecurityGroup").values():
        yield from group["Properties"].get("SecurityGroupEgress", [])
    for rule in _of_type(cfn, "AWS::EC2::SecurityGroupEgress").values():
        yield rule["Properties"]


def _ports(rule: dict[str, Any]) -> tuple[Any, Any]:
    return rule.get("FromPort"), rule.get("ToPort")


def _covers(cfn: dict[str, Any], rule: dict[str, Any], port: int) -> bool:
    """Does the rule admit ``port``? A bound taken from a parameter (the RTP range) is read at
    its limit (MinValue/MaxValue), so a rule that could ever admit the port counts."""
    if str(rule["IpProtocol"]) == "-1":
        return True
    low, high = _ports(rule)
    if isinstance(low, dict):
        low = cfn["Parameters"][low["Ref"]]["MinValue"]
    if isinstance(high, dict):
        high = cfn["Parameters"][high["Ref"]]["MaxValue"]
    return int(low) <= port <= int(high)


def _node_statements(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The node policy's statements by Sid, Fn::If-wrapped ones unwrapped (condition noted)."""
    (policy,) = _props(cfn, "NodeRole")["Policies"]
    statements = {}
    for statement in policy["PolicyDocument"]["Statement"]:
        condition = None
        if "Fn::If" in statement:
            condition, statement, otherwise = statement["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
        statements[statement["Sid"]] = {**statement, "_if": condition}
    return statements


# --- instances -----------------------------------------------------------------------------------


def test_imdsv2_only_with_one_hop(cfn: dict[str, Any]) -> None:
    data = _props(cfn, "NodeLaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"] == {
        "HttpEndpoint": "enabled",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
    }


def test_one_public_address_per_instance_and_no_key_pair(cfn: dict[str, Any]) -> None:
    data = _props(cfn, "NodeLaunchTemplate")["LaunchTemplateData"]
    assert "KeyName" not in data
    (interface,) = data["NetworkInterfaces"]
    assert interface["AssociatePublicIpAddress"] is True
    assert interface["Groups"] == [{"Ref": "NodeSecurityGroup"}]
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])


def test_ami_is_arm64_amazon_linux_2023_from_ssm_and_graviton_by_default(
    cfn: dict[str, Any],
) -> None:
    ami = cfn["Parameters"]["AmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert ami["Default"] == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    assert cfn["Parameters"]["InstanceType"]["Default"].startswith("c7g.")


def test_group_spans_the_public_subnets_and_registers_with_the_stream_target_group(
    cfn: dict[str, Any],
) -> None:
    group = _props(cfn, "NodeGroup")
    assert group["AutoScalingGroupName"] == GROUP_NAME
    assert group["VPCZoneIdentifier"] == {"Ref": "PublicSubnetIds"}
    assert _props(cfn, "StreamLoadBalancer")["Subnets"] == {"Ref": "PublicSubnetIds"}
    assert cfn["Parameters"]["PublicSubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert group["TargetGroupARNs"] == [{"Ref": "StreamTargetGroup"}]
    # /health says 503 while full or draining: that must not get a node with calls replaced.
    assert group["HealthCheckType"] == "EC2"
    assert group["LaunchTemplate"]["Version"] == {
        "Fn::GetAtt": ["NodeLaunchTemplate", "LatestVersionNumber"]
    }


# --- security groups -----------------------------------------------------------------------------


def test_no_ssh_or_rdp_rule_anywhere(cfn: dict[str, Any]) -> None:
    for rule in _ingress_rules(cfn):
        assert str(rule["IpProtocol"]) in {"tcp", "udp"}, rule
        assert not _covers(cfn, rule, 22) and not _covers(cfn, rule, 3389), rule


def test_sip_only_from_the_carrier_parameters(cfn: dict[str, Any]) -> None:
    sip_rules = [rule for rule in _ingress_rules(cfn) if _covers(cfn, rule, SIP_PORT)]
    sources = {
        (rule["IpProtocol"], repr(rule.get("CidrIp") or rule.get("SourcePrefixListId")))
        for rule in sip_rules
    }
    assert sources == {
        ("udp", repr({"Ref": "CarrierCidr"})),
        ("tcp", repr({"Ref": "CarrierCidr"})),
        ("udp", repr({"Ref": "CarrierPrefixListId"})),
        ("tcp", repr({"Ref": "CarrierPrefixListId"})),
    }
    for rule in sip_rules:
        assert _ports(rule) == (SIP_PORT, SIP_PORT)
    assert "Default" not in cfn["Parameters"]["CarrierCidr"]  # no silent 0.0.0.0/0


def test_rtp_range_is_the_parameters(cfn: dict[str, Any]) -> None:
    (rtp,) = [r for r in _ingress_rules(cfn) if r.get("CidrIp") == {"Ref": "RtpSourceCidr"}]
    assert rtp["IpProtocol"] == "udp"
    assert _ports(rtp) == ({"Ref": "RtpPortMin"}, {"Ref": "RtpPortMax"})


def test_stream_port_only_from_the_load_balancer(cfn: dict[str, Any]) -> None:
    rules = [r for r in _ingress_rules(cfn) if _covers(cfn, r, STREAM_PORT)]
    assert [(r.get("GroupId"), r.get("SourceSecurityGroupId")) for r in rules] == [
        ({"Ref": "NodeSecurityGroup"}, {"Ref": "LoadBalancerSecurityGroup"})
    ]
    lb = _props(cfn, "LoadBalancerSecurityGroup")
    assert [_ports(r) for r in lb["SecurityGroupIngress"]] == [(443, 443)]
    assert [(_ports(r), r["DestinationSecurityGroupId"]) for r in lb["SecurityGroupEgress"]] == [
        ((STREAM_PORT, STREAM_PORT), {"Ref": "NodeSecurityGroup"})
    ]


def test_every_rule_is_described(cfn: dict[str, Any]) -> None:
    for rule in [*_ingress_rules(cfn), *_egress_rules(cfn)]:
        assert len(rule.get("Description", "")) > 10, rule


# --- agent streams -------------------------------------------------------------------------------


def test_tls_listener_forwards_only_agent_streams_to_8080_with_health_checks(
    cfn: dict[str, Any],
) -> None:
    assert _props(cfn, "StreamLoadBalancer")["Type"] == "application"
    listener = _props(cfn, "StreamListener")
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-")
    assert listener["DefaultActions"][0]["Type"] == "fixed-response"
    rule = _props(cfn, "AgentStreamRule")
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"] == ["/api/v1/agent-stream/*"]
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "StreamTargetGroup"}}]
    target = _props(cfn, "StreamTargetGroup")
    assert (target["Protocol"], target["Port"], target["HealthCheckPath"]) == (
        "HTTP",
        STREAM_PORT,
        "/health",
    )
    attributes = {a["Key"]: a["Value"] for a in target["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == {"Ref": "DrainSeconds"}


# --- draining ------------------------------------------------------------------------------------


def test_lifecycle_hook_outlasts_the_drain_and_continues(cfn: dict[str, Any]) -> None:
    (hook,) = _props(cfn, "NodeGroup")["LifecycleHookSpecificationList"]
    assert hook == {
        "LifecycleHookName": HOOK_NAME,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "HeartbeatTimeout": {
            "Fn::FindInMap": ["DrainTimes", {"Ref": "DrainSeconds"}, "HookTimeout"]
        },
        "DefaultResult": "CONTINUE",
    }
    assert cfn["Outputs"]["LifecycleHookName"]["Value"] == HOOK_NAME


def test_drain_times_table_has_every_allowed_drain_and_the_right_sums(cfn: dict[str, Any]) -> None:
    allowed = cfn["Parameters"]["DrainSeconds"]["AllowedValues"]
    table = cfn["Mappings"]["DrainTimes"]
    assert sorted(int(k) for k in table) == sorted(allowed)
    assert cfn["Parameters"]["DrainSeconds"]["Default"] in allowed
    for key, times in table.items():
        drain = int(key)
        assert times["HookTimeout"] >= drain + 60
        assert times["HookTimeout"] <= MAX_HOOK_TIMEOUT
        assert times["StopTimeout"] == drain + 30
        # A booting node may wait for a draining one: deregistration, then the hook.
        assert times["ClaimWait"] >= drain + times["HookTimeout"]
        assert drain <= MAX_DEREGISTRATION_DELAY


# --- IAM -----------------------------------------------------------------------------------------


def test_node_role_grants_exactly_what_the_node_calls(cfn: dict[str, Any]) -> None:
    statements = _node_statements(cfn)
    assert set(statements) == set(NODE_GRANTS)
    for sid, (actions, resource) in NODE_GRANTS.items():
        statement = statements[sid]
        assert statement["Effect"] == "Allow"
        assert set(_as_list(statement["Action"])) == actions, sid
        assert statement["Resource"] == resource, sid
        assert statement["_if"] == ("HasElasticIp1" if sid in POOL_ONLY else None), sid


def test_star_resources_only_for_actions_without_an_arn(cfn: dict[str, Any]) -> None:
    for sid, statement in _node_statements(cfn).items():
        actions = _as_list(statement["Action"])
        assert not any(a == "*" or a.endswith(":*") for a in actions), sid
        if statement["Resource"] == "*":
            assert set(actions) <= UNSCOPABLE_ACTIONS, sid


def test_conditions_narrow_metrics_secrets_and_addresses(cfn: dict[str, Any]) -> None:
    statements = _node_statements(cfn)
    assert statements["HostMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": HOST_METRICS_NAMESPACE}
    }
    # The context the control plane seals with (shared/secret_box.py, template.yaml).
    assert statements["OpenStoredSecrets"]["Condition"] == {
        "StringEquals": {
            "kms:EncryptionContext:purpose": "agera-secret",
            "kms:EncryptionContext:table": _import("TableName"),
        }
    }
    assert statements["ClaimPoolAddress"]["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/agera:pool": {"Ref": "AWS::StackName"}}
    }
    assert statements["ClaimForThisFleetOnly"]["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/agera:fleet": {"Ref": "AWS::StackName"}}
    }


def test_only_the_ssm_core_managed_policy(cfn: dict[str, Any]) -> None:
    role = _props(cfn, "NodeRole")
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}
    ]
    assert "FullAccess" not in FLEET.read_text()
    principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "ec2.amazonaws.com"}


def test_instances_carry_the_fleet_tag_the_address_grant_checks(cfn: dict[str, Any]) -> None:
    specs = _props(cfn, "NodeLaunchTemplate")["LaunchTemplateData"]["TagSpecifications"]
    (instance,) = [s for s in specs if s["ResourceType"] == "instance"]
    assert {"Key": "agera:fleet", "Value": {"Ref": "AWS::StackName"}} in instance["Tags"]


# --- Elastic IP pool -----------------------------------------------------------------------------


def test_elastic_ips_are_retained_tagged_and_listed(cfn: dict[str, Any]) -> None:
    eips = _of_type(cfn, "AWS::EC2::EIP")
    sizes = cfn["Parameters"]["ElasticIpPoolSize"]["AllowedValues"]
    assert sorted(eips) == [f"ElasticIp{i}" for i in range(1, int(max(sizes)) + 1)]
    for name, eip in eips.items():
        assert eip["Condition"] == f"HasElasticIp{name.removeprefix('ElasticIp')}"
        assert (eip["DeletionPolicy"], eip["UpdateReplacePolicy"]) == ("Retain", "Retain")
        tags = {t["Key"]: t["Value"] for t in eip["Properties"]["Tags"]}
        assert tags["agera:pool"] == {"Ref": "AWS::StackName"}
    output = repr(cfn["Outputs"]["ElasticIps"]["Value"])
    assert all(f"'Ref': '{name}'" in output for name in eips)
    assert cfn["Outputs"]["ElasticIps"]["Condition"] == "HasElasticIp1"


def test_pool_size_rule_covers_every_size(cfn: dict[str, Any]) -> None:
    rule = cfn["Rules"]["ElasticIpPoolCoversMaxSize"]
    sizes = [s for s in cfn["Parameters"]["ElasticIpPoolSize"]["AllowedValues"] if s != "0"]
    asserted = {}
    for assertion in rule["Assertions"]:
        (not_size, contains) = assertion["Assert"]["Fn::Or"]
        size = not_size["Fn::Not"][0]["Fn::Equals"][1]
        allowed, ref = contains["Fn::Contains"]
        assert ref == {"Ref": "MaxSize"}
        asserted[size] = allowed
    assert asserted == {s: [str(n) for n in range(1, int(s) + 1)] for s in sizes}


# --- logs and the control-plane contract ---------------------------------------------------------


def test_one_log_group_with_retention(cfn: dict[str, Any]) -> None:
    (name,) = _of_type(cfn, "AWS::Logs::LogGroup")
    assert _props(cfn, name)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert (
        cfn["Parameters"]["LogRetentionDays"]["Default"]
        in (cfn["Parameters"]["LogRetentionDays"]["AllowedValues"])
    )


_IMPORT = re.compile(r"'Fn::ImportValue': \{'Fn::Sub': '\$\{ControlPlaneStackName\}-(\w+)'\}")


def test_imports_are_exported_by_the_control_plane(cfn: dict[str, Any]) -> None:
    from samtranslator.yaml_helper import yaml_parse

    outputs = yaml_parse(CONTROL_PLANE.read_text())["Outputs"]
    exported = {
        o["Export"]["Name"]["Fn::Sub"].removeprefix("${AWS::StackName}-")
        for o in outputs.values()
        if "Export" in o
    }
    imported = set(_IMPORT.findall(repr(cfn["Resources"])))
    assert imported >= {"TableArn", "NodeQueuePrefix", "OriginateQueueUrl", "EventsQueueUrl"}
    assert imported <= exported, imported - exported


def test_outputs_are_exported_under_the_stack_name(cfn: dict[str, Any]) -> None:
    for name, output in cfn["Outputs"].items():
        if "Export" in output:
            assert output["Export"] == {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{name}"}}
