"""Event Hubs Capture read straight from Blob Storage or ADLS Gen2, for ``metering replay URL``: a
backfill without copying the container down first.

A URL names a container or a prefix in it: ``https://ACCOUNT.blob.core.windows.net/CONTAINER/NAMESPACE/HUB/...``,
``abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/...`` (the same account's blob endpoint serves ADLS
Gen2's files), or a path-style endpoint on a loopback address (Azurite). A SAS in the URL's query
authenticates; without one, ``DefaultAzureCredential`` (the role *Storage Blob Data Reader*).

Listing follows Capture's default layout
``{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro``. With
a time window only the folders that overlap it are listed: a folder's place in the layout is read
from its own name, year, month and day folders outside the window are never opened, and each day
inside it is one flat listing. Blobs are streamed in bounded chunks through the same bounded Avro
reader as local files (sources/capture_avro.py); a blob that cannot be read stops only itself.

The Azure SDK (``azure-storage-blob``, ``azure-identity``) is imported only when a URL is replayed.
A SAS never appears in a message or a ``repr``.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from metering.model import RawEvent

INSTALL_HINT = "pip install 'aoai-metering[blob]'"
# One ranged GET at a time holds at most this much of a blob (the SDK's default first GET is 32 MiB).
CHUNK_BYTES = 4 << 20
CONNECT_TIMEOUT_SECONDS = 20
READ_TIMEOUT_SECONDS = 120  # per socket read; the SDK retries a timed-out request
MAX_FOLDER_DEPTH = 12  # folders above the year of Capture's layout (namespace, hub, partition, and more)
_URL_SCHEMES = ("https://", "http://", "abfss://", "abfs://")
_YEAR = re.compile(r"\d{4}")
_TIME_PART = re.compile(r"\d{1,2}")
_PARTITION = re.compile(r"\d{1,4}")


class BlobSourceError(Exception):
    """A blob URL that cannot be listed or read (the message is one line and holds no SAS)."""


def is_blob_url(text: str) -> bool:
    """Whether a replay argument is a storage URL rather than a local path."""
    return text.lower().startswith(_URL_SCHEMES)


@dataclass(frozen=True)
class BlobContainer:
    """Where Capture writes: the account's blob endpoint, the container, and the SAS (if any)."""

    account_url: str
    container: str
    sas: str | None = field(default=None, repr=False)

    def url(self, name: str = "") -> str:
        """The container's (or a blob's) URL without its SAS: what messages name."""
        return f"{self.account_url}/{self.container}" + (f"/{name}" if name else "")


@dataclass(frozen=True)
class CaptureBlob:
    """One blob to replay; ``parts`` and ``size`` let it be planned like a local file."""

    container: BlobContainer
    name: str
    size: int

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.container.url(),) + PurePosixPath(self.name).parts

    def __str__(self) -> str:
        return self.container.url(self.name)


def parse_blob_url(text: str) -> tuple[BlobContainer, str]:
    """A storage URL → (container, prefix within it). ``ValueError`` with a one-line reason (never the SAS)."""
    shown = text.split("?", 1)[0][:200]
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    path = unquote(parts.path)
    if not host:
        raise ValueError(f"{shown}: not a storage URL (no account host)")
    if scheme in ("abfss", "abfs"):
        # abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH: Blob's endpoint of the same account.
        container = unquote(parts.username or "")
        labels = host.split(".")
        if not container or len(labels) < 3 or labels[1] != "dfs":
            raise ValueError(f"{shown}: an ADLS URL is abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH")
        account_url = f"https://{labels[0]}.blob.{'.'.join(labels[2:])}"
        return BlobContainer(account_url, container, parts.query or None), path.lstrip("/")
    segments = path.lstrip("/").split("/")
    if _loopback(host):
        # Path style, as Azurite serves it: http://127.0.0.1:10000/ACCOUNT/CONTAINER/PATH.
        if len(segments) < 2 or not segments[0] or not segments[1]:
            raise ValueError(f"{shown}: a path-style URL is http://HOST:PORT/ACCOUNT/CONTAINER/PATH")
        account_url = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}/{segments[0]}"
        return BlobContainer(account_url, segments[1], parts.query or None), "/".join(segments[2:])
    labels = host.split(".")
    if scheme != "https":
        raise ValueError(f"{shown}: use https:// (plain http is accepted only for a local emulator)")
    if len(labels) < 3 or labels[1] not in ("blob", "dfs"):
        raise ValueError(f"{shown}: not a Blob Storage URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/...)")
    if not segments[0]:
        raise ValueError(f"{shown}: the URL names no container (https://ACCOUNT.blob.core.windows.net/CONTAINER/...)")
    account_url = f"https://{labels[0]}.blob.{'.'.join(labels[2:])}" + (f":{parts.port}" if parts.port else "")
    return BlobContainer(account_url, segments[0], parts.query or None), "/".join(segments[1:])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- the SDK, lazily

