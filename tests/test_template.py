"""Offline checks of the SAM template, its build makefile and samconfig.toml.

The template is the contract between the control plane, the edge fleet stack and the Lambda code:
these tests pin the names and the safety properties (DLQs, visibility, least privilege) so a
careless edit fails here instead of in a deploy. cfn-lint validates the CloudFormation semantics;
aws-sam-translator expands the SAM resources the same way a deploy would, offline.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
SAM_BUILD_MK = REPO / "infra" / "sam-build.mk"
SAMCONFIG = REPO / "samconfig.toml"
LAMBDA_REQUIREMENTS = REPO / "functions" / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"

PSEUDO_PARAMS = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
}
# AWS guidance: an SQS source queue's visibility timeout is at least 6x the function timeout.
VISIBILITY_TO_TIMEOUT_RATIO = 6
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
LINT_TIMEOUT_SECONDS = 120

FUNCTION_HANDLERS = {
    "ApiFunction": "functions.api.handler.handler",
    "CallbacksFunction": "functions.workers.callbacks.handler",
    "EventsFunction": "functions.workers.events.handler",
    "ReaperFunction": "functions.workers.reaper.handler",
}
SERVICE_NAMES = {
    "ApiFunction": "api",
    "CallbacksFunction": "callbacks",
    "EventsFunction": "events",
    "ReaperFunction": "reaper",
}
QUEUE_DLQS = {
    "OriginateQueue": "OriginateDLQ",
    "EventsQueue": "EventsDLQ",
    "CallbacksQueue": "CallbacksDLQ",
}
QUEUE_CONSUMERS = {"EventsQueue": "EventsFunction", "CallbacksQueue": "CallbacksFunction"}
EXPORTED_OUTPUTS = [
    "ApiUrl",
    "TableName",
    "TableArn",
    "SecretsKeyArn",
    "OriginateQueueUrl",
    "EventsQueueUrl",
    "CallbacksQueueUrl",
    "OriginateDLQUrl",
    "EventsDLQUrl",
    "CallbacksDLQUrl",
    "NodeQueuePrefix",
]
GLOBAL_ENV_VARS = {
    "AGERA_TABLE_NAME",
    "AGERA_ORIGINATE_QUEUE_URL",
    "AGERA_EVENTS_QUEUE_URL",
    "AGERA_CALLBACKS_QUEUE_URL",
    "AGERA_NODE_QUEUE_PREFIX",
    "AGERA_SSRF_ALLOW_LIST",
    "AGERA_TRACING",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
}
# Managed policies SAM may attach: logging and X-Ray only, never data access.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
NODE_QUEUE_ARN = (
    "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-node-*"
)


class _NoNetworkPolicyLoader:
    """Managed-policy names resolve from the translator's bundled data; no IAM calls."""

    def load(self) -> dict[str, str]:
        return {}


def _load_sam(text: str) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    doc: dict[str, Any] = yaml_parse(text)
    return doc


