"""The local stack's KMS key: what seals stored secrets when moto stands in for AWS.

Why not from ``template.yaml`` like the table and queues (``infra/local_aws.py``): the template's
key policy and grants name the Lambda roles and the account, which a local stack does not have, and
moto enforces neither. What matters locally is the code path: secrets are sealed and opened through
KMS exactly as deployed (``shared/secret_box.py``), with a key that has rotation on like the
template's. ``agera dev`` and the test suite create one per moto server and export its id as
``AGERA_KMS_KEY_ID``.
"""

from __future__ import annotations

from infra.local_aws import REGION

__all__ = ["KEY_ALIAS", "create_local_key"]

KEY_ALIAS = "alias/agera-local-secrets"


def create_local_key(endpoint: str) -> str:
    """Create the key (and its alias) in the moto server at ``endpoint``; returns the key's ARN.

    When the alias exists already, its key is returned: moto servers started in one process
    share their backends, so a second local stack in the same process (bench/streams.py's SIP
    comparison run) finds the first one's key.
    """
    import boto3

    kms = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto accepts any credentials)
        region_name=REGION,
    ).client("kms", endpoint_url=endpoint)
    try:
        return str(kms.describe_key(KeyId=KEY_ALIAS)["KeyMetadata"]["Arn"])
    except kms.exceptions.NotFoundException:
        pass
    key = kms.create_key(Description="Agera local stack: seals stored secrets")["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    kms.create_alias(AliasName=KEY_ALIAS, TargetKeyId=key["KeyId"])
    return str(key["Arn"])
