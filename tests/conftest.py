"""Fixtures shared by the whole suite: one moto server per session, provisioned from template.yaml.

moto runs in a child process (infra/moto_process.py): in this process its ever-growing store made
garbage collections take seconds late in the suite, stalling the edge nodes the tests run here.

Tests isolate by using fresh ids (uuid-based accounts, calls) rather than resetting moto, because
provisioning the template's table and queues takes a few seconds and resetting would wipe them.

Stored secrets: the environment carries a moto KMS key (``AGERA_KMS_KEY_ID``, infra/dev_kms.py), so
everything built from settings (the API's and workers' Context, edge nodes) seals and opens secrets
as deployed. The ``repo`` fixture instead writes them unsealed, as a table from before sealing
holds them: every test that seeds with it and reads through the API or a node also proves that
such legacy values still read (docs/secrets.md). ``sealed_repo`` seals.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest

from functions.context import Context, reset_default_context
from infra.local_aws import LocalResources, aws_env, empty_local_data, provision
from infra.moto_process import MotoProcess
from shared.dynamo.repository import Repository
from shared.secret_box import SecretBox
from shared.settings import Settings

_loaders: dict[str | None, Any] = {}


def _shared_loader(search_path: str | None = None) -> Any:
    """One botocore data loader for every session the suite makes. Each new boto3 session would
    otherwise parse the service and endpoint JSON again (~0.1 s per client, most of an API test's
    set-up); the loader's parsed data is read-only and shared by clients anyway."""
    loader = _loaders.get(search_path)
    if loader is None:
        loader = _loaders[search_path] = botocore.loaders.create_loader(search_path)
    return loader


botocore.session.create_loader = _shared_loader  # type: ignore[attr-defined]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mangum_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Mangum runs the app on asyncio's current loop, creating one if there is none, and never
    closes it (fine on Lambda). A loop left behind is closed by nobody and warns whenever the
    garbage collector finds it, in whatever test runs then: each test gets one and closes it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = MotoProcess("127.0.0.1", 0)
    endpoint = server.start()
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def local_resources(moto_endpoint: str) -> LocalResources:
    return provision(moto_endpoint, stack_name="agera-test")


@pytest.fixture(scope="session")
def kms_key_arn(local_resources: LocalResources) -> str:
    """The moto KMS key that seals stored secrets (AGERA_KMS_KEY_ID in the ``aws`` env), made
    by ``provision`` (infra/dev_kms.py)."""
    return local_resources.kms_key_id


_emptied_for: list[str] = []  # the test module the table was last emptied for


@pytest.fixture
def aws(
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    local_resources: LocalResources,
    kms_key_arn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalResources]:
    """The process environment pointed at moto and the template's resources.

    Each test module starts with an empty table and queues (moto's index queries walk the whole
    table: a table that kept every module's items made the suite quadratic).
    """
    module = request.node.nodeid.split("::", 1)[0]
    if _emptied_for != [module]:
        empty_local_data(moto_endpoint, local_resources)
        _emptied_for[:] = [module]
    for name, value in {**aws_env(moto_endpoint), **local_resources.settings_env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGERA_KMS_KEY_ID", kms_key_arn)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    monkeypatch.setenv("AGERA_SSRF_ALLOW_LIST", "127.0.0.0/8")
    reset_default_context()
    yield local_resources
    reset_default_context()


@pytest.fixture
def session(aws: LocalResources) -> Any:
    return boto3.session.Session()


@pytest.fixture
def repo(aws: LocalResources, session: Any) -> Repository:
    """Writes secrets unsealed, like a table from before sealing (see the module docstring)."""
    legacy = SecretBox(
        lambda: session.client("kms"), key_id=None, table=aws.table_name, allow_plaintext=True
    )
    return Repository(session.client("dynamodb"), aws.table_name, secrets=legacy)


@pytest.fixture
def sealed_repo(aws: LocalResources, session: Any) -> Repository:
    """Seals secrets with the moto key, as the deployed functions do."""
    box = SecretBox.from_settings(Settings.load(), lambda: session.client("kms"))
    return Repository(session.client("dynamodb"), aws.table_name, secrets=box)


@pytest.fixture
def ctx(aws: LocalResources) -> Context:
    return Context(Settings.load())


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


_INTEROP = Path(__file__).resolve().parent / "interop"


def pytest_configure(config: pytest.Config) -> None:
    """Nodes the suite starts keep their generated ids (edge_media/control/identity.py) in a
    temporary directory of the run, never in the user's ~/.local/state; child processes (``agera
    edge``, ``agera dev``) inherit it."""
    if "AGERA_STATE_DIR" not in os.environ:
        import tempfile

        os.environ["AGERA_STATE_DIR"] = tempfile.mkdtemp(prefix="agera-test-state-")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``make test`` (pytest-xdist, ``--dist loadgroup``): every interop test in one
    group, so they run one after another on one worker (real peers, a shared loopback, timing
    windows), while the other worker takes the rest file by file (a file's tests share fixed
    port blocks and module-scoped state)."""
    for item in items:
        path = item.path.resolve()
        group = "interop" if _INTEROP in path.parents else str(path)
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_report_header() -> list[str]:
    return [
        f"AGERA_RFC4475_DIR={os.environ.get('AGERA_RFC4475_DIR', '(default tests/edge_media/sip/rfc4475)')}"
    ]
