"""Azurite, Microsoft's open-source Azure Storage server, for tests and bench/: its Blob service
started on a free port of 127.0.0.1 with a throwaway data folder, and stopped afterwards.

Tests take the ``azurite`` and ``container`` fixtures by importing them from here (a conftest.py in
tests/blob/ would shadow tests/conftest.py for the modules that import it by name).

Found at ``$METERING_AZURITE`` (the ``azurite-blob`` launcher), in ``.azurite/`` (``.ci/run``
installs it there: ``npm install --prefix .azurite azurite``), or on ``PATH``. Without it (and
node) the tests skip, unless ``METERING_REQUIRE_AZURITE=1`` (CI, once installed) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account (documented; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_SECONDS = 60


def required() -> bool:
    """``METERING_REQUIRE_AZURITE=1`` (set by .ci/run once Azurite is installed): never skip."""
    return os.environ.get("METERING_REQUIRE_AZURITE", "") == "1"


def launcher() -> str | None:
    """The ``azurite-blob`` command, or ``None`` when Azurite or node is missing here."""
    if shutil.which("node") is None:
        return None
    for candidate in (os.environ.get("METERING_AZURITE"), str(ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-blob"),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Azurite:
    """A running Blob service: its endpoint, a connection string, and SAS tokens for containers."""

    port: int

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.account_url};")

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def container_sas(self, container: str, write: bool = False) -> str:
        """A SAS for one container: read and list (and write), valid for an hour."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            ACCOUNT, container, account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(read=True, list=True, write=write, create=write),
            expiry=datetime.now(timezone.utc) + timedelta(hours=1))

    def container_url(self, container: str, prefix: str = "", sas: bool = True) -> str:
        url = f"{self.account_url}/{container}" + (f"/{prefix}" if prefix else "")
        return url + (f"?{self.container_sas(container)}" if sas else "")


@contextmanager
def running(command: str) -> Iterator[Azurite]:
    """Azurite's Blob service on a free loopback port with a temporary data folder, stopped after."""
    with tempfile.TemporaryDirectory(prefix="azurite-") as data, open(Path(data) / "azurite.out", "wb") as log:
        for _ in range(3):  # a free port can be taken between the probe and the bind
            port = _free_port()
            process = subprocess.Popen(
                [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", data, "--silent",
                 "--skipApiVersionCheck", "--loose"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                if _wait_ready(process, port):
                    break
            except BaseException:
                _stop(process)
                raise
            _stop(process)
        else:
            raise RuntimeError(f"Azurite did not start: {(Path(data) / 'azurite.out').read_text(errors='replace')[-500:]}")
        try:
            yield Azurite(port)
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen, port: int) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A running Azurite for the test session: skipped where it is not installed, unless required."""
    command = launcher()
    if command is None:
        reason = "Azurite not installed here (npm install --prefix .azurite azurite; node on PATH)"
        if required():
            pytest.fail(f"METERING_REQUIRE_AZURITE=1 but {reason}")
        pytest.skip(reason)
    with running(command) as server:
        yield server


@pytest.fixture
def container(azurite: Azurite) -> str:
    """A fresh container of the session's Azurite, named for this test."""
    name = f"capture-{uuid.uuid4().hex[:12]}"
    azurite.service().create_container(name)
    return name
