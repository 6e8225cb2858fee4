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
inside it is one flat listing. Blobs are streamed through the same bounded Avro reader as local
files (sources/capture_avro.py); a blob that cannot be read stops only itself.

Two REST calls over ``http.client`` (``BlobStorage`` says why not the SDK); ``azure-identity`` is
imported only for a URL without a SAS. A SAS never appears in a message or a ``repr``.
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
from urllib.parse import quote, unquote, urlencode, urlsplit

from metering.model import RawEvent

INSTALL_HINT = "pip install 'aoai-metering[blob]'"
READ_TIMEOUT_SECONDS = 60  # the deadline of each socket operation (connecting, each read)
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
    etag: str = ""  # as listed: reading is pinned to it

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


# --------------------------------------------------------------------------- the REST calls

# Blob's REST API, as the SDK would send it; bearer tokens need 2017-11-09 or later.
API_VERSION = "2021-08-06"
STORAGE_SCOPE = "https://storage.azure.com/.default"
MAX_LIST_BYTES = 32 << 20  # one List Blobs page: 5,000 names of at most 1,024 characters, and their properties
ATTEMPTS = 4  # a request that fails with a connection error, 408, 429 or 5xx is tried again, backing off
_RETRIED_STATUS = {408, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    """A request that may succeed when tried again (the message says why)."""


class BlobStorage:
    """The two calls replay needs — List Blobs and Get Blob, streamed — over ``http.client``.

    Why not the ``azure-storage-blob`` SDK: importing it costs 17 MiB of resident memory in every
    replay process (its generated REST models), which alone would take ``metering replay`` past its
    150 MiB bound (docs/throughput.md). These two calls are small and stable. Auth is the URL's SAS,
    or a bearer token from ``DefaultAzureCredential`` (``azure-identity``, imported only then).
    """

    def __init__(self, container: BlobContainer, credential: Any = None) -> None:
        self.container = container
        parts = urlsplit(container.account_url)
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._base = parts.path.rstrip("/") + "/" + quote(container.container, safe="")
        self._credential = credential
        self._token: tuple[str, float] | None = None
        self._connection: Any = None
        self.listed: list[str] = []  # each List Blobs request (path and query, never the SAS): tests read it

    # -- plumbing

    def _connect(self) -> Any:
        import http.client

        if self._connection is None:
            kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=READ_TIMEOUT_SECONDS)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"x-ms-version": API_VERSION, "User-Agent": "aoai-metering-replay", **extra}
        if not self.container.sas:
            headers["Authorization"] = f"Bearer {self._bearer()}"
        return headers

    def _bearer(self) -> str:
        import time

        if self._token is None or self._token[1] - 300 < time.time():
            if self._credential is None:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError:
                    raise BlobSourceError("a URL without a SAS is read with DefaultAzureCredential, which needs"
                                          f" azure-identity; install it with: {INSTALL_HINT}") from None
                self._credential = DefaultAzureCredential()
            try:
                token = self._credential.get_token(STORAGE_SCOPE)
            except Exception as exc:  # azure-identity's ClientAuthenticationError and kin: a one-line reason
                raise BlobSourceError(f"{self.container.url()}: no token for Blob Storage from"
                                      f" DefaultAzureCredential ({_reason(exc)})") from None
            self._token = (token.token, float(token.expires_on))
        return self._token[0]

    def _target(self, name: str, query: dict[str, str]) -> str:
        path = self._base + (("/" + quote(name, safe="/")) if name else "")
        pieces = [urlencode(query)] if query else []
        if self.container.sas:
            pieces.append(self.container.sas.lstrip("?"))
        return path + ("?" + "&".join(pieces) if pieces else "")

    def _send(self, what: str, name: str, query: dict[str, str], headers: dict[str, str]) -> Any:
        """The response to a GET (status 200 or 206), tried again on a transient failure; else ``BlobSourceError``."""
        import http.client
        import time

        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            try:
                connection = self._connect()
                connection.request("GET", self._target(name, query), headers=self._headers(headers))
                response = connection.getresponse()
                if response.status in (200, 206):
                    return response
                body = response.read(64 * 1024)
                reason = _storage_error(response, body)
                if response.status not in _RETRIED_STATUS:
                    raise BlobSourceError(f"{what} ({reason})")
                raise _Retryable(reason)
            except (OSError, http.client.HTTPException, _Retryable) as exc:
                self.close()
                if attempt == ATTEMPTS:
                    raise BlobSourceError(f"{what} ({_reason(exc)}; tried {ATTEMPTS} times)") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- the two calls

    def list_page(self, prefix: str, delimiter: str | None, marker: str | None) -> tuple[list[tuple[str, int, str]], list[str], str | None]:
        """One page of List Blobs: (name, size, ETag) of each blob, the folder prefixes, the next marker."""
        from xml.etree import ElementTree

        query = {"restype": "container", "comp": "list", "maxresults": "5000"}
        if prefix:
            query["prefix"] = prefix
        if delimiter:
            query["delimiter"] = delimiter
        if marker:
            query["marker"] = marker
        self.listed.append(f"{self._base}?{urlencode(query)}")
        response = self._send(f"{self.container.url(prefix)}: could not be listed", "", query, {})
        body = response.read(MAX_LIST_BYTES + 1)
        if len(body) > MAX_LIST_BYTES:
            self.close()
            raise BlobSourceError(f"{self.container.url(prefix)}: a listing page is larger than {MAX_LIST_BYTES >> 20} MiB")
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise BlobSourceError(f"{self.container.url(prefix)}: the listing is not XML ({exc})") from None
        blobs = []
        for blob in root.iter("Blob"):
            size = blob.findtext("Properties/Content-Length") or "0"
            blobs.append((blob.findtext("Name") or "", int(size) if size.isdigit() else 0,
                          blob.findtext("Properties/Etag") or ""))
        prefixes = [p.findtext("Name") or "" for p in root.iter("BlobPrefix")]
        return blobs, prefixes, root.findtext("NextMarker") or None

    def list(self, prefix: str, delimiter: str | None = None) -> Iterator[tuple[str, int, str] | str]:
        """Every blob (name, size, ETag) and, with a delimiter, every folder (its name, ending in it)."""
        marker = None
        while True:
            blobs, prefixes, marker = self.list_page(prefix, delimiter, marker)
            yield from blobs
            yield from prefixes
            if not marker:
                return

    def open(self, blob: CaptureBlob) -> _BlobStream:
        return _BlobStream(self, blob)


