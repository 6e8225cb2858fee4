"""Public data the tests and benchmarks read but the repository never holds: provider recordings,
Retail Prices pages, Microsoft's Power BI schemas and the APIM allow-list, fetched from public
repositories into a shared folder (origins in tests/data/origins.csv, rebuild: docs/public-data.md).

The folder is ``METERING_SHARED_DIR``, by default ``shared`` beside the repository root
(``<repo>/../shared``), as CI lays it out. Without it, the tests that need it skip with one line
saying so; ``METERING_REQUIRE_SHARED=1`` (set by .ci/run when the folder is there) makes a missing
part a failure instead.
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SHARED = os.environ.get("METERING_REQUIRE_SHARED") == "1"

#: The parts of the shared folder this project reads.
RECORDINGS = "recordings"
RETAIL_PRICES = "retail-prices"
POWERBI_SCHEMAS = "powerbi-schemas"
APIM_ALLOWED_TYPES = "reference/apim-policy-allowed-types.md"


def shared_dir() -> Path:
    """The shared folder: ``METERING_SHARED_DIR``, else ``shared`` beside the repository root."""
    configured = os.environ.get("METERING_SHARED_DIR")
    return Path(configured).expanduser().resolve() if configured else REPOSITORY_ROOT.parent / "shared"


def shared_path(part: str) -> Path:
    """Where ``part`` (a file or folder of the shared folder) is, whether or not it is there."""
    return shared_dir() / part


def missing(part: str) -> str | None:
    """Why ``part`` cannot be read (one line), or None when it is there.

    Raises when ``METERING_REQUIRE_SHARED=1``: there, a missing part is an error, not a skip.
    """
    path = shared_path(part)
    if path.exists():
        return None
    reason = f"public data {part} not in {shared_dir()} (set METERING_SHARED_DIR; docs/public-data.md)"
    if REQUIRE_SHARED:
        raise RuntimeError(f"METERING_REQUIRE_SHARED=1 but {reason}")
    return reason


def needs(part: str):
    """A pytest mark: skip the test (with the reason) when ``part`` is not in the shared folder."""
    import pytest

    reason = missing(part)
    return pytest.mark.skipif(reason is not None, reason=reason or "")

