"""Fixtures for interop tests against real peers (sipp, baresip, kamailio, tshark).

The scenarios and configs come from tests/interop/peers (or ``AGERA_SIP_PEERS_DIR``). A missing
directory fails the tests (CI must run them), it never skips them, as for the RFC 4475
messages. Speech fixtures are made once per session; each test gets a
``peers`` owner whose processes are all stopped at teardown, with their log tails printed when
the test failed.
"""

from __future__ import annotations

import gc
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.interop.media import MediaFiles, make_media
from tests.interop.peers import Peers
from tests.interop.ports import release_all
from tests.interop.sipp import default_peers_dir

_HERE = Path(__file__).resolve().parent
_PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def sip_peers_dir() -> Path:
    directory = default_peers_dir()
    if not (directory / "sipp" / "uac_audio_dtmf.xml").is_file():
        pytest.fail(
            f"SIP peer scenarios not found in {directory}: set AGERA_SIP_PEERS_DIR to a "
            "directory laid out as tests/interop/peers (sipp/ and kamailio/)"
        )
    return directory


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    """caller/callee speech as WAV, raw μ-law (sipp) and padded 8 kHz WAV (baresip)."""
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def peers(
    request: pytest.FixtureRequest, tmp_path: Path, media: MediaFiles, sip_peers_dir: Path
) -> Iterator[Peers]:
    owner = Peers(tmp_path, media, sip_peers_dir)
    try:
        yield owner
    finally:
        owner.close()
        reports = request.node.stash.get(_PHASE_REPORTS, {})
        if any(r.failed for r in reports.values()):
            print(f"\nartifacts: {tmp_path}\n{owner.report()}")


@pytest.fixture(autouse=True)
def _release_ports() -> Iterator[None]:
    """Each test's ports return to the pool once its peers (stopped by their fixtures) are gone."""
    yield
    release_all()


@pytest.fixture(autouse=True)
def _freeze_the_heap() -> None:
    """What earlier tests left alive is frozen before each test: the nodes under test run in this
    process, and a full garbage collection walking the whole suite's heap (hundreds of thousands
    of objects) stopped their event loop for a quarter of a second, mid-call."""
    gc.collect()
    gc.freeze()