def _storage_error(response: Any, body: bytes) -> str:
    """``403 AuthorizationFailure: Server failed to authenticate…``: status, error code, the message's first line."""
    code = response.getheader("x-ms-error-code") or ""
    found = re.search(rb"<Message>([^<]{0,300})", body)
    message = found.group(1).decode("utf-8", "replace").splitlines()[0] if found else (response.reason or "")
    return " ".join(f"{response.status} {code}: {message}".split())


class _BlobStream:
    """``read`` and ``tell`` over one Get Blob response, streamed (what the bounded Avro reader
    needs); a connection lost mid-blob is resumed from where it stopped, pinned to the listed ETag."""

    def __init__(self, storage: BlobStorage, blob: CaptureBlob) -> None:
        self._storage, self._blob = storage, blob
        self._position = 0
        self._resumes = 0
        self._response = self._get()

    def _get(self) -> Any:
        headers = {"x-ms-range": f"bytes={self._position}-"} if self._position else {}
        etag = self._blob.etag
        if etag:  # List Blobs gives it bare (0x8D…); If-Match takes it quoted
            headers["If-Match"] = etag if etag.startswith('"') else f'"{etag}"'
        return self._storage._send(f"{self._blob}: could not be read", self._blob.name, {}, headers)

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        import http.client

        want = self._blob.size - self._position if size < 0 else min(size, self._blob.size - self._position)
        pieces: list[bytes] = []
        got = 0
        while got < want:
            try:
                piece = self._response.read(want - got)
            except (OSError, http.client.HTTPException) as exc:
                piece, error = b"", exc
            else:
                error = None
            if piece:
                pieces.append(piece)
                got += len(piece)
                self._position += len(piece)
                continue
            # The stream ended early or broke: ask again from here, a few times.
            self._storage.close()
            self._resumes += 1
            if self._resumes > ATTEMPTS:
                why = _reason(error) if error is not None else "the connection ended early"
                raise BlobSourceError(f"{self._blob}: could not be read ({why}; resumed {ATTEMPTS} times)")
            self._response = self._get()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        if self._position < self._blob.size:  # not read to the end: the connection cannot be reused
            self._storage.close()