def _transform(sam: dict[str, Any]) -> dict[str, Any]:
    """Expand SAM to CloudFormation as `sam validate` does (s3:// CodeUri, fixed region)."""
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(sam)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder/code.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", PSEUDO_PARAMS["AWS::Region"])
        cfn: dict[str, Any] = transform(sam, PSEUDO_PARAMS, _NoNetworkPolicyLoader())
    return cfn


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return _load_sam(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return _transform(sam)


def _resources(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == type_}


def _props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = cfn["Resources"][logical_id]["Properties"]
    return props


def _statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in role["Properties"].get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        yield from statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _run_cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    assert cfn_lint.exists(), f"cfn-lint is not installed next to {sys.executable}"
    return subprocess.run(
        [str(cfn_lint), str(path)],
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_SECONDS,
        check=False,
    )


# --- cfn-lint ------------------------------------------------------------------------------------


def test_cfn_lint_is_clean() -> None:
    result = _run_cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Proves the lint above really inspects this template (a bad GetAtt must fail it)."""
    text = TEMPLATE.read_text()
    assert "!GetAtt OriginateDLQ.Arn" in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace("!GetAtt OriginateDLQ.Arn", "!GetAtt OriginateDLQ.Nope", 1))
    result = _run_cfn_lint(broken)
    assert result.returncode != 0
    assert "E1010" in result.stdout


# --- functions -----------------------------------------------------------------------------------


def test_exactly_the_four_functions_with_their_handlers(cfn: dict[str, Any]) -> None:
    functions = _resources(cfn, "AWS::Lambda::Function")
    handlers = {name: fn["Properties"]["Handler"] for name, fn in functions.items()}
    assert handlers == FUNCTION_HANDLERS


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_function_runtime_and_architecture(cfn: dict[str, Any], name: str) -> None:
    props = _props(cfn, name)
    assert props["Runtime"] == "python3.11"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {
        "Mode": {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}
    }


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_function_environment(cfn: dict[str, Any], name: str) -> None:
    env = _props(cfn, name)["Environment"]["Variables"]
    assert set(env) >= GLOBAL_ENV_VARS
    assert env["AGERA_TABLE_NAME"] == {"Ref": "AgeraTable"}
    assert env["AGERA_ORIGINATE_QUEUE_URL"] == {"Ref": "OriginateQueue"}
    assert env["AGERA_EVENTS_QUEUE_URL"] == {"Ref": "EventsQueue"}
    assert env["AGERA_CALLBACKS_QUEUE_URL"] == {"Ref": "CallbacksQueue"}
    assert env["AGERA_NODE_QUEUE_PREFIX"] == {"Fn::Sub": "${AWS::StackName}-node-"}
    assert env["AGERA_SSRF_ALLOW_LIST"] == {"Ref": "SsrfAllowList"}
    assert env["AGERA_TRACING"] == {"Ref": "EnableTracing"}
    assert env["LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "AgeraVoiceGateway"
    assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAMES[name]


def test_parameters_and_conditions(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    assert params["Stage"]["Default"] == "prod"
    assert params["EnableTracing"]["Default"] == "false"
    assert params["SsrfAllowList"]["Default"] == ""
    assert params["AlarmEmail"]["Default"] == ""
    assert "LogLevel" in params
    assert sam["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    assert sam["Conditions"]["TracingEnabled"] == {"Fn::Equals": [{"Ref": "EnableTracing"}, "true"]}


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_function_is_built_by_the_makefile_from_the_repo_root(
    sam: dict[str, Any], name: str
) -> None:
    resource = sam["Resources"][name]
    assert resource["Metadata"] == {"BuildMethod": "makefile"}
    assert resource["Properties"]["CodeUri"] == "."


# --- HTTP API ------------------------------------------------------------------------------------


def test_http_api_routes_use_payload_format_2(cfn: dict[str, Any]) -> None:
    apis = _resources(cfn, "AWS::ApiGatewayV2::Api")
    assert list(apis) == ["HttpApi"]
    paths = apis["HttpApi"]["Properties"]["Body"]["paths"]
    assert sorted(paths) == ["/api", "/api/{proxy+}", "/dashboard", "/dashboard/{proxy+}"]
    for path in paths.values():
        integration = path["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert integration["payloadFormatVersion"] == "2.0"
        assert "${ApiFunction.Arn}" in integration["uri"]["Fn::Sub"]


def test_http_api_serves_the_default_stage(cfn: dict[str, Any]) -> None:
    """No stage prefix in rawPath, so Mangum needs no api_gateway_base_path."""
    stages = _resources(cfn, "AWS::ApiGatewayV2::Stage")
    assert [s["Properties"]["StageName"] for s in stages.values()] == ["$default"]


# --- SQS triggers --------------------------------------------------------------------------------


def test_event_source_mappings_report_batch_item_failures(cfn: dict[str, Any]) -> None:
    mappings = _resources(cfn, "AWS::Lambda::EventSourceMapping").values()
    wiring = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]["FunctionName"]["Ref"]
        for m in mappings
    }
    assert wiring == QUEUE_CONSUMERS
    for mapping in mappings:
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_callbacks_batch_fits_the_timeout_at_five_seconds_per_delivery(cfn: dict[str, Any]) -> None:
    (mapping,) = [
        m
        for m in _resources(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "CallbacksFunction"}
    ]
    delivery_timeout_seconds = 5
    batch = mapping["Properties"]["BatchSize"]
    assert batch * delivery_timeout_seconds < _props(cfn, "CallbacksFunction")["Timeout"]


# --- table ---------------------------------------------------------------------------------------


def test_single_table_with_keys_gsi_ttl_and_recovery(cfn: dict[str, Any]) -> None:
    tables = _resources(cfn, "AWS::DynamoDB::Table")
    assert list(tables) == ["AgeraTable"]
    table = tables["AgeraTable"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert sorted(
        (a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]
    ) == [("gsi1pk", "S"), ("gsi1sk", "S"), ("live_node", "S"), ("pk", "S"), ("sk", "S")]
    assert props["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "gsi1",
            "KeySchema": [
                {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        # The reaper's sparse index of live calls: only what it needs to judge their nodes.
        {
            "IndexName": "live",
            "KeySchema": [{"AttributeName": "live_node", "KeyType": "HASH"}],
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": ["created_at", "node_run"],
            },
        },
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}


# --- queues --------------------------------------------------------------------------------------


def test_every_queue_is_a_source_or_its_dlq(cfn: dict[str, Any]) -> None:
    queues = set(_resources(cfn, "AWS::SQS::Queue"))
    assert queues == set(QUEUE_DLQS) | set(QUEUE_DLQS.values())


@pytest.mark.parametrize(("queue", "dlq"), sorted(QUEUE_DLQS.items()))
def test_queue_redrives_to_its_dlq(cfn: dict[str, Any], queue: str, dlq: str) -> None:
    props = _props(cfn, queue)
    assert props["SqsManagedSseEnabled"] is True
    redrive = props["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
    assert 1 <= redrive["maxReceiveCount"] <= 10
    dlq_props = _props(cfn, dlq)
    assert dlq_props["SqsManagedSseEnabled"] is True
    assert dlq_props["MessageRetentionPeriod"] == DLQ_RETENTION_SECONDS
    assert "RedrivePolicy" not in dlq_props


def test_callbacks_get_five_attempts(cfn: dict[str, Any]) -> None:
    assert _props(cfn, "CallbacksQueue")["RedrivePolicy"]["maxReceiveCount"] == 5


@pytest.mark.parametrize(("queue", "function"), sorted(QUEUE_CONSUMERS.items()))
def test_visibility_is_at_least_six_function_timeouts(
    cfn: dict[str, Any], queue: str, function: str
) -> None:
    visibility = _props(cfn, queue)["VisibilityTimeout"]
    timeout = _props(cfn, function)["Timeout"]
    assert visibility >= VISIBILITY_TO_TIMEOUT_RATIO * timeout


# --- alarms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dlq", sorted(QUEUE_DLQS.values()))
def test_each_dlq_alarms_on_its_first_message(cfn: dict[str, Any], dlq: str) -> None:
    matching = [
        a["Properties"]
        for a in _resources(cfn, "AWS::CloudWatch::Alarm").values()
        if {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}
        in a["Properties"].get("Dimensions", [])
    ]
    assert len(matching) == 1
    alarm = matching[0]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert {"Ref": "AlarmTopic"} in alarm["AlarmActions"]


def test_api_5xx_alarm(cfn: dict[str, Any]) -> None:
    alarm = _props(cfn, "ApiServerErrorsAlarm")
    assert alarm["Namespace"] == "AWS/ApiGateway"
    assert alarm["MetricName"] == "5xx"
    assert alarm["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}]
    assert alarm["Threshold"] == {"Ref": "Api5xxThreshold"}
    assert {"Ref": "AlarmTopic"} in alarm["AlarmActions"]


def test_email_subscription_only_when_an_address_is_given(cfn: dict[str, Any]) -> None:
    subs = _resources(cfn, "AWS::SNS::Subscription")
    assert [s["Condition"] for s in subs.values()] == ["HasAlarmEmail"]
    assert [s["Properties"]["TopicArn"] for s in subs.values()] == [{"Ref": "AlarmTopic"}]


# --- IAM -----------------------------------------------------------------------------------------


def test_no_data_action_on_every_resource(cfn: dict[str, Any]) -> None:
    offenders = []
    for name, role in _resources(cfn, "AWS::IAM::Role").items():
        for statement in _statements(role):
            actions = _as_list(statement["Action"])
            resources = _as_list(statement.get("Resource", []))
            data = [a for a in actions if a.split(":")[0] in {"dynamodb", "sqs", "kms"}]
            wildcard = any(a in {"*", "dynamodb:*", "sqs:*", "kms:*"} for a in actions)
            if wildcard or (data and "*" in resources):
                offenders.append((name, statement))
    assert offenders == []


def test_roles_attach_no_data_access_managed_policy(cfn: dict[str, Any]) -> None:
    """SAM's `Type: SQS` event would attach AWSLambdaSQSQueueExecutionRole (sqs:* reads on *)."""
    roles = _resources(cfn, "AWS::IAM::Role")
    assert sorted(roles) == sorted(f"{name}Role" for name in FUNCTION_HANDLERS)
    for role in roles.values():
        assert set(role["Properties"].get("ManagedPolicyArns", [])) <= ALLOWED_MANAGED_POLICIES


def _sqs_grants(cfn: dict[str, Any], function: str) -> list[tuple[tuple[str, ...], Any]]:
    role = cfn["Resources"][f"{function}Role"]
    return [
        (tuple(sorted(_as_list(s["Action"]))), s["Resource"])
        for s in _statements(role)
        if any(a.startswith("sqs:") for a in _as_list(s["Action"]))
    ]


def _queue_arn(queue: str) -> dict[str, Any]:
    return {
        "Fn::Sub": [
            "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}",
            {"queueName": {"Fn::GetAtt": [queue, "QueueName"]}},
        ]
    }


POLLER_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:ChangeMessageVisibilityBatch",
    "sqs:DeleteMessage",
    "sqs:DeleteMessageBatch",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)