_clients: dict[tuple[int, BlobContainer], Any] = {}


def _sdk_error() -> type[Exception]:
    from azure.core.exceptions import AzureError

    return AzureError


def container_client(container: BlobContainer, **options: Any) -> Any:
    """An SDK ``ContainerClient`` (bounded chunks, deadlines); one per process, so a forked worker
    never shares its parent's connections."""
    key = (os.getpid(), container)
    if not options and key in _clients:
        return _clients[key]
    try:
        from azure.storage.blob import ContainerClient
    except ImportError as exc:
        raise BlobSourceError(f"replaying from Blob Storage needs azure-storage-blob ({exc.name or exc});"
                              f" install it with: {INSTALL_HINT}") from None
    credential = None
    if not container.sas:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise BlobSourceError("a URL without a SAS is read with DefaultAzureCredential, which needs azure-identity;"
                                  f" install it with: {INSTALL_HINT}") from None
        credential = DefaultAzureCredential()
    url = container.url() + (f"?{container.sas}" if container.sas else "")
    client = ContainerClient.from_container_url(
        url, credential=credential, max_single_get_size=CHUNK_BYTES, max_chunk_get_size=CHUNK_BYTES,
        connection_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS, **options)
    if not options:
        _clients[key] = client
    return client


def _reason(exc: BaseException) -> str:
    """An SDK error in one line, with any URL's query (a SAS) cut out."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\?[^\s'\"]*", "?…", text)
    return f"{type(exc).__name__}: {text[:300]}"


# --------------------------------------------------------------------------- listing


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def folder_span(folder: str) -> tuple[datetime, datetime] | None:
    """The time a Capture folder (``…/{PartitionId}/{Year}[/{Month}[/{Day}[/{Hour}[/{Minute}]]]]``)
    covers, as ``[start, end)``; ``None`` for a folder above the year or outside the layout."""
    parts = folder.strip("/").split("/")
    for depth in range(5, 0, -1):
        if len(parts) < depth + 1:
            continue
        times, partition = parts[-depth:], parts[-depth - 1]
        if not _PARTITION.fullmatch(partition) or not _YEAR.fullmatch(times[0]):
            continue
        if not all(_TIME_PART.fullmatch(t) for t in times[1:]):
            continue
        numbers = [int(t) for t in times] + [1, 1, 0, 0][depth - 1:]
        try:
            start = datetime(*numbers[:5], tzinfo=timezone.utc)  # type: ignore[misc]
        except ValueError:
            return None
        if depth == 1:
            end = start.replace(year=start.year + 1) if start.year < 9999 else datetime.max.replace(tzinfo=timezone.utc)
        elif depth == 2:
            end = start + timedelta(days=_days_in(start.year, start.month))
        else:
            end = start + (timedelta(days=1), timedelta(hours=1), timedelta(minutes=1))[depth - 3]
        return start, end
    return None


@dataclass
class Listing:
    """What a listing found: the blobs to replay, and the names it passed over (to be reported)."""

    blobs: list[CaptureBlob] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not .avro
    outside_layout: list[str] = field(default_factory=list)  # .avro outside Capture's layout, with a window


def list_capture(container: BlobContainer, prefix: str, since: datetime | None = None, until: datetime | None = None,
                 client: Any = None) -> Listing:
    """The Capture blobs under ``prefix``, each partition's in time order. With ``since``/``until``
    (``[since, until)``, the time in the blob's path: when Capture opened its window) only the
    folders overlapping the window are listed. Raises ``BlobSourceError`` when listing fails."""
    from metering.sources.files import capture_time

    client = client or container_client(container)
    listing = Listing()
    window = since is not None or until is not None
    low = since or datetime.min.replace(tzinfo=timezone.utc)
    high = until or datetime.max.replace(tzinfo=timezone.utc)

    def take(name: str, size: int) -> None:
        if not name.lower().endswith(".avro"):
            if size:  # ADLS Gen2 lists its folders as empty blobs
                listing.skipped.append(name)
            return
        if window:
            moment = capture_time(PurePosixPath(name))
            if moment is None:
                listing.outside_layout.append(name)
                return
            if not low <= moment < high:
                return
        listing.blobs.append(CaptureBlob(container, name, size))

    def walk(folder: str, depth: int) -> None:
        span = folder_span(folder) if window and folder else None
        if span is not None:
            if span[1] <= low or span[0] >= high:
                return
            if span[1] - span[0] <= timedelta(days=1):  # a day (or less): one flat listing
                for blob in client.list_blobs(name_starts_with=folder):
                    take(blob.name, blob.size or 0)
                return
        for item in client.walk_blobs(name_starts_with=folder or None, delimiter="/"):
            if item.name.endswith("/") and not hasattr(item, "size"):
                if depth >= MAX_FOLDER_DEPTH:
                    raise BlobSourceError(f"{container.url(item.name)}: folders nest deeper than {MAX_FOLDER_DEPTH} levels")
                walk(item.name, depth + 1)
            else:
                take(item.name, item.size or 0)

    prefix = prefix.lstrip("/")
    try:
        if not window:
            for blob in client.list_blobs(name_starts_with=prefix or None):
                take(blob.name, blob.size or 0)
        elif prefix and not prefix.endswith("/") and prefix.lower().endswith(".avro"):
            for blob in client.list_blobs(name_starts_with=prefix):
                take(blob.name, blob.size or 0)
        else:
            walk(prefix if not prefix or prefix.endswith("/") else prefix + "/", 0)
    except BlobSourceError:
        raise
    except _sdk_error() as exc:
        raise BlobSourceError(f"{container.url(prefix)}: could not be listed ({_reason(exc)})") from None
    listing.blobs.sort(key=_time_order)
    return listing


def _time_order(blob: CaptureBlob) -> tuple[Any, ...]:
    """Capture's time order within a partition (its folders hold unpadded numbers as well)."""
    parts = PurePosixPath(blob.name).parts
    from metering.sources.files import capture_time

    moment = capture_time(PurePosixPath(blob.name))
    if moment is None:
        return (parts, datetime.min.replace(tzinfo=timezone.utc), blob.name)
    return (parts[:-6], moment, blob.name)


# --------------------------------------------------------------------------- reading


class _ChunkStream:
    """``read`` and ``tell`` over a download's chunks: what the bounded Avro reader needs, holding
    one chunk (plus what one read asks for) at a time."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")
        self._position = 0

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        if 0 <= size <= len(self._buffer):
            out = bytes(self._buffer[:size])
            self._buffer = self._buffer[size:]
            self._position += size
            return out
        pieces = [bytes(self._buffer)]
        held = len(self._buffer)
        self._buffer = memoryview(b"")
        while size < 0 or held < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            if size >= 0 and held + len(chunk) > size:
                cut = size - held
                pieces.append(chunk[:cut])
                self._buffer = memoryview(chunk)[cut:]
                held = size
                break
            pieces.append(chunk)
            held += len(chunk)
        self._position += held
        return b"".join(pieces)


def read_blob(blob: CaptureBlob, on_bytes: Callable[[int], None] | None = None,
              max_event_bytes: int | None = None) -> Iterator[RawEvent]:
    """The events of one Capture blob, streamed; a blob that cannot be read or is damaged raises
    ``SourceError`` naming it (without a SAS) after yielding the events before the damage."""
    from metering.sources.bounds import max_event_bytes_from_env
    from metering.sources.files import SourceError, capture_events, capture_partition

    if blob.size == 0:
        return
    bound = max_event_bytes or max_event_bytes_from_env()
    error = _sdk_error()
    try:
        downloader = container_client(blob.container).download_blob(blob.name, max_concurrency=1)
        stream = _ChunkStream(iter(downloader.chunks()))
        yield from capture_events(stream, blob.size, str(blob), capture_partition(PurePosixPath(blob.name)), bound, on_bytes)
    except error as exc:
        raise SourceError(f"{blob}: could not be read ({_reason(exc)})") from None
    except BlobSourceError as exc:
        raise SourceError(str(exc)) from None
