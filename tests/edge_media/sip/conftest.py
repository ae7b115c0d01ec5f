"""Fixtures for the SIP message tests: where the RFC 4475 torture messages live.

The messages are RFC 4475's appendix, byte for byte, in tests/edge_media/sip/rfc4475 (its
MANIFEST.md says how each is classified); ``AGERA_RFC4475_DIR`` points the tests at another
copy. A missing directory fails the tests (CI needs them), it never skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def rfc4475_dir() -> Path:
    configured = os.environ.get("AGERA_RFC4475_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent / "rfc4475"


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