def test_api_sends_only_to_originate_events_and_node_queues_and_reads_queue_health(
    cfn: dict[str, Any],
) -> None:
    # EventsQueue: cancelling a call no node has taken emits its call.completed from the API.
    assert sorted(_sqs_grants(cfn, "ApiFunction"), key=repr) == sorted(
        [
            (("sqs:SendMessage*",), _queue_arn("OriginateQueue")),
            (("sqs:SendMessage*",), _queue_arn("EventsQueue")),
            (("sqs:GetQueueUrl", "sqs:SendMessage"), {"Fn::Sub": NODE_QUEUE_ARN}),
            (
                ("sqs:GetQueueAttributes",),
                [{"Fn::GetAtt": [queue, "Arn"]} for queue in QUEUE_DLQS],
            ),
        ],
        key=repr,
    )


def test_events_worker_polls_events_and_sends_callbacks(cfn: dict[str, Any]) -> None:
    assert sorted(_sqs_grants(cfn, "EventsFunction"), key=repr) == sorted(
        [
            (POLLER_ACTIONS, _queue_arn("EventsQueue")),
            (("sqs:SendMessage*",), _queue_arn("CallbacksQueue")),
        ],
        key=repr,
    )


def test_callbacks_worker_only_polls_its_queue(cfn: dict[str, Any]) -> None:
    assert _sqs_grants(cfn, "CallbacksFunction") == [(POLLER_ACTIONS, _queue_arn("CallbacksQueue"))]


