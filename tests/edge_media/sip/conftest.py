"""Fixtures for the SIP message tests: where the RFC 4475 torture messages live.

The directory comes from ``AGERA_RFC4475_DIR`` or sits next to the repository at
``../shared/testdata/rfc4475``. A missing directory fails the tests (CI needs them), it never
skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]


def rfc4475_dir() -> Path:
    configured = os.environ.get("AGERA_RFC4475_DIR")
    return Path(configured) if configured else _REPO_ROOT.parent / "shared/testdata/rfc4475"


@pytest.fixture(scope="session")
def torture_dir() -> Path:
    directory = rfc4475_dir()
    if not (directory / "MANIFEST.md").is_file():
        pytest.fail(
            f"RFC 4475 torture messages not found in {directory}: set AGERA_RFC4475_DIR to the "
            "directory holding the .dat files and MANIFEST.md"
        )
    return directory


@pytest.fixture(scope="session")
def torture(torture_dir: Path) -> dict[str, bytes]:
    """Every torture message by name (file stem), as raw bytes."""
    return {path.stem: path.read_bytes() for path in sorted(torture_dir.glob("*.dat"))}
