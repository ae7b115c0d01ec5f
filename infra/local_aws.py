"""The local AWS: an in-process moto server and the table and queues of ``template.yaml``.

One source of truth: the local stack does not describe its own table or queues; it takes the
``AWS::DynamoDB::Table`` and ``AWS::SQS::Queue`` resources out of the SAM template and creates them
through moto's CloudFormation, so keys, indexes, redrive policies and timeouts are the ones deployed.
moto ignores ``TimeToLiveSpecification`` on create, so TTL is switched on afterwards. moto never
deletes expired items either; code must treat ``expires_at`` in the past as gone (it does:
repositories filter on it).

Every client finds moto through ``AWS_ENDPOINT_URL`` (docs/architecture.md, "One code path, two
environments"): no ``if local`` in domain code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.dynamo.repository import Repository
    from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
LOCAL_TYPES = frozenset({"AWS::DynamoDB::Table", "AWS::SQS::Queue"})
REGION = "us-east-1"

# Logical ids of the template that the local stack wires into settings.
QUEUE_SETTINGS = {
    "OriginateQueue": "AGERA_ORIGINATE_QUEUE_URL",
    "EventsQueue": "AGERA_EVENTS_QUEUE_URL",
    "CallbacksQueue": "AGERA_CALLBACKS_QUEUE_URL",
}
TABLE_LOGICAL_ID = "AgeraTable"


class LocalStackError(Exception):
    """The local stack could not be built; the message says what to fix."""


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment that points every AWS SDK at the local moto server with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


class MotoServer:
    """moto's threaded server on a loopback port (0 = pick a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None

    def start(self) -> str:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise LocalStackError(
                "the local stack needs the dev extras: pip install -e '.[dev]' (or run make dev)"
            ) from None
        # werkzeug's per-request access log costs ~4x throughput.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.port = port
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def load_template(path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Parse the SAM template, short forms (``!Ref``, ``!GetAtt``, ``!Sub``) included."""
    if not path.is_file():
        raise LocalStackError(f"template not found: {path}")
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(path))


def local_subset(template: dict[str, Any]) -> dict[str, Any]:
    """The plain-CloudFormation part moto can create: parameters, the table and the queues."""
    resources = {
        name: res
        for name, res in template.get("Resources", {}).items()
        if res.get("Type") in LOCAL_TYPES
    }
    if TABLE_LOGICAL_ID not in resources:
        raise LocalStackError(f"template has no {TABLE_LOGICAL_ID} table")
    missing = [q for q in QUEUE_SETTINGS if q not in resources]
    if missing:
        raise LocalStackError(f"template lacks queues: {', '.join(missing)}")
    subset: dict[str, Any] = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}
    if template.get("Parameters"):
        subset["Parameters"] = template["Parameters"]
    if any("Condition" in res for res in resources.values()):
        subset["Conditions"] = template.get("Conditions", {})
    return subset


@dataclass
class LocalResources:
    """Physical names of what was created, and the settings that point the gateway at them."""

    stack_name: str
    table_name: str
    queue_urls: dict[str, str] = field(default_factory=dict)
    kms_key_id: str = ""  # the key that seals stored secrets (infra/dev_kms.py)

    def settings_env(self) -> dict[str, str]:
        env = {"AGERA_TABLE_NAME": self.table_name}
        for logical, variable in QUEUE_SETTINGS.items():
            env[variable] = self.queue_urls[logical]
        env["AGERA_NODE_QUEUE_PREFIX"] = f"{self.stack_name}-node-"
        if self.kms_key_id:
            env["AGERA_KMS_KEY_ID"] = self.kms_key_id
        return env


def provision(
    endpoint: str,
    template_path: Path = DEFAULT_TEMPLATE,
    stack_name: str = "agera-local",
    *,
    kms_key: bool = True,
) -> LocalResources:
    """Create the template's table and queues in the moto server at ``endpoint``, and a KMS key
    for stored secrets (``kms_key``: a stack that brings its own passes False)."""
    import boto3

    from infra.dev_kms import create_local_key

    template = load_template(template_path)
    subset = local_subset(template)
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto accepts any credentials)
        region_name=REGION,
    )
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(subset))
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise LocalStackError(f"local stack {stack_name}: {stack['StackStatus']}")
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
    }
    resources = LocalResources(
        stack_name=stack_name,
        table_name=physical[TABLE_LOGICAL_ID],
        queue_urls={
            name: physical[name]
            for name, res in subset["Resources"].items()
            if res["Type"] == "AWS::SQS::Queue"
        },
        kms_key_id=create_local_key(endpoint) if kms_key else "",
    )
    ttl = subset["Resources"][TABLE_LOGICAL_ID]["Properties"].get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        dynamodb.update_time_to_live(
            TableName=resources.table_name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    return resources


# The table properties of the template that CreateTable takes as they are (SSE is spelt
# differently in the API and means nothing to moto).
_CREATE_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "StreamSpecification",
)


def empty_local_data(
    endpoint: str, resources: LocalResources, template_path: Path = DEFAULT_TEMPLATE
) -> None:
    """Start the table and the template's queues over, empty, with the same names.

    For the test suite between modules: moto answers a query on an index by walking every item
    of the table, so a table that only ever grows makes each test slower than the one before.
    The table is dropped and created again from the template's properties (a few ms in moto,
    where deleting item by item would take a request per item). Queues are purged when they may
    be (SQS allows one purge a minute per queue; a queue purged less than a minute ago is left).
    """
    import boto3

    properties = local_subset(load_template(template_path))["Resources"][TABLE_LOGICAL_ID][
        "Properties"
    ]
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto accepts any credentials)
        region_name=REGION,
    )
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    dynamodb.delete_table(TableName=resources.table_name)
    dynamodb.create_table(
        TableName=resources.table_name,
        **{key: properties[key] for key in _CREATE_TABLE_KEYS if key in properties},
    )
    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=resources.table_name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    sqs = session.client("sqs", endpoint_url=endpoint)
    for url in resources.queue_urls.values():
        with contextlib.suppress(sqs.exceptions.PurgeQueueInProgress):
            sqs.purge_queue(QueueUrl=url)


def apply_env(values: dict[str, str]) -> None:
    """Export settings for this process and the children it starts."""
    os.environ.update(values)


def sealing_repository(settings: Settings, session: Any = None) -> Repository:
    """A repository that seals and opens stored secrets with ``AGERA_KMS_KEY_ID`` (docs/secrets.md),
    as the deployed functions do: for local tools and benchmarks that write accounts or trunks."""
    import boto3

    from shared.dynamo.repository import Repository
    from shared.secret_box import SecretBox

    session = session or boto3.session.Session()
    return Repository(
        session.client("dynamodb"),
        settings.table_name,
        secrets=SecretBox.from_settings(settings, lambda: session.client("kms")),
    )