def test_reaper_sends_events_and_retires_only_node_queues(cfn: dict[str, Any]) -> None:
    assert sorted(_sqs_grants(cfn, "ReaperFunction"), key=repr) == sorted(
        [
            (("sqs:SendMessage*",), _queue_arn("EventsQueue")),
            (
                ("sqs:ListQueues",),
                {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*"},
            ),
            (
                ("sqs:DeleteQueue", "sqs:ListQueueTags", "sqs:TagQueue", "sqs:UntagQueue"),
                {"Fn::Sub": NODE_QUEUE_ARN},
            ),
        ],
        key=repr,
    )


def test_reaper_has_item_actions_and_scans_only_the_live_index(cfn: dict[str, Any]) -> None:
    """Least privilege: no PutItem, no table-wide Scan, no CRUD policy template."""
    grants = {
        tuple(sorted(_as_list(s["Action"]))): [arn["Fn::Sub"][0] for arn in s["Resource"]]
        for s in _statements(cfn["Resources"]["ReaperFunctionRole"])
        if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
    }
    table = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${tableName}"
    assert grants == {
        (
            "dynamodb:BatchGetItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        ): [table],
        ("dynamodb:Query", "dynamodb:Scan"): [f"{table}/index/live", f"{table}/index/gsi1"],
    }


def test_reaper_runs_every_minute(cfn: dict[str, Any]) -> None:
    rules = _resources(cfn, "AWS::Events::Rule")
    assert [r["Properties"]["ScheduleExpression"] for r in rules.values()] == ["rate(1 minute)"]
    (rule,) = rules.values()
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["ReaperFunction", "Arn"]}


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_dynamodb_access_is_scoped_to_the_table(cfn: dict[str, Any], name: str) -> None:
    role = cfn["Resources"][f"{name}Role"]
    resources = [
        s["Resource"]
        for s in _statements(role)
        if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
    ]
    # The table, plus the indexes for the two that query them.
    assert len(resources) == (2 if name in {"ApiFunction", "ReaperFunction"} else 1)
    for arn in (arn for statement in resources for arn in statement):
        template, variables = arn["Fn::Sub"]
        assert template.startswith(
            "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${tableName}"
        )
        assert variables == {"tableName": {"Ref": "AgeraTable"}}


TABLE_ARN = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${tableName}"
# Each function's DynamoDB actions, by resource (table, or table/index/<name>): item actions only,
# and only the ones its code makes (functions/workers/*.py, functions/api/*.py).
TABLE_GRANTS = {
    "ApiFunction": {
        TABLE_ARN: {
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        },
        f"{TABLE_ARN}/index/gsi1": {"dynamodb:Query"},
    },
    "EventsFunction": {
        TABLE_ARN: {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    },
    "CallbacksFunction": {TABLE_ARN: {"dynamodb:GetItem", "dynamodb:UpdateItem"}},
    "ReaperFunction": {
        TABLE_ARN: {
            "dynamodb:BatchGetItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        },
        f"{TABLE_ARN}/index/live": {"dynamodb:Query", "dynamodb:Scan"},
        f"{TABLE_ARN}/index/gsi1": {"dynamodb:Query", "dynamodb:Scan"},
    },
}
# Who may use the secrets key: the API seals and opens, the callbacks worker opens the webhook
# secret; the events worker and the reaper never see a secret and get nothing.
KMS_GRANTS = {
    "ApiFunction": {"kms:Decrypt", "kms:GenerateDataKey"},
    "CallbacksFunction": {"kms:Decrypt"},
    "EventsFunction": set(),
    "ReaperFunction": set(),
}
SECRETS_CONTEXT = {
    "kms:EncryptionContext:purpose": "agera-secret",
    "kms:EncryptionContext:table": {"Ref": "AgeraTable"},
}


def _table_grants(cfn: dict[str, Any], function: str) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for statement in _statements(cfn["Resources"][f"{function}Role"]):
        actions = {a for a in _as_list(statement["Action"]) if a.startswith("dynamodb:")}
        for arn in _as_list(statement.get("Resource", [])) if actions else []:
            grants.setdefault(arn["Fn::Sub"][0], set()).update(actions)
    return grants


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_each_function_has_only_the_table_actions_it_makes(cfn: dict[str, Any], name: str) -> None:
    """No CRUD policy template: it grants Scan and batch writes to functions that make neither."""
    assert _table_grants(cfn, name) == TABLE_GRANTS[name]


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_kms_use_is_only_what_the_function_needs(cfn: dict[str, Any], name: str) -> None:
    statements = [
        s
        for s in _statements(cfn["Resources"][f"{name}Role"])
        if any(a.startswith("kms:") for a in _as_list(s["Action"]))
    ]
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert actions == KMS_GRANTS[name]
    for statement in statements:
        assert statement["Resource"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}
        assert statement["Condition"] == {"StringEquals": SECRETS_CONTEXT}


def test_secrets_key_rotates_is_kept_and_serves_only_this_table(cfn: dict[str, Any]) -> None:
    key = cfn["Resources"]["SecretsKey"]
    assert (key["DeletionPolicy"], key["UpdateReplacePolicy"]) == ("Retain", "Retain")
    props = key["Properties"]
    assert props["EnableKeyRotation"] is True
    assert (props["KeySpec"], props["KeyUsage"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    allow, deny = props["KeyPolicy"]["Statement"]
    assert allow["Effect"] == "Allow"
    assert allow["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(deny["Action"])
    assert deny["Condition"] == {
        "StringNotEquals": {"kms:EncryptionContext:table": {"Ref": "AgeraTable"}}
    }
    alias = _props(cfn, "SecretsKeyAlias")
    assert alias == {
        "AliasName": {"Fn::Sub": "alias/${AWS::StackName}-secrets"},
        "TargetKeyId": {"Ref": "SecretsKey"},
    }


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_only_the_api_is_given_the_key_to_seal_with(cfn: dict[str, Any], name: str) -> None:
    """Readers need no key id (a sealed value names its key); a function without one refuses to
    write a secret (shared/secret_box.py)."""
    env = _props(cfn, name)["Environment"]["Variables"]
    expected = {"Fn::GetAtt": ["SecretsKey", "Arn"]} if name == "ApiFunction" else None
    assert env.get("AGERA_KMS_KEY_ID") == expected


# --- outputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPORTED_OUTPUTS)
def test_output_is_exported_under_the_stack_name(cfn: dict[str, Any], name: str) -> None:
    output = cfn["Outputs"][name]
    assert output["Export"] == {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{name}"}}


def test_output_values(cfn: dict[str, Any]) -> None:
    outputs = {name: o["Value"] for name, o in cfn["Outputs"].items()}
    assert outputs["ApiUrl"] == {
        "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api"
    }
    assert outputs["TableName"] == {"Ref": "AgeraTable"}
    assert outputs["TableArn"] == {"Fn::GetAtt": ["AgeraTable", "Arn"]}
    assert outputs["SecretsKeyArn"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}
    for queue, dlq in QUEUE_DLQS.items():
        assert outputs[f"{queue}Url"] == {"Ref": queue}
        assert outputs[f"{dlq}Url"] == {"Ref": dlq}
    assert outputs["NodeQueuePrefix"] == {"Fn::Sub": "${AWS::StackName}-node-"}


# --- build ---------------------------------------------------------------------------------------

_MAKE_TARGET = re.compile(r"^(build-[A-Za-z0-9]+)\s*:", re.MULTILINE)


def test_sam_build_mk_has_a_target_per_function(sam: dict[str, Any]) -> None:
    functions = {
        name for name, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }
    targets = set(_MAKE_TARGET.findall(SAM_BUILD_MK.read_text()))
    assert {f"build-{name}" for name in functions} <= targets


@pytest.mark.parametrize("name", sorted(FUNCTION_HANDLERS))
def test_sam_build_mk_recipe(tmp_path: Path, name: str) -> None:
    """`make -n` prints the recipe SAM would run: arm64 wheels, two packages, compiled pyc."""
    artifacts = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(
        ["make", "-n", "-f", str(SAM_BUILD_MK), f"build-{name}", f"ARTIFACTS_DIR={artifacts}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=LINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    pip_line = next(line for line in commands.splitlines() if " -m pip install " in line)
    for flag in (
        "--platform manylinux2014_aarch64",
        "--implementation cp",
        "--python-version 3.11",
        "--only-binary=:all:",
        f'--requirement "{LAMBDA_REQUIREMENTS}"',
        f'--target "{artifacts}"',
    ):
        assert flag in pip_line
    assert f'cd "{REPO}" && cp -R functions shared "{artifacts}/"' in commands
    assert "edge_media" not in commands
    assert f'-m compileall -q --invalidation-mode unchecked-hash "{artifacts}"' in commands


def test_including_sam_build_mk_keeps_the_default_goal(tmp_path: Path) -> None:
    """The repo Makefile includes this file; plain `make` must still run the Makefile's goal."""
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"include {SAM_BUILD_MK}\nhelp:\n\t@echo help-ran\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(
        ["make", "-s"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=LINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "help-ran\n"), result.stderr


def test_sam_build_mk_fails_without_artifacts_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARTIFACTS_DIR" and not k.startswith("MAKE")}
    result = subprocess.run(
        ["make", "-s", "-f", str(SAM_BUILD_MK), "build-ApiFunction"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=LINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode != 0
    assert "ARTIFACTS_DIR is not set" in result.stderr


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            assert version, f"unpinned requirement: {line!r}"
            pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


def test_lambda_requirements_are_pinned_like_the_project() -> None:
    lambda_pins = _pins(LAMBDA_REQUIREMENTS.read_text().splitlines())
    assert set(lambda_pins) == {
        "starlette",
        "mangum",
        "pydantic",
        "aws-lambda-powertools",
        "httpx",
        "cryptography",
        "jinja2",
        "itsdangerous",
        "boto3",
        "botocore",
    }
    project_pins = _pins(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    assert {name: project_pins[name] for name in lambda_pins} == lambda_pins


def test_samconfig_defaults() -> None:
    config = tomllib.loads(SAMCONFIG.read_text())["default"]
    assert config["global"]["parameters"]["stack_name"] == "agera"
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert config["build"]["parameters"]["build_in_source"] is True


# --- call-metric alarms and the operations dashboard ---------------------------------------------

# Where each service's EMF metrics are recorded (the service dimension Powertools adds).
_METRIC_SOURCES = {
    "api": ["functions/api/originate.py", "functions/api/request_metrics.py"],
    "events": ["functions/workers/events.py"],
    "callbacks": ["functions/workers/callbacks.py"],
    "reaper": ["functions/workers/reaper.py"],
}


def _emitted() -> set[tuple[str, str]]:
    """(service, metric) pairs the code records: the functions' add_metric names and the edge
    node's constants (edge_media/control/metrics.py), read from the source."""
    import re

    from edge_media.control import metrics as node_metrics

    pairs = {
        ("edge-node", value)
        for name, value in vars(node_metrics).items()
        if name.isupper() and isinstance(value, str) and value[:1].isupper()
    }
    for service, paths in _METRIC_SOURCES.items():
        for path in paths:
            text = (REPO / path).read_text()
            for found in re.finditer(r'add_metric\(\s*(?:name=)?"(\w+)"', text):
                pairs.add((service, found.group(1)))
    return pairs


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(namespace, service dimension, metric) of an alarm, single metric or metric math."""
    stats = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
    if not stats:
        stats = [alarm]
    found = []
    for metric in stats:
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        found.append((metric["Namespace"], dims.get("service", ""), metric["MetricName"]))
    return found


def test_every_call_metric_alarm_watches_a_metric_the_code_records(cfn: dict[str, Any]) -> None:
    emitted = _emitted()
    assert ("edge-node", "ActiveCalls") in emitted and ("reaper", "CallsReaped") in emitted
    watched = []
    for name, alarm in _resources(cfn, "AWS::CloudWatch::Alarm").items():
        for namespace, service, metric in _alarm_metrics(alarm["Properties"]):
            if namespace == "AgeraVoiceGateway":
                assert (service, metric) in emitted, (name, service, metric)
                watched.append(metric)
        assert {"Ref": "AlarmTopic"} in alarm["Properties"]["AlarmActions"], name
    for metric in ("ActiveCalls", "RtpLossPct", "PacingErrorMs", "CallSetupMs", "CallsReaped"):
        assert metric in watched, metric
    assert {"CallbackFailures", "CallbackDeliveries"} <= set(watched)


def test_no_node_reporting_alarms_on_missing_data_unless_turned_off(cfn: dict[str, Any]) -> None:
    alarm = _resources(cfn, "AWS::CloudWatch::Alarm")["EdgeNodesSilentAlarm"]
    assert alarm["Condition"] == "MonitorEdge"
    props = alarm["Properties"]
    assert (props["Statistic"], props["TreatMissingData"]) == ("SampleCount", "breaching")
    assert props["ComparisonOperator"] == "LessThanThreshold" and props["Threshold"] == 1


def _dashboard_body(cfn: dict[str, Any]) -> dict[str, Any]:
    import json
    import re

    body = _props(cfn, "OperationsDashboard")["DashboardBody"]["Fn::Sub"]
    return dict(json.loads(re.sub(r"\$\{[^}]+\}", "x", body)))


def test_the_dashboard_shows_the_fleet_calls_quality_and_callbacks(cfn: dict[str, Any]) -> None:
    widgets = _dashboard_body(cfn)["widgets"]
    emitted = _emitted()
    shown = set()
    for widget in widgets:
        namespace = service = metric = ""
        for row in widget["properties"].get("metrics", []):
            names = [cell for cell in row if isinstance(cell, str)]
            if names[0] not in (".", "..."):  # a full row: namespace, metric, dimensions
                namespace, metric = names[0], names[1]
                service = names[3] if len(names) > 3 else ""
            elif names[0] == ".":  # "." repeats the cell above, position by position
                metric = names[1] if names[1] != "." else metric
                service = names[3] if len(names) > 3 and names[3] != "." else service
            if namespace != "AgeraVoiceGateway":
                continue
            assert (service, metric) in emitted, (widget["properties"]["title"], metric)
            shown.add(metric)
    assert {"ActiveCalls", "CallSetupMs", "RtpLossPct", "PacingErrorMs"} <= shown
    assert {"CallbackDeliveries", "CallbackFailures"} <= shown
    (per_node,) = [w for w in widgets if w["type"] == "log"]
    body = _props(cfn, "OperationsDashboard")["DashboardBody"]["Fn::Sub"]
    assert (
        "SOURCE '${EdgeLogGroupName}'" in body
        and "by bin(1m), node_id" in per_node["properties"]["query"]
    )