_storages: dict[tuple[int, BlobContainer], BlobStorage] = {}


def storage_for(container: BlobContainer) -> BlobStorage:
    """This process's ``BlobStorage`` for a container (a forked worker never shares its parent's connection)."""
    key = (os.getpid(), container)
    if key not in _storages:
        _storages[key] = BlobStorage(container)
    return _storages[key]


def _reason(exc: BaseException) -> str:
    """An error in one line, with any URL's query (a SAS) cut out."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\?[^\s'\"]*", "?…", text)
    return f"{type(exc).__name__}: {text[:300]}" if not isinstance(exc, (BlobSourceError, _Retryable)) else text[:300]


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
                 storage: BlobStorage | None = None) -> Listing:
    """The Capture blobs under ``prefix``, each partition's in time order. With ``since``/``until``
    (``[since, until)``, the time in the blob's path: when Capture opened its window) only the
    folders overlapping the window are listed. Raises ``BlobSourceError`` when listing fails."""
    from metering.sources.files import capture_time

    storage = storage or storage_for(container)
    listing = Listing()
    window = since is not None or until is not None
    low = since or datetime.min.replace(tzinfo=timezone.utc)
    high = until or datetime.max.replace(tzinfo=timezone.utc)

    def take(name: str, size: int, etag: str) -> None:
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
        listing.blobs.append(CaptureBlob(container, name, size, etag))

    def walk(folder: str, depth: int) -> None:
        span = folder_span(folder) if folder else None
        if span is not None:
            if span[1] <= low or span[0] >= high:
                return
            if span[1] - span[0] <= timedelta(days=1):  # a day (or less): one flat listing
                for name, size, etag in storage.list(folder):  # type: ignore[misc]
                    take(name, size, etag)
                return
        for item in storage.list(folder, delimiter="/"):
            if isinstance(item, str):
                if depth >= MAX_FOLDER_DEPTH:
                    raise BlobSourceError(f"{container.url(item)}: folders nest deeper than {MAX_FOLDER_DEPTH} levels")
                walk(item, depth + 1)
            else:
                take(*item)

    prefix = prefix.lstrip("/")
    if prefix.lower().endswith(".avro"):  # one file (and any whose name extends it: Capture's never do)
        for name, size, etag in storage.list(prefix):  # type: ignore[misc]
            take(name, size, etag)
    else:
        folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"  # …/aoai-usage, not …/aoai-usage-test
        if window:
            walk(folder, 0)
        else:
            for name, size, etag in storage.list(folder):  # type: ignore[misc]
                take(name, size, etag)
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


def read_blob(blob: CaptureBlob, on_bytes: Callable[[int], None] | None = None,
              max_event_bytes: int | None = None) -> Iterator[RawEvent]:
    """The events of one Capture blob, streamed; a blob that cannot be read or is damaged raises
    ``SourceError`` naming it (without a SAS) after yielding the events before the damage."""
    from metering.sources.bounds import max_event_bytes_from_env
    from metering.sources.files import SourceError, capture_events, capture_partition

    if blob.size == 0:
        return
    bound = max_event_bytes or max_event_bytes_from_env()
    stream = None
    try:
        stream = storage_for(blob.container).open(blob)
        yield from capture_events(stream, blob.size, str(blob), capture_partition(PurePosixPath(blob.name)), bound, on_bytes)
    except BlobSourceError as exc:
        raise SourceError(str(exc)) from None
    finally:
        if stream is not None:
            stream.close()
