"""One Azurite Blob service for the tests of this folder (tests/azurite.py): skipped where Azurite
or node is missing, a failure instead when ``METERING_REQUIRE_AZURITE=1`` (CI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import azurite as azurite_server


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_server.Azurite]:
    command = azurite_server.launcher()
    if command is None:
        reason = "Azurite not installed here (npm install --prefix .azurite azurite; node on PATH)"
        if azurite_server.required():
            pytest.fail(f"METERING_REQUIRE_AZURITE=1 but {reason}")
        pytest.skip(reason)
    with azurite_server.running(command) as server:
        yield server


@pytest.fixture
def container(azurite) -> Iterator[str]:
    """A fresh container of the session's Azurite, named for this test."""
    name = f"capture-{uuid.uuid4().hex[:12]}"
    azurite.service().create_container(name)
    yield name
